#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Task 3: the userstack stack on a Docker Swarm, fed by a private registry. Run from the machine
# that built the images (task 1); the nodes are reached over ssh as root (DOCKER_HOST=ssh://…).
# Every docker command is printed before it runs. See deploy/swarm/README.md for the walk-through.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../lib/common.sh
source "$root/deploy/lib/common.sh"
# shellcheck source=../lib/secrets.sh
source "$root/deploy/lib/secrets.sh"

usage() {
    cat <<'EOF'
Usage: deploy/swarm/swarm.sh COMMAND [ARG...]

  init MANAGER-ADDR [WORKER-ADDR...]
          a swarm: `docker swarm init` on the manager, the workers join over their addresses,
          the manager gets the node label userstack.db=true (PostgreSQL and its volume live
          there). Unless REGISTRY is set: a CA and a TLS certificate for a registry on the
          manager (port REGISTRY_PORT), the CA installed in /etc/docker/certs.d/ADDR:PORT/ on
          every node and on this machine, a user and password for it (htpasswd, bcrypt), the
          registry started as a Swarm service, and `docker login` to it here (the stack's
          --with-registry-auth hands that login to the nodes).
  push    tag the images and push them to the registry; prints their digests and records them
          (the stack deploys exactly these digests)
  deploy  the database password, Redis's password and the API tokens as Swarm secrets, the
          hardening of deploy/lib/services.json as a compose file (deploy/lib/swarm-services.sh),
          `docker stack deploy --with-registry-auth` of that file and stack.yaml, then wait until
          every service has all its replicas running and healthy. New Redis password or tokens:
          new secrets, and the services roll onto them (README.md, "Rotation")
  config  print the stack as deploy sends it (services.json's hardening merged with stack.yaml)
  update IMAGE
          push IMAGE (e.g. userstack:v2) and roll the app over to it, one task at a time; waits
          for the update to complete, fails if Swarm rolled it back
  status  nodes, services, tasks, the app's last update
  down [--purge]
          remove the stack (the data volume and the secrets stay); --purge also removes the
          volume userstack_pgdata and the secrets (database, Redis, API tokens)

Environment (default in brackets):
  POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE   the PostgreSQL password (deploy)
  REDIS_PASSWORD_FILE   Redis's password [generated once, kept in SWARM_STATE/secrets]
  API_TOKEN_FILE        the API's bearer tokens, one per line [one generated once, kept there]
  APP_IMAGE [userstack:latest], POSTGRES_IMAGE [postgres:13], REDIS_IMAGE [redis:latest],
  HAPROXY_IMAGE [haproxy:2.6], REGISTRY_IMAGE [registry:2]
          the images `push` sends (source deploy/images/standins.env for the stand-ins)
  REGISTRY  host:port/namespace of a registry the nodes can already pull from: no registry of
            our own is made, `push` goes there [a registry on the manager, ADDR:REGISTRY_PORT/userstack]
  REGISTRY_PORT [5443]  LB_PORT [5000] (the port every node answers on)  APP_REPLICAS [3]
  ENCRYPT_BACKEND=1  IPsec on the backend overlay (stack.encrypted.yaml; needs kernel support)
  MESH=1             the routing mesh instead of the lb (stack.mesh.yaml; needs IPVS)
  SWARM_SSH_USER [root]   SWARM_STATE [${XDG_STATE_HOME:-~/.local/state}/userstack/swarm]
  SWARM_HEARTBEAT [5s]    how often nodes report to the managers (swarm init
                          --dispatcher-heartbeat): a lost node is declared down after a few of them
  WAIT_TIMEOUT [300]      USERSTACK_TRANSCRIPT (deploy/lib/common.sh)
  DOCKER_CONFIG           where `docker login` keeps the registry's credentials [~/.docker]
EOF
}

STACK=userstack
STATE=${SWARM_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/userstack/swarm}
SSH_USER=${SWARM_SSH_USER:-root}
REGISTRY_PORT=${REGISTRY_PORT:-5443}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-300}
STACK_FILE=$here/stack.yaml
DB_SECRET=${STACK}_db_password
# Kept on this machine (mode 0600): the next deploy sends the same, and the tokens are at hand.
SECRETS_DIR=$STATE/secrets

