#!/usr/bin/env bash
# tests/e2e/compose.sh : task 2 end to end, on two hosts.
#
# Host A is this machine, where task 1 built the images. Host B is a separate Docker host made
# by tests/e2e/hosts.sh (one host, "hostb": own namespace, daemon, sshd; none of A's images). The test ships the
# task-1 images to B over ssh with deploy/compose/remote.sh, runs the compose project there, and
# checks from A, over B's address: the original routes byte for byte, writes, the image IDs,
# data across down/up, the loss of data on down -v, Redis down and back, PostgreSQL down and back
# (the app recovering without a restart), and finally the offline bundle on B with no images.
# Security and data safety on this path too: the bearer token (401 without it), Redis refusing a
# client without its password, every hardening item in `docker inspect` on B
# (deploy/lib/check-hardening.sh), the admin port unpublished, remote.sh backup -> down
# --volumes -> restore finding every user, down --volumes refusing without --yes, and a new
# database password on the initialised volume without a restart loop.
# Everything it made is removed on exit, also on failure, and that is verified.
#
# Needs: the task-1 images on this host (APP_IMAGE, default userstack:latest, and the images
# named by deploy/images/standins.env), root, docker with the compose plugin, jq, curl, ssh,
# sshd, iproute2. Exits non-zero if any check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"

export USERSTACK_SECTION="Task 2 — compose on a second host"
HOST_A=$USERSTACK_HOST
HOST_B=hostb
HOSTB=("$here/hosts.sh" --name hostb --count 1)
REMOTE=$root/deploy/compose/remote.sh
COMPOSE_FILE=$root/deploy/compose/compose.yaml
export COMPOSE_PROJECT_NAME=userstack
CONTEXT=userstack-hostb-e2e
T_START=$(date +%s%3N)

secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (b-a)/1000}'; }

# --- prerequisites: a missing one is a failure that says what to install --------------------
[[ $EUID -eq 0 ]] || die "run as root (hosts.sh makes a network namespace and a second dockerd)"
for tool in docker jq curl ssh scp ssh-keygen ip nsenter awk; do
    command -v "$tool" >/dev/null || die "$tool is not installed (see .ci/install.sh)"
done
[[ -x /usr/sbin/sshd ]] || die "sshd is not installed: apt-get install openssh-server"
docker compose version >/dev/null 2>&1 || die "docker compose v2 is not installed (.ci/install.sh)"
[[ -r $root/deploy/images/standins.env ]] ||
    die "deploy/images/standins.env is missing (helper A's deploy/images/build-standins.sh)"
# shellcheck source=/dev/null
source "$root/deploy/images/standins.env"
export APP_IMAGE=${APP_IMAGE:-userstack:latest} POSTGRES_IMAGE REDIS_IMAGE
for img in "$APP_IMAGE" "$POSTGRES_IMAGE" "$REDIS_IMAGE"; do
    docker image inspect "$img" >/dev/null 2>&1 ||
        die "image $img is not on this host: build the task-1 images first (Dockerfile, deploy/images/build-standins.sh)"
done

# Another build replacing a tag on A while this runs would make the ID checks fail; the last
# check tells that apart from a shipping fault.
local_ids() { docker image inspect --format '{{.Id}}' "$APP_IMAGE" "$POSTGRES_IMAGE" "$REDIS_IMAGE"; }
IDS_AT_START=$(local_ids)

work=$(mktemp -d)
# The caller's password (POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE) or a generated one, as a
# file: it reaches B only on stdin, never on a command line.
if value=$(secret_value POSTGRES_PASSWORD); then
    (umask 077 && printf '%s' "$value" >"$work/db_password")
else
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/db_password")
fi
unset value POSTGRES_PASSWORD API_TOKEN_FILE REDIS_PASSWORD_FILE
export POSTGRES_PASSWORD_FILE=$work/db_password
# remote.sh keeps the generated Redis password and API token, and the backups, here.
export USERSTACK_STATE_DIR=$work/state
TOKENS=$USERSTACK_STATE_DIR/compose-userstack/api_tokens
AUTH=$work/auth-header

