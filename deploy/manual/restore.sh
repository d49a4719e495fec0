#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Restores a backup (deploy/manual/backup.sh, or remote.sh backup) into a NEW data volume: runs
# deploy/manual/up.sh --restore FILE, which creates the volume, starts PostgreSQL, loads the dump
# in one transaction and only then starts the app. It never destroys data: with an existing
# volume it stops and says how to back it up and remove it.
#
#   deploy/manual/restore.sh FILE [up.sh options, e.g. --standins]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/common.sh
source "$here/../lib/common.sh"

[[ $# -ge 1 && $1 != -* ]] || die "usage: deploy/manual/restore.sh FILE [up.sh options]"
file=$1; shift
[[ -r $file ]] || die "$file is not a readable file"
if docker volume inspect userstack-pgdata >/dev/null 2>&1; then
    die "the volume userstack-pgdata exists; a restore goes into a new one. First
  deploy/manual/backup.sh            # keep what is there
  deploy/manual/down.sh --purge      # remove it (asks)
then run this again."
fi
exec "$here/up.sh" --restore "$file" "$@"