# The manager, as init recorded it.
manager_addr() {
    [[ -r $STATE/manager ]] || die "no swarm recorded in $STATE: run '$0 init MANAGER-ADDR WORKER-ADDR...' first"
    cat "$STATE/manager"
}
ssh_url() { echo "ssh://$SSH_USER@$1"; }
# dm ARG... : docker on the manager (printed and recorded through `run`).
dm() { run docker -H "$(ssh_url "$(manager_addr)")" "$@"; }
# qm ARG... : docker on the manager, quietly (for values and polling).
qm() { docker -H "$(ssh_url "$(manager_addr)")" "$@"; }

registry() {
    if [[ -n ${REGISTRY:-} ]]; then echo "$REGISTRY"
    elif [[ -r $STATE/registry ]]; then cat "$STATE/registry"
    else die "no registry: set REGISTRY=host:port/namespace or run '$0 init' (it makes one)"; fi
}

# ---------------------------------------------------------------------------------------------
cmd_init() {
    (($# >= 1)) || { usage >&2; die "init needs the manager's address"; }
    local manager=$1 w state token node_id reg ca_dir nodes
    shift
    mkdir -p "$STATE"
    chmod 0700 "$STATE"
    echo "$manager" >"$STATE/manager"
    nodes=("$manager" "$@")

    step "1. The swarm: docker swarm init on the manager $manager"
    state=$(qm info --format '{{.Swarm.LocalNodeState}}')
    if [[ $state == active ]]; then
        log "$manager is already in a swarm: kept"
    else
        # Its output names the join token, which admits nodes: shown as <token>, never recorded.
        run_sh "docker -H $(ssh_url "$manager") swarm init --advertise-addr $manager --dispatcher-heartbeat ${SWARM_HEARTBEAT:-5s} | sed -E 's/SWMTKN-[A-Za-z0-9-]+/<token>/'"
    fi

    step "2. The workers join over their addresses"
    token=$(qm swarm join-token -q worker)
    for w in "$@"; do
        state=$(docker -H "$(ssh_url "$w")" info --format '{{.Swarm.LocalNodeState}}')
        if [[ $state == active ]]; then
            log "$w is already in a swarm: kept"
            continue
        fi
        # The token admits a node to the swarm: shown as <worker token>, never recorded.
        _exec "docker -H $(ssh_url "$w") swarm join --token <worker token> --advertise-addr $w $manager:2377" \
            docker -H "$(ssh_url "$w")" swarm join --token "$token" --advertise-addr "$w" "$manager:2377" ||
            die "$w could not join the swarm"
    done
    dm node ls

    step "3. PostgreSQL's node: the label userstack.db=true on the manager"
    node_id=$(qm info --format '{{.Swarm.NodeID}}')
    dm node update --label-add userstack.db=true "$node_id"

    if [[ -n ${REGISTRY:-} ]]; then
        log "REGISTRY=$REGISTRY: pushing there; no registry of our own"
        echo "$REGISTRY" >"$STATE/registry"
        return 0
    fi
    reg=$manager:$REGISTRY_PORT
    ca_dir=$STATE/registry-tls
    step "4. A CA and a TLS certificate for the registry at $reg"
    if [[ -r $ca_dir/ca.crt && -r $ca_dir/registry.crt ]] && openssl x509 -in "$ca_dir/registry.crt" -noout -checkip "$manager" | grep -q 'does match'; then
        log "$ca_dir has a certificate for $manager: kept"
    else
        mkdir -p "$ca_dir"
        chmod 0700 "$ca_dir"
        run openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
            -subj "/CN=userstack swarm registry CA" -keyout "$ca_dir/ca.key" -out "$ca_dir/ca.crt"
        run openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=$manager" -keyout "$ca_dir/registry.key" -out "$ca_dir/registry.csr"
        printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$manager" >"$ca_dir/ext.cnf"
        run openssl x509 -req -in "$ca_dir/registry.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
            -CAcreateserial -days 365 -extfile "$ca_dir/ext.cnf" -out "$ca_dir/registry.crt"
    fi
    run openssl x509 -in "$ca_dir/registry.crt" -noout -subject -issuer -ext subjectAltName

    step "5. Every Docker daemon trusts the CA for $reg (certs.d, no insecure-registries)"
    for w in "${nodes[@]}"; do
        run_sh "ssh $SSH_USER@$w 'mkdir -p /etc/docker/certs.d/$reg && cat > /etc/docker/certs.d/$reg/ca.crt' < $ca_dir/ca.crt"
    done
    # This machine pushes, so its daemon needs the CA too.
    run install -D -m 0644 "$ca_dir/ca.crt" "/etc/docker/certs.d/$reg/ca.crt"

    step "6. The registry's image on the manager"
    local image=${REGISTRY_IMAGE:-registry:2}
    if ! qm image inspect "$image" >/dev/null 2>&1; then
        # The one image no registry can serve: the registry's own. Pulled where it can be,
        # otherwise copied from this machine.
        if ! try docker -H "$(ssh_url "$manager")" pull "$image"; then
            docker image inspect "$image" >/dev/null 2>&1 || die "$image is neither pullable on $manager nor on this machine"
            run_sh "docker save $image | docker -H $(ssh_url "$manager") load"
        fi
    fi
    step "7. A user for the registry: no anonymous pulls or pushes"
    local auth_dir=$STATE/registry-auth
    if [[ -r $auth_dir/htpasswd && -r $auth_dir/password ]]; then
        log "$auth_dir has the registry's user: kept"
    else
        mkdir -p "$auth_dir"
        chmod 0700 "$auth_dir"
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$auth_dir/password")
        # bcrypt, the only hash the registry's htpasswd auth accepts; the password on stdin.
        _exec "htpasswd -B -i -c $auth_dir/htpasswd $STACK < $auth_dir/password" \
            htpasswd -B -i -c "$auth_dir/htpasswd" "$STACK" <"$auth_dir/password" ||
            die "htpasswd failed (apt-get install apache2-utils)"
    fi

    step "8. The registry, as a Swarm service on the manager (TLS key, certificate, htpasswd as secrets)"
    local name file
    for name in crt key htpasswd; do
        case $name in htpasswd) file=$auth_dir/htpasswd ;; *) file=$ca_dir/registry.$name ;; esac
        if qm secret inspect "${STACK}_registry_$name" >/dev/null 2>&1; then
            log "secret ${STACK}_registry_$name exists: kept"
        else
            dm secret create "${STACK}_registry_$name" "$file"
        fi
    done
    if qm service inspect "${STACK}-registry" >/dev/null 2>&1; then
        log "service ${STACK}-registry exists: kept"
    else
        dm service create --detach --name "${STACK}-registry" --no-resolve-image \
            --constraint node.role==manager \
            --publish "mode=host,published=$REGISTRY_PORT,target=5000" \
            --secret "source=${STACK}_registry_crt,target=registry.crt" \
            --secret "source=${STACK}_registry_key,target=registry.key" \
            --secret "source=${STACK}_registry_htpasswd,target=htpasswd" \
            --env REGISTRY_HTTP_TLS_CERTIFICATE=/run/secrets/registry.crt \
            --env REGISTRY_HTTP_TLS_KEY=/run/secrets/registry.key \
            --env REGISTRY_AUTH=htpasswd \
            --env "REGISTRY_AUTH_HTPASSWD_REALM=$STACK registry" \
            --env REGISTRY_AUTH_HTPASSWD_PATH=/run/secrets/htpasswd \
            --mount "type=volume,source=${STACK}-registry,target=/var/lib/registry" \
            --restart-condition any --limit-memory 256M \
            "$image"
    fi
    # Up means TLS works with our CA and a request without credentials is refused.
    wait_until "$WAIT_TIMEOUT" "the registry answers on https://$reg/v2/" \
        bash -c "[[ \$(curl -sS --max-time 3 -o /dev/null -w '%{http_code}' --cacert $ca_dir/ca.crt https://$reg/v2/) == 401 ]]"
    run curl -sS --cacert "$ca_dir/ca.crt" -o /dev/null -w 'without credentials: HTTP %{http_code}\n' "https://$reg/v2/"

    step "9. docker login to the registry here (stack deploy --with-registry-auth passes it on)"
    _exec "docker login $reg -u $STACK --password-stdin < $auth_dir/password" \
        docker login "$reg" -u "$STACK" --password-stdin <"$auth_dir/password" ||
        die "docker login $reg failed"
    echo "$reg/$STACK" >"$STATE/registry"
    log "swarm ready: manager $manager, registry $reg/$STACK"
}

