#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# End-to-end test of task 1 on the real Docker engine: deploy/manual/up.sh brings the stack up
# (with the stand-in images: this machine has no registry), the API answers as the Flask app did,
# the app runs non-root and healthy, a second run changes nothing, the data survives losing the
# containers, and down.sh removes everything but the volume (--purge: that too).
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
    log "cleanup: deploy/manual/down.sh --purge"
    "$down" --purge
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

# A generated password, handed over as a file (never on a command line).
(umask 077 && head -c 24 /dev/urandom | base64 >"$tmp/pg_password")
unset POSTGRES_PASSWORD
export POSTGRES_PASSWORD_FILE=$tmp/pg_password
export SECRETS_DIR=$tmp/secrets
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

# body_is URL WANT : GET URL answers WANT exactly (byte for byte: a trailing newline would show).
body_is() {
    local got
    got=$(curl -sS --fail-with-body "$1" && printf x) || return 1
    expect_eq "$2" "${got%x}"
}
# user_is ID NAME EMAIL : GET /users/ID is that user.
user_is() {
    local got
    got=$(curl -sS --fail-with-body "$url/users/$1") || { echo "$got"; return 1; }
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
    if docker inspect "$1" | grep -qF -- "$(cat "$tmp/pg_password")"; then
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

step "The API answers as the Flask app did"
check "GET / is exactly 'Hello, Docker Multi-Container!'" body_is "$url/" 'Hello, Docker Multi-Container!'
# up.sh's own final check already set the cache key: start from an empty cache.
run docker exec userstack-redis redis-cli FLUSHALL
check "GET /cache (empty cache) is 'Cache Miss: Key Set'" body_is "$url/cache" 'Cache Miss: Key Set'
check "GET /cache (again) is 'Cache Hit: Hello from Redis Cache!'" \
    body_is "$url/cache" 'Cache Hit: Hello from Redis Cache!'
run curl -sS --fail-with-body -w '\n' "$url/users"
check "GET /users is a JSON array holding the three sample users" \
    jq -e 'type == "array" and ([.[].email] | contains(["ada@example.com", "alan@example.com", "grace@example.com"]))' \
    <<<"$RUN_OUTPUT"

email="e2e-$$-$RANDOM@example.com"
body=$(jq -nc --arg email "$email" '{name: "E2E Tester", email: $email}')
run curl -sS -D "$tmp/post.headers" -w '\n%{http_code}\n' -X POST \
    -H 'Content-Type: application/json' -d "$body" "$url/users"
post_code=${RUN_OUTPUT##*$'\n'}
id=$(head -n1 <<<"$RUN_OUTPUT" | jq -r '.id // empty' 2>/dev/null || true)
check "POST /users answers 201" expect_eq 201 "$post_code"
check "POST /users gives Location: /users/{id}" \
    expect_eq "/users/$id" "$(tr -d '\r' <"$tmp/post.headers" | sed -n 's/^[Ll]ocation: *//p')"
check "GET /users/{id} returns what was written" user_is "${id:-0}" "E2E Tester" "$email"
run curl -sS -w '\n%{http_code}\n' -X POST -H 'Content-Type: application/json' \
    -d "$(jq -nc --arg email "${email^^}" '{name: "Dup", email: $email}')" "$url/users"
check "POST /users with the same email in capitals answers 409" expect_eq 409 "${RUN_OUTPUT##*$'\n'}"

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

step "deploy/manual/down.sh: nothing left but the volume"
run "$down"
run docker ps -a --filter 'name=^/?userstack-(db|redis|app)$'
check "no userstack containers (docker ps -a)" expect_eq 1 "$(wc -l <<<"$RUN_OUTPUT")"
run docker network ls --filter 'name=^userstack-net$'
check "no network userstack-net (docker network ls)" expect_eq 1 "$(wc -l <<<"$RUN_OUTPUT")"
run docker volume ls --filter 'name=^userstack-pgdata$'
check "the volume userstack-pgdata is kept" expect_eq 2 "$(wc -l <<<"$RUN_OUTPUT")"
check "down.sh again succeeds (idempotent)" "$down"

step "deploy/manual/down.sh --purge: the volume goes too"
run "$down" --purge
run docker volume ls --filter 'name=^userstack-pgdata$'
check "no volume userstack-pgdata" expect_eq 1 "$(wc -l <<<"$RUN_OUTPUT")"
check "no anonymous volume left behind" \
    expect_eq "$dangling_before" "$(docker volume ls -q --filter dangling=true | wc -l)"

step "Summary"
log "app image userstack:latest: $image_size bytes; test took $((SECONDS - started))s"
((CHECKS_FAILED == 0)) || die "$CHECKS_FAILED check(s) failed"
log "all checks passed"
