#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Proves deploy/lib/check-hardening.sh can fail: a Redis container run with every item of
# deploy/lib/services.json passes it; the same container with any ONE item missing fails it, and
# the failure names that item. Uses its own names (userstack-hcheck-*), removed on exit.
#
#   tests/e2e/hardening-check.sh      (needs the Redis image: REDIS_IMAGE, default the stand-in)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"
# shellcheck source=../../deploy/lib/services.sh
source "$root/deploy/lib/services.sh"
# shellcheck source=/dev/null
source "$root/deploy/images/standins.env"
export USERSTACK_SECTION="Hardening check"
check_script=$root/deploy/lib/check-hardening.sh
NAME=userstack-hcheck-redis INTERNAL=userstack-hcheck-internal OPEN=userstack-hcheck-open

docker image inspect "$REDIS_IMAGE" >/dev/null 2>&1 || die "$REDIS_IMAGE is missing: deploy/images/build-standins.sh"
tmp=$(mktemp -d)
cleanup() {
    local rc=$?
    set +e
    docker rm -f -v "$NAME" >/dev/null 2>&1
    docker network rm "$INTERNAL" "$OPEN" >/dev/null 2>&1
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
docker network create --internal "$INTERNAL" >/dev/null
docker network create "$OPEN" >/dev/null
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$tmp/redis_password"

mapfile -d '' full < <(service_options redis)
mapfile -d '' command < <(service_command redis)

# start NETWORK OPTION... : the Redis container with these options; waits until it runs.
start() {
    local network=$1; shift
    docker rm -f -v "$NAME" >/dev/null 2>&1 || true
    docker run -d --name "$NAME" --network "$network" \
        -v "$tmp/redis_password:/run/secrets/redis_password:ro" "$@" "$REDIS_IMAGE" "${command[@]}" >/dev/null
    wait_until 20 "$NAME running" test "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true
}
# without PATTERN : the full options minus those matching PATTERN.
without() { local o; for o in "${full[@]}"; do [[ $o =~ $1 ]] || printf '%s\0' "$o"; done; }
run_check() { "$check_script" --filter "name=^$NAME\$" --expect redis; }

step "Every item present: the check passes"
start "$INTERNAL" "${full[@]}"
check "check-hardening.sh passes on a container with every item" run_check

# missing_fails DESCRIPTION EXPECTED-FINDING NETWORK OPTION... : with these options the check
# fails, and EXPECTED-FINDING is among its MISSING lines.
missing_fails() {
    local what=$1 finding=$2 out rc=0
    shift 2
    start "$@"
    out=$(run_check 2>&1) || rc=$?
    # shellcheck disable=SC2016 # the arguments of bash -c
    check "without $what: the check fails, naming '$finding'" \
        bash -c '[[ $1 != 0 ]] && grep -F "MISSING" <<<"$2" | grep -qF -- "$3"' _ "$rc" "$out" "$finding" || true
}

step "One item missing at a time: the check fails and names it"
mapfile -d '' opts < <(without '^--read-only$');                missing_fails "--read-only" "read-only root" "$INTERNAL" "${opts[@]}"
mapfile -d '' opts < <(without '^--cap-drop=');                 missing_fails "--cap-drop ALL" "cap-drop ALL" "$INTERNAL" "${opts[@]}"
missing_fails "the capability limit (one more: NET_RAW)" "only the capabilities" "$INTERNAL" "${full[@]}" --cap-add=NET_RAW
mapfile -d '' opts < <(without '^--security-opt=no-new-privileges'); missing_fails "no-new-privileges" "no-new-privileges" "$INTERNAL" "${opts[@]}"
mapfile -d '' opts < <(without '^--tmpfs=');                    missing_fails "the tmpfs" "tmpfs /data" "$INTERNAL" "${opts[@]}"
mapfile -d '' opts < <(without '^--memory=');                   missing_fails "the memory limit" "memory limit" "$INTERNAL" "${opts[@]}"
mapfile -d '' opts < <(without '^--pids-limit=');               missing_fails "the pids limit" "pids limit" "$INTERNAL" "${opts[@]}"
# Not "without --log-opt": a daemon.json with log-opts (as on the build machine) would fill them in.
mapfile -d '' opts < <(without '^--log-');                      missing_fails "the json-file driver" "json-file log rotation" "$INTERNAL" "${opts[@]}" --log-driver=local
mapfile -d '' opts < <(without '^--health-');                   missing_fails "the health check" "a health check" "$INTERNAL" "${opts[@]}" --no-healthcheck
missing_fails "the internal network" "only on internal networks" "$OPEN" "${full[@]}"
missing_fails "an unpublished port" "no published port" "$OPEN" "${full[@]}" -p 127.0.0.1::6379

step "Swarm's forms (deploy/swarm): a tmpfs mount counts as a tmpfs; --swarm waives only no-new-privileges"
# Swarm gives a tmpfs as a mount (HostConfig.Mounts), not as HostConfig.Tmpfs.
mapfile -d '' opts < <(without '^--tmpfs=')
start "$INTERNAL" "${opts[@]}" --mount type=tmpfs,destination=/data,tmpfs-size=67108864
check "a tmpfs mount at /data satisfies 'tmpfs /data'" run_check
mapfile -d '' opts < <(without '^--security-opt=no-new-privileges')
start "$INTERNAL" "${opts[@]}"
swarm_check() {
    local out
    out=$("$check_script" --swarm --filter "name=^$NAME\$" --expect redis 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    grep -q '^n/a .* no-new-privileges' <<<"$out"
}
check "--swarm: without no-new-privileges the check passes, saying n/a for it" swarm_check
start "$INTERNAL" "${opts[@]}" --read-only=false
swarm_fails() { ! "$check_script" --swarm --filter "name=^$NAME\$" --expect redis >/dev/null 2>&1; }
# (--read-only=false after --read-only: the last one wins)
check "--swarm still fails on any other missing item (here: the read-only root)" swarm_fails

((CHECKS_FAILED == 0)) || die "$CHECKS_FAILED check(s) failed"
log "the hardening check catches each missing item"
