#!/usr/bin/env bash
# load-and-run.sh [up | down [--volumes]] : the offline path of task 2, run ON the Docker host.
#
# It ships inside the bundle that `remote.sh bundle OUT.tar.gz` makes (next to images.tar,
# images.txt, bundle.env, compose.yaml, .env.example and lib/common.sh), for hosts that neither a
# registry nor ssh from the build host can reach. Copy the archive over by any means, then:
#
#   tar -xzf userstack-bundle.tar.gz && cd userstack-bundle
#   cp .env.example .env   # optional: port, bind address, user, database
#   POSTGRES_PASSWORD_FILE=/path/to/password ./load-and-run.sh     # or POSTGRES_PASSWORD=…
#
# up (the default): docker load the images (skipped when every one is already there with the
# same ID), verify their IDs against images.txt, write the password to ./secrets/db_password
# (kept for later runs), and docker compose up -d --wait.
# down [--volumes]: docker compose down (--volumes: also the data and ./secrets).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -r $here/lib/common.sh ]]; then
    # shellcheck source-path=SCRIPTDIR source=../lib/common.sh
    source "$here/lib/common.sh"
else
    # shellcheck source-path=SCRIPTDIR source=../lib/common.sh
    source "$here/../lib/common.sh"
fi
cd "$here"

for f in images.tar images.txt bundle.env compose.yaml; do
    [[ -r $f ]] || die "$here/$f is missing: run this script from an unpacked bundle (remote.sh bundle)"
done
command -v docker >/dev/null || die "docker is not installed on this host"
docker compose version >/dev/null 2>&1 || die "the docker compose v2 plugin is not installed on this host"

compose_args=(-f compose.yaml -p "${COMPOSE_PROJECT_NAME:-userstack}" --env-file bundle.env)
[[ -r .env ]] && compose_args+=(--env-file .env)

# app_image : the app's image as compose will see it (the shell's APP_IMAGE, else .env's, else
# bundle.env's: compose's own order of precedence).
app_image() {
    local img="" f v
    for f in bundle.env .env; do
        [[ -r $f ]] || continue
        v=$(sed -n 's/^APP_IMAGE=//p' "$f" | tail -n 1)
        v=${v#[\"\']}
        v=${v%[\"\']}
        [[ -n $v ]] && img=$v
    done
    printf '%s' "${APP_IMAGE:-${img:-userstack:latest}}"
}

# numeric_user IMAGE : the image's USER as uid:gid when it is numeric, else nothing.
numeric_user() {
    local user
    user=$(docker image inspect --format '{{.Config.User}}' "$1" 2>/dev/null) || return 0
    [[ $user =~ ^([0-9]+)(:([0-9]+))?$ ]] || return 0
    printf '%s:%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[3]:-${BASH_REMATCH[1]}}"
}

ids_match() {
    local img id
    while read -r img id; do
        [[ $(docker image inspect --format '{{.Id}}' "$img" 2>/dev/null) == "$id" ]] || return 1
    done <images.txt
}

up() {
    step "Load the images"
    if ids_match; then
        log "every image in images.txt is already here with the same ID; not loading"
    else
        run docker load -i images.tar
    fi
    local img id got
    while read -r img id; do
        got=$(docker image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
        [[ $got == "$id" ]] || die "$img: expected ID $id, this host has '${got:-nothing}'"
        log "$img: ID ${id:7:12} verified"
    done <images.txt

    step "The database password"
    local value
    if value=$(secret_value POSTGRES_PASSWORD); then
        [[ -n $value ]] || die "the database password is empty"
        (umask 077 && mkdir -p secrets)
        # Rewritten only on change: a running container keeps the inode it bind-mounted.
        if ! printf '%s' "$value" | cmp -s - secrets/db_password; then
            (umask 077 && printf '%s' "$value" >secrets/db_password.new)
            mv -f secrets/db_password.new secrets/db_password
        fi
        log "password written to $here/secrets/db_password"
    elif [[ -s secrets/db_password ]]; then
        log "using the password kept in $here/secrets/db_password"
    else
        die "no database password: set POSTGRES_PASSWORD, or POSTGRES_PASSWORD_FILE to a file on this host"
    fi
    # The bind-mounted file keeps its owner and mode in the containers: the app image's (numeric)
    # user may read it, PostgreSQL's entrypoint reads it as root, nobody else can (0700 directory).
    local owner
    owner=$(numeric_user "$(app_image)")
    if [[ -n $owner ]]; then
        run chown "$owner" secrets/db_password
        run chmod 0400 secrets/db_password
    else
        run chmod 0444 secrets/db_password
    fi
    run ls -ln secrets/db_password

    step "docker compose up"
    run docker compose "${compose_args[@]}" up -d --wait --wait-timeout "${COMPOSE_WAIT_TIMEOUT:-300}"
    run docker compose "${compose_args[@]}" ps
}

down() {
    step "docker compose down${1:+ $1}"
    if [[ ${1:-} == --volumes || ${1:-} == -v ]]; then
        run docker compose "${compose_args[@]}" down --volumes
        run rm -rf secrets
    else
        run docker compose "${compose_args[@]}" down
    fi
}

case ${1:-up} in
    up) up ;;
    down) down "${2:-}" ;;
    *) die "usage: $0 [up | down [--volumes]]" ;;
esac
