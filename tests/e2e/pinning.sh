#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Images pinned by digest, as docs/security.md tells users to: POSTGRES_IMAGE=…@sha256:<digest>
# and REDIS_IMAGE=…@sha256:<digest>. A throwaway registry on loopback (the registry stand-in)
# serves the stand-ins; their tags are removed locally, so only the digest can find them.
#   1. deploy/manual/up.sh with both pinned: the stack comes up, each container runs exactly
#      the pinned reference and the pushed image, and step 11 names the digest to pin, that of
#      the pinned repository even where the image is also in one whose name sorts first;
#   2. a digest the registry does not have: up.sh stops before it creates the database;
#   3. compose keeps the pinned reference as it is (docker compose config).
# Uses the task-1 names (userstack-*): refuses to run if that stack exists; removes it on exit.
#
#   tests/e2e/pinning.sh     (needs the stand-ins and userstack:latest; ~1 min)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"
# shellcheck source=/dev/null
source "$root/deploy/images/standins.env"
export USERSTACK_SECTION="Pinned images"
REG=userstack-pin-registry

for tool in docker curl jq ss; do
    command -v "$tool" >/dev/null || die "$tool is missing: run .ci/install.sh (as root)"
done
for image in "$POSTGRES_IMAGE" "$REDIS_IMAGE" "$REGISTRY_IMAGE" userstack:latest; do
    docker image inspect "$image" >/dev/null 2>&1 || die "$image is missing: deploy/images/build-standins.sh, then deploy/manual/up.sh --standins"
done
for thing in container:userstack-app container:userstack-redis container:userstack-db volume:userstack-pgdata; do
    if docker "${thing%%:*}" inspect "${thing#*:}" >/dev/null 2>&1; then
        die "${thing/:/ } already exists; this test would destroy it (deploy/manual/down.sh --purge)"
    fi
done

tmp=$(mktemp -d)
pushed=()
cleanup() {
    local rc=$?
    set +e
    "$root/deploy/manual/down.sh" --purge --yes >/dev/null 2>&1
    docker rm -f -v "$REG" >/dev/null 2>&1
    # The pinned references (repo@digest) pulled back; the stand-ins keep their own tags.
    for ref in "${pushed[@]}"; do docker image rm "$ref" >/dev/null 2>&1; done
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    local port
    for port in $(seq "$1" "$(($1 + 99))"); do
        ss -Hltn "sport = :$port" | grep -c . >/dev/null || { echo "$port"; return; }
    done
    die "no free port from $1"
}

step "A registry on loopback serves the stand-ins; their registry tags are removed"
# A run killed before its cleanup leaves this test's registry behind.
docker rm -f -v "$REG" >/dev/null 2>&1 || true
port=$(free_port 5100)
# Docker trusts a plain-HTTP registry on 127.0.0.0/8 without configuration.
run docker run -d --name "$REG" -p "127.0.0.1:$port:5000" "$REGISTRY_IMAGE"
wait_until 30 "the registry answers" curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/"
# pin IMAGE NAME : pushes IMAGE as 127.0.0.1:PORT/pin/NAME and sets PINNED to NAME@sha256:… ;
# the tag is then removed, so that only the digest can find the image again.
pin() {
    local image=$1 repo=127.0.0.1:$port/pin/$2 digest
    run docker tag "$image" "$repo:v1"
    run docker push "$repo:v1"
    digest=$(grep -oE 'digest: sha256:[0-9a-f]{64}' <<<"$RUN_OUTPUT" | cut -d' ' -f2)
    [[ -n $digest ]] || die "docker push printed no digest"
    run docker image rm "$repo:v1"
    PINNED=$repo@$digest
    pushed+=("$PINNED")
}
pin "$POSTGRES_IMAGE" postgres
pg_ref=$PINNED
pin "$REDIS_IMAGE" redis
redis_ref=$PINNED
# The same PostgreSQL image in a second repository, kept tagged: its digest sorts before the
# pinned one (as a swarm registry's 10.x address would), and it is not the one to pin.
run docker tag "$POSTGRES_IMAGE" "127.0.0.1:$port/a-mirror/postgres:v1"
pushed+=("127.0.0.1:$port/a-mirror/postgres:v1")
run docker push "127.0.0.1:$port/a-mirror/postgres:v1"
pg_id=$(docker image inspect -f '{{.Id}}' "$POSTGRES_IMAGE")
redis_id=$(docker image inspect -f '{{.Id}}' "$REDIS_IMAGE")
log "pinned: $pg_ref, $redis_ref"
check "the pinned PostgreSQL reference is not on the engine before up.sh" \
    bash -c "! docker image inspect '$pg_ref' >/dev/null 2>&1"

