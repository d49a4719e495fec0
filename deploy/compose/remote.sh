#!/usr/bin/env bash
# remote.sh : run the task-2 compose project on another Docker host, from this (build) host.
#
#   remote.sh images                  the images compose.yaml needs, with their IDs here
#   remote.sh ship TARGET             copy those images from this host's daemon to TARGET's
#                                     (docker save | docker load; images already there with the
#                                     same ID are skipped; IDs are verified after loading)
#   remote.sh up TARGET               put the secrets on TARGET, then docker compose up -d
#                                     --wait there (a changed database password is also set in
#                                     an existing volume first: no restart loop)
#   remote.sh ps TARGET               docker compose ps on TARGET
#   remote.sh ready TARGET            the app's /readyz, asked inside its container (the admin
#                                     port is not published)
#   remote.sh check URL               GET URL/, URL/users (with the token), URL/cache; print them
#   remote.sh backup TARGET [FILE]    pg_dump -Fc of the database on TARGET into FILE on this
#                                     host; prints its size and users (deploy/lib/data.sh)
#   remote.sh restore TARGET FILE     a new volume on TARGET with the backup FILE in it, then up
#   remote.sh down TARGET [--volumes [--yes]]  docker compose down there (--volumes: also the
#                                     data and the secret files `up` wrote; asks first, naming
#                                     the last backup; --yes for scripts)
#   remote.sh bundle OUT.tar.gz       one archive for hosts nothing can reach: the images,
#                                     compose.yaml, .env.example and load-and-run.sh
#
# TARGET is a Docker endpoint (ssh://user@host[:port], unix:///path, tcp://…) or the name of a
# docker context. The images come from the daemon this shell talks to (DOCKER_HOST/--context as
# usual); nothing is built and nothing is pulled.
#
# Environment: everything compose.yaml reads (see .env.example; a `.env` next to compose.yaml is
# read as usual, USERSTACK_ENV_FILE names another one), COMPOSE_PROJECT_NAME (default
# userstack). The secrets (deploy/lib/secrets.sh): the password POSTGRES_PASSWORD or
# POSTGRES_PASSWORD_FILE (a file on this host); Redis's password REDIS_PASSWORD_FILE and the API
# tokens API_TOKEN_FILE, or generated once and kept on this host in
# ~/.local/state/userstack/compose-<project>/ (USERSTACK_STATE_DIR). `up` copies each to
# REMOTE_SECRETS_DIR/<name> on the target (default /var/lib/userstack/<project>/secrets) because
# compose bind-mounts file secrets from the Docker host's file system, not from the client's.
# POSTGRES_PASSWORD_FILE_HOST (REDIS_PASSWORD_FILE_HOST, API_TOKEN_FILE_HOST), when set, names
# a file that already exists on the target and is used as it is.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/cli-plugins.sh
source "$here/../lib/cli-plugins.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/secrets.sh
source "$here/../lib/secrets.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/data.sh
source "$here/../lib/data.sh"

COMPOSE_FILE=$here/compose.yaml
PROJECT=${COMPOSE_PROJECT_NAME:-userstack}
REMOTE_SECRETS_DIR=${REMOTE_SECRETS_DIR:-/var/lib/userstack/$PROJECT/secrets}
CLIENT_SECRETS_DIR=$USERSTACK_STATE_DIR/compose-$PROJECT
BACKUP_KEY=compose-$PROJECT
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

# host_var NAME : the compose variable naming secret NAME's file on the Docker host.
host_var() {
    case $1 in
        db_password) echo POSTGRES_PASSWORD_FILE_HOST ;;
        redis_password) echo REDIS_PASSWORD_FILE_HOST ;;
        api_tokens) echo API_TOKEN_FILE_HOST ;;
    esac
}

