#!/usr/bin/env bash
# remote.sh : run the task-2 compose project on another Docker host, from this (build) host.
#
#   remote.sh images                  the images compose.yaml needs, with their IDs here
#   remote.sh ship TARGET             copy those images from this host's daemon to TARGET's
#                                     (docker save | docker load; images already there with the
#                                     same ID are skipped; IDs are verified after loading)
#   remote.sh up TARGET               put the database password on TARGET, then
#                                     docker compose up -d --wait there
#   remote.sh ps TARGET               docker compose ps on TARGET
#   remote.sh check URL               GET URL/, URL/users, URL/cache, URL/readyz and print them
#   remote.sh down TARGET [--volumes] docker compose down there (--volumes: also the data and
#                                     the password file `up` wrote)
#   remote.sh bundle OUT.tar.gz       one archive for hosts nothing can reach: the images,
#                                     compose.yaml, .env.example and load-and-run.sh
#
# TARGET is a Docker endpoint (ssh://user@host[:port], unix:///path, tcp://…) or the name of a
# docker context. The images come from the daemon this shell talks to (DOCKER_HOST/--context as
# usual); nothing is built and nothing is pulled.
#
# Environment: everything compose.yaml reads (see .env.example; a `.env` next to compose.yaml is
# read as usual, USERSTACK_ENV_FILE names another one), COMPOSE_PROJECT_NAME (default
# userstack). The password: POSTGRES_PASSWORD, or POSTGRES_PASSWORD_FILE (a file on this host);
# `up` copies it to REMOTE_SECRETS_DIR/db_password on the target (default
# /var/lib/userstack/<project>/secrets) because compose bind-mounts file secrets from the Docker
# host's file system, not from the client's. POSTGRES_PASSWORD_FILE_HOST, when set, names a file
# that already exists on the target and is used as it is.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/cli-plugins.sh
source "$here/../lib/cli-plugins.sh"

COMPOSE_FILE=$here/compose.yaml
PROJECT=${COMPOSE_PROJECT_NAME:-userstack}
REMOTE_SECRETS_DIR=${REMOTE_SECRETS_DIR:-/var/lib/userstack/$PROJECT/secrets}
COMPOSE_ARGS=(-f "$COMPOSE_FILE" -p "$PROJECT")
if [[ -n ${USERSTACK_ENV_FILE:-} ]]; then
    [[ -r $USERSTACK_ENV_FILE ]] || die "USERSTACK_ENV_FILE=$USERSTACK_ENV_FILE is not readable"
    COMPOSE_ARGS+=(--env-file "$USERSTACK_ENV_FILE")
fi

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; exit 2; }

require_tools() {
    command -v docker >/dev/null || die "docker (the CLI) is not installed"
    # Installed into this user's CLI plugin directory when missing (deploy/lib/cli-plugins.sh).
    ensure_cli_plugins compose
}

# set_target TARGET : TARGET_ARGS (docker's global flags for it) and ENDPOINT (its address).
TARGET_ARGS=()
ENDPOINT=""
set_target() {
    local target=$1
    case $target in
        ssh://* | unix://* | tcp://*)
            TARGET_ARGS=(-H "$target")
            ENDPOINT=$target
            ;;
        *)
            docker context inspect "$target" >/dev/null 2>&1 ||
                die "TARGET '$target' is neither ssh://…, unix://…, tcp://… nor a docker context (docker context ls)"
            TARGET_ARGS=(--context "$target")
            ENDPOINT=$(docker context inspect --format '{{.Endpoints.docker.Host}}' "$target")
            ;;
    esac
}