(umask 077 && head -c 24 /dev/urandom | base64 >"$tmp/pg_password")
unset POSTGRES_PASSWORD
APP_PORT=$(free_port 5000)
export POSTGRES_PASSWORD_FILE=$tmp/pg_password SECRETS_DIR=$tmp/secrets APP_BIND=127.0.0.1 \
    APP_PORT SKIP_BUILD=1 APP_IMAGE=userstack:latest SAMPLE_USERS=0

step "A digest the registry does not have: up.sh stops before it creates the database"
missing=${pg_ref%@*}@sha256:$(printf '0%.0s' {1..64})
rc=0
POSTGRES_IMAGE=$missing "$root/deploy/manual/up.sh" >"$tmp/missing.log" 2>&1 || rc=$?
tail -n 3 "$tmp/missing.log" >&2
check "up.sh exits non-zero" test "$rc" != 0
check "... naming the image it could not pull" grep -qF "cannot pull $missing" "$tmp/missing.log"
check "... and no database container was created" \
    bash -c '! docker container inspect userstack-db >/dev/null 2>&1'

step "deploy/manual/up.sh with PostgreSQL and Redis pinned by digest"
rc=0
POSTGRES_IMAGE=$pg_ref REDIS_IMAGE=$redis_ref "$root/deploy/manual/up.sh" >"$tmp/up.log" 2>&1 || rc=$?
check "up.sh exits 0" test "$rc" = 0 || { tail -n 30 "$tmp/up.log" >&2; exit 1; }
config_image() { docker inspect -f '{{.Config.Image}}' "$1"; }
image_id() { docker inspect -f '{{.Image}}' "$1"; }
check "userstack-db runs the pinned reference" expect_eq "$pg_ref" "$(config_image userstack-db)"
check "... which is the image that was pushed" expect_eq "$pg_id" "$(image_id userstack-db)"
check "userstack-redis runs the pinned reference" expect_eq "$redis_ref" "$(config_image userstack-redis)"
check "... which is the image that was pushed" expect_eq "$redis_id" "$(image_id userstack-redis)"
check "step 11 lists PostgreSQL's two registry digests" grep -qE "^userstack-db $pg_id 127\.0\.0\.1:$port/a-mirror/postgres@sha256:[0-9a-f]{64} $pg_ref\$" "$tmp/up.log"
check "... and names the pinned repository's as the one to pin" grep -qF "to pin userstack-db: POSTGRES_IMAGE=$pg_ref" "$tmp/up.log"
check "... and Redis's" grep -qF "to pin userstack-redis: REDIS_IMAGE=$redis_ref" "$tmp/up.log"
check "GET / answers through the pinned stack" expect_eq "Hello, Docker Multi-Container!" \
    "$(curl -sS --max-time 10 "http://127.0.0.1:$APP_PORT/")"
run docker ps --filter name=userstack- --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}'

step "compose keeps a pinned reference as it is"
compose_image() {
    POSTGRES_IMAGE=$pg_ref REDIS_IMAGE=$redis_ref docker compose -f "$root/deploy/compose/compose.yaml" \
        config --format json | jq -r ".services.$1.image"
}
check "compose's db image is the pinned reference" expect_eq "$pg_ref" "$(compose_image db)"
check "compose's redis image is the pinned reference" expect_eq "$redis_ref" "$(compose_image redis)"
log "pinned images: every check passed"
