#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Task 1 by hand: the userstack stack (PostgreSQL, Redis, the app) with plain `docker` commands,
# each printed before it runs. Idempotent: a second run keeps what is up to date, replaces what
# changed and leaves one healthy stack. See deploy/manual/README.md for the same steps typed by
# a person.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../lib/common.sh
source "$root/deploy/lib/common.sh"
# shellcheck source=../lib/cli-plugins.sh
source "$root/deploy/lib/cli-plugins.sh"
started=$SECONDS

usage() {
    cat <<'EOF'
Usage: deploy/manual/up.sh [--standins] [--restore FILE] [--help]

Starts the userstack stack on the local Docker engine: networks userstack-net (the app's) and
userstack-backend (internal: no route out, unreachable from outside), volume userstack-pgdata,
containers userstack-db (alias db) and userstack-redis (alias redis) on the backend only, and
userstack-app on both; then adds sample users and checks /, /users and /cache. Every container
gets the hardening, limits, log rotation and health check of deploy/lib/services.json. Prints
how long it took and the URL.

Set-up it does itself: the Docker CLI plugin buildx, when missing, is installed from Debian's
package into /usr/local/lib/docker/cli-plugins (as root) or ~/.docker/cli-plugins (see
deploy/lib/cli-plugins.sh); nothing else is installed. Without --standins the official images
are pulled first; if that fails (no registry reachable) it stops at once and says to use
--standins.

  --standins      no registry here: build the stand-in images (deploy/images/build-standins.sh;
                  needs debootstrap and a Rust 1.95 toolchain on this host), use them
                  (deploy/images/standins.env) and trust the host CA bundle in the build
  --restore FILE  a new volume only: load the backup FILE (deploy/manual/backup.sh) into the
                  database before the app starts (deploy/manual/restore.sh does this)
  --help          this text

Environment (default in brackets):
  POSTGRES_PASSWORD       the PostgreSQL password (required unless POSTGRES_PASSWORD_FILE)
  POSTGRES_PASSWORD_FILE  a file holding it
  POSTGRES_USER           [postgres]
  POSTGRES_DB             [mydb]
  REDIS_PASSWORD_FILE     a file holding Redis's password [generated once, kept in SECRETS_DIR]
  API_TOKEN_FILE          a file of API bearer tokens, one per line [one generated once, kept in
                          SECRETS_DIR]; rewriting it and running up.sh again rotates them in place,
                          without restarting the app
  POSTGRES_IMAGE          [postgres:13]; pin with postgres:13@sha256:<digest> or an image ID
  REDIS_IMAGE             [redis:latest]; pinned the same way
  APP_IMAGE               the app image [userstack:<workspace version>, also tagged userstack:latest]
  SKIP_BUILD=1            use the existing APP_IMAGE instead of building it
  RUST_IMAGE              builder base image, passed to docker build [Dockerfile: rust:1.95-slim-bookworm]
  RUNTIME_IMAGE           runtime base image, passed to docker build
                          [Dockerfile: gcr.io/distroless/cc-debian12:nonroot]
  EXTRA_CA_FILE           a CA bundle handed to the build as the secret extra_ca (for
                          TLS-inspecting proxies) [none; --standins: /etc/ssl/certs/ca-certificates.crt]
  APP_BIND                address the app is published on [0.0.0.0]
  APP_PORT                host port of the app [5000]
  PUBLISH_DB=1            also publish PostgreSQL on 127.0.0.1:${DB_PORT} [not published]
  DB_PORT                 [5432]
  SECRETS_DIR             where the secret files for the containers are kept
                          [${XDG_STATE_HOME:-$HOME/.local/state}/userstack]
  APP_MEM_LIMIT, DB_MEM_LIMIT, REDIS_MEM_LIMIT   memory limits [256m, 1g, 256m]
  WAIT_TIMEOUT            seconds to wait for each container to become healthy [120]
  SAMPLE_USERS=0          do not add the sample users
  USERSTACK_TRANSCRIPT    record every command as JSON lines in this file (deploy/lib/common.sh)
EOF
}

standins=0 restore_from=""
while (($#)); do
    case $1 in
        --standins) standins=1 ;;
        --restore)
            (($# >= 2)) || die "--restore needs a FILE"
            restore_from=$2
            [[ -r $restore_from ]] || die "--restore $restore_from: not a readable file"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
# shellcheck source=../lib/services.sh
source "$root/deploy/lib/services.sh"
# shellcheck source=../lib/secrets.sh
source "$root/deploy/lib/secrets.sh"
# shellcheck source=../lib/data.sh
source "$root/deploy/lib/data.sh"

command -v curl >/dev/null || die "curl is missing: the checks at the end use it (apt-get install curl)"
# Builds need buildx: BuildKit is the builder, and with a Docker client from 23 on `docker build`
# is buildx.
ensure_cli_plugins buildx

if ((standins)); then
    step "Stand-in images (no registry on this machine)"
    # Not through `run`: the script prints and records its own commands.
    log "deploy/images/build-standins.sh (builds only the images that are missing)"
    "$root/deploy/images/build-standins.sh"
    # shellcheck source=/dev/null # written by deploy/images (helper A); plain export lines
    source "$root/deploy/images/standins.env"
    : "${EXTRA_CA_FILE:=/etc/ssl/certs/ca-certificates.crt}"
fi

NETWORK=userstack-net
BACKEND=userstack-backend
VOLUME=userstack-pgdata
DB=userstack-db
REDIS=userstack-redis
APP=userstack-app
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-mydb}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-postgres:13}
REDIS_IMAGE=${REDIS_IMAGE:-redis:latest}
APP_BIND=${APP_BIND:-0.0.0.0}
APP_PORT=${APP_PORT:-5000}
DB_PORT=${DB_PORT:-5432}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-120}
SECRETS_DIR=${SECRETS_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/userstack}
# The uid the app image runs as (USER in the Dockerfile).
APP_UID=65532