cleanup() {
    local rc=$?
    trap - EXIT
    set +e
    USERSTACK_HOST=$HOST_A
    step "Clean up: everything this test made"
    docker context inspect "$CONTEXT" >/dev/null 2>&1 && run docker context rm -f "$CONTEXT"
    "${HOSTB[@]}" stop || rc=1
    rm -rf "$work"
    check "nothing of host B is left (namespace, veth, bridge, dockerd, sshd, data root)" "${HOSTB[@]}" gone || rc=1
    check "no docker context $CONTEXT is left" bash -c "! docker context inspect $CONTEXT >/dev/null 2>&1" || rc=1
    check "the test's work directory is gone" test ! -e "$work" || rc=1
    ((CHECKS_FAILED == 0)) || rc=1
    log "compose e2e: $CHECKS_FAILED check(s) failed; total $(secs "$T_START" "$(date +%s%3N)") s"
    exit "$rc"
}
trap cleanup EXIT

# --- helpers ---------------------------------------------------------------------------------
# expect NAME CMD... : a check that does not stop the test; the exit status counts them all.
expect() { check "$@" || true; }

# poll SECONDS CMD... : CMD until it succeeds, once a second, at most SECONDS; says how long.
poll() {
    local limit=$1 waited=0 out
    shift
    until out=$("$@" 2>&1); do
        ((waited >= limit)) && { printf '%s\nstill failing after %s s\n' "$out" "$limit"; return 1; }
        sleep 1
        waited=$((waited + 1))
    done
    printf '%s\nafter %s s\n' "$out" "$waited"
}

# get PATH [OUT] : GET from host B's published port; the body goes to OUT (default $work/body),
# the status code is printed.
get() { curl -sS --max-time 10 -H "@$AUTH" -o "${2:-$work/body}" -w '%{http_code}' "$URL$1"; }
# The token remote.sh generated, as a curl header file (never on a command line).
use_token() { printf 'Authorization: Bearer %s\n' "$(grep -v '^#' "$TOKENS" | head -n1)" >"$AUTH"; }
# ready_is STATUS : `userstack ready` inside the app container answers STATUS (the admin port
# is not published, so /readyz is asked from inside).
ready_is() {
    local out
    out=$(on_b exec "$(on_b ps -q --filter label=com.docker.compose.project=userstack --filter label=com.docker.compose.service=app)" userstack ready 2>&1)
    echo "$out"
    grep -q "^HTTP/1.1 $1" <<<"$out"
}

# body_is PATH WANT : 200 and exactly the bytes WANT (no newline added or removed).
body_is() {
    local status
    status=$(get "$1" "$work/b.$$") || return 1
    printf 'HTTP %s, body: %q\n' "$status" "$(cat "$work/b.$$")"
    [[ $status == 200 ]] || return 1
    cmp -s <(printf '%s' "$2") "$work/b.$$" || { printf 'expected: %q\n' "$2"; return 1; }
}

# users_json [JQ-FILTER] : GET /users is 200, a JSON array, and JQ-FILTER holds for it.
users_json() {
    local status
    status=$(get /users "$work/u.$$") || return 1
    printf 'HTTP %s: %s\n' "$status" "$(head -c 600 "$work/u.$$")"
    [[ $status == 200 ]] && jq -e "type == \"array\" and (${1:-true})" "$work/u.$$" >/dev/null
}