# ---------------------------------------------------------------------------------------------
# push_image SOURCE : tag SOURCE into the registry, push it, set PUSHED to REPO@DIGEST.
push_image() {
    local src=$1 reg base dst digest
    reg=$(registry)
    docker image inspect "$src" >/dev/null 2>&1 || die "image $src is not on this machine"
    base=${src##*/}
    [[ $base == *:* ]] || base=$base:latest
    dst=$reg/$base
    run docker tag "$src" "$dst"
    run docker push "$dst"
    digest=$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' <<<"$RUN_OUTPUT" | tail -n 1)
    [[ -n $digest ]] || die "docker push printed no digest for $dst"
    PUSHED=${dst%:*}@$digest
}

cmd_push() {
    local reg var src
    reg=$(registry)
    step "Push the images to $reg (the nodes pull them from there, by digest)"
    : >"$STATE/images.env.new"
    for var in APP_IMAGE POSTGRES_IMAGE REDIS_IMAGE HAPROXY_IMAGE; do
        case $var in
            APP_IMAGE) src=${APP_IMAGE:-userstack:latest} ;;
            POSTGRES_IMAGE) src=${POSTGRES_IMAGE:-postgres:13} ;;
            REDIS_IMAGE) src=${REDIS_IMAGE:-redis:latest} ;;
            HAPROXY_IMAGE) src=${HAPROXY_IMAGE:-haproxy:2.6} ;;
        esac
        push_image "$src"
        printf '%s=%s\n' "$var" "$PUSHED" >>"$STATE/images.env.new"
    done
    mv "$STATE/images.env.new" "$STATE/images.env"
    step "The digests the stack will run ($STATE/images.env)"
    run cat "$STATE/images.env"
}