version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml")
[[ -n "$version" ]] || die "no [workspace.package] version in $root/Cargo.toml"
default_image=userstack:$version
APP_IMAGE=${APP_IMAGE:-$default_image}

password=$(secret_value POSTGRES_PASSWORD) ||
    die "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (the PostgreSQL password); e.g.
  umask 077; openssl rand -base64 24 >~/.userstack-db-password
  POSTGRES_PASSWORD_FILE=~/.userstack-db-password $0"
[[ -n "$password" ]] || die "the PostgreSQL password is empty"

# BuildKit is needed for the Dockerfile's cache and secret mounts (default only from Docker 23).
export DOCKER_BUILDKIT=1

exists() { docker "$1" inspect "$2" >/dev/null 2>&1; }

# ensure_image IMAGE : pull IMAGE unless it is already here. A failed pull stops everything
# before anything is created, with what to do instead: where no registry can be reached, a
# BuildKit stack trace halfway through the build would say it much worse.
ensure_image() {
    exists image "$1" && return 0
    if ! try docker pull "$1"; then
        if ((standins)); then die "cannot pull $1 (above)"; fi
        die "cannot pull $1: ${RUN_OUTPUT##*$'\n'}
  No registry reachable from this Docker engine? Build stand-ins from Debian packages instead:
    POSTGRES_PASSWORD=… $0 --standins        (deploy/images/README.md)"
    fi
}

# The Dockerfile's own defaults for its base images (one source: its ARG lines).
dockerfile_default() { sed -n "s/^ARG $1=//p" "$root/Dockerfile"; }

step "0. Images: everything the stack is made of must be here or pullable"
images=("$POSTGRES_IMAGE" "$REDIS_IMAGE")
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    images+=("${RUST_IMAGE:-$(dockerfile_default RUST_IMAGE)}" "${RUNTIME_IMAGE:-$(dockerfile_default RUNTIME_IMAGE)}")
fi
for image in "${images[@]}"; do
    if exists image "$image"; then log "$image is here"; else ensure_image "$image"; fi
done