has_ada='any(.[]; .email == "ada@example.com" and .name == "Ada Lovelace")'
on_b() { docker -H "$HOSTB_SSH" "$@"; }
no_images_on_b() { local n; n=$(on_b images -q | wc -l); echo "images on B: $n"; [[ $n == 0 ]]; }
volume_on_b() { on_b volume inspect --format '{{.Name}} {{.CreatedAt}}' userstack_pgdata; }
no_volume_on_b() { ! on_b volume inspect userstack_pgdata >/dev/null 2>&1; }
no_project_containers() { local c; c=$(on_b ps -aq --filter label=com.docker.compose.project=userstack); [[ -z $c ]]; }
nothing_on_b() { [[ -z $(on_b ps -aq) && -z $(on_b volume ls -q) ]]; }
pg_unreachable() { ! timeout 3 bash -c "</dev/tcp/$HOSTB_ADDR/5432" 2>/dev/null; }
backend_internal() { [[ $(on_b network inspect --format '{{.Internal}}' userstack_backend) == true ]]; }
only_app_published() {
    local out
    out=$(on_b ps --filter label=com.docker.compose.project=userstack \
        --format '{{.Label "com.docker.compose.service"}} {{.Ports}}')
    echo "$out"
    [[ $(grep -c -- '->' <<<"$out") == 1 ]] && grep -q "^app .*:${APP_PORT:-5000}->5000/tcp" <<<"$out"
}
app_hardened() {
    local out
    out=$(on_b inspect --format 'ro={{.HostConfig.ReadonlyRootfs}} capdrop={{.HostConfig.CapDrop}} secopt={{.HostConfig.SecurityOpt}} user={{.Config.User}} mem={{.HostConfig.Memory}} pids={{.HostConfig.PidsLimit}}' userstack-app-1)
    echo "$out"
    [[ $out =~ ^ro=true\ capdrop=\[ALL\]\ secopt=\[no-new-privileges:true\]\ user=[^\ ]+\ mem=[1-9][0-9]*\ pids=[1-9] ]] &&
        [[ ! $out =~ user=(0|root)(:|\ ) ]]
}
secret_file_ok() {
    local want got
    want="$(docker image inspect --format '{{.Config.User}}' "$APP_IMAGE") 400"
    got=$(ssh "root@$HOSTB_ADDR" stat -c "'%u:%g %a'" "$REMOTE_SECRETS_DIR/db_password") || return 1
    expect_eq "$want" "$got" && echo "$REMOTE_SECRETS_DIR/db_password on host B: $got"
}
secret_mounts_ok() {
    local svc out bad=0
    for svc in db app; do
        out=$(on_b inspect --format '{{range .Mounts}}{{if eq .Destination "/run/secrets/db_password"}}{{.Type}} {{.Source}} rw={{.RW}}{{end}}{{end}}' "userstack-$svc-1")
        echo "$svc: $out"
        [[ $out == "bind $REMOTE_SECRETS_DIR/db_password rw=false" ]] || bad=1
    done
    return "$bad"
}
location_ok() { echo "Location: $1"; [[ $1 =~ ^/users/[0-9A-Za-z-]+$ ]]; }
status_is() { local s; s=$(get "$1" /dev/null) || true; echo "GET $1: $s"; [[ $s == "$2" ]]; }
cache_hits() {
    local s
    s=$(get /cache "$work/c.$$") || true
    echo "GET /cache: $s $(cat "$work/c.$$" 2>/dev/null)"
    [[ $s == 200 && $(cat "$work/c.$$") == "Cache Hit: Hello from Redis Cache!" ]]
}

# The containers' image IDs on host B equal the local images' IDs.
image_ids_match() {
    local svc img want cid got bad=0
    for svc in app db redis; do
        case $svc in app) img=$APP_IMAGE ;; db) img=$POSTGRES_IMAGE ;; redis) img=$REDIS_IMAGE ;; esac
        want=$(docker image inspect --format '{{.Id}}' "$img")
        cid=$(docker -H "$HOSTB_SSH" ps -q --filter "label=com.docker.compose.project=userstack" \
            --filter "label=com.docker.compose.service=$svc")
        got=$(docker -H "$HOSTB_SSH" inspect --format '{{.Image}}' "$cid" 2>/dev/null || true)
        printf '%-5s %s  A=%s  B=%s\n' "$svc" "$img" "${want:7:12}" "${got:7:12}"
        [[ -n $got && $got == "$want" ]] || bad=1
    done
    return "$bad"
}

app_state() {
    docker -H "$HOSTB_SSH" inspect --format '{{.State.StartedAt}} restarts={{.RestartCount}}' \
        "$(docker -H "$HOSTB_SSH" ps -q --filter label=com.docker.compose.project=userstack \
            --filter label=com.docker.compose.service=app)"
}

# --- 1. host B ----------------------------------------------------------------------------------
t0=$(date +%s%3N)
"${HOSTB[@]}" start
T_HOSTB=$(secs "$t0" "$(date +%s%3N)")
eval "$("${HOSTB[@]}" env)"
# shellcheck disable=SC2153 # set by the eval above
HOSTB_ADDR=$HOST1_ADDR HOSTB_SSH=$HOST1_SSH HOSTB_DIR=$HOST1_DIR
URL=http://$HOSTB_ADDR:${APP_PORT:-5000}
# `up` puts the password under host B's scratch directory, which `hosts.sh stop` removes.
export REMOTE_SECRETS_DIR=$HOSTB_DIR/secrets
# compose commands run directly by the test: the secrets are the files `up` put on B.
CB=(env "POSTGRES_PASSWORD_FILE_HOST=$REMOTE_SECRETS_DIR/db_password"
    "REDIS_PASSWORD_FILE_HOST=$REMOTE_SECRETS_DIR/redis_password" "API_TOKEN_FILE_HOST=$REMOTE_SECRETS_DIR/api_tokens"
    docker -H "$HOSTB_SSH" compose -f "$COMPOSE_FILE" -p userstack)