# push_secrets : make each secret a file on the target and point compose at it. Sets
# CHANGED[name]=changed|kept.
declare -A CHANGED=()
push_secrets() {
    local name var value dest app_image owner mode script
    # A bind-mounted file keeps its owner and mode in the container (compose ignores uid/gid/mode
    # outside swarm): owned by the app image's user with mode 0400 the app can read it, the
    # PostgreSQL and Redis entrypoints read theirs as root, and nobody else can. An image whose
    # user is not numeric gets 0444; the 0700 directory still keeps other users of the host out.
    app_image=$(service_images | awk '$1 == "app" {print $2}')
    owner=$(numeric_user "$app_image")
    if [[ -n $owner ]]; then mode=0400; else owner=0:0 mode=0444; fi
    for name in "${SECRET_NAMES[@]}"; do
        var=$(host_var "$name")
        if [[ -n ${!var:-} ]]; then
            log "using the $name file ${!var} on the target as it is"
            CHANGED[$name]=kept
            continue
        fi
        value=$(secret_source "$name" "$CLIENT_SECRETS_DIR/$name") ||
            die "no database password: set POSTGRES_PASSWORD, or POSTGRES_PASSWORD_FILE to a file on this host"
        [[ -n $value ]] || die "the $name secret is empty"
        if [[ $name != db_password ]]; then
            # Kept here too: the next `up` sends the same, and the tokens are at hand for curl.
            (umask 077 && mkdir -p "$CLIENT_SECRETS_DIR")
            printf '%s\n' "$value" | write_secret "$CLIENT_SECRETS_DIR/$name" "" 0600 >/dev/null
        fi
        target_shell_cmd
        dest=$REMOTE_SECRETS_DIR/$name
        # The same write_secret as everywhere (deploy/lib/secrets.sh), run on the target.
        script="set -euo pipefail; $(declare -f write_secret); umask 077; mkdir -p $(q "$REMOTE_SECRETS_DIR"); write_secret $(q "$dest") $owner $mode"
        step "Put the secret $name on the target ($dest)"
        # The value travels on stdin and is named by a variable in the command line that is
        # shown and recorded, so it never appears in either. So is the script (write_secret of
        # deploy/lib/secrets.sh, then the file's owner and mode), to keep the record readable.
        # Idempotent, so retried: a busy sshd drops new connections (MaxStartups) now and then.
        local attempt line
        line="printf '%s\\n' \"\$USERSTACK_SECRET\" | $(qa "${SSH_ARGS[@]}") \"\$USERSTACK_WRITE_SECRET\" # write_secret $(q "$dest") $owner $mode"
        for attempt in 1 2 3; do
            USERSTACK_SECRET=$value USERSTACK_WRITE_SECRET="bash -c $(q "$script")" \
                _exec "$line" bash -o pipefail -c "$line" && break
            ((attempt < 3)) || die "could not put $name on the target (3 attempts)"
            warn "attempt $attempt failed; again in 2 s"
            sleep 2
        done
        CHANGED[$name]=${RUN_OUTPUT##*$'\n'}
        export "$var=$dest"
    done
}

# numeric_user IMAGE : the image's USER as uid:gid when it is numeric, else nothing.
numeric_user() {
    local user
    user=$(docker image inspect --format '{{.Config.User}}' "$1" 2>/dev/null) || return 0
    [[ $user =~ ^([0-9]+)(:([0-9]+))?$ ]] || return 0
    printf '%s:%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[3]:-${BASH_REMATCH[1]}}"
}

compose_on() { docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" "$@"; }
container_of() { compose_on ps -q "$1"; }
# volume_exists : whether the data volume is on the target. Not reaching the target is an error,
# never a "no": restore and down decide on this answer.
volume_exists() {
    local out
    out=$(docker "${TARGET_ARGS[@]}" volume ls -q --filter "name=^${PROJECT}_pgdata\$") ||
        die "cannot list the volumes of $ENDPOINT"
    [[ -n $out ]]
}
WAIT=(--wait --wait-timeout "${COMPOSE_WAIT_TIMEOUT:-300}")

cmd_up() {
    (($# == 1)) || usage
    require_tools
    set_target "$1"
    DOCKER=(docker "${TARGET_ARGS[@]}")
    local had_volume=0 recreate=()
    volume_exists && had_volume=1
    push_secrets
    # Compose does not see a secret file's content: containers that read a changed password at
    # start are recreated. The database keeps the password its volume was initialised with, so
    # a new one is set there first; the app never starts with a password the database refuses.
    if [[ ${CHANGED[db_password]} == changed ]] && ((had_volume)); then
        step "The database password changed: set it in the existing volume"
        run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" up -d "${WAIT[@]}" --force-recreate --no-deps db
        sync_db_password "$(container_of db)"
        recreate+=(app)
    elif [[ ${CHANGED[db_password]} == changed ]]; then
        recreate+=(db app)
    fi
    [[ ${CHANGED[redis_password]} == changed ]] && recreate+=(redis app)
    step "docker compose up on $1"
    # Not `ps -q | grep -q .`: grep leaving at the first id can kill ps with SIGPIPE, and under
    # pipefail that read as "no containers" (seen in CI: the app kept the old password).
    if ((${#recreate[@]})) && [[ -n $(compose_on ps -q) ]]; then
        mapfile -t recreate < <(printf '%s\n' "${recreate[@]}" | sort -u)
        run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" up -d "${WAIT[@]}" --force-recreate --no-deps "${recreate[@]}"
    fi
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" up -d "${WAIT[@]}"
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" ps
    # The target's address where the endpoint names one (ssh://, tcp://); a socket is this host.
    local host=${ENDPOINT#*://} port
    host=${host#*@}
    host=${host%%[:/]*}
    [[ $ENDPOINT == unix://* || -z $host ]] && host=127.0.0.1
    port=$(docker compose "${COMPOSE_ARGS[@]}" config --format json | jq -er '.services.app.ports[0].published') ||
        port=APP_PORT
    log "the stack is up on $1: http://$host:$port (remote.sh up took $SECONDS s)"
    log "/users needs a bearer token, a line of ${API_TOKEN_FILE:-$CLIENT_SECRETS_DIR/api_tokens}:"
    log "  curl -H \"Authorization: Bearer \$(grep -v '^#' ${API_TOKEN_FILE:-$CLIENT_SECRETS_DIR/api_tokens} | head -n1)\" http://$host:$port/users"
}

cmd_ready() {
    (($# == 1)) || usage
    require_tools
    set_target "$1"
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" exec -T app userstack ready
}

cmd_backup() {
    (($# >= 1 && $# <= 2)) || usage
    require_tools
    set_target "$1"
    DOCKER=(docker "${TARGET_ARGS[@]}")
    local db
    db=$(container_of db)
    [[ -n $db ]] || die "no db container of project $PROJECT on $1: up first"
    step "Back up the database on $1"
    backup_db "$db" "${2:-}" "$BACKUP_KEY"
}

cmd_restore() {
    (($# == 2)) || usage
    require_tools
    set_target "$1"
    DOCKER=(docker "${TARGET_ARGS[@]}")
    local file=$2
    [[ -r $file ]] || die "$file is not a readable file"
    volume_exists && die "the volume ${PROJECT}_pgdata exists on $1; a restore goes into a new one. First
  remote.sh backup $1                # keep what is there
  remote.sh down $1 --volumes        # remove it (asks)
then run this again."
    push_secrets
    step "A new volume with the backup in it, before the app starts"
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" up -d "${WAIT[@]}" db redis
    restore_db "$(container_of db)" "$file"
    step "docker compose up on $1"
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" up -d "${WAIT[@]}"
}

cmd_ps() {
    (($# == 1)) || usage
    require_tools
    set_target "$1"
    run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" ps --all
}

cmd_down() {
    (($# >= 1)) || usage
    local target=$1 volumes=0 yes=0 arg name var
    shift
    for arg in "$@"; do
        case $arg in
            --volumes | -v) volumes=1 ;;
            --yes | -y) yes=1 ;;
            *) usage ;;
        esac
    done
    require_tools
    set_target "$target"
    if ((volumes)) && volume_exists; then
        confirm_destroy "the volume ${PROJECT}_pgdata on $target" "$BACKUP_KEY" "$yes" "remote.sh backup $target"
    fi
    step "docker compose down on $target$( ((volumes)) && echo ' (with the volumes)')"
    # down does not mount anything, but compose still resolves the secrets' paths.
    for name in "${SECRET_NAMES[@]}"; do
        var=$(host_var "$name")
        export "$var=${!var:-$REMOTE_SECRETS_DIR/$name}"
    done
    if ((volumes)); then
        run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" down --volumes
        if [[ $POSTGRES_PASSWORD_FILE_HOST == "$REMOTE_SECRETS_DIR/db_password" ]]; then
            target_shell_cmd
            run "${SSH_ARGS[@]}" "rm -rf $(q "$REMOTE_SECRETS_DIR")"
        fi
        [[ ! -d $CLIENT_SECRETS_DIR ]] || run rm -rf "$CLIENT_SECRETS_DIR"
        log "last backup (kept): $(last_backup "$BACKUP_KEY")"
    else
        run docker "${TARGET_ARGS[@]}" compose "${COMPOSE_ARGS[@]}" down
    fi
}

cmd_check() {
    (($# == 1)) || usage
    command -v curl >/dev/null || die "curl is not installed"
    local url=${1%/} path tokens header
    tokens=${API_TOKEN_FILE:-$CLIENT_SECRETS_DIR/api_tokens}
    [[ -r $tokens ]] || die "no token file $tokens: set API_TOKEN_FILE (the tokens up used)"
    # The token travels in a header file: never on a command line or in the transcript.
    header=$(mktemp)
    # shellcheck disable=SC2064 # expand now: header is local
    trap "rm -f $(q "$header")" RETURN
    printf 'Authorization: Bearer %s\n' "$(first_token "$tokens")" >"$header"
    step "Check the app at $url"
    for path in / /users /cache; do
        run curl -sS --fail-with-body --max-time 10 -w '\n' -H "@$header" "$url$path"
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
    # In the bundle the shared definitions sit in lib/ beside compose.yaml, not in ../lib/.
    sed 's#\.\./lib/services\.json#lib/services.json#' "$COMPOSE_FILE" >"$dir/compose.yaml"
    cp "$here/.env.example" "$here/load-and-run.sh" "$dir/"
    cp "$here/../lib/common.sh" "$here/../lib/secrets.sh" "$here/../lib/data.sh" \
        "$here/../lib/services.json" "$dir/lib/"
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
    ready) cmd_ready "$@" ;;
    backup) cmd_backup "$@" ;;
    restore) cmd_restore "$@" ;;
    check) cmd_check "$@" ;;
    down) cmd_down "$@" ;;
    bundle) cmd_bundle "$@" ;;
    *) usage ;;
esac
