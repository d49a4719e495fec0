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
Usage: deploy/manual/up.sh [--standins] [--help]

Starts the userstack stack on the local Docker engine: network userstack-net, volume
userstack-pgdata, containers userstack-db (alias db), userstack-redis (alias redis) and
userstack-app, then adds sample users and checks /, /users and /cache. Prints how long it took
and the URL.

Set-up it does itself: the Docker CLI plugin buildx, when missing, is installed from Debian's
package into /usr/local/lib/docker/cli-plugins (as root) or ~/.docker/cli-plugins (see
deploy/lib/cli-plugins.sh); nothing else is installed. Without --standins the official images
are pulled first; if that fails (no registry reachable) it stops at once and says to use
--standins.

  --standins   no registry here: build the stand-in images (deploy/images/build-standins.sh;
               needs debootstrap and a Rust 1.95 toolchain on this host), use them
               (deploy/images/standins.env) and trust the host CA bundle in the build
  --help       this text

Environment (default in brackets):
  POSTGRES_PASSWORD       the PostgreSQL password (required unless POSTGRES_PASSWORD_FILE)
  POSTGRES_PASSWORD_FILE  a file holding it
  POSTGRES_USER           [postgres]
  POSTGRES_DB             [mydb]
  POSTGRES_IMAGE          [postgres:13]
  REDIS_IMAGE             [redis:latest]
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
  SECRETS_DIR             where the password file for the containers is kept
                          [${XDG_STATE_HOME:-$HOME/.local/state}/userstack]
  WAIT_TIMEOUT            seconds to wait for each container to become healthy [120]
  SAMPLE_USERS=0          do not add the sample users
  USERSTACK_TRANSCRIPT    record every command as JSON lines in this file (deploy/lib/common.sh)
EOF
}