step "Host B starts empty"
run docker -H "$HOSTB_SSH" info --format 'root={{.DockerRootDir}} images={{.Images}} containers={{.Containers}}'
expect "host B has none of the images" no_images_on_b

# --- 2. ship and up ------------------------------------------------------------------------------
run "$REMOTE" images
t0=$(date +%s%3N)
"$REMOTE" ship "$HOSTB_SSH"
T_SHIP=$(secs "$t0" "$(date +%s%3N)")
t0=$(date +%s%3N)
"$REMOTE" ship "$HOSTB_SSH"
T_RESHIP=$(secs "$t0" "$(date +%s%3N)")
t0=$(date +%s%3N)
"$REMOTE" up "$HOSTB_SSH"
T_UP=$(secs "$t0" "$(date +%s%3N)")
use_token

step "The password is a file on host B only"
# HOSTB_DIR is a tmpfs in host B's own mount namespace: if compose had read the secret on A,
# or bind-mounted a path of A's, the stack could not have started.
on_host "$HOST_B" expect "the password file on host B belongs to the app image's user, mode 0400" \
    secret_file_ok
expect "the same path does not exist on host A" test ! -e "$REMOTE_SECRETS_DIR/db_password"
expect "the db and app containers bind-mount it from host B's path" secret_mounts_ok

step "The routes, from host A over host B's address"
expect "GET / is exactly 'Hello, Docker Multi-Container!'" body_is / 'Hello, Docker Multi-Container!'
expect "GET /cache first is exactly 'Cache Miss: Key Set'" body_is /cache 'Cache Miss: Key Set'
expect "GET /cache then is exactly 'Cache Hit: Hello from Redis Cache!'" body_is /cache 'Cache Hit: Hello from Redis Cache!'
expect "GET /users is a JSON array (empty on a new volume)" users_json 'length == 0'
run curl -sS -i --max-time 10 -X POST -H 'Content-Type: application/json' -H "@$AUTH" \
    --data '{"name":"Ada Lovelace","email":"ada@example.com"}' "$URL/users"
