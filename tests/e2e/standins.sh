#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# End-to-end test of the PostgreSQL and Redis stand-in images (deploy/images) on the real Docker
# engine: they must honour the parts of the official images' contract the deploy files rely on.
#
#   tests/e2e/standins.sh
#
# Builds the two images first if their sources changed (deploy/images/build-standins.sh is
# idempotent). Everything it creates is named userstack-standin-test-<pid>-* and removed on exit,
# whatever happened. Exits 1 if a check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"
: "${USERSTACK_SECTION:=Stand-in images}"
started=$SECONDS

step "Prerequisites"
command -v docker >/dev/null || die "docker is missing: apt-get install docker.io (see /work/shared/docker-here.md)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running? see /work/shared/docker-here.md)"
command -v jq >/dev/null || die "jq is missing: run .ci/install.sh (as root)"
# shellcheck source=../../deploy/images/standins.env
source "$root/deploy/images/standins.env"
run "$root/deploy/images/build-standins.sh" postgres redis

p=userstack-standin-test-$$-
net=${p}net
vol=${p}pgdata
tmp=$(mktemp -d)
cleanup() {
    local rc=$? ids
    set +e
    log "cleanup: containers, network and volume named ${p}*"
    mapfile -t ids < <(docker ps -aq --filter "name=^${p}")
    ((${#ids[@]} == 0)) || docker rm -f -v "${ids[@]}" >/dev/null
    docker network rm "$net" >/dev/null 2>&1
    docker volume rm "$vol" >/dev/null 2>&1
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

# A generated password, handed to the container as a secret file and to clients through the
# environment (never on a command line).
(umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$tmp/pg_password")
PG_PW=$(<"$tmp/pg_password")
PG_USER=appuser
PG_DB=appdb

# wait_ready SECONDS CONTAINER WHAT CMD... : poll CMD; on timeout show the container's log and die.
wait_ready() {
    local limit=$1 container=$2 what=$3 waited=0
    shift 3
    until "$@" >/dev/null 2>&1; do
        if ((waited >= limit)); then
            docker logs --tail 40 "$container" >&2 || true
            die "timed out after ${limit}s waiting for $what"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "$what (after ${waited}s)"
}

# ---------------------------------------------------------------------------------------------
step "PostgreSQL stand-in ($POSTGRES_IMAGE): image configuration"
pg_config=$(docker image inspect -f '{{json .Config}}' "$POSTGRES_IMAGE")
check "declares VOLUME /var/lib/postgresql/data and PGDATA there" jq -e \
    '(.Volumes | has("/var/lib/postgresql/data")) and (.Env | index("PGDATA=/var/lib/postgresql/data"))' <<<"$pg_config"
check "EXPOSE 5432, STOPSIGNAL SIGINT" jq -e \
    '(.ExposedPorts | has("5432/tcp")) and .StopSignal == "SIGINT"' <<<"$pg_config"
check "ENTRYPOINT docker-entrypoint.sh, CMD postgres" jq -e \
    '.Entrypoint == ["docker-entrypoint.sh"] and .Cmd == ["postgres"]' <<<"$pg_config"
check "labelled as a stand-in, not the official image" jq -e \
    '.Labels["org.opencontainers.image.description"] | test("Stand-in for postgres:13.*NOT the official")' <<<"$pg_config"

step "PostgreSQL stand-in refuses to initialise without a password"
refuses_without_password() {
    local out
    if out=$(timeout 60 docker run --rm --name "${p}nopw" "$POSTGRES_IMAGE" 2>&1); then
        printf 'it started (exit 0):\n%s\n' "$out"
        return 1
    fi
    grep -F 'Error: Database is uninitialized and superuser password is not specified.' <<<"$out" ||
        { printf 'no such message in:\n%s\n' "$out"; return 1; }
}
check "without POSTGRES_PASSWORD: exits non-zero with the official image's message" refuses_without_password

step "PostgreSQL stand-in initialises from POSTGRES_USER, POSTGRES_PASSWORD_FILE, POSTGRES_DB and initdb.d"
mkdir -p "$tmp/initdb"
cat >"$tmp/initdb/01-schema.sql" <<'EOF'
CREATE TABLE init_log (source text NOT NULL, at timestamptz NOT NULL DEFAULT now());
INSERT INTO init_log (source) VALUES ('sql');
EOF
printf "INSERT INTO init_log (source) VALUES ('sql.gz');\n" | gzip >"$tmp/initdb/02-more.sql.gz"
# Not executable, so it is sourced and can use docker_process_sql, as with the official image.
cat >"$tmp/initdb/03-record.sh" <<'EOF'
docker_process_sql <<<"INSERT INTO init_log (source) VALUES ('sh');"
echo ran >>"$PGDATA/standin-test-init-sh-runs"
EOF
run docker network create "$net"
run docker volume create "$vol"
pg_run() { # pg_run NAME [docker run options]... : the database container, alias db, on the volume
    local name=$1
    shift
    run docker run -d --name "$name" --network "$net" --network-alias db \
        -v "$vol:/var/lib/postgresql/data" -v "$tmp/initdb:/docker-entrypoint-initdb.d:ro" \
        -v "$tmp/pg_password:/run/secrets/pg_password:ro" \
        -e POSTGRES_USER=$PG_USER -e POSTGRES_DB=$PG_DB "$@" "$POSTGRES_IMAGE"
}
pg_run "${p}db" -e POSTGRES_PASSWORD_FILE=/run/secrets/pg_password
# Over TCP: the setup server during initialisation listens on the Unix socket only.
wait_ready 120 "${p}db" "PostgreSQL accepts TCP connections" \
    docker exec "${p}db" pg_isready -h 127.0.0.1 -U $PG_USER -d $PG_DB

# sql CONTAINER QUERY : one value from psql inside the container (local socket).
sql() { docker exec "$1" psql -v ON_ERROR_STOP=1 -U $PG_USER -d $PG_DB -Atc "$2"; }
# remote PASSWORD QUERY... : psql from another container on the network, password via PGPASSWORD.
remote() {
    local pw=$1
    shift
    PGPASSWORD=$pw docker run --rm --name "${p}client-$RANDOM" --network "$net" -e PGPASSWORD \
        "$POSTGRES_IMAGE" psql -v ON_ERROR_STOP=1 -h db -U $PG_USER -d $PG_DB -At "$@"
}
values_are() { # values_are WANT CMD... : CMD prints exactly WANT
    local want=$1 got
    shift
    got=$("$@") || { echo "$got"; return 1; }
    expect_eq "$want" "$got"
}
runs_as() { # runs_as CONTAINER USER COMM : PID 1 is COMM, with USER's uid
    local uid want_uid comm
    uid=$(docker exec "$1" awk '/^Uid:/ {print $2}' /proc/1/status)
    want_uid=$(docker exec "$1" id -u "$2")
    comm=$(docker exec "$1" cat /proc/1/comm)
    expect_eq "$3 uid $want_uid" "$comm uid $uid"
}

check "the deploy health check passes: pg_isready -U $PG_USER -d $PG_DB" \
    docker exec "${p}db" pg_isready -U $PG_USER -d $PG_DB
check "POSTGRES_DB $PG_DB exists, owned by POSTGRES_USER $PG_USER" \
    values_are "$PG_DB|$PG_USER" sql "${p}db" \
    "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
check "the .sql, .sql.gz and .sh init scripts ran, once each" \
    values_are "sh,sql,sql.gz" sql "${p}db" "SELECT string_agg(source, ',' ORDER BY source) FROM init_log"
check "the cluster is UTF8 (en_US.utf8), as the official image's" \
    values_are "UTF8|en_US.utf8" sql "${p}db" \
    "SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database WHERE datname = current_database()"
scram_only() {
    docker exec "${p}db" grep -Ex 'host all all all scram-sha-256' /var/lib/postgresql/data/pg_hba.conf || return 1
    values_are t sql "${p}db" "SELECT rolpassword LIKE 'SCRAM-SHA-256\$%' FROM pg_authid WHERE rolname = '$PG_USER'"
}
check "remote clients must use scram-sha-256 (pg_hba) and the password is stored as SCRAM" scram_only
check "a remote client (another container, PGPASSWORD) connects with the password from the file" \
    values_are "remote ok" remote "$PG_PW" -c "SELECT 'remote ok'"
wrong_password_fails() {
    local out
    if out=$(remote "not-$PG_PW" -c 'SELECT 1' 2>&1); then
        printf 'connected with a wrong password:\n%s\n' "$out"
        return 1
    fi
    grep -F "password authentication failed for user \"$PG_USER\"" <<<"$out" || { echo "$out"; return 1; }
}
check "a remote client with a wrong password is refused" wrong_password_fails
check "the server (PID 1) runs as user postgres" runs_as "${p}db" postgres postgres
check "PGDATA is on the named volume" bash -c \
    "docker inspect -f '{{range .Mounts}}{{.Name}}={{.Destination}} {{end}}' ${p}db | grep -F '$vol=/var/lib/postgresql/data'"
check "a remote client creates a table and writes a row" values_are $'CREATE TABLE\nINSERT 0 1' \
    remote "$PG_PW" -c "CREATE TABLE kept (v text)" -c "INSERT INTO kept VALUES ('survives')"

step "PostgreSQL stand-in stops fast on docker stop (SIGINT, fast shutdown)"
t0=$(date +%s%3N)
run docker stop "${p}db"
stop_ms=$(($(date +%s%3N) - t0))
log "docker stop took ${stop_ms} ms"
check "docker stop took ${stop_ms} ms (< 5000: no SIGKILL after the 10 s grace)" test "$stop_ms" -lt 5000
check "it exited 0 after a fast shutdown request (SIGINT)" bash -c \
    "[[ \$(docker inspect -f '{{.State.ExitCode}}' ${p}db) == 0 ]] &&
     docker logs ${p}db 2>&1 | grep -F 'received fast shutdown request'"

step "PostgreSQL stand-in: a new container on the same volume keeps the data and does not re-initialise"
run docker rm -f "${p}db"
# A different password in the environment: ignored, since the database already exists.
POSTGRES_PASSWORD="other-$PG_PW" pg_run "${p}db2" -e POSTGRES_PASSWORD
wait_ready 120 "${p}db2" "the second container accepts TCP connections" \
    docker exec "${p}db2" pg_isready -h 127.0.0.1 -U $PG_USER -d $PG_DB
check "it skipped initialisation" bash -c \
    "docker logs ${p}db2 2>&1 | grep -F 'appears to contain a database; Skipping initialization'"
check "the row written before is there" values_are "survives" sql "${p}db2" "SELECT v FROM kept"
check "the init scripts did not run again (3 rows in init_log, the .sh ran once)" bash -c \
    "[[ \$(docker exec ${p}db2 psql -U $PG_USER -d $PG_DB -Atc 'SELECT count(*) FROM init_log') == 3 ]] &&
     [[ \$(docker exec ${p}db2 cat /var/lib/postgresql/data/standin-test-init-sh-runs) == ran ]]"
check "the original password still works (no re-init with the new one)" \
    values_are "1" remote "$PG_PW" -c "SELECT count(*) FROM kept"
# docker rm -f on a running server is a SIGKILL: committed data must survive crash recovery.
run docker rm -f "${p}db2"
pg_run "${p}db3" -e POSTGRES_PASSWORD_FILE=/run/secrets/pg_password
wait_ready 120 "${p}db3" "a third container (after a SIGKILL) accepts TCP connections" \
    docker exec "${p}db3" pg_isready -h 127.0.0.1 -U $PG_USER -d $PG_DB
check "after docker rm -f of the running server, the data is intact" values_are "survives" sql "${p}db3" "SELECT v FROM kept"
run docker rm -f "${p}db3"

# ---------------------------------------------------------------------------------------------
step "Redis stand-in ($REDIS_IMAGE)"
redis_config=$(docker image inspect -f '{{json .Config}}' "$REDIS_IMAGE")
check "WORKDIR /data, VOLUME /data, EXPOSE 6379, CMD redis-server" jq -e \
    '.WorkingDir == "/data" and (.Volumes | has("/data")) and (.ExposedPorts | has("6379/tcp")) and .Cmd == ["redis-server"]' \
    <<<"$redis_config"
check "labelled as a stand-in, not the official image" jq -e \
    '.Labels["org.opencontainers.image.description"] | test("Stand-in for redis:7.*NOT the official")' <<<"$redis_config"
run docker run -d --name "${p}redis" --network "$net" --network-alias cache "$REDIS_IMAGE"
wait_ready 60 "${p}redis" "Redis answers PING" docker exec "${p}redis" redis-cli ping
redis_remote() { docker run --rm --name "${p}rclient-$RANDOM" --network "$net" "$REDIS_IMAGE" redis-cli -h cache "$@"; }
check "the deploy health check passes: redis-cli ping answers PONG" \
    values_are PONG docker exec "${p}redis" redis-cli ping
# Protected mode (Debian's default) would answer a non-loopback client with DENIED.
check "SET from another container" values_are OK redis_remote SET standin-test "hello from a client"
check "GET from another container" values_are "hello from a client" redis_remote GET standin-test
check "protected mode is off" values_are $'protected-mode\nno' docker exec "${p}redis" redis-cli config get protected-mode
check "the server (PID 1) runs as user redis" runs_as "${p}redis" redis redis-server
check "the data dir is /data and a SAVE lands there, owned by redis" bash -c \
    "[[ \$(docker exec ${p}redis redis-cli config get dir | tail -n 1) == /data ]] &&
     [[ \$(docker exec ${p}redis redis-cli save) == OK ]] &&
     [[ \$(docker exec ${p}redis stat -c %U /data/dump.rdb) == redis ]]"

step "Result"
log "standins test took $((SECONDS - started))s"
((CHECKS_FAILED == 0)) || die "$CHECKS_FAILED check(s) failed"
log "all checks passed"
