#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Takes down what deploy/manual/up.sh started: the three containers and the two networks. The
# PostgreSQL volume (the users' data) stays unless --purge, which asks first (--yes for scripts)
# and names the last backup. Idempotent: what is gone is skipped.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"

usage() {
    cat <<'EOF'
Usage: deploy/manual/down.sh [--purge [--yes]] [--help]

Removes the containers userstack-app, userstack-redis, userstack-db and the networks
userstack-net and userstack-backend. Keeps the volume userstack-pgdata (the data) and the app
image.

  --purge   also remove the volume userstack-pgdata and the secret files up.sh wrote; asks
            first, naming the last backup (deploy/manual/backup.sh)
  --yes     do not ask (for scripts)
  --help    this text

Environment:
  SECRETS_DIR   where up.sh kept the secret files [${XDG_STATE_HOME:-$HOME/.local/state}/userstack]
  BACKUP_DIR    where backup.sh keeps backups [${XDG_STATE_HOME:-$HOME/.local/state}/userstack/backups]
EOF
}

purge=0 yes=0
for arg in "$@"; do
    case $arg in
        --purge) purge=1 ;;
        --yes | -y) yes=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

SECRETS_DIR=${SECRETS_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/userstack}
# shellcheck source=../lib/secrets.sh
source "$here/../lib/secrets.sh"
# shellcheck source=../lib/data.sh
source "$here/../lib/data.sh"

# Asked before anything is removed, so that "no" leaves the stack as it was.
if ((purge)) && docker volume inspect userstack-pgdata >/dev/null 2>&1; then
    confirm_destroy "the volume userstack-pgdata" manual "$yes" "deploy/manual/backup.sh"
fi

step "Remove the containers"
containers=()
for name in userstack-app userstack-redis userstack-db; do
    docker container inspect "$name" >/dev/null 2>&1 && containers+=("$name")
done
# -v: also the containers' anonymous volumes (the redis image declares /data); never a named one.
if ((${#containers[@]})); then run docker rm -f -v "${containers[@]}"
else log "no userstack containers"; fi

step "Remove the networks"
for network in userstack-net userstack-backend; do
    if docker network inspect "$network" >/dev/null 2>&1; then run docker network rm "$network"
    else log "no network $network"; fi
done

if ((purge)); then
    step "Remove the data volume and the secret files (--purge)"
    if docker volume inspect userstack-pgdata >/dev/null 2>&1; then run docker volume rm userstack-pgdata
    else log "no volume userstack-pgdata"; fi
    for name in "${SECRET_NAMES[@]}"; do
        if [[ -e "$SECRETS_DIR/$name" ]]; then run rm -f "$SECRETS_DIR/$name"; fi
    done
    log "last backup (kept): $(last_backup manual)"
    # Only if empty: the directory may be shared with something else.
    if [[ -d "$SECRETS_DIR" ]]; then rmdir "$SECRETS_DIR" 2>/dev/null || true; fi
else
    log "kept the volume userstack-pgdata (the data); deploy/manual/down.sh --purge removes it"
fi