# ---------------------------------------------------------------------------------------------
stack_env() {
    [[ -r $STATE/images.env ]] || die "no pushed images recorded: run '$0 push' first"
    set -a
    # shellcheck source=/dev/null # written by cmd_push: VAR=repo@sha256:… lines
    source "$STATE/images.env"
    set +a
    stack_settings
}

# stack_settings : what stack.yaml interpolates besides the images (deploy and config alike).
stack_settings() {
    HAPROXY_CFG_HASH=$(sha256sum "$here/haproxy.cfg" | cut -c1-12)
    export HAPROXY_CFG_HASH
    # The hardening file is the first compose file: relative paths in stack.yaml start here.
    export SWARM_DIR=$here
}

# stack_files HARDENING : the -c options of stack deploy in STACK_FILES: HARDENING (the compose
# file deploy/lib/swarm-services.sh makes of services.json) first, stack.yaml over it (its health
# check timing for the app wins), then the optional overrides.
stack_files() {
    STACK_FILES=(-c "$1" -c "$STACK_FILE")
    [[ ${ENCRYPT_BACKEND:-0} == 1 ]] && STACK_FILES+=(-c "$here/stack.encrypted.yaml")
    [[ ${MESH:-0} == 1 ]] && STACK_FILES+=(-c "$here/stack.mesh.yaml")
    return 0
}

