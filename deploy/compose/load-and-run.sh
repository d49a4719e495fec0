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
# same ID), verify their IDs against images.txt, write the secrets to ./secrets (the password;
# Redis's password and the API tokens from REDIS_PASSWORD_FILE / API_TOKEN_FILE or generated
# once; all kept for later runs), and docker compose up -d --wait.
# down [--volumes [--yes]]: docker compose down (--volumes: also the data and ./secrets; asks
# first, --yes for scripts).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# In the bundle the shared scripts are in lib/; in the repository, in ../lib/.
lib=$here/lib
[[ -r $lib/common.sh ]] || lib=$here/../lib
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/secrets.sh
source "$lib/secrets.sh"
USERSTACK_STATE_DIR=${USERSTACK_STATE_DIR:-$here/state}
# shellcheck source-path=SCRIPTDIR source=../lib/data.sh
source "$lib/data.sh"
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

    step "The secrets"
    # The bind-mounted files keep their owner and mode in the containers: the app image's
    # (numeric) user may read them, the PostgreSQL and Redis entrypoints read theirs as root,
    # nobody else can (0700 directory).
    local owner mode=0400 name value
    owner=$(numeric_user "$(app_image)")
    [[ -n $owner ]] || mode=0444
    (umask 077 && mkdir -p secrets)
    for name in "${SECRET_NAMES[@]}"; do
        if value=$(secret_source "$name" "secrets/$name"); then :
        elif [[ $name == db_password && -s secrets/db_password ]]; then value=$(cat secrets/db_password)
        else die "no database password: set POSTGRES_PASSWORD, or POSTGRES_PASSWORD_FILE to a file on this host"; fi
        [[ -n $value ]] || die "the $name secret is empty"
        log "secrets/$name: $(printf '%s' "$value" | write_secret "secrets/$name" "$owner" "$mode")"
    done
    run ls -ln secrets

    step "docker compose up"
    run docker compose "${compose_args[@]}" up -d --wait --wait-timeout "${COMPOSE_WAIT_TIMEOUT:-300}"
    run docker compose "${compose_args[@]}" ps
}

down() {
    local volumes=0 yes=0 arg
    for arg in "$@"; do
        case $arg in
            --volumes | -v) volumes=1 ;;
            --yes | -y) yes=1 ;;
            *) die "usage: $0 down [--volumes [--yes]]" ;;
        esac
    done
    if ((volumes)) && docker volume inspect "${COMPOSE_PROJECT_NAME:-userstack}_pgdata" >/dev/null 2>&1; then
        confirm_destroy "the volume ${COMPOSE_PROJECT_NAME:-userstack}_pgdata" "compose-${COMPOSE_PROJECT_NAME:-userstack}" "$yes" ""
    fi
    step "docker compose down${1:+ $*}"
    if ((volumes)); then
        run docker compose "${compose_args[@]}" down --volumes
        run rm -rf secrets
    else
        run docker compose "${compose_args[@]}" down
    fi
}

case ${1:-up} in
    up) up ;;
    down) shift; down "$@" ;;
    *) die "usage: $0 [up | down [--volumes [--yes]]]" ;;
esac