# ensure_container NAME [DOCKER-RUN-OPTION...] IMAGE : a running container NAME created with exactly
# these options from the image IMAGE names now. The options and the image id are fingerprinted
# into a label, so an unchanged container is kept (started if stopped) and a changed one replaced.
# RECREATE=1 forces a replacement. The container's command follows the image after `--`
# (COMMAND=(…)), and CONNECT=(network…) names further networks it joins before it starts (docker
# run takes one --network before Docker 25).
ensure_container() {
    local name=$1; shift
    local image=${!#} image_id fingerprint current state network
    image_id=$(docker image inspect -f '{{.Id}}' "$image")
    fingerprint=$(printf '%s\n' "$image_id" "$@" "${COMMAND[@]}" "${CONNECT[@]}" | sha256sum | cut -c1-16)
    if current=$(docker container inspect -f '{{index .Config.Labels "userstack.config"}}' "$name" 2>/dev/null); then
        if [[ "$current" == "$fingerprint" && "${RECREATE:-0}" != 1 ]]; then
            state=$(docker container inspect -f '{{.State.Status}}' "$name")
            if [[ "$state" == running ]]; then
                log "$name is up to date and running: kept"
            else
                run docker start "$name"
            fi
            return 0
        fi
        log "$name exists with another image or configuration: replacing it"
        run docker rm -f -v "$name"
    fi
    if ((${#CONNECT[@]} == 0)); then
        run docker run -d --name "$name" --label "userstack.config=$fingerprint" "$@" "${COMMAND[@]}"
        return 0
    fi
    # Joined to every network before its first start: the process never runs half-connected.
    run docker create --name "$name" --label "userstack.config=$fingerprint" "$@" "${COMMAND[@]}"
    for network in "${CONNECT[@]}"; do run docker network connect "$network" "$name"; done
    run docker start "$name"
}
COMMAND=() CONNECT=()

# wait_healthy NAME : poll the container's health status (bounded); on failure show its logs.
wait_healthy() {
    local name=$1 status waited=0
    log "waiting up to ${WAIT_TIMEOUT}s: docker inspect -f '{{.State.Health.Status}}' $name"
    while :; do
        status=$(docker container inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$name")
        [[ "$status" == running/healthy ]] && break
        if [[ "$status" != running/* ]] || ((waited >= WAIT_TIMEOUT)); then
            docker logs --tail 40 "$name" >&2 || true
            die "$name is not healthy after ${waited}s (state/health: $status)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    run docker inspect -f '{{.State.Health.Status}}' "$name"
}

step "1. Two user-defined networks: the app's, and an internal one for PostgreSQL and Redis"
# Containers on a user-defined network find each other by name. An internal network has no
# route out and cannot be published: the data stores are reachable only from the app.
if exists network "$NETWORK"; then log "network $NETWORK exists: kept"
else run docker network create "$NETWORK"; fi
if exists network "$BACKEND"; then
    [[ $(docker network inspect -f '{{.Internal}}' "$BACKEND") == true ]] ||
        die "network $BACKEND exists but is not internal: remove it (deploy/manual/down.sh)"
    log "network $BACKEND exists: kept"
else run docker network create --internal "$BACKEND"; fi

step "2. A named volume for the PostgreSQL data: it outlives the container"
volume_existed=0
if exists volume "$VOLUME"; then log "volume $VOLUME exists: kept"; volume_existed=1
else run docker volume create "$VOLUME"; fi
if [[ -n $restore_from ]] && ((volume_existed)); then
    die "--restore loads a backup into a new volume, and $VOLUME exists: back it up (deploy/manual/backup.sh), remove it (deploy/manual/down.sh --purge), then restore"
fi

step "3. The app image $APP_IMAGE"
if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
    exists image "$APP_IMAGE" || die "SKIP_BUILD=1 but there is no image $APP_IMAGE"
    log "SKIP_BUILD=1: using the existing $APP_IMAGE"
else
    build=(docker build -t "$APP_IMAGE")
    [[ "$APP_IMAGE" == "$default_image" ]] && build+=(-t userstack:latest)
    [[ -n "${RUST_IMAGE:-}" ]] && build+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
    [[ -n "${RUNTIME_IMAGE:-}" ]] && build+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
    # The labels name the last commit of the image's inputs, not HEAD or the clock: unchanged
    # sources build the same image id, so a second run keeps the running app container.
    build+=(--build-arg "VERSION=$version")
    inputs=(Cargo.toml Cargo.lock crates Dockerfile .dockerignore)
    if revision=$(git -C "$root" log -1 --format=%H -- "${inputs[@]}" 2>/dev/null) && [[ -n "$revision" ]]; then
        build+=(--build-arg "REVISION=$revision"
            --build-arg "CREATED=$(git -C "$root" log -1 --format=%cI "$revision")")
    fi
    if [[ -n "${EXTRA_CA_FILE:-}" ]]; then
        [[ -r "$EXTRA_CA_FILE" ]] || die "EXTRA_CA_FILE=$EXTRA_CA_FILE is not a readable file"
        build+=(--secret "id=extra_ca,src=$EXTRA_CA_FILE")
    fi
    run "${build[@]}" "$root"
fi

step "4. The secret files the containers read (never in their environment)"
# Files bind-mounted read-only at /run/secrets/NAME, like Docker secrets: `docker inspect` shows
# their paths, not their values. The entrypoints of PostgreSQL and Redis read theirs as root; the
# app reads them as uid $APP_UID, so each file is that uid's with mode 0400 (root can give it
# away). A non-root user cannot chown: the files stay theirs with mode 0440 and the app joins
# their group.
run mkdir -p "$SECRETS_DIR"
run chmod 0700 "$SECRETS_DIR"
app_group=() owner="" mode=0400
if ((EUID == 0)); then owner=$APP_UID:$APP_UID
else mode=0440; app_group=(--group-add "$(id -g)"); fi
declare -A changed=()
for name in "${SECRET_NAMES[@]}"; do
    value=$(secret_source "$name" "$SECRETS_DIR/$name") || die "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (the PostgreSQL password); e.g.
  umask 077; openssl rand -base64 24 >~/.userstack-db-password
  POSTGRES_PASSWORD_FILE=~/.userstack-db-password $0"
    [[ -n $value ]] || die "the $name secret is empty"
    changed[$name]=$(printf '%s' "$value" | write_secret "$SECRETS_DIR/$name" "$owner" "$mode")
    log "$SECRETS_DIR/$name: ${changed[$name]}"
done
unset value
run ls -ln "$SECRETS_DIR"
secret_mount() { printf -- '-v=%s:/run/secrets/%s:ro' "$SECRETS_DIR/$1" "$1"; }
# The app re-reads the tokens by itself; a new password needs new containers.
db_changed=0 redis_changed=0
[[ ${changed[db_password]} == changed ]] && db_changed=1
[[ ${changed[redis_password]} == changed ]] && redis_changed=1

step "5. PostgreSQL: $DB on $BACKEND as 'db', data in the volume $VOLUME"
ensure_image "$POSTGRES_IMAGE"
mapfile -d '' db_options < <(service_options db)
db_ports=()
if [[ "${PUBLISH_DB:-0}" == 1 ]]; then
    # An internal network cannot publish a port: PostgreSQL joins the app's network as well.
    db_ports=(-p "127.0.0.1:$DB_PORT:5432")
    CONNECT=("$NETWORK")
fi
# The health check probes over TCP: during first initialisation the entrypoint runs a temporary
# server on the Unix socket only, which a socket probe would report as ready.
RECREATE=$db_changed ensure_container "$DB" \
    --network "$BACKEND" --network-alias db --restart unless-stopped \
    -e "POSTGRES_USER=$POSTGRES_USER" -e "POSTGRES_DB=$POSTGRES_DB" \
    -e POSTGRES_PASSWORD_FILE=/run/secrets/db_password "$(secret_mount db_password)" \
    -v "$VOLUME:/var/lib/postgresql/data" \
    "${db_ports[@]}" "${db_options[@]}" \
    "$POSTGRES_IMAGE"
CONNECT=()

step "6. Redis: $REDIS on $BACKEND as 'redis' (a cache: no volume), password from its file"
ensure_image "$REDIS_IMAGE"
mapfile -d '' redis_options < <(service_options redis)
mapfile -d '' COMMAND < <(service_command redis)
RECREATE=$redis_changed ensure_container "$REDIS" \
    --network "$BACKEND" --network-alias redis --restart unless-stopped \
    "$(secret_mount redis_password)" "${redis_options[@]}" \
    "$REDIS_IMAGE"
COMMAND=()

step "7. Wait for PostgreSQL and Redis to report healthy"
wait_healthy "$DB"
wait_healthy "$REDIS"
if ((volume_existed && db_changed)); then
    # The volume keeps the password it was initialised with; the app is about to use the new one.
    log "the PostgreSQL password changed and $VOLUME was initialised before: set it in the database"
    sync_db_password "$DB"
fi
if [[ -n $restore_from ]]; then
    step "7b. Restore $restore_from into the new volume (before the app starts)"
    restore_db "$DB" "$restore_from"
fi

step "8. The app: $APP on $NETWORK and $BACKEND, port 5000 published on $APP_BIND:$APP_PORT"
# The admin listener (ADMIN_PORT 9000: /readyz, /metrics) is not published.
mapfile -d '' app_options < <(service_options app)
CONNECT=("$BACKEND")
RECREATE=$((db_changed || redis_changed)) ensure_container "$APP" \
    --network "$NETWORK" --restart unless-stopped \
    -p "$APP_BIND:$APP_PORT:5000" \
    -e PGHOST=db -e "PGUSER=$POSTGRES_USER" -e "PGDATABASE=$POSTGRES_DB" \
    -e DATABASE_PASSWORD_FILE=/run/secrets/db_password "$(secret_mount db_password)" \
    -e REDIS_URL=redis://redis:6379 \
    -e REDIS_PASSWORD_FILE=/run/secrets/redis_password "$(secret_mount redis_password)" \
    -e API_TOKEN_FILE=/run/secrets/api_tokens "$(secret_mount api_tokens)" \
    "${app_group[@]}" "${app_options[@]}" \
    "$APP_IMAGE"
CONNECT=()
wait_healthy "$APP"

# The published address as seen from this host.
case $APP_BIND in 0.0.0.0 | "") url_host=127.0.0.1 ;; *:*) url_host="[$APP_BIND]" ;; *) url_host=$APP_BIND ;; esac
url=http://$url_host:$APP_PORT

# The token travels in a header file: never on a command line or in the transcript.
auth_header=$(mktemp)
trap 'rm -f "$auth_header"' EXIT
printf 'Authorization: Bearer %s\n' "$(first_token "$SECRETS_DIR/api_tokens")" >"$auth_header"

if [[ "${SAMPLE_USERS:-1}" != 0 ]]; then
    step "9. Sample users through the API (201 created, or 409: already there)"
    for user in 'Ada Lovelace:ada@example.com' 'Alan Turing:alan@example.com' \
        'Grace Hopper:grace@example.com'; do
        # Plain ASCII names and addresses: no JSON escaping needed (and no jq on a bare host).
        body=$(printf '{"name":"%s","email":"%s"}' "${user%%:*}" "${user#*:}")
        run curl -sS -w '\n%{http_code}\n' -X POST -H 'Content-Type: application/json' \
            -H "@$auth_header" -d "$body" "$url/users"
        code=${RUN_OUTPUT##*$'\n'}
        [[ "$code" == 201 || "$code" == 409 ]] || die "POST /users answered $code"
    done
fi

step "10. Check: /, /users, /cache"
run curl -sS --fail-with-body -w '\n' "$url/"
run curl -sS --fail-with-body -w '\n' -H "@$auth_header" "$url/users"
run curl -sS --fail-with-body -w '\n' "$url/cache"
run docker ps --filter "network=$BACKEND" --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}'

step "11. The images this stack runs, to pin them (POSTGRES_IMAGE=…, REDIS_IMAGE=…, APP_IMAGE=…)"
for pair in "POSTGRES_IMAGE $DB" "REDIS_IMAGE $REDIS" "APP_IMAGE $APP"; do
    read -r var name <<<"$pair"
    read -r image_id ref < <(docker inspect -f '{{.Image}} {{.Config.Image}}' "$name")
    # A pulled image has a registry digest (name@sha256:…) per repository; a local build only its ID.
    run docker image inspect -f "$name {{.Id}}{{range .RepoDigests}} {{.}}{{end}}" "$image_id"
    log "to pin $name: $var=$(registry_digest "$image_id" "$ref" || echo "$image_id (a local build: pin by ID)")"
done
log "the stack is up: $url (this run took $((SECONDS - started)) s)"
log "/users needs a bearer token, one of the lines of $SECRETS_DIR/api_tokens:"
log "  TOKEN=\$(grep -v '^#' $SECRETS_DIR/api_tokens | head -n1)"
log "  curl -H \"Authorization: Bearer \$TOKEN\" $url/users"