standins=0
for arg in "$@"; do
    case $arg in
        --standins) standins=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done

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
# Where the containers see the password (the path Docker secrets use).
SECRET_IN_CONTAINER=/run/secrets/db_password
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
# RECREATE=1 forces a replacement.
ensure_container() {
    local name=$1; shift
    local image=${!#} image_id fingerprint current state
    image_id=$(docker image inspect -f '{{.Id}}' "$image")
    fingerprint=$(printf '%s\n' "$image_id" "$@" | sha256sum | cut -c1-16)
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
    run docker run -d --name "$name" --label "userstack.config=$fingerprint" "$@"
}

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

step "1. A user-defined bridge network: containers on it find each other by name"
if exists network "$NETWORK"; then log "network $NETWORK exists: kept"
else run docker network create "$NETWORK"; fi

step "2. A named volume for the PostgreSQL data: it outlives the container"
volume_existed=0
if exists volume "$VOLUME"; then log "volume $VOLUME exists: kept"; volume_existed=1
else run docker volume create "$VOLUME"; fi

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

step "4. The password file the containers read (never in their environment)"
# A file bind-mounted read-only at /run/secrets/db_password, like a Docker secret: `docker
# inspect` shows its path, not its value. PostgreSQL's entrypoint reads it as root; the app reads
# it as uid $APP_UID, so the file is that uid's with mode 0400 (root can give it away). A
# non-root user cannot chown: the file stays theirs with mode 0440 and the app joins their group.
secret_file=$SECRETS_DIR/db_password
app_group=()
if [[ -f "$secret_file" && "$(cat "$secret_file")" == "$password" ]]; then
    log "$secret_file is up to date: kept"
    secret_changed=0
else
    run mkdir -p "$SECRETS_DIR"
    run chmod 0700 "$SECRETS_DIR"
    rm -f "$secret_file"
    (umask 077 && printf '%s' "$password" >"$secret_file")
    log "wrote the password to $secret_file"
    # A new file is a new inode: containers bound to the old one must be recreated.
    secret_changed=1
    ((volume_existed)) && warn "PostgreSQL keeps the password it was first initialised with in" \
        "$VOLUME; if this is a new password, change it in the database as well (README, 'Good to know')"
fi
if ((EUID == 0)); then
    run chown "$APP_UID:$APP_UID" "$secret_file"
    run chmod 0400 "$secret_file"
else
    run chmod 0440 "$secret_file"
    app_group=(--group-add "$(id -g)")
fi
run ls -ln "$secret_file"

step "5. PostgreSQL: $DB on $NETWORK as 'db', data in the volume $VOLUME"
ensure_image "$POSTGRES_IMAGE"
db_ports=()
[[ "${PUBLISH_DB:-0}" == 1 ]] && db_ports=(-p "127.0.0.1:$DB_PORT:5432")
# pg_isready over TCP: during first initialisation the entrypoint runs a temporary server on the
# Unix socket only, which a socket probe would report as ready.
RECREATE=$secret_changed ensure_container "$DB" \
    --network "$NETWORK" --network-alias db --restart unless-stopped \
    -e "POSTGRES_USER=$POSTGRES_USER" -e "POSTGRES_DB=$POSTGRES_DB" \
    -e "POSTGRES_PASSWORD_FILE=$SECRET_IN_CONTAINER" \
    -v "$secret_file:$SECRET_IN_CONTAINER:ro" \
    -v "$VOLUME:/var/lib/postgresql/data" \
    "${db_ports[@]}" \
    --health-cmd "pg_isready -h 127.0.0.1 -U $POSTGRES_USER -d $POSTGRES_DB" \
    --health-interval 2s --health-timeout 3s --health-retries 5 --health-start-period 60s \
    "$POSTGRES_IMAGE"

step "6. Redis: $REDIS on $NETWORK as 'redis' (a cache: no volume)"
ensure_image "$REDIS_IMAGE"
ensure_container "$REDIS" \
    --network "$NETWORK" --network-alias redis --restart unless-stopped \
    --health-cmd "redis-cli ping" \
    --health-interval 2s --health-timeout 3s --health-retries 5 \
    "$REDIS_IMAGE"

step "7. Wait for PostgreSQL and Redis to report healthy"
wait_healthy "$DB"
wait_healthy "$REDIS"

step "8. The app: $APP published on $APP_BIND:$APP_PORT"
RECREATE=$secret_changed ensure_container "$APP" \
    --network "$NETWORK" --restart unless-stopped \
    -p "$APP_BIND:$APP_PORT:5000" \
    -e PGHOST=db -e "PGUSER=$POSTGRES_USER" -e "PGDATABASE=$POSTGRES_DB" \
    -e "DATABASE_PASSWORD_FILE=$SECRET_IN_CONTAINER" \
    -e REDIS_URL=redis://redis:6379 \
    -v "$secret_file:$SECRET_IN_CONTAINER:ro" \
    "${app_group[@]}" \
    "$APP_IMAGE"
wait_healthy "$APP"

# The published address as seen from this host.
case $APP_BIND in 0.0.0.0 | "") url_host=127.0.0.1 ;; *:*) url_host="[$APP_BIND]" ;; *) url_host=$APP_BIND ;; esac
url=http://$url_host:$APP_PORT

if [[ "${SAMPLE_USERS:-1}" != 0 ]]; then
    step "9. Sample users through the API (201 created, or 409: already there)"
    for user in 'Ada Lovelace:ada@example.com' 'Alan Turing:alan@example.com' \
        'Grace Hopper:grace@example.com'; do
        # Plain ASCII names and addresses: no JSON escaping needed (and no jq on a bare host).
        body=$(printf '{"name":"%s","email":"%s"}' "${user%%:*}" "${user#*:}")
        run curl -sS -w '\n%{http_code}\n' -X POST -H 'Content-Type: application/json' \
            -d "$body" "$url/users"
        code=${RUN_OUTPUT##*$'\n'}
        [[ "$code" == 201 || "$code" == 409 ]] || die "POST /users answered $code"
    done
fi

step "10. Check: /, /users, /cache"
run curl -sS --fail-with-body -w '\n' "$url/"
run curl -sS --fail-with-body -w '\n' "$url/users"
run curl -sS --fail-with-body -w '\n' "$url/cache"
run docker ps --filter "network=$NETWORK" --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}'
log "the stack is up: $url (this run took $((SECONDS - started)) s)"
