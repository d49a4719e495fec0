#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# End-to-end test of task 1 on the real Docker engine: deploy/manual/up.sh brings the stack up
# (with the stand-in images: this machine has no registry), the API answers as the Flask app did,
# the app runs non-root and healthy, a second run changes nothing, the data survives losing the
# containers, and down.sh removes everything but the volume (--purge: that too). Security and
# data safety: the API's bearer tokens (401s, open routes, rotation without a restart), the admin
# port unpublished, Redis refusing a client without its password, every hardening item in
# `docker inspect` (deploy/lib/check-hardening.sh), backup -> purge -> restore finding every
# user, --purge refusing without confirmation, and a new database password on an initialised
# volume without a restart loop.
#
#   tests/e2e/manual.sh            APP_PORT=NNNN to choose the port (default: the first free from 5000)
#
# Cleans up on exit whatever happened (down.sh --purge). Refuses to start if a userstack stack
# already exists on this engine, because cleaning up would destroy it. Exits 1 if a check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"
export USERSTACK_SECTION="Task 1 — by hand"
up=$root/deploy/manual/up.sh
down=$root/deploy/manual/down.sh
started=$SECONDS

step "Prerequisites"
for tool in docker curl jq ss sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing: run .ci/install.sh (as root)"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running? see /work/shared/docker-here.md)"
docker buildx version >/dev/null 2>&1 ||
    die "docker buildx is missing (BuildKit builds need it with Docker client 23+): run .ci/install.sh"
[[ -x "$root/deploy/images/build-standins.sh" && -f "$root/deploy/images/standins.env" ]] ||
    die "deploy/images/build-standins.sh and standins.env are missing (the stand-in images)"
for thing in container:userstack-app container:userstack-redis container:userstack-db \
    network:userstack-net volume:userstack-pgdata; do
    if docker "${thing%%:*}" inspect "${thing#*:}" >/dev/null 2>&1; then
        die "${thing/:/ } already exists; this test would destroy it. Remove it first: deploy/manual/down.sh --purge"
    fi
done

# Anonymous volumes (e.g. redis's /data) must go with their containers; count them to show it.
dangling_before=$(docker volume ls -q --filter dangling=true | wc -l)