post_status=$(printf '%s\n' "$RUN_OUTPUT" | head -1 | awk '{print $2}')
location=$(printf '%s\n' "$RUN_OUTPUT" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
expect "POST /users answers 201" expect_eq 201 "$post_status"
expect "POST /users answers Location: /users/{id}" location_ok "$location"
run curl -sS --max-time 10 -H "@$AUTH" "$URL$location"
expect "GET $location returns what was posted" jq -e '.name == "Ada Lovelace" and .email == "ada@example.com"' <<<"$RUN_OUTPUT"
expect "GET /users lists it" users_json "$has_ada"
try curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json' \
    -H "@$AUTH" --data '{"name":"Ada again","email":"ADA@example.com"}' "$URL/users"
expect "a duplicate e-mail (other case) is 409" expect_eq 409 "$RUN_OUTPUT"
run "$REMOTE" check "$URL"

step "The API's door and Redis's password on host B"
try curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' "$URL/users"
expect "GET /users without a token is 401" expect_eq 401 "$RUN_OUTPUT"
try curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' -H 'Authorization: Bearer not-our-token-0123456789' "$URL/users"
expect "GET /users with a wrong token is 401" expect_eq 401 "$RUN_OUTPUT"
expect "GET / needs no token" body_is / 'Hello, Docker Multi-Container!'
try curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' "$URL/readyz"
expect "GET /readyz is not on the public port (404)" expect_eq 404 "$RUN_OUTPUT"
run "$REMOTE" ready "$HOSTB_SSH"
expect "remote.sh ready (the admin port, inside the container) says ready" grep -q '"status":"ready"' <<<"$RUN_OUTPUT"
try on_b run --rm --network userstack_backend --entrypoint redis-cli "$REDIS_IMAGE" -h redis ping || true
expect "a Redis client without the password is refused (NOAUTH)" grep -q NOAUTH <<<"$RUN_OUTPUT"

step "The images and the hardening on host B"
expect "the containers on B run the very images built on A (same IDs)" image_ids_match
run "${CB[@]}" ps --format 'table {{.Service}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}'
expect "only the app publishes a port" only_app_published
expect "PostgreSQL is not reachable from host A" pg_unreachable
expect "the backend network is internal" backend_internal
expect "the app runs read-only, without capabilities, no-new-privileges, non-root, limited" app_hardened
expect "deploy/lib/check-hardening.sh passes on host B's three containers" \
    env DOCKER_HOST="$HOSTB_SSH" "$root/deploy/lib/check-hardening.sh" --filter label=com.docker.compose.project=userstack
run env DOCKER_HOST="$HOSTB_SSH" "$root/deploy/lib/check-hardening.sh" --filter label=com.docker.compose.project=userstack

# --- 3. Redis down and back ----------------------------------------------------------------------
step "Redis stopped: the users still come from PostgreSQL"
run "${CB[@]}" stop redis
expect "GET /users is 200 with Redis down" users_json "$has_ada"
expect "GET / is still exact with Redis down" body_is / 'Hello, Docker Multi-Container!'
run "${CB[@]}" start redis
run "${CB[@]}" up -d --wait --wait-timeout 120 redis
expect "cache hits come back after Redis restarted (within 60 s)" poll 60 cache_hits
expect "GET /cache is exactly the hit text again" body_is /cache 'Cache Hit: Hello from Redis Cache!'

# --- 4. PostgreSQL down and back -----------------------------------------------------------------
step "PostgreSQL stopped and started: the app recovers by itself"
before=$(app_state)
log "app container before: $before"
run "${CB[@]}" stop db
expect "readiness turns 503 with PostgreSQL down (within 30 s)" poll 30 ready_is 503
expect "GET / still answers while PostgreSQL is down" body_is / 'Hello, Docker Multi-Container!'
run "${CB[@]}" start db
expect "readiness is 200 again after PostgreSQL started (within 120 s)" poll 120 ready_is 200
expect "GET /users has the data after PostgreSQL came back" users_json "$has_ada"
after=$(app_state)
expect "the app was not restarted (same start time and restart count)" expect_eq "$before" "$after"

# --- 5. down/up keeps the data (through a docker context this time) -----------------------------
step "down and up again (TARGET as a docker context): the data stays"
run docker context create "$CONTEXT" --description "host B of tests/e2e/compose.sh" --docker "host=$HOSTB_SSH"
run "$REMOTE" down "$CONTEXT"
expect "no userstack containers left on B after down" no_project_containers
expect "the volume survives down" volume_on_b
"$REMOTE" up "$CONTEXT"
expect "GET /users still has the data after down and up" users_json "$has_ada"
expect "GET / is exact after down and up" body_is / 'Hello, Docker Multi-Container!'

# --- 5b. backup -> down --volumes -> restore; a new database password ---------------------------
step "Backup, down --volumes, restore on host B: every user comes back"
users_of() { get '/users?limit=1000' "$work/all.$$" >/dev/null && jq -c 'map({id, name, email}) | sort_by(.id)' "$work/all.$$"; }
users_before=$(users_of)
log "users before the backup: $users_before"
run "$REMOTE" backup "$HOSTB_SSH" "$work/backup.dump"
expect "remote.sh backup wrote a file on host A, with its size and users" \
    grep -q "backup: $work/backup.dump: [0-9]* bytes, $(jq length <<<"$users_before") users" <<<"$RUN_OUTPUT"
rc=0; try "$REMOTE" down "$HOSTB_SSH" --volumes </dev/null || rc=$?
expect "down --volumes without --yes and without a terminal refuses" test "$rc" != 0
expect "... naming the last backup" grep -q "last backup: $work/backup.dump" <<<"$RUN_OUTPUT"
expect "... and the volume is still there" volume_on_b
"$REMOTE" down "$HOSTB_SSH" --volumes --yes
expect "the volume is gone after down --volumes --yes" no_volume_on_b
"$REMOTE" restore "$HOSTB_SSH" "$work/backup.dump"
use_token
expect "after remote.sh restore every user is back with its id, name and email" expect_eq "$users_before" "$(users_of)"
rc=0; try "$REMOTE" restore "$HOSTB_SSH" "$work/backup.dump" || rc=$?
expect "remote.sh restore refuses to restore over an existing volume" test "$rc" != 0
expect "... saying so" grep -q "userstack_pgdata exists" <<<"$RUN_OUTPUT"

step "A new database password on the initialised volume: remote.sh up, no restart loop"
(umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/db_password.new")
POSTGRES_PASSWORD_FILE=$work/db_password.new "$REMOTE" up "$HOSTB_SSH"
export POSTGRES_PASSWORD_FILE=$work/db_password.new
expect "the app is healthy and has not restarted" expect_eq "healthy 0" \
    "$(on_b inspect -f '{{.State.Health.Status}} {{.RestartCount}}' userstack-app-1)"
expect "GET /users still has the data" users_json "$has_ada"
expect "readiness is 200 (the app connects with the new password)" ready_is 200

# --- 6. down -v removes the data -----------------------------------------------------------------
step "down --volumes: the data goes"
"$REMOTE" down "$HOSTB_SSH" --volumes --yes
expect "the volume is gone after down --volumes" no_volume_on_b
on_host "$HOST_B" expect "the password file remote.sh put on B is gone" ssh "root@$HOSTB_ADDR" "test ! -e $REMOTE_SECRETS_DIR"

# --- 7. the offline bundle, on a host B without the images ---------------------------------------
step "Offline bundle: host B loses the images, gets an archive"
run docker -H "$HOSTB_SSH" image rm "$APP_IMAGE" "$POSTGRES_IMAGE" "$REDIS_IMAGE"
expect "host B has none of the images again" no_images_on_b
t0=$(date +%s%3N)
"$REMOTE" bundle "$work/userstack-bundle.tar.gz"
T_BUNDLE=$(secs "$t0" "$(date +%s%3N)")
run scp -q "$work/userstack-bundle.tar.gz" "root@$HOSTB_ADDR:$HOSTB_DIR/"
# The password travels on stdin to a file on B; the bundle's script reads it from there.
run_sh "ssh root@$HOSTB_ADDR 'umask 077; cat > $HOSTB_DIR/db_password' < \"\$POSTGRES_PASSWORD_FILE\""
t0=$(date +%s%3N)
on_host "$HOST_B" run_sh "ssh root@$HOSTB_ADDR 'cd $HOSTB_DIR && tar -xzf userstack-bundle.tar.gz && POSTGRES_PASSWORD_FILE=$HOSTB_DIR/db_password userstack-bundle/load-and-run.sh'"
T_OFFLINE=$(secs "$t0" "$(date +%s%3N)")
expect "after the bundle: the containers on B run the images built on A" image_ids_match
expect "after the bundle: GET / is exact" body_is / 'Hello, Docker Multi-Container!'
expect "after the bundle: GET /cache first is a miss" body_is /cache 'Cache Miss: Key Set'
expect "after the bundle: GET /cache then is a hit" body_is /cache 'Cache Hit: Hello from Redis Cache!'
# The bundle generated its own token on B (./secrets/api_tokens there).
run_sh "ssh root@$HOSTB_ADDR 'grep -v \"^#\" $HOSTB_DIR/userstack-bundle/secrets/api_tokens | head -n1' | sed 's/^/Authorization: Bearer /' > $(printf '%q' "$AUTH")"
expect "after the bundle: GET /users is empty (down -v removed the data)" users_json 'length == 0'
try curl -sS --max-time 10 -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json' \
    -H "@$AUTH" --data '{"name":"Grace Hopper","email":"grace@example.com"}' "$URL/users"
expect "after the bundle: POST /users is 201" expect_eq 201 "$RUN_OUTPUT"
on_host "$HOST_B" run_sh "ssh root@$HOSTB_ADDR 'cd $HOSTB_DIR/userstack-bundle && ./load-and-run.sh down --volumes --yes'"
expect "the bundle's stack is gone from B (no containers, no volumes)" nothing_on_b

expect "host A's images kept their IDs during the test (nothing rebuilt them meanwhile)" \
    expect_eq "$IDS_AT_START" "$(local_ids)"
log "timings: host B start ${T_HOSTB} s, ship ${T_SHIP} s (again, all skipped: ${T_RESHIP} s), up ${T_UP} s, bundle ${T_BUNDLE} s, offline load-and-run on B ${T_OFFLINE} s"