# config : the stack as deploy sends it; needs no swarm (the CI's stack-config stage runs it).
cmd_config() {
    stack_files -
    stack_settings
    # The secret names of the last deploy, where there was one.
    if [[ -r $SECRETS_DIR/versions.env ]]; then
        set -a
        # shellcheck source=/dev/null # written by deploy: VAR=digest lines
        source "$SECRETS_DIR/versions.env"
        set +a
    fi
    "$root/deploy/lib/swarm-services.sh" | docker stack config "${STACK_FILES[@]}"
}

# swarm_secret NAME : the Swarm secret userstack_NAME_<digest> for secret NAME (redis_password,
# api_tokens; deploy/lib/secrets.sh decides the content: the user's file, else the kept one, else
# a new one), created if missing; sets VERSION to the digest. Secrets are immutable, so new
# content is a new secret, and the services that use it are updated onto it by stack deploy.
# The digest names the content without revealing it: whoever can list secrets is a manager, and
# a manager can read any secret by mounting it in a service.
swarm_secret() {
    local name=$1 value secret
    (umask 077 && mkdir -p "$SECRETS_DIR")
    value=$(secret_source "$name" "$SECRETS_DIR/$name") || die "no content for the secret $name"
    [[ -n $value ]] || die "the $name secret is empty"
    printf '%s\n' "$value" | write_secret "$SECRETS_DIR/$name" "" 0600 >/dev/null
    VERSION=$(secret_version "$name")
    secret=${STACK}_${name}_$VERSION
    if qm secret inspect "$secret" >/dev/null 2>&1; then
        log "secret $secret exists: kept (the same content as $SECRETS_DIR/$name)"
    else
        # From the kept file, on stdin: never on a command line, never in the transcript.
        _exec "docker -H $(ssh_url "$(manager_addr)") secret create --label userstack.secret=$name $secret - < $SECRETS_DIR/$name" \
            docker -H "$(ssh_url "$(manager_addr)")" secret create --label "userstack.secret=$name" "$secret" - <"$SECRETS_DIR/$name" ||
            die "could not create the secret $secret"
    fi
}

# secret_version NAME : the digest that names the kept content of secret NAME.
secret_version() { sha256sum "$SECRETS_DIR/$1" | cut -c1-12; }

# prune_secrets : the earlier versions of the rotated secrets, once no service uses them
# (docker secret rm refuses a secret in use; those stay until the next deploy).
prune_secrets() {
    local name id secret keep
    for name in redis_password api_tokens; do
        keep=${STACK}_${name}_$(secret_version "$name")
        while read -r id secret; do
            [[ -n $id && $secret != "$keep" ]] || continue
            try docker -H "$(ssh_url "$(manager_addr)")" secret rm "$secret" ||
                log "$secret is still in use: removed by a later deploy"
        done < <(qm secret ls --filter "label=userstack.secret=$name" --format '{{.ID}} {{.Name}}')
    done
}

# replicas_ready : every service of the stack has all its replicas running (and, with a health
# check, healthy: Swarm counts a task as running only once its health check passed).
replicas_ready() {
    local out
    out=$(qm service ls --filter "label=com.docker.stack.namespace=$STACK" --format '{{.Name}} {{.Replicas}}')
    [[ -n $out ]] || return 1
    ! awk '{ split($2, r, "/"); if (r[1] != r[2] || r[2] == 0) bad = 1 } END { exit !bad }' <<<"$out"
}

