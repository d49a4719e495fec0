# shellcheck shell=bash
# The users' data, the same on every deploy path: backup, restore, the password of an
# initialised volume, and asking before a data volume is destroyed. Source it after common.sh.
#
# Every function talks to the database container CONTAINER through the docker command in the
# array DOCKER (default: plain `docker`; remote.sh sets `docker -H ssh://…`), and uses the
# container's own POSTGRES_USER / POSTGRES_DB / POSTGRES_PASSWORD_FILE. pg_dump, pg_restore and
# psql run inside the container over its Unix socket, which the postgres image trusts; so the
# host needs no PostgreSQL client and no password travels.

: "${USERSTACK_STATE_DIR:=${XDG_STATE_HOME:-$HOME/.local/state}/userstack}"
BACKUP_DIR=${BACKUP_DIR:-$USERSTACK_STATE_DIR/backups}
if ! declare -p DOCKER >/dev/null 2>&1; then DOCKER=(docker); fi

# _in_db CONTAINER SCRIPT : run SCRIPT with sh inside CONTAINER (stdin passed through).
_in_db() { "${DOCKER[@]}" exec -i "$1" sh -c "$2"; }

# dump_rows FILE CONTAINER : the number of rows of the users table inside the dump FILE.
dump_rows() {
    # shellcheck disable=SC2016 # expanded inside the container
    _in_db "$2" 'pg_restore --data-only --table=users -f - 2>/dev/null' <"$1" |
        awk '/^COPY /{on=1; next} /^\\\.$/{on=0} on{n++} END{print n+0}'
}

# db_rows CONTAINER : the number of rows of the users table in the running database.
db_rows() {
    # shellcheck disable=SC2016 # expanded inside the container
    _in_db "$1" 'psql -Atq -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "SELECT count(*) FROM users"'
}

# backup_db CONTAINER FILE KEY : pg_dump -Fc streamed out of CONTAINER into FILE on this host;
# prints the file's size and the users in it, and remembers FILE as KEY's last backup.
backup_db() {
    local container=$1 file=$2 key=$3 size rows
    [[ -n $file ]] || file=$BACKUP_DIR/userstack-$key-$(date -u +%Y%m%dT%H%M%SZ).dump
    mkdir -p "$(dirname "$file")"
    # Written beside the target first: a failed dump never replaces a good file.
    run_sh "$(printf '%q ' "${DOCKER[@]}")exec $(printf '%q' "$container") sh -c 'exec pg_dump -Fc -U \"\$POSTGRES_USER\" -d \"\$POSTGRES_DB\"' > $(printf '%q' "$file.partial")"
    mv -f "$file.partial" "$file"
    chmod 0600 "$file"
    size=$(stat -c %s "$file")
    rows=$(dump_rows "$file" "$container")
    mkdir -p "$BACKUP_DIR"
    printf '%s\n' "$(realpath "$file")" >"$BACKUP_DIR/last-$key"
    log "backup: $(realpath "$file"): $size bytes, $rows users"
    # shellcheck disable=SC2034 # read by the scripts that source this file
    BACKUP_FILE=$(realpath "$file") BACKUP_ROWS=$rows
}

# restore_db CONTAINER FILE : load the dump FILE into CONTAINER's (new, empty) database, in one
# transaction; prints the users it holds afterwards.
restore_db() {
    local container=$1 file=$2 want got
    [[ -r $file ]] || die "$file is not a readable file"
    want=$(dump_rows "$file" "$container")
    run_sh "$(printf '%q ' "${DOCKER[@]}")exec -i $(printf '%q' "$container") sh -c 'exec pg_restore --exit-on-error --single-transaction --no-owner -U \"\$POSTGRES_USER\" -d \"\$POSTGRES_DB\"' < $(printf '%q' "$file")"
    got=$(db_rows "$container")
    log "restored $(realpath "$file"): $want users in the dump, $got in the database"
    [[ $got == "$want" ]] || die "the database has $got users after the restore, the dump $want"
}

# sync_db_password CONTAINER : make the database role's password the one in the container's
# password file (for a volume initialised with another one). Runs as the role over the trusted
# socket; the password goes to psql on stdin, dollar-quoted, never on a command line.
sync_db_password() {
    # shellcheck disable=SC2016 # expanded inside the container
    run "${DOCKER[@]}" exec "$1" sh -c 'set -eu
pw=$(cat "${POSTGRES_PASSWORD_FILE:-/run/secrets/db_password}")
tag=pw$(od -An -N8 -tx1 /dev/urandom | tr -d " \n")
case $pw in *"\$$tag\$"*) echo "cannot quote the password" >&2; exit 1 ;; esac
printf "ALTER ROLE \"%s\" PASSWORD \$%s\$%s\$%s\$;\n" "$POSTGRES_USER" "$tag" "$pw" "$tag" |
    psql -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"
echo "the password of role $POSTGRES_USER is now the one in its password file"'
}

# last_backup KEY : "FILE (N bytes, DATE)" of KEY's last backup, or "none".
last_backup() {
    local file
    if [[ -r $BACKUP_DIR/last-$1 ]] && file=$(cat "$BACKUP_DIR/last-$1") && [[ -f $file ]]; then
        printf '%s (%s bytes, %s)' "$file" "$(stat -c %s "$file")" "$(date -u -r "$file" +%Y-%m-%dT%H:%M:%SZ)"
    else
        printf 'none'
    fi
}

# confirm_destroy WHAT KEY YES BACKUP-COMMAND : ask before destroying WHAT (a data volume),
# naming the last backup. YES=1 (--yes) skips the question; without a terminal to ask on, the
# answer is no.
confirm_destroy() {
    local what=$1 key=$2 yes=$3 how=$4 answer
    warn "this destroys $what: every user in it is lost"
    log "last backup: $(last_backup "$key")${how:+ (a new one: $how)}"
    ((yes)) && { log "--yes: going ahead"; return 0; }
    [[ -t 0 ]] || die "refusing to destroy $what without confirmation: run it in a terminal, or add --yes"
    read -r -p "Type 'yes' to destroy $what: " answer
    [[ $answer == yes ]] || die "not confirmed; nothing was destroyed"
}