# target_shell 'SCRIPT' : run a shell script on the target's machine (stdin passed through).
# Needed for the one thing the Docker API cannot do for us: put a file on the host.
SSH_ARGS=()
target_shell_cmd() {
    case $ENDPOINT in
        ssh://*)
            local rest=${ENDPOINT#ssh://} hostport port=""
            hostport=${rest%%/*}
            if [[ $hostport =~ ^(.*):([0-9]+)$ ]]; then
                hostport=${BASH_REMATCH[1]}
                port=${BASH_REMATCH[2]}
            fi
            SSH_ARGS=(ssh)
            [[ -n $port ]] && SSH_ARGS+=(-p "$port")
            SSH_ARGS+=("$hostport")
            ;;
        unix://*) SSH_ARGS=(bash -c) ;; # the daemon runs on this machine
        *) die "cannot put files on $ENDPOINT (only ssh:// or local unix:// targets); create the password file there yourself and set POSTGRES_PASSWORD_FILE_HOST to its path" ;;
    esac
}

q() { printf '%q' "$1"; }
# sq STRING : STRING in single quotes, for a whole remote script on a shown command line.
sq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
qa() { local a out=""; for a in "$@"; do out+=" $(q "$a")"; done; printf '%s' "${out# }"; }

# images : "service image" lines, from compose's own view of the file and the environment.
service_images() {
    docker compose "${COMPOSE_ARGS[@]}" config --format json |
        jq -r '.services | to_entries[] | "\(.key) \(.value.image)"' | sort
}

local_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }

cmd_images() {
    require_tools
    local svc img id
    while read -r svc img; do
        id=$(local_id "$img") || id="(not on this host)"
        printf '%-6s %-45s %s\n' "$svc" "$img" "$id"
    done < <(service_images)
}

cmd_ship() {
    (($# == 1)) || usage
    require_tools
    set_target "$1"
    step "Ship the images to $1"
    local svc img id rid t0 shipped=0 skipped=0 start_all
    start_all=$(date +%s%3N)
    while read -r svc img; do
        id=$(local_id "$img") || die "image $img ($svc) is not on this host: build it (task 1) or load it first"
        rid=$(docker "${TARGET_ARGS[@]}" image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
        if [[ $rid == "$id" ]]; then
            log "$img is already on the target with the same ID ${id:7:12}; skipped"
            skipped=$((skipped + 1))
            continue
        fi
        t0=$(date +%s%3N)
        run_sh "docker save $(q "$img") | docker $(qa "${TARGET_ARGS[@]}") load"
        rid=$(docker "${TARGET_ARGS[@]}" image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
        [[ $rid == "$id" ]] || die "after loading, $img on the target is '${rid:-missing}', here it is $id"
        log "$img: ID ${id:7:12} verified on the target ($(size_of "$img"), $(secs_since "$t0") s)"
        shipped=$((shipped + 1))
    done < <(service_images)
    log "shipped $shipped image(s), skipped $skipped, in $(secs_since "$start_all") s"
}

size_of() { docker image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }
secs_since() { awk -v a="$1" -v b="$(date +%s%3N)" 'BEGIN{printf "%.1f", (b-a)/1000}'; }

# push_secret : make the password a file on the target and point compose at it.
push_secret() {
    if [[ -n ${POSTGRES_PASSWORD_FILE_HOST:-} ]]; then
        log "using the password file $POSTGRES_PASSWORD_FILE_HOST on the target as it is"
        return 0
    fi
    local value
    value=$(secret_value POSTGRES_PASSWORD) ||
        die "no database password: set POSTGRES_PASSWORD, or POSTGRES_PASSWORD_FILE to a file on this host"
    [[ -n $value ]] || die "the database password is empty"
    target_shell_cmd
    local dest=$REMOTE_SECRETS_DIR/db_password app_image owner mode
    # A bind-mounted file keeps its owner and mode in the container (compose ignores uid/gid/mode
    # outside swarm): owned by the app image's user with mode 0400 the app can read it,
    # PostgreSQL's entrypoint reads it as root, and nobody else can. An image whose user is not
    # numeric gets 0444; the 0700 directory still keeps other users of the host out.
    app_image=$(service_images | awk '$1 == "app" {print $2}')
    owner=$(numeric_user "$app_image")
    if [[ -n $owner ]]; then mode=0400; else owner=0:0 mode=0444; fi
    # Rewritten only on change: a running container keeps the inode it bind-mounted.
    local script
    script="umask 077 && mkdir -p $(q "$REMOTE_SECRETS_DIR") && cat > $(q "$dest.new") && if cmp -s $(q "$dest.new") $(q "$dest"); then rm -f $(q "$dest.new"); else mv -f $(q "$dest.new") $(q "$dest"); fi && chown $owner $(q "$dest") && chmod $mode $(q "$dest")"
    step "Put the database password on the target ($dest)"
    # The value travels on stdin and is named by a variable in the command line that is shown
    # and recorded, so it never appears in either.
    USERSTACK_DB_PASSWORD=$value run_sh "printf %s \"\$USERSTACK_DB_PASSWORD\" | $(qa "${SSH_ARGS[@]}") $(sq "$script")"
    export POSTGRES_PASSWORD_FILE_HOST=$dest
}

# numeric_user IMAGE : the image's USER as uid:gid when it is numeric, else nothing.
numeric_user() {
    local user
    user=$(docker image inspect --format '{{.Config.User}}' "$1" 2>/dev/null) || return 0
    [[ $user =~ ^([0-9]+)(:([0-9]+))?$ ]] || return 0
    printf '%s:%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[3]:-${BASH_REMATCH[1]}}"
}

cmd_up() {
    (($# == 1)) || usage
    require_tools
    set_target "$1"
    push_secret
    step "docker compose up on $1"
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" up -d --wait --wait-timeout "${COMPOSE_WAIT_TIMEOUT:-300}"
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" ps
    # The target's address where the endpoint names one (ssh://, tcp://); a socket is this host.
    local host=${ENDPOINT#*://} port
    host=${host#*@}
    host=${host%%[:/]*}
    [[ $ENDPOINT == unix://* || -z $host ]] && host=127.0.0.1
    port=$(docker compose "${COMPOSE_ARGS[@]}" config --format json | jq -er '.services.app.ports[0].published') ||
        port=APP_PORT
    log "the stack is up on $1: http://$host:$port (remote.sh up took $SECONDS s)"
}

cmd_ps() {
    (($# == 1)) || usage
    require_tools
    set_target "$1"
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" ps --all
}

cmd_down() {
    (($# >= 1 && $# <= 2)) || usage
    local volumes=0
    if (($# == 2)); then
        [[ $2 == --volumes || $2 == -v ]] || usage
        volumes=1
    fi
    require_tools
    set_target "$1"
    step "docker compose down on $1$( ((volumes)) && echo ' (with the volumes)')"
    # down does not mount anything, but compose still resolves the secret's path.
    export POSTGRES_PASSWORD_FILE_HOST=${POSTGRES_PASSWORD_FILE_HOST:-$REMOTE_SECRETS_DIR/db_password}
    if ((volumes)); then
        run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" down --volumes
        if [[ $POSTGRES_PASSWORD_FILE_HOST == "$REMOTE_SECRETS_DIR/db_password" ]]; then
            target_shell_cmd
            run "${SSH_ARGS[@]}" "rm -rf $(q "$REMOTE_SECRETS_DIR")"
        fi
    else
        run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" down
    fi
}

cmd_check() {
    (($# == 1)) || usage
    command -v curl >/dev/null || die "curl is not installed"
    local url=${1%/} path
    step "Check the app at $url"
    for path in / /users /cache /readyz; do
        run curl -sS --fail-with-body --max-time 10 -w '\n' "$url$path"
    done
}

cmd_bundle() {
    (($# == 1)) || usage
    require_tools
    command -v jq >/dev/null || die "jq is not installed"
    local out tmp dir svc img id t0
    out=$(realpath -m -- "$1")
    [[ $out == *.tar.gz ]] || die "the bundle's name must end in .tar.gz"
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf $(q "$tmp")" EXIT
    dir=$tmp/userstack-bundle
    mkdir -p "$dir/lib"
    step "Bundle the images and the compose project into $out"
    local images=() names=()
    : >"$dir/images.txt"
    : >"$dir/bundle.env"
    local -A seen=()
    while read -r svc img; do
        id=$(local_id "$img") || die "image $img ($svc) is not on this host: build it (task 1) or load it first"
        if [[ -z ${seen[$img]:-} ]]; then
            seen[$img]=1
            images+=("$img")
            printf '%s %s\n' "$img" "$id" >>"$dir/images.txt"
        fi
        case $svc in
            app) names+=("APP_IMAGE=$img") ;;
            db) names+=("POSTGRES_IMAGE=$img") ;;
            redis) names+=("REDIS_IMAGE=$img") ;;
            *) die "compose.yaml has a service this script does not know: $svc" ;;
        esac
    done < <(service_images)
    {
        echo "# The image names this bundle was made with (remote.sh bundle); .env overrides the rest."
        printf '%s\n' "${names[@]}"
    } >"$dir/bundle.env"
    t0=$(date +%s%3N)
    run docker save -o "$dir/images.tar" "${images[@]}"
    cp "$COMPOSE_FILE" "$here/.env.example" "$here/load-and-run.sh" "$dir/"
    cp "$here/../lib/common.sh" "$dir/lib/"
    chmod 0755 "$dir/load-and-run.sh"
    run cat "$dir/images.txt" "$dir/bundle.env"
    # gzip -1: the layers are mostly binaries that compress little more at higher levels.
    run_sh "tar -C $(q "$tmp") -cf - userstack-bundle | gzip -1 > $(q "$out")"
    run_sh "tar -tzvf $(q "$out") | awk '{print \$3, \$6}'"
    log "bundle: $out ($(du -m "$out" | cut -f1) MB, $(secs_since "$t0") s)"
    rm -rf "$tmp"
    trap - EXIT
}

cmd=${1:-}
(($# > 0)) && shift
case $cmd in
    images) cmd_images "$@" ;;
    ship) cmd_ship "$@" ;;
    up) cmd_up "$@" ;;
    ps) cmd_ps "$@" ;;
    check) cmd_check "$@" ;;
    down) cmd_down "$@" ;;
    bundle) cmd_bundle "$@" ;;
    *) usage ;;
esac
