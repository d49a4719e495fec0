#!/usr/bin/env bash
# Entrypoint of the PostgreSQL stand-in (userstack-standin/postgres:13), written for this project
# to the official postgres image's documented contract:
#   POSTGRES_PASSWORD, POSTGRES_USER (postgres), POSTGRES_DB (= user), POSTGRES_INITDB_ARGS,
#   POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD, each of the first four also as *_FILE;
#   initialise only an empty PGDATA; then run /docker-entrypoint-initdb.d/*.sh, *.sql, *.sql.gz
#   (and .sql.xz/.sql.zst when the tool exists) once; drop root for user postgres.
#
# No `set -u`: init scripts ending in .sh are sourced into this shell (as the official image
# does, so they can use docker_process_sql), and they are written for a shell without it.
set -Eeo pipefail

# file_env VAR [DEFAULT] : VAR from $VAR or from the file named by $VAR_FILE (Docker secrets).
file_env() {
    local var=$1 file_var="${1}_FILE" def=${2:-} val
    if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
        echo >&2 "error: both $var and $file_var are set (but are exclusive)"
        exit 1
    fi
    val=$def
    if [[ -n ${!var:-} ]]; then
        val=${!var}
    elif [[ -n ${!file_var:-} ]]; then
        val=$(<"${!file_var}")
    fi
    export "$var"="$val"
    unset "$file_var"
}

setup_env() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=}"
    DATABASE_ALREADY_EXISTS=
    # PG_VERSION is the file initdb writes first and every cluster has.
    if [[ -s $PGDATA/PG_VERSION ]]; then
        DATABASE_ALREADY_EXISTS=true
    fi
}

create_directories() {
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA" || : # may be impossible with --user; postgres will then say why
    mkdir -p /var/run/postgresql || :
    chmod 0775 /var/run/postgresql || :
    if [[ -n ${POSTGRES_INITDB_WALDIR:-} ]]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        [[ $(id -u) != 0 ]] || find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
        chmod 0700 "$POSTGRES_INITDB_WALDIR"
    fi
    if [[ $(id -u) == 0 ]]; then
        find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
        find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
    fi
}

