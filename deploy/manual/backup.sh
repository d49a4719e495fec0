#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Backs up the users' data of the task-1 stack: pg_dump -Fc streamed out of userstack-db into a
# file on this host, with its size and the number of users in it. The implementation is shared
# with the compose path (deploy/lib/data.sh); restore with deploy/manual/restore.sh FILE.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=../lib/data.sh
source "$here/../lib/data.sh"

usage() {
    cat <<'EOF_USAGE'
Usage: deploy/manual/backup.sh [FILE] [--help]

Writes a pg_dump custom-format archive of the running userstack-db to FILE
[$BACKUP_DIR/userstack-manual-<UTC time>.dump], prints its size and the number of users in it,
and remembers it as the last backup (down.sh --purge names it).

Environment:
  BACKUP_DIR   [${XDG_STATE_HOME:-$HOME/.local/state}/userstack/backups]
EOF_USAGE
}

file=""
for arg in "$@"; do
    case $arg in
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $arg" ;;
        *) [[ -z $file ]] || die "one FILE only"; file=$arg ;;
    esac
done

[[ $(docker inspect -f '{{.State.Running}}' userstack-db 2>/dev/null) == true ]] ||
    die "userstack-db is not running: start the stack (deploy/manual/up.sh) first"
step "Back up the database of userstack-db"
backup_db userstack-db "$file" manual