tmp=$(mktemp -d)
cleanup() {
    local rc=$?
    set +e
    log "cleanup: deploy/manual/down.sh --purge --yes"
    "$down" --purge --yes
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

# A generated password, handed over as a file (never on a command line).
(umask 077 && head -c 24 /dev/urandom | base64 >"$tmp/pg_password")
unset POSTGRES_PASSWORD
export POSTGRES_PASSWORD_FILE=$tmp/pg_password
export SECRETS_DIR=$tmp/secrets BACKUP_DIR=$tmp/backups
unset API_TOKEN_FILE REDIS_PASSWORD_FILE
export APP_BIND=${APP_BIND:-127.0.0.1}
if [[ -z "${APP_PORT:-}" ]]; then
    for port in $(seq 5000 5099); do
        [[ -z "$(ss -Htln "sport = :$port")" ]] && { APP_PORT=$port; break; }
    done
    [[ -n "${APP_PORT:-}" ]] || die "no free TCP port in 5000-5099"
fi
export APP_PORT
url=http://127.0.0.1:$APP_PORT
log "the app will be published on $APP_BIND:$APP_PORT"

# The bearer token up.sh generated, as a curl header file: never on a command line.
auth=$tmp/auth-header
use_token() { printf 'Authorization: Bearer %s\n' "$1" >"$auth"; }
first_token() { grep -v '^#' "$SECRETS_DIR/api_tokens" | head -n1; }
# status_of URL [CURL-ARGS...] : the HTTP status of GET URL.
status_of() { local u=$1; shift; curl -sS -o /dev/null -w '%{http_code}' "$@" "$u"; }

# body_is URL WANT : GET URL answers WANT exactly (byte for byte: a trailing newline would show).
body_is() {
    local got
    got=$(curl -sS --fail-with-body "$1" && printf x) || return 1
    expect_eq "$2" "${got%x}"
}
# user_is ID NAME EMAIL : GET /users/ID is that user.
user_is() {
    local got
    got=$(curl -sS --fail-with-body -H "@$auth" "$url/users/$1") || { echo "$got"; return 1; }
    jq -e --argjson id "$1" --arg name "$2" --arg email "$3" \
        '.id == $id and .name == $name and .email == $email and (.created_at | type) == "string"' \
        <<<"$got" || { echo "$got"; return 1; }
}
# stack_ids : the ids of the three containers, one line each (empty if one is missing).
stack_ids() {
    local name
    for name in userstack-db userstack-redis userstack-app; do
        docker container inspect -f '{{.Name}} {{.Id}}' "$name" 2>/dev/null || echo "$name missing"
    done
}
# password_not_in_env CONTAINER : the generated password is nowhere in its configuration.
password_not_in_env() {
    # Not a pipe into grep -q: under pipefail an early match (SIGPIPE to docker) reads as none.
    if grep -qF -- "$(cat "$tmp/pg_password")" <<<"$(docker inspect "$1")"; then
        echo "the password is visible in docker inspect $1"
        return 1
    fi
}
all_healthy() {
    local name
    for name in userstack-db userstack-redis userstack-app; do
        [[ "$(docker inspect -f '{{.State.Health.Status}}' "$name" 2>&1)" == healthy ]] ||
            { echo "$name is not healthy"; return 1; }
    done
}

step "deploy/manual/up.sh --standins (builds the stand-ins and the app image if needed)"
t0=$SECONDS
rc=0
"$up" --standins || rc=$?
log "up.sh took $((SECONDS - t0))s"
check "deploy/manual/up.sh --standins exits 0" expect_eq 0 "$rc" || die "the stack did not come up"
use_token "$(first_token)"

step "The API answers as the Flask app did"
check "GET / is exactly 'Hello, Docker Multi-Container!'" body_is "$url/" 'Hello, Docker Multi-Container!'
# up.sh's own final check already set the cache key: start from an empty cache.
run docker exec userstack-redis sh -c 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli FLUSHALL'
check "GET /cache (empty cache) is 'Cache Miss: Key Set'" body_is "$url/cache" 'Cache Miss: Key Set'
check "GET /cache (again) is 'Cache Hit: Hello from Redis Cache!'" \
    body_is "$url/cache" 'Cache Hit: Hello from Redis Cache!'
run curl -sS --fail-with-body -w '\n' -H "@$auth" "$url/users"
check "GET /users is a JSON array holding the three sample users" \
    jq -e 'type == "array" and ([.[].email] | contains(["ada@example.com", "alan@example.com", "grace@example.com"]))' \
    <<<"$RUN_OUTPUT"

email="e2e-$$-$RANDOM@example.com"
body=$(jq -nc --arg email "$email" '{name: "E2E Tester", email: $email}')
run curl -sS -D "$tmp/post.headers" -w '\n%{http_code}\n' -X POST -H "@$auth" \
    -H 'Content-Type: application/json' -d "$body" "$url/users"
post_code=${RUN_OUTPUT##*$'\n'}
id=$(head -n1 <<<"$RUN_OUTPUT" | jq -r '.id // empty' 2>/dev/null || true)
check "POST /users answers 201" expect_eq 201 "$post_code"
check "POST /users gives Location: /users/{id}" \
    expect_eq "/users/$id" "$(tr -d '\r' <"$tmp/post.headers" | sed -n 's/^[Ll]ocation: *//p')"
check "GET /users/{id} returns what was written" user_is "${id:-0}" "E2E Tester" "$email"
run curl -sS -w '\n%{http_code}\n' -X POST -H 'Content-Type: application/json' -H "@$auth" \
    -d "$(jq -nc --arg email "${email^^}" '{name: "Dup", email: $email}')" "$url/users"
check "POST /users with the same email in capitals answers 409" expect_eq 409 "${RUN_OUTPUT##*$'\n'}"

step "The API's door: bearer tokens on /users, the original routes open"
challenge() { curl -sS -o /dev/null -D - "$@" "$url/users" | tr -d '\r' | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: //p'; }
run curl -sS -i -w '\n' "$url/users"
check "GET /users without a token is 401" expect_eq 401 "$(status_of "$url/users")"
check "... with WWW-Authenticate: Bearer realm=\"userstack\"" expect_eq 'Bearer realm="userstack"' "$(challenge)"
check "... and a problem+json body" jq -e '.status == 401 and .type == "urn:userstack:problem:unauthorized"' \
    <<<"$(curl -sS "$url/users")"
check "GET /users with a wrong token is 401 (error=\"invalid_token\")" expect_eq \
    'Bearer realm="userstack", error="invalid_token"' "$(challenge -H 'Authorization: Bearer not-our-token-0123456789')"
check "POST /users without a token is 401" expect_eq 401 "$(status_of "$url/users" -X POST \
    -H 'Content-Type: application/json' -d '{"name":"Mallory","email":"mallory@example.com"}')"
check "GET /users with the token is 200" expect_eq 200 "$(status_of "$url/users" -H "@$auth")"
for path in / /cache /healthz; do
    check "GET $path needs no token (200)" expect_eq 200 "$(status_of "$url$path")"
done
check "the token is not in docker inspect userstack-app" bash -c "! docker inspect userstack-app | grep -qF -- '$(first_token)'"
check "the token is not in the app's log" bash -c "! docker logs userstack-app 2>&1 | grep -qF -- '$(first_token)'"

step "Token rotation: a second token, then the first one removed, without restarting the app"
old_token=$(first_token)
new_token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
app_id=$(docker inspect -f '{{.Id}}' userstack-app)
printf '# rotation\n%s\n%s\n' "$old_token" "$new_token" >"$tmp/tokens"
rc=0; API_TOKEN_FILE=$tmp/tokens SKIP_BUILD=1 SAMPLE_USERS=0 "$up" --standins || rc=$?
check "up.sh with API_TOKEN_FILE holding two tokens exits 0" expect_eq 0 "$rc"
# token_gets TOKEN STATUS : GET /users with TOKEN answers STATUS.
token_gets() { [[ $(status_of "$url/users" -H "Authorization: Bearer $1") == "$2" ]]; }
check "the old token works" token_gets "$old_token" 200
check "the new token works (within 10 s: the app re-reads the file)" \
    wait_until 10 "new token accepted" token_gets "$new_token" 200
printf '%s\n' "$new_token" >"$tmp/tokens"
rc=0; API_TOKEN_FILE=$tmp/tokens SKIP_BUILD=1 SAMPLE_USERS=0 "$up" --standins || rc=$?
check "up.sh with only the new token exits 0" expect_eq 0 "$rc"
check "the old token is refused (within 10 s)" wait_until 10 "old token refused" token_gets "$old_token" 401
check "the new token still works" token_gets "$new_token" 200
check "the app container was not replaced or restarted" expect_eq "$app_id 0" \
    "$(docker inspect -f '{{.Id}} {{.RestartCount}}' userstack-app)"
use_token "$new_token"
export API_TOKEN_FILE=$tmp/tokens

step "The admin listener: /readyz and /metrics inside the container network only"
run docker port userstack-app
check "only port 5000 of the app is published (not the admin port 9000)" expect_eq "5000/tcp" \
    "$(docker port userstack-app | awk '{print $1}' | sort -u | paste -sd' ')"
check "GET /readyz on the public port is 404" expect_eq 404 "$(status_of "$url/readyz" -H "@$auth")"
check "GET /metrics on the public port is 404" expect_eq 404 "$(status_of "$url/metrics" -H "@$auth")"
run docker exec userstack-app userstack ready
check "userstack ready (the admin port, inside the container) says ready" grep -q '"status":"ready"' <<<"$RUN_OUTPUT"

step "Redis has a password; PostgreSQL and Redis are on an internal network"
REDIS_IMAGE=$(docker inspect -f '{{.Config.Image}}' userstack-redis)
# A client on the backend network, as anything that got onto it would be.
try docker run --rm --network userstack-backend --entrypoint redis-cli "$REDIS_IMAGE" -h redis ping || true
check "a Redis client without the password is refused (NOAUTH)" grep -q NOAUTH <<<"$RUN_OUTPUT"
try docker exec userstack-redis redis-cli ping || true
check "... also on Redis's own loopback" grep -q NOAUTH <<<"$RUN_OUTPUT"
run docker exec userstack-redis sh -c 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli config get protected-mode'
check "Redis runs with protected mode on" grep -qx yes <<<"$RUN_OUTPUT"
check "the Redis password is not in docker inspect userstack-redis or userstack-app" bash -c \
    "! docker inspect userstack-redis userstack-app | grep -qF -- '$(cat "$SECRETS_DIR/redis_password")'"
check "userstack-backend is internal" expect_eq true "$(docker network inspect -f '{{.Internal}}' userstack-backend)"
# An address outside, by IP (no DNS needed): reachable from the app's network, not from the backend.
outside=$(getent ahostsv4 deb.debian.org | awk 'NR == 1 {print $1}')
reach() { docker run --rm --network "$1" --entrypoint bash "$REDIS_IMAGE" -c "timeout 5 bash -c 'exec 3<>/dev/tcp/$outside/80'"; }
check "from userstack-net, $outside:80 is reachable (the control)" reach userstack-net
unreachable() { ! reach "$1"; }
check "from userstack-backend, it is not (no route out)" unreachable userstack-backend

step "Hardening: every item of deploy/lib/services.json, as docker inspect reports it"
check "deploy/lib/check-hardening.sh passes on the three containers" \
    "$root/deploy/lib/check-hardening.sh" --filter 'name=^userstack-'
run "$root/deploy/lib/check-hardening.sh" --filter 'name=^userstack-'

step "The app container: non-root and healthy"
run docker inspect -f '{{.Config.User}} {{.State.Health.Status}}' userstack-app
run docker top userstack-app -o uid,pid,args
app_pid=$(docker inspect -f '{{.State.Pid}}' userstack-app)
check "the image runs as user 65532:65532" \
    expect_eq 65532:65532 "$(docker inspect -f '{{.Config.User}}' userstack-app)"
check "the app's process has uid 65532" \
    expect_eq 65532 "$(awk '/^Uid:/ {print $2}' "/proc/$app_pid/status")"
check "the app container's health is 'healthy'" \
    expect_eq healthy "$(docker inspect -f '{{.State.Health.Status}}' userstack-app)"
check "the password is not visible in docker inspect userstack-app" password_not_in_env userstack-app
check "the password is not visible in docker inspect userstack-db" password_not_in_env userstack-db
run docker image inspect -f '{{.Size}}' userstack:latest
image_size=$RUN_OUTPUT
log "app image size: $image_size bytes ($((image_size / 1000000)) MB)"
check "the app image is under 40 MB" test "$image_size" -lt 40000000

step "Idempotent: a second up.sh keeps the same containers"
ids_before=$(stack_ids)
image_before=$(docker image inspect -f '{{.Id}}' userstack:latest)
t0=$SECONDS
rc=0
"$up" --standins || rc=$?
log "second up.sh took $((SECONDS - t0))s"
check "the second deploy/manual/up.sh --standins exits 0" expect_eq 0 "$rc"
if [[ "$(docker image inspect -f '{{.Id}}' userstack:latest)" == "$image_before" ]]; then
    check "the same three containers, not new ones" expect_eq "$ids_before" "$(stack_ids)"
else
    # Someone committed to the app's sources meanwhile: a new image, so a new app container is
    # right; PostgreSQL and Redis must still be the same.
    log "the app image changed during the test (new commits to its sources): app replaced"
    check "the same PostgreSQL and Redis containers, not new ones" \
        expect_eq "$(head -n2 <<<"$ids_before")" "$(stack_ids | head -n2)"
fi
check "exactly one container of each" expect_eq 3 \
    "$(docker ps -aq --filter 'name=^/?userstack-(db|redis|app)$' | wc -l)"
check "all three containers are healthy" all_healthy

step "The data lives in the volume: lose the containers, recreate them"
run docker rm -f userstack-db userstack-app
rc=0
SKIP_BUILD=1 "$up" --standins || rc=$?
check "SKIP_BUILD=1 deploy/manual/up.sh --standins recreates them (exit 0)" expect_eq 0 "$rc"
check "all three containers are healthy" all_healthy
check "the user created before survived (GET /users/$id)" user_is "${id:-0}" "E2E Tester" "$email"

step "Backup -> purge -> restore: every user comes back"
run curl -sS --fail-with-body -H "@$auth" "$url/users?limit=1000"
users_before=$(jq -c 'map({id, name, email}) | sort_by(.id)' <<<"$RUN_OUTPUT")
log "users before the backup: $(jq length <<<"$users_before")"
run "$root/deploy/manual/backup.sh" "$tmp/backup.dump"
check "backup.sh wrote a non-empty file" test -s "$tmp/backup.dump"
check "backup.sh printed the number of users in it" \
    grep -q "backup: .*: [0-9]* bytes, $(jq length <<<"$users_before") users" <<<"$RUN_OUTPUT"
rc=0; try "$down" --purge </dev/null || rc=$?
check "down.sh --purge without --yes and without a terminal refuses" test "$rc" != 0
check "... names the last backup" grep -q "last backup: $tmp/backup.dump" <<<"$RUN_OUTPUT"
check "... and keeps the volume and the containers" bash -c \
    'docker volume inspect userstack-pgdata >/dev/null && docker inspect userstack-db >/dev/null'
run "$down" --purge --yes
check "down.sh --purge --yes removed the volume" bash -c '! docker volume inspect userstack-pgdata >/dev/null 2>&1'
rc=0
SKIP_BUILD=1 SAMPLE_USERS=0 "$root/deploy/manual/restore.sh" "$tmp/backup.dump" --standins || rc=$?
check "restore.sh FILE (a new volume) exits 0" expect_eq 0 "$rc"
use_token "$new_token"
run curl -sS --fail-with-body -H "@$auth" "$url/users?limit=1000"
check "every user is back with its id, name and email" expect_eq "$users_before" \
    "$(jq -c 'map({id, name, email}) | sort_by(.id)' <<<"$RUN_OUTPUT")"
check "the user created before is there (GET /users/$id)" user_is "${id:-0}" "E2E Tester" "$email"
rc=0; try "$root/deploy/manual/restore.sh" "$tmp/backup.dump" --standins || rc=$?
check "restore.sh refuses to restore over an existing volume" test "$rc" != 0

step "A new PostgreSQL password on the initialised volume: up.sh again, no restart loop"
(umask 077 && head -c 24 /dev/urandom | base64 >"$tmp/pg_password.new")
rc=0
POSTGRES_PASSWORD_FILE=$tmp/pg_password.new SKIP_BUILD=1 SAMPLE_USERS=0 "$up" --standins || rc=$?
check "up.sh with the new password exits 0" expect_eq 0 "$rc"
export POSTGRES_PASSWORD_FILE=$tmp/pg_password.new
check "all three containers are healthy" all_healthy
check "the app has not restarted" expect_eq 0 "$(docker inspect -f '{{.RestartCount}}' userstack-app)"
check "the users are still served" user_is "${id:-0}" "E2E Tester" "$email"
# psql from another container on the backend network, as the app connects (inside the db
# container, 127.0.0.1 is trusted without a password). The password goes in the environment of
# docker run (-e NAME without a value), never on a command line.
logs_in() {
    PGPASSWORD=$(cat "$1") docker run --rm --network userstack-backend -e PGPASSWORD --entrypoint psql \
        "$(docker inspect -f '{{.Config.Image}}' userstack-db)" -h db -U postgres -d mydb -Atc 'select 1'
}
check "the new password logs in over TCP" logs_in "$tmp/pg_password.new"
refused() { ! logs_in "$1"; }
check "the old password no longer does" refused "$tmp/pg_password"

step "deploy/manual/down.sh: nothing left but the volume"
run "$down"
run docker ps -a --filter 'name=^/?userstack-(db|redis|app)$'
check "no userstack containers (docker ps -a)" expect_eq 1 "$(wc -l <<<"$RUN_OUTPUT")"
run docker network ls --filter 'name=^userstack-(net|backend)$'
check "no network userstack-net or userstack-backend (docker network ls)" expect_eq 1 "$(wc -l <<<"$RUN_OUTPUT")"
run docker volume ls --filter 'name=^userstack-pgdata$'
check "the volume userstack-pgdata is kept" expect_eq 2 "$(wc -l <<<"$RUN_OUTPUT")"
check "down.sh again succeeds (idempotent)" "$down"

step "deploy/manual/down.sh --purge --yes: the volume goes too"
run "$down" --purge --yes
run docker volume ls --filter 'name=^userstack-pgdata$'
check "no volume userstack-pgdata" expect_eq 1 "$(wc -l <<<"$RUN_OUTPUT")"
check "no anonymous volume left behind" \
    expect_eq "$dangling_before" "$(docker volume ls -q --filter dangling=true | wc -l)"

step "Summary"
log "app image userstack:latest: $image_size bytes; test took $((SECONDS - started))s"
((CHECKS_FAILED == 0)) || die "$CHECKS_FAILED check(s) failed"
log "all checks passed"