verify_minimum_env() {
    if ((${#POSTGRES_PASSWORD} >= 100)); then
        echo >&2 'WARNING: POSTGRES_PASSWORD is 100+ characters; psql cannot use it via PGPASSWORD.'
    fi
    if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
        cat >&2 <<'EOE'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.

       See PostgreSQL documentation about "trust":
       https://www.postgresql.org/docs/current/auth-trust.html
EOE
        exit 1
    fi
    if [[ $POSTGRES_HOST_AUTH_METHOD == trust ]]; then
        echo >&2 'WARNING: POSTGRES_HOST_AUTH_METHOD=trust lets anyone who reaches the port in without a password.'
    fi
}

init_database_dir() {
    local args=()
    # initdb insists that the current uid has a passwd entry; fake one for `--user` ids.
    if ! getent passwd "$(id -u)" >/dev/null; then
        local wrapper
        for wrapper in {/usr,}/lib{/*,}/libnss_wrapper.so; do
            [[ -s $wrapper ]] || continue
            NSS_WRAPPER_PASSWD=$(mktemp)
            NSS_WRAPPER_GROUP=$(mktemp)
            export LD_PRELOAD=$wrapper NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
            echo "postgres:x:$(id -u):$(id -g):PostgreSQL:$PGDATA:/bin/false" >"$NSS_WRAPPER_PASSWD"
            echo "postgres:x:$(id -g):" >"$NSS_WRAPPER_GROUP"
            break
        done
    fi
    [[ -z ${POSTGRES_INITDB_WALDIR:-} ]] || args+=(--waldir "$POSTGRES_INITDB_WALDIR")
    # POSTGRES_INITDB_ARGS is documented as a shell-quoted string ("--data-checksums -E UTF8").
    # The password goes through a pipe, never a file or the command line.
    if [[ -n $POSTGRES_PASSWORD ]]; then
        eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") "${args[@]}" '"$POSTGRES_INITDB_ARGS"
    else
        eval 'initdb --username="$POSTGRES_USER" "${args[@]}" '"$POSTGRES_INITDB_ARGS"
    fi
    if [[ ${LD_PRELOAD:-} == */libnss_wrapper.so ]]; then
        rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
        unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
    fi
}

# Remote clients ("host" lines) authenticate with the method passwords are stored for:
# scram-sha-256 in this image (password_encryption in the sample config), unless overridden.
setup_hba_conf() {
    [[ ${1:-} != postgres ]] || shift
    local auth
    auth=$(postgres -C password_encryption "$@")
    : "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
}

# A server on the Unix socket only, for setup: nobody can connect over TCP half-initialised.
temp_server_start() {
    [[ ${1:-} != postgres ]] || shift
    set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
    PGUSER=${PGUSER:-$POSTGRES_USER} pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

temp_server_stop() {
    PGUSER=${PGUSER:-postgres} pg_ctl -D "$PGDATA" -m fast -w stop
}

# docker_process_sql [psql args] : psql as the superuser on the setup server (kept under the
# official name: init scripts call it).
docker_process_sql() {
    local runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    [[ -z $POSTGRES_DB ]] || runner+=(--dbname "$POSTGRES_DB")
    PGHOST='' PGHOSTADDR='' "${runner[@]}" "$@"
}

setup_db() {
    local db=$POSTGRES_DB exists
    # Unset for these two calls: they must connect to "postgres", the database may not exist yet.
    exists=$(POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$db" --tuples-only \
        <<<"SELECT 1 FROM pg_database WHERE datname = :'db' ;")
    if [[ -z $exists ]]; then
        POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db" ;'
    fi
}

decompress() { # decompress TOOL FILE : a clear error when the image lacks the tool
    command -v "$1" >/dev/null || { echo >&2 "$0: cannot run $2: $1 is not installed in this image"; exit 1; }
    "$1" -dc "$2"
}

process_init_files() {
    # shellcheck disable=SC2034 # for sourced init scripts written against the official image
    psql=(docker_process_sql)
    local f
    for f; do
        case $f in
        *.sh)
            if [[ -x $f ]]; then
                echo "$0: running $f"
                "$f"
            else
                echo "$0: sourcing $f"
                # shellcheck source=/dev/null
                . "$f"
            fi
            ;;
        *.sql) echo "$0: running $f"; docker_process_sql -f "$f" ;;
        *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | docker_process_sql ;;
        *.sql.xz) echo "$0: running $f"; decompress xz "$f" | docker_process_sql ;;
        *.sql.zst) echo "$0: running $f"; decompress zstd "$f" | docker_process_sql ;;
        *) echo "$0: ignoring $f" ;;
        esac
    done
}

want_help() {
    local arg
    for arg; do
        case $arg in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
    done
    return 1
}

main() {
    # `docker run IMAGE -c shared_buffers=256MB` means the server with those options.
    if [[ ${1:0:1} == - ]]; then
        set -- postgres "$@"
    fi
    if [[ $1 == postgres ]] && ! want_help "$@"; then
        setup_env
        create_directories
        if [[ $(id -u) == 0 ]]; then
            # The environment (with any *_FILE secret now read as root) carries over.
            exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
        fi
        if [[ -z $DATABASE_ALREADY_EXISTS ]]; then
            verify_minimum_env
            # Fail now on an unreadable init dir rather than after a half-done initdb.
            ls /docker-entrypoint-initdb.d/ >/dev/null
            init_database_dir
            setup_hba_conf "$@"
            # Needed when POSTGRES_INITDB_ARGS asks for passwords on local connections too.
            export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
            temp_server_start "$@"
            setup_db
            local init_files
            shopt -s nullglob
            init_files=(/docker-entrypoint-initdb.d/*)
            shopt -u nullglob
            process_init_files "${init_files[@]}"
            temp_server_stop
            unset PGPASSWORD
            printf '\nPostgreSQL init process complete; ready for start up.\n\n'
        else
            printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
        fi
    fi
    exec "$@"
}

# Sourcing this file (e.g. from a derived image's own entrypoint) only defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