# no_update_running : no service of the stack is in the middle of an update or a rollback (a new
# secret or setting rolls the services that use it; their replica counts look complete meanwhile).
no_update_running() {
    local states services
    mapfile -t services < <(qm service ls -q --filter "label=com.docker.stack.namespace=$STACK")
    ((${#services[@]})) || return 1
    states=$(qm service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "${services[@]}") || return 1
    ! grep -qE '^(updating|rollback_started)$' <<<"$states"
}

cmd_deploy() {
    local password
    stack_env
    step "1. The database password as a Swarm secret ($DB_SECRET)"
    if qm secret inspect "$DB_SECRET" >/dev/null 2>&1; then
        log "secret $DB_SECRET exists: kept (Swarm secrets are immutable; rotation: README.md)"
    else
        password=$(secret_value POSTGRES_PASSWORD) ||
            die "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (the PostgreSQL password)"
        [[ -n $password ]] || die "the PostgreSQL password is empty"
        # On stdin: never on a command line, never in the transcript.
        _exec "docker -H $(ssh_url "$(manager_addr)") secret create $DB_SECRET - < (the password)" \
            docker -H "$(ssh_url "$(manager_addr)")" secret create "$DB_SECRET" - <<<"$password" ||
            die "could not create the secret $DB_SECRET"
        unset password
    fi

    step "2. Redis's password and the API tokens as Swarm secrets (named by a digest of the content)"
    swarm_secret redis_password
    export REDIS_PASSWORD_VERSION=$VERSION
    swarm_secret api_tokens
    export API_TOKENS_VERSION=$VERSION
    printf 'REDIS_PASSWORD_VERSION=%s\nAPI_TOKENS_VERSION=%s\n' "$REDIS_PASSWORD_VERSION" "$API_TOKENS_VERSION" >"$SECRETS_DIR/versions.env"

    step "3. The hardening of deploy/lib/services.json, for stack deploy (deploy/lib/swarm-services.sh)"
    local hardening=$STATE/services.swarm.json
    run_sh "$root/deploy/lib/swarm-services.sh > $hardening"
    run jq -r '.services | to_entries[] | "\(.key): \(.value | del(.command, .healthcheck.test) | tojson)"' "$hardening"
    stack_files "$hardening"

    step "4. docker stack deploy: the images by digest, from the registry"
    dm stack deploy --with-registry-auth --prune "${STACK_FILES[@]}" "$STACK"

    step "5. Wait until every service has all its replicas running and healthy"
    wait_until "$WAIT_TIMEOUT" "every service of $STACK has its replicas" replicas_ready
    wait_until "$WAIT_TIMEOUT" "no service of $STACK is still rolling onto the new spec" no_update_running
    dm stack services "$STACK"
    dm stack ps --filter desired-state=running --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}' "$STACK"
    local services
    mapfile -t services < <(qm service ls -q --filter "label=com.docker.stack.namespace=$STACK")
    dm service inspect --format '{{.Spec.Name}}: {{if .UpdateStatus}}{{.UpdateStatus.State}} {{.UpdateStatus.Message}}{{else}}created{{end}}' "${services[@]}"
    prune_secrets
    log "/users needs a bearer token, a line of $SECRETS_DIR/api_tokens:"
    log "  curl -H \"Authorization: Bearer \$(grep -v '^#' $SECRETS_DIR/api_tokens | head -n1)\" http://$(manager_addr):${LB_PORT:-5000}/users"
}

# ---------------------------------------------------------------------------------------------
# update_state : the app service's update state (updating, completed, rollback_completed, …).
update_state() { qm service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "${STACK}_app"; }
update_done() { [[ $(update_state) =~ ^(completed|rollback_completed|paused|rollback_paused)$ ]]; }

cmd_update() {
    (($# == 1)) || { usage >&2; die "update needs an image"; }
    local state message
    stack_env
    step "1. Push $1"
    push_image "$1"
    step "2. Rolling update of ${STACK}_app to $PUSHED (one task at a time, start-first)"
    dm service update --detach --with-registry-auth --image "$PUSHED" "${STACK}_app"
    if ! (wait_until "$WAIT_TIMEOUT" "the update of ${STACK}_app is over" update_done); then
        # What the update is waiting for: each task's state and error, the update's message.
        try docker -H "$(ssh_url "$(manager_addr)")" service ps --no-trunc \
            --format 'table {{.Name}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}' "${STACK}_app" || true
        try docker -H "$(ssh_url "$(manager_addr)")" service inspect \
            --format '{{.UpdateStatus.State}}: {{.UpdateStatus.Message}}' "${STACK}_app" || true
        die "the update of ${STACK}_app did not end within ${WAIT_TIMEOUT}s"
    fi
    state=$(update_state)
    message=$(qm service inspect --format '{{.UpdateStatus.Message}}' "${STACK}_app")
    dm service inspect --format 'image={{.Spec.TaskTemplate.ContainerSpec.Image}} update={{.UpdateStatus.State}}: {{.UpdateStatus.Message}}' "${STACK}_app"
    dm service ps --filter desired-state=running --format 'table {{.Name}}\t{{.Image}}\t{{.Node}}\t{{.CurrentState}}' "${STACK}_app"
    [[ $state == completed ]] || die "the update did not complete: $state ($message)"
    sed -i "s|^APP_IMAGE=.*|APP_IMAGE=$PUSHED|" "$STATE/images.env"
}

cmd_status() {
    step "The swarm and the stack"
    dm node ls
    dm stack services "$STACK"
    dm stack ps --filter desired-state=running --format 'table {{.Name}}\t{{.Image}}\t{{.Node}}\t{{.CurrentState}}' "$STACK"
    dm service inspect --format '{{.Spec.Name}}: {{if .UpdateStatus}}{{.UpdateStatus.State}} {{.UpdateStatus.Message}}{{else}}never updated{{end}}' "${STACK}_app"
}

stack_gone() {
    [[ -z $(qm stack ps -q "$STACK" 2>/dev/null) ]] &&
        [[ -z $(qm network ls -q --filter "label=com.docker.stack.namespace=$STACK") ]]
}

cmd_down() {
    local purge=0 db_node addr
    case ${1:-} in --purge) purge=1 ;; "") ;; *) usage >&2; die "unknown argument: $1" ;; esac
    step "Remove the stack $STACK"
    dm stack rm "$STACK"
    wait_until "$WAIT_TIMEOUT" "the stack's tasks and networks are gone" stack_gone
    ((purge)) || { log "kept: the volume ${STACK}_pgdata on the db node, the secrets (--purge removes them)"; return 0; }
    step "Purge: the data volume on the db node, the secrets"
    db_node=$(qm node ls -q --filter node.label=userstack.db=true | head -n 1)
    if [[ -n $db_node ]]; then
        addr=$(qm node inspect --format '{{.Status.Addr}}' "$db_node")
        # A stopped task's container may hold the volume for a moment.
        wait_until 60 "no container on $addr uses ${STACK}_pgdata" \
            bash -c "[[ -z \$(docker -H $(ssh_url "$addr") ps -aq --filter volume=${STACK}_pgdata) ]]"
        if docker -H "$(ssh_url "$addr")" volume inspect "${STACK}_pgdata" >/dev/null 2>&1; then
            run docker -H "$(ssh_url "$addr")" volume rm "${STACK}_pgdata"
        fi
    fi
    if qm secret inspect "$DB_SECRET" >/dev/null 2>&1; then dm secret rm "$DB_SECRET"; fi
    local secrets
    mapfile -t secrets < <(qm secret ls --filter label=userstack.secret --format '{{.Name}}')
    if ((${#secrets[@]})); then dm secret rm "${secrets[@]}"; fi
    # What deploy kept here: the next deploy generates new ones.
    if [[ -d $SECRETS_DIR ]]; then run rm -rf "$SECRETS_DIR"; fi
}

command=${1:-}
(($#)) && shift
case $command in
    init) cmd_init "$@" ;;
    push) cmd_push "$@" ;;
    deploy) cmd_deploy "$@" ;;
    config) cmd_config "$@" ;;
    update) cmd_update "$@" ;;
    status) cmd_status "$@" ;;
    down) cmd_down "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; die "unknown command: ${command:-(none)}" ;;
esac
