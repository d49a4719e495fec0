#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The README's first command, as a newcomer runs it: a Docker CLI without the buildx and compose
# plugins, on this engine. Proves that
#   - `deploy/manual/up.sh --standins` installs the missing buildx plugin itself (saying what and
#     where), brings the stack up, and prints how long it took and the URL; a second run installs
#     nothing and keeps the stack;
#   - without --standins, where an image cannot be pulled, up.sh stops before it creates or
#     builds anything and names the flag to use;
#   - `deploy/compose/remote.sh` installs the missing compose plugin the same way.
# It prints the time of the first and of the second run (the README's figures come from here).
#
#   tests/e2e/newcomer.sh           as root; uses task 1's fixed names and port: run it under
#                                   flock /tmp/userstack-docker.lock
#   tests/e2e/newcomer.sh --cold    also builds every stand-in from nothing (debootstrap on),
#                                   under throwaway names userstack-newcomer-<pid>/*, removed at
#                                   the end: the first run of a machine that has no image yet
#
# The machine itself is not changed: the test runs in a private mount namespace where an empty
# tmpfs covers /usr/local/lib/docker/cli-plugins (where root's plugins live, and where up.sh
# installs them as root) and DOCKER_CONFIG is a new empty directory. Everything it creates
# (the stack: down.sh --purge; the namespace and its tmpfs; --cold images) goes on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"
# shellcheck source=../../deploy/lib/cli-plugins.sh
source "$root/deploy/lib/cli-plugins.sh"

cold=0
for arg; do
    case $arg in
        --cold) cold=1 ;;
        *) die "usage: tests/e2e/newcomer.sh [--cold]" ;;
    esac
done

plugins=/usr/local/lib/docker/cli-plugins
if [[ -z ${NEWCOMER_NAMESPACE:-} ]]; then
    ((EUID == 0)) || die "run as root (it hides $plugins in a private mount namespace)"
    for tool in unshare mount curl; do
        command -v "$tool" >/dev/null || die "$tool is missing"
    done
    docker info >/dev/null 2>&1 || die "no Docker engine answers"
    for thing in container:userstack-app container:userstack-redis container:userstack-db \
        network:userstack-net volume:userstack-pgdata; do
        if docker "${thing%%:*}" inspect "${thing#*:}" >/dev/null 2>&1; then
            die "${thing/:/ } already exists; this test would destroy it (deploy/manual/down.sh --purge)"
        fi
    done
    mkdir -p "$plugins"
    NEWCOMER_NAMESPACE=1 exec unshare --mount --propagation private "$0" "$@"
fi

# --- inside the private mount namespace ---------------------------------------------------------
started=$SECONDS
tmp=$(mktemp -d)
cold_repo=userstack-newcomer-$$
cleanup() {
    local rc=$?
    set +e
    log "cleanup: deploy/manual/down.sh --purge --yes"
    "$root/deploy/manual/down.sh" --purge --yes >/dev/null
    if ((cold)); then
        docker images --format '{{.Repository}}:{{.Tag}}' | grep "^$cold_repo/" | xargs -r docker image rm >/dev/null
    fi
    umount "$plugins" 2>/dev/null
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

mount -t tmpfs -o size=512m,mode=0755 newcomer-cli-plugins "$plugins"
export DOCKER_CONFIG=$tmp/docker-config
mkdir -p "$DOCKER_CONFIG"

step "A Docker CLI without plugins"
check "docker buildx is not there" bash -c '! docker buildx version'
check "docker compose is not there" bash -c '! docker compose version'

(umask 077 && head -c 24 /dev/urandom | base64 >"$tmp/pg_password")
unset POSTGRES_PASSWORD
export POSTGRES_PASSWORD_FILE=$tmp/pg_password SECRETS_DIR=$tmp/secrets APP_BIND=127.0.0.1
for port in $(seq 5000 5099); do
    ss -Hltn "sport = :$port" | grep -q . || { export APP_PORT=$port; break; }
done
[[ -n ${APP_PORT:-} ]] || die "no free port in 5000-5099"
if ((cold)); then
    export STANDINS_REPO=$cold_repo
    log "--cold: every stand-in is built from nothing as $STANDINS_REPO/*"
fi

SECONDS_first=0 SECONDS_second=0
# run_up NAME ARGS... : the README's command; its output in $tmp/NAME.log, its time in SECONDS_NAME.
run_up() {
    local name=$1 start=$SECONDS rc=0
    shift
    log "deploy/manual/up.sh $* (output: $tmp/$name.log)"
    "$root/deploy/manual/up.sh" "$@" >"$tmp/$name.log" 2>&1 || rc=$?
    printf -v "SECONDS_$name" '%s' $((SECONDS - start))
    return "$rc"
}
# logged NAME PATTERN : the run's output has a line matching the extended regex PATTERN.
logged() { grep -Eq -- "$2" "$tmp/$1.log"; }

step "1. First run: deploy/manual/up.sh --standins"
run_up first --standins || { tail -n 40 "$tmp/first.log" >&2; die "the first run failed (above)"; }
check "it said it installs buildx, and where" logged first \
    "installing buildx into $plugins"
check "it installed nothing but the buildx plugin" bash -c "[[ \$(ls $plugins) == docker-buildx ]]"
check "docker buildx works now" docker buildx version
check "it printed the URL and how long it took" logged first \
    "the stack is up: http://127.0.0.1:$APP_PORT \\(this run took [0-9]+ s\\)"
check "the URL answers" bash -c "curl -fsS http://127.0.0.1:$APP_PORT/ | grep -Fx 'Hello, Docker Multi-Container!'"

step "2. Second run: the same command, everything in place"
run_up second --standins || { tail -n 40 "$tmp/second.log" >&2; die "the second run failed (above)"; }
check "it installed no plugin" bash -c "! grep -q 'Docker CLI plugins: installing' $tmp/second.log"
check "it kept the running app" logged second "userstack-app is up to date and running: kept"
check "it printed the URL and how long it took" logged second "this run took [0-9]+ s"

step "3. Without --standins, where an image cannot be pulled"
# An image under the reserved .invalid domain cannot be pulled from any machine, with or without
# a registry: the same failed pull a machine without one gets for postgres:13.
"$root/deploy/manual/down.sh" --purge --yes >/dev/null
check "up.sh fails" bash -c "! POSTGRES_IMAGE=registry.invalid/postgres:13 POSTGRES_PASSWORD_FILE=$tmp/pg_password $root/deploy/manual/up.sh >$tmp/nostandins.log 2>&1"
check "it names the image it could not pull and the flag to use" bash -c \
    "grep -q 'cannot pull registry.invalid/postgres:13' $tmp/nostandins.log && grep -q -- '--standins' $tmp/nostandins.log"
check "it stopped before building or creating anything" bash -c \
    "! grep -Eq 'docker (build|network create|volume create)|failed to solve' $tmp/nostandins.log && ! docker network inspect userstack-net >/dev/null 2>&1"

step "4. deploy/compose/remote.sh installs compose the same way"
check "remote.sh images runs" bash -c "$root/deploy/compose/remote.sh images >$tmp/remote.log 2>&1"
check "it said it installs compose, and where" logged remote "installing compose into $plugins"
check "docker compose works now" docker compose version

step "Summary"
log "first run of the README's command: ${SECONDS_first}s$( ((cold)) && echo ' (cold: stand-ins built from nothing)'); second run: ${SECONDS_second}s"
log "newcomer test took $((SECONDS - started))s"
((CHECKS_FAILED == 0)) || die "$CHECKS_FAILED check(s) failed"
