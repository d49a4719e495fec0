#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Takes down what deploy/manual/up.sh started: the three containers and the network. The
# PostgreSQL volume (the users' data) stays unless --purge. Idempotent: what is gone is skipped.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"

usage() {
    cat <<'EOF'
Usage: deploy/manual/down.sh [--purge] [--help]

Removes the containers userstack-app, userstack-redis, userstack-db and the network
userstack-net. Keeps the volume userstack-pgdata (the data) and the app image.

  --purge   also remove the volume userstack-pgdata and the password file up.sh wrote
  --help    this text

Environment:
  SECRETS_DIR   where up.sh kept the password file [${XDG_STATE_HOME:-$HOME/.local/state}/userstack]
EOF
}

purge=0
for arg in "$@"; do
    case $arg in
        --purge) purge=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

SECRETS_DIR=${SECRETS_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/userstack}

step "Remove the containers"
containers=()
for name in userstack-app userstack-redis userstack-db; do
    docker container inspect "$name" >/dev/null 2>&1 && containers+=("$name")
done
# -v: also the containers' anonymous volumes (the redis image declares /data); never a named one.
if ((${#containers[@]})); then run docker rm -f -v "${containers[@]}"
else log "no userstack containers"; fi

step "Remove the network"
if docker network inspect userstack-net >/dev/null 2>&1; then run docker network rm userstack-net
else log "no network userstack-net"; fi

if ((purge)); then
    step "Remove the data volume and the password file (--purge)"
    if docker volume inspect userstack-pgdata >/dev/null 2>&1; then run docker volume rm userstack-pgdata
    else log "no volume userstack-pgdata"; fi
    if [[ -e "$SECRETS_DIR/db_password" ]]; then run rm -f "$SECRETS_DIR/db_password"; fi
    # Only if empty: the directory may be shared with something else.
    if [[ -d "$SECRETS_DIR" ]]; then rmdir "$SECRETS_DIR" 2>/dev/null || true; fi
else
    log "kept the volume userstack-pgdata (the data); deploy/manual/down.sh --purge removes it"
fi
