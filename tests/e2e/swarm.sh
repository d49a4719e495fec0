#!/usr/bin/env bash
# tests/e2e/swarm.sh : task 3 end to end, on a swarm of three Docker hosts.
#
# tests/e2e/hosts.sh makes three hosts (node1..node3: own namespace, dockerd, sshd, none of this
# machine's images) on one bridge. deploy/swarm/swarm.sh makes them a swarm with a registry on
# the manager, pushes the task-1 images there and deploys deploy/swarm/stack.yaml. Then, printing
# each figure on its own line and asserting it:
#   1. 3 nodes, 1 manager and 2 workers, all Ready
#   2. the app's replicas on >= 2 nodes; /, /users, /cache exact through the load balancer on
#      every node's address, and every app task answering when asked directly on the overlay
#   (security) /users refuses a request without the bearer token (401) through the lb;
#      /metrics and /readyz are not on the public port, only on the admin port over the overlay;
#      Redis refuses a client without its password; every task's container has the hardening of
#      deploy/lib/services.json that Swarm can express (deploy/lib/check-hardening.sh --swarm)
#   3. a rolling update under a bounded load: N requests, 0 failed; and the same update with
#      the drain delay and HAProxy's retries off: the load does count failures
#   4. an update to an image whose health check fails is rolled back by Swarm; the API answers
#      throughout (0 failed)
#   5. a worker cut off under load (with writes): the replicas reschedule, recovered in S <= 30 s,
#      no acknowledged write lost
#   6. the data survives `docker stack rm` + deploy
#   7. every task runs the image digest that `push` printed
# The loads (tests/e2e/load.py) target only the addresses of the hosts this test made. Everything
# it made is removed on exit, also on failure, and that is verified.
#
# Needs: the task-1 images here (APP_IMAGE, default userstack:latest) and the stand-ins of
# deploy/images/standins.env (incl. registry and haproxy), root, docker, jq, curl, ssh, sshd,
# iproute2, iptables, openssl, python3. Exits non-zero if any check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"

export USERSTACK_SECTION="Task 3 — a swarm of three hosts"
# SWARM_HOSTS_NAME: another name (and USERSTACK_HOSTS_NET another /24) lets two runs coexist.
HOSTS_NAME=${SWARM_HOSTS_NAME:-node}
HOSTS=("$here/hosts.sh" --name "$HOSTS_NAME" --count 3)
SWARM=$root/deploy/swarm/swarm.sh
LOAD=$here/load.py
T_START=$(date +%s%3N)
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (b-a)/1000}'; }

# --- prerequisites: a missing one is a failure that says what to install --------------------
[[ $EUID -eq 0 ]] || die "run as root (hosts.sh makes network namespaces and dockerds)"
for tool in docker jq curl ssh ip iptables openssl python3 awk; do
    command -v "$tool" >/dev/null || die "$tool is not installed (see .ci/install.sh)"
done
[[ -r $root/deploy/images/standins.env ]] || die "deploy/images/standins.env is missing"
# shellcheck source=/dev/null
source "$root/deploy/images/standins.env"
export APP_IMAGE=${APP_IMAGE:-userstack:latest} POSTGRES_IMAGE REDIS_IMAGE HAPROXY_IMAGE REGISTRY_IMAGE
for img in "$APP_IMAGE" "$POSTGRES_IMAGE" "$REDIS_IMAGE" "$HAPROXY_IMAGE" "$REGISTRY_IMAGE"; do
    docker image inspect "$img" >/dev/null 2>&1 ||
        die "image $img is not on this host: build the task-1 images and the stand-ins first (deploy/images/build-standins.sh)"
done

work=$(mktemp -d)
export SWARM_STATE=$work/state
# swarm.sh logs in to the registry it makes: into the test's own client configuration.
export DOCKER_CONFIG=$work/docker-config
mkdir -p "$DOCKER_CONFIG"
# The caller's password or a generated one, as a file; it reaches the swarm only on stdin.
if value=$(secret_value POSTGRES_PASSWORD); then
    (umask 077 && printf '%s' "$value" >"$work/db_password")
else
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$work/db_password")
fi
unset value POSTGRES_PASSWORD
export POSTGRES_PASSWORD_FILE=$work/db_password
V2=userstack:swarm-e2e-v2-$$
BROKEN=userstack:swarm-e2e-broken-$$
LOAD_PIDS=()

# The tags this test put on this machine's images (the images themselves stay).
our_tags() {
    docker image ls --format '{{.Repository}}:{{.Tag}}' |
        grep -E "^(${REGISTRY_HOST:-none}/|userstack:swarm-e2e-(v2|broken)-$$$)" || true
}

cleanup() {
    local rc=$? pid tags
    trap - EXIT
    set +e
    step "Clean up: everything this test made"
    for pid in "${LOAD_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    "${HOSTS[@]}" stop || rc=1
    mapfile -t tags < <(our_tags)
    if ((${#tags[@]})); then run docker image rm "${tags[@]}" >/dev/null; fi
    if [[ -n ${REGISTRY_HOST:-} && -d /etc/docker/certs.d/$REGISTRY_HOST ]]; then
        run rm -rf "/etc/docker/certs.d/$REGISTRY_HOST"
    fi
    rm -rf "$work"
    check "nothing of the three hosts is left (namespaces, veths, bridge, dockerds, sshds, data roots)" \
        "${HOSTS[@]}" gone || rc=1
    check "no image tag of this test is left" bash -c "[[ -z \"$(our_tags)\" ]]" || rc=1
    check "this machine no longer trusts the test's registry CA" test ! -e "/etc/docker/certs.d/${REGISTRY_HOST:-none}" || rc=1
    check "the test's work directory is gone" test ! -e "$work" || rc=1
    ((CHECKS_FAILED == 0)) || rc=1
    log "swarm e2e: $CHECKS_FAILED check(s) failed; total $(secs "$T_START" "$(date +%s%3N)") s"
    exit "$rc"
}
trap cleanup EXIT

# --- helpers ---------------------------------------------------------------------------------
expect() { check "$@" || true; }
# figure TEXT : one of the issue's figures, on its own line (and in the transcript).
figure() {
    printf 'FIGURE  %s\n' "$1" >&2
    _record --arg type figure --arg text "$1"
}
dm() { docker -H "$HOST1_SSH" "$@"; }
host_name_of() { local v="HOST${1}_NAME"; echo "${!v}"; }

# body_is URL WANT : 200 and exactly the bytes WANT.
body_is() {
    local status
    status=$(curl -sS --max-time 10 -o "$work/b" -w '%{http_code}' "$1") || return 1
    printf 'HTTP %s, body: %q\n' "$status" "$(cat "$work/b")"
    [[ $status == 200 ]] && cmp -s <(printf '%s' "$2") "$work/b"
}
users_json() {
    local status
    status=$(curl -sS --max-time 10 -H "@$AUTH_HEADER" -o "$work/u" -w '%{http_code}' "$1/users?limit=1000") || return 1
    printf 'HTTP %s: %s\n' "$status" "$(head -c 300 "$work/u")"
    [[ $status == 200 ]] && jq -e "type == \"array\" and (${2:-true})" "$work/u" >/dev/null
}

# running_tasks SERVICE : "node image state" per running task.
running_tasks() {
    dm service ps --filter desired-state=running --format '{{.Node}} {{.Image}} {{.CurrentState}}' "userstack_$1"
}

# load_start NAME ARGS... : tests/e2e/load.py in the background, its JSON in $work/NAME.json.
load_start() {
    local name=$1; shift
    rm -f "$work/$name.stop"
    python3 "$LOAD" --stop-file "$work/$name.stop" "$@" >"$work/$name.json" 2>"$work/$name.err" &
    LOAD_PIDS+=("$!")
    LOAD_PID=$!
}
load_stop() {
    touch "$work/$1.stop"
    wait "$LOAD_PID" || die "the load generator failed: $(cat "$work/$1.err")"
    run cat "$work/$1.json"
}
jqf() { jq -r "$2" "$work/$1.json"; }
# kinds NAME : the failures of a load by kind ("none" if there were none).
kinds() { jq -r '.by_kind | to_entries | map(.key + " " + (.value | tostring)) | join(", ") | if . == "" then "none" else . end' "$work/$1.json"; }

# --- the hosts and the swarm -------------------------------------------------------------------
t0=$(date +%s%3N)
"${HOSTS[@]}" start
T_HOSTS=$(secs "$t0" "$(date +%s%3N)")
eval "$("${HOSTS[@]}" env)"
# shellcheck disable=SC2153 # set by the eval above
NODES=("$HOST1_ADDR" "$HOST2_ADDR" "$HOST3_ADDR")
# shellcheck disable=SC2153 # set by the eval above
REGISTRY_HOST=$HOST1_ADDR:${REGISTRY_PORT:-5443}
LB_URLS=()
for a in "${NODES[@]}"; do LB_URLS+=("http://$a:${LB_PORT:-5000}"); done

t0=$(date +%s%3N)
# Nodes report every 2 s (Docker's default: 5 s), so a lost node is declared down sooner.
SWARM_HEARTBEAT=${SWARM_HEARTBEAT:-2s} "$SWARM" init "${NODES[@]}"
T_INIT=$(secs "$t0" "$(date +%s%3N)")

step "Figure 1: the nodes"
run docker -H "$HOST1_SSH" node ls
nodes_ready=$(dm node ls --format '{{.Status}}' | grep -c '^Ready$' || true)
managers=$(dm node ls --format '{{.ManagerStatus}}' | grep -c . || true)
figure "$(dm node ls -q | wc -l) nodes ($managers manager, $(($(dm node ls -q | wc -l) - managers)) workers), $nodes_ready Ready"
expect "3 nodes, 1 manager, 2 workers, all Ready" expect_eq "3 1 3" "$(dm node ls -q | wc -l) $managers $nodes_ready"
certs_on_nodes() {
    local a
    for a in "${NODES[@]}"; do
        ssh "root@$a" test -s "/etc/docker/certs.d/$REGISTRY_HOST/ca.crt" || { echo "missing on $a"; return 1; }
        [[ $(ssh "root@$a" findmnt -no FSTYPE /etc/docker/certs.d) == tmpfs ]] || { echo "certs.d on $a is not its own"; return 1; }
    done
    echo "ca.crt in each node's own /etc/docker/certs.d/$REGISTRY_HOST/"
}
no_insecure_registries() {
    local a got
    for a in "${NODES[@]}"; do
        got=$(docker -H "ssh://root@$a" info --format '{{range .RegistryConfig.InsecureRegistryCIDRs}}{{.}} {{end}}')
        echo "$a: insecure registries: $got"
        [[ $got == "127.0.0.0/8 " ]] || return 1
    done
}
expect "each node's daemon trusts the registry CA in its own certs.d" certs_on_nodes
expect "no daemon is told to skip TLS (insecure registries: only the default 127.0.0.0/8)" no_insecure_registries
anonymous_refused() {
    local code
    code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' --cacert "$SWARM_STATE/registry-tls/ca.crt" "https://$REGISTRY_HOST/v2/_catalog")
    echo "GET https://$REGISTRY_HOST/v2/_catalog without credentials: HTTP $code"
    [[ $code == 401 ]]
}
expect "the registry refuses a request without credentials (401)" anonymous_refused

t0=$(date +%s%3N)
"$SWARM" push
T_PUSH=$(secs "$t0" "$(date +%s%3N)")
cp "$SWARM_STATE/images.env" "$work/pushed.env"

t0=$(date +%s%3N)
"$SWARM" deploy
T_DEPLOY=$(secs "$t0" "$(date +%s%3N)")
# The API token deploy generated and kept; in a header file, so it is in no command line.
TOKENS=$SWARM_STATE/secrets/api_tokens
AUTH_HEADER=$work/auth_header
(umask 077 && printf 'Authorization: Bearer %s\n' "$(grep -v '^#' "$TOKENS" | head -n 1)" >"$AUTH_HEADER")
# The nodes pulled with the login that --with-registry-auth handed them, not with one of their own.
pull_needs_auth() {
    local ref out i name target=""
    ref=$(grep '^REDIS_IMAGE=' "$SWARM_STATE/images.env" | cut -d= -f2)
    # A node that does not have the image yet (one that has it answers from its own store).
    for i in 1 2 3; do
        name=$(host_name_of "$i")
        if ! docker -H "ssh://root@${NODES[i - 1]}" image inspect "$ref" >/dev/null 2>&1; then
            target=${NODES[i - 1]}
            break
        fi
    done
    [[ -n $target ]] || { echo "every node has $ref already"; return 1; }
    echo "pulling $ref on $name ($target), which does not have it:"
    # An empty client configuration: the CLI would otherwise send this machine's login along.
    mkdir -p "$work/no-login"
    if out=$(DOCKER_CONFIG=$work/no-login docker -H "ssh://root@$target" pull "$ref" 2>&1); then echo "$out"; return 1; fi
    echo "$out"
    grep -qi 'no basic auth credentials\|unauthorized\|authentication required' <<<"$out"
}
expect "a node pulling on its own (no credentials) is refused: the stack's pulls used --with-registry-auth" pull_needs_auth

# --- 2. spread, exact answers through the lb and from each task -------------------------------
step "Figure 2: the app's replicas, the answers through the load balancer and from each task"
run docker -H "$HOST1_SSH" service ps --filter desired-state=running --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}' userstack_app
app_nodes=$(running_tasks app | awk '{print $1}' | sort -u | paste -sd' ')
app_count=$(running_tasks app | grep -c ' Running ' || true)
figure "app replicas: $app_count running on $(wc -w <<<"$app_nodes") nodes ($app_nodes)"
expect "3 app replicas on at least 2 nodes" bash -c "[[ $app_count == 3 && $(wc -w <<<"$app_nodes") -ge 2 ]]"
for url in "${LB_URLS[@]}"; do
    expect "GET $url/ is exactly 'Hello, Docker Multi-Container!'" body_is "$url/" 'Hello, Docker Multi-Container!'
done
expect "GET /cache first is exactly 'Cache Miss: Key Set'" body_is "${LB_URLS[1]}/cache" 'Cache Miss: Key Set'
expect "GET /cache then is exactly 'Cache Hit: Hello from Redis Cache!' (from another node)" \
    body_is "${LB_URLS[2]}/cache" 'Cache Hit: Hello from Redis Cache!'
expect "GET /users is an empty JSON array on a new volume" users_json "${LB_URLS[0]}" 'length == 0'
run curl -sS -i --max-time 10 -X POST -H 'Content-Type: application/json' -H "@$AUTH_HEADER" \
    --data '{"name":"Ada Lovelace","email":"ada@example.com"}' "${LB_URLS[0]}/users"
expect "POST /users answers 201" expect_eq 201 "$(head -1 <<<"$RUN_OUTPUT" | awk '{print $2}')"
has_ada='any(.[]; .email == "ada@example.com" and .name == "Ada Lovelace")'
for url in "${LB_URLS[@]}"; do
    expect "GET $url/users lists it" users_json "$url" "$has_ada"
done
# Each task directly: from inside the manager's lb container (it is on the frontend overlay),
# every address of tasks.app, with bash's /dev/tcp (the image has no curl).
lb_container=$(dm ps -q --filter label=com.docker.swarm.service.name=userstack_lb | head -n 1)
# shellcheck disable=SC2016 # expanded in the container
run docker -H "$HOST1_SSH" exec "$lb_container" bash -c 'for ip in $(getent ahostsv4 tasks.app | awk "{print \$1}" | sort -u); do
    exec 3<>/dev/tcp/$ip/5000; printf "GET / HTTP/1.0\r\nHost: app\r\n\r\n" >&3
    printf "%s %s\n" "$ip" "$(tail -n 1 <&3)"; exec 3<&-; done'
direct_ok=$(grep -c ' Hello, Docker Multi-Container!$' <<<"$RUN_OUTPUT" || true)
figure "app tasks answering directly on the overlay: $direct_ok of $app_count"
expect "every app task answers GET / directly on the overlay network" expect_eq "$app_count" "$direct_ok"
expect "PostgreSQL is not reachable from this machine on any node" bash -c \
    "for a in ${NODES[*]}; do ! timeout 3 bash -c \"</dev/tcp/\$a/5432\" 2>/dev/null || exit 1; done"
run docker -H "$HOST1_SSH" network inspect --format '{{.Name}} internal={{.Internal}} encrypted={{index .Options "encrypted"}}' userstack_backend userstack_frontend
# Encrypted only where asked (ENCRYPT_BACKEND=1): this kernel cannot (deploy/swarm/README.md).
want_backend="true $([[ ${ENCRYPT_BACKEND:-0} == 1 ]] && echo encrypted || echo plain)"
expect "the backend overlay is internal (and encrypted iff ENCRYPT_BACKEND=1): $want_backend" expect_eq "$want_backend" \
    "$(dm network inspect --format '{{.Internal}} {{if index .Options "encrypted"}}encrypted{{else}}plain{{end}}' userstack_backend)"

# --- security: the token, the admin port, Redis's password, the hardening ---------------------
step "Security: the same protections as tasks 1 and 2, on the swarm"
# status METHOD URL [CURL-ARG...] : the HTTP status only.
http_status() { curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X "$1" "${@:3}" "$2"; }
users_body='{"name":"Mallory","email":"mallory@example.com"}'
code_anon=$(http_status POST "${LB_URLS[1]}/users" -H 'Content-Type: application/json' --data "$users_body")
code_wrong=$(http_status POST "${LB_URLS[2]}/users" -H 'Content-Type: application/json' -H 'Authorization: Bearer not-a-token-of-this-stack' --data "$users_body")
code_get=$(http_status GET "${LB_URLS[0]}/users")
log "through the lb: POST /users without a token HTTP $code_anon, with a wrong one HTTP $code_wrong; GET /users without one HTTP $code_get"
expect "POST /users without a token is refused through the lb (401)" expect_eq 401 "$code_anon"
expect "POST /users with a wrong token is refused (401)" expect_eq 401 "$code_wrong"
expect "GET /users without a token is refused (401)" expect_eq 401 "$code_get"
expect "the refused writes changed nothing (no Mallory)" users_json "${LB_URLS[0]}" 'all(.[]; .email != "mallory@example.com")'
code_metrics=$(http_status GET "${LB_URLS[0]}/metrics" -H "@$AUTH_HEADER")
code_readyz=$(http_status GET "${LB_URLS[1]}/readyz" -H "@$AUTH_HEADER")
log "through the lb, with the token: /metrics HTTP $code_metrics, /readyz HTTP $code_readyz"
# 404, not 401: not served on the public port at all (with ADMIN_PORT=0 they would be, behind the token).
expect "/metrics is not served on the public port, even with the token (404)" expect_eq 404 "$code_metrics"
expect "/readyz is not served on the public port (404)" expect_eq 404 "$code_readyz"
admin_closed() {
    local a
    for a in "${NODES[@]}"; do
        if timeout 3 bash -c "</dev/tcp/$a/9000" 2>/dev/null; then echo "$a:9000 accepts connections"; return 1; fi
    done
    echo "no node accepts connections on port 9000"
}
expect "the admin port (9000) is published on no node" admin_closed
# What HAProxy asks: /readyz on each task's admin port, over the frontend overlay.
# shellcheck disable=SC2016 # expanded in the container
run docker -H "$HOST1_SSH" exec "$lb_container" bash -c 'for ip in $(getent ahostsv4 tasks.app | awk "{print \$1}" | sort -u); do
    exec 3<>/dev/tcp/$ip/9000; printf "GET /readyz HTTP/1.0\r\nHost: app\r\n\r\n" >&3
    printf "%s:9000/readyz %s\n" "$ip" "$(head -n 1 <&3 | tr -d "\r")"; exec 3<&-; done'
ready_ok=$(grep -cE ':9000/readyz HTTP/1\.[01] 200' <<<"$RUN_OUTPUT" || true)
expect "every app task answers /readyz on its admin port over the overlay (what HAProxy checks)" expect_eq "$app_count" "$ready_ok"
# Redis, asked over the backend overlay (its service name, not loopback) from its own container.
redis_node=$(dm service ps --filter desired-state=running --format '{{.Node}}' userstack_redis | head -n 1)
redis_ssh=""
for i in 1 2 3; do
    if [[ $(host_name_of "$i") == "$redis_node" ]]; then v="HOST${i}_SSH" && redis_ssh=${!v}; fi
done
[[ -n $redis_ssh ]] || die "no node runs userstack_redis"
redis_container=$(docker -H "$redis_ssh" ps -q --filter label=com.docker.swarm.service.name=userstack_redis | head -n 1)
try docker -H "$redis_ssh" exec "$redis_container" redis-cli -h redis ping || true
redis_anon=$RUN_OUTPUT
# shellcheck disable=SC2016 # expanded in the container
try docker -H "$redis_ssh" exec "$redis_container" sh -c 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli -h redis ping' || true
redis_auth=$RUN_OUTPUT
has() { grep -q -- "$1" <<<"$2"; }
expect "Redis refuses a client without the password (NOAUTH)" has NOAUTH "$redis_anon"
expect "Redis answers a client with the password from the secret (PONG)" has '^PONG$' "$redis_auth"
# The hardening on every node's task containers, as the engine reports it.
# task_services I : the services (userstack.service) of the stack's containers on host I.
task_services() {
    local v="HOST${1}_SSH"
    docker -H "${!v}" ps --filter label=userstack.service --filter label=com.docker.stack.namespace=userstack \
        --format '{{.Label "userstack.service"}}'
}
hardening_on_nodes() {
    local i v out rc=0
    for i in 1 2 3; do
        v="HOST${i}_SSH"
        [[ -n $(task_services "$i") ]] || continue
        echo "--- $(host_name_of "$i")"
        out=$(DOCKER_HOST=${!v} "$root/deploy/lib/check-hardening.sh" --swarm --expect "" \
            --filter label=com.docker.stack.namespace=userstack 2>&1) || rc=1
        grep -v '^ok ' <<<"$out"
    done
    return "$rc"
}
expect "every task container on the 3 nodes has the hardening of services.json (check-hardening.sh --swarm)" hardening_on_nodes
hardening_services=$(for i in 1 2 3; do task_services "$i"; done | sort -u | paste -sd' ')
expect "the hardening check saw app, db and redis" expect_eq "app db redis" "$hardening_services"
figure "security: POST /users without a token $code_anon, /metrics on the public port $code_metrics, /readyz on the admin port $ready_ok of $app_count tasks 200, Redis without password: $(grep -o NOAUTH <<<"$redis_anon" | head -n 1 || echo answered), hardening checked on the containers of: $hardening_services"

# --- token rotation: secrets are immutable, a new one rolls the app ------------------------------
step "Token rotation: API_TOKEN_FILE with a new token, swarm.sh deploy"
old_header=$work/auth_header.old
cp "$AUTH_HEADER" "$old_header"
(umask 077 && printf '# rotated by tests/e2e/swarm.sh\n%s\n' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$work/api_tokens.new")
old_secret=$(dm service inspect --format '{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}' userstack_app | tr ' ' '\n' | grep '^userstack_api_tokens_')
API_TOKEN_FILE=$work/api_tokens.new "$SWARM" deploy
(umask 077 && printf 'Authorization: Bearer %s\n' "$(grep -v '^#' "$TOKENS" | head -n 1)" >"$AUTH_HEADER")
new_secret=$(dm service inspect --format '{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}' userstack_app | tr ' ' '\n' | grep '^userstack_api_tokens_')
log "the app's token secret: $old_secret before, $new_secret after"
expect "the kept token file is the new one" cmp -s "$work/api_tokens.new" "$TOKENS"
expect "the app uses a new secret" bash -c "[[ -n '$new_secret' && '$new_secret' != '$old_secret' ]]"
code_new=$(http_status POST "${LB_URLS[0]}/users" -H 'Content-Type: application/json' -H "@$AUTH_HEADER" \
    --data '{"name":"Grace Hopper","email":"grace@example.com"}')
code_old=$(http_status POST "${LB_URLS[1]}/users" -H 'Content-Type: application/json' -H "@$old_header" \
    --data '{"name":"Old Token","email":"old-token@example.com"}')
expect "the new token writes (201)" expect_eq 201 "$code_new"
expect "the old token is refused (401)" expect_eq 401 "$code_old"
expect "the old token secret was removed once unused" bash -c "! docker -H $HOST1_SSH secret inspect '$old_secret' >/dev/null 2>&1"
figure "token rotation: new token $code_new, old token $code_old (secret ${old_secret##*_} -> ${new_secret##*_}, one swarm.sh deploy)"

# --- 3. rolling update under load --------------------------------------------------------------
step "Figure 3: a rolling update under a bounded load"
# A new image: the same binary with one more label, so a new digest.
run_sh "printf 'FROM %s\nLABEL org.userstack.e2e=rolling-update\n' $APP_IMAGE | docker build -q -t $V2 -"
load_start rolling --duration 180 --workers 4 --rate 15 --token-file "$TOKENS" --write-every 5 "${LB_URLS[@]/#/--url=}"
sleep 2
t0=$(date +%s%3N)
"$SWARM" update "$V2"
T_UPDATE=$(secs "$t0" "$(date +%s%3N)")
sleep 3
load_stop rolling
figure "rolling update: $(jqf rolling .requests) requests, $(jqf rolling .failed) failed (failures by kind: $(kinds rolling); the update took $T_UPDATE s)"
expect "the rolling update dropped no request (0 non-2xx, 0 connection errors)" expect_eq 0 "$(jqf rolling .failed)"
expect "the load ran during the whole update (> 200 requests)" bash -c "(( $(jqf rolling .requests) > 200 ))"
v2_ref=$(grep '^APP_IMAGE=' "$SWARM_STATE/images.env" | cut -d= -f2)
expect "every app task runs the new image" bash -c \
    "[[ \$(docker -H $HOST1_SSH service ps --filter desired-state=running --format '{{.Image}}' userstack_app | sort -u) == '$v2_ref' ]]"

# --- 3b. the same update without the protections: the load does see drops -------------------
step "Figure 3b: the same kind of update without the drain delay and without HAProxy's retries"
# What figure 3's zero is worth: with both protections off, the same load must count failures.
lb_config=$(dm service inspect --format '{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{.ConfigName}}{{end}}' userstack_lb)
run_sh "sed -e 's/^    retries 3\$/    retries 0/' -e '/retry-on conn-failure/d' -e '/option redispatch 1/d' $root/deploy/swarm/haproxy.cfg | docker -H $HOST1_SSH config create userstack_haproxy_noretry -"
run docker -H "$HOST1_SSH" service update -q --detach=false --config-rm "$lb_config" \
    --config-add source=userstack_haproxy_noretry,target=/usr/local/etc/haproxy/haproxy.cfg userstack_lb
run docker -H "$HOST1_SSH" service update -q --detach=false --env-add SHUTDOWN_DELAY_SECS=0 userstack_app
load_start ablation --duration 180 --workers 4 --rate 15 --token-file "$TOKENS" --write-every 5 "${LB_URLS[@]/#/--url=}"
sleep 2
run docker -H "$HOST1_SSH" service update -q --detach=false --force userstack_app
sleep 3
load_stop ablation
figure "without the drain delay and the retries: $(jqf ablation .requests) requests, $(jqf ablation .failed) failed (failures by kind: $(kinds ablation))"
expect "with both protections off the same load counts failed requests (so figure 3's 0 means something)" \
    bash -c "(( $(jqf ablation .failed) > 0 ))"
# Back to the stack's settings.
run docker -H "$HOST1_SSH" service update -q --detach=false --env-add "SHUTDOWN_DELAY_SECS=${SHUTDOWN_DELAY_SECS:-3}" userstack_app
run docker -H "$HOST1_SSH" service update -q --detach=false --config-rm userstack_haproxy_noretry \
    --config-add "source=$lb_config,target=/usr/local/etc/haproxy/haproxy.cfg" userstack_lb
run docker -H "$HOST1_SSH" config rm userstack_haproxy_noretry

# --- 4. automatic rollback ----------------------------------------------------------------------
step "Figure 4: an update to an image whose health check fails is rolled back by Swarm"
run_sh "printf 'FROM %s\nLABEL org.userstack.e2e=broken\nHEALTHCHECK --interval=2s --timeout=2s --retries=1 CMD [\"/usr/local/bin/userstack\", \"healthcheck\", \"--port\", \"1\"]\n' $APP_IMAGE | docker build -q -t $BROKEN -"
load_start rollback --duration 240 --workers 2 --rate 10 --token-file "$TOKENS" "${LB_URLS[@]/#/--url=}"
t0=$(date +%s%3N)
try "$SWARM" update "$BROKEN" || true
T_ROLLBACK=$(secs "$t0" "$(date +%s%3N)")
load_stop rollback
final_state=$(dm service inspect --format '{{.UpdateStatus.State}}' userstack_app)
final_image=$(dm service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' userstack_app)
figure "rollback: update state $final_state after $T_ROLLBACK s; image now ${final_image##*@} (previous ${v2_ref##*@}); API during it: $(jqf rollback .requests) requests, $(jqf rollback .failed) failed"
expect "Swarm rolled the update back by itself" expect_eq rollback_completed "$final_state"
expect "the service's image is the previous one again" expect_eq "$v2_ref" "$final_image"
expect "the API answered throughout (0 failed)" expect_eq 0 "$(jqf rollback .failed)"
expect "every running app task runs the previous image" bash -c \
    "[[ \$(docker -H $HOST1_SSH service ps --filter desired-state=running --format '{{.Image}}' userstack_app | sort -u) == '$v2_ref' ]]"

# --- 5. node loss ---------------------------------------------------------------------------------
# The worker to cut off: one that runs app tasks (after the updates Swarm may have left a worker
# without any, and losing it would reschedule nothing), never the manager (PostgreSQL and the
# registry live there). node3 if it has one, else node2: three replicas, at most two per node.
LOST=3
[[ -n $(running_tasks app | awk -v n="$(host_name_of 3)" '$1 == n') ]] || LOST=2
LOST_NODE=$(host_name_of "$LOST")
lost_tasks=$(running_tasks app | awk -v n="$LOST_NODE" '$1 == n' | wc -l)
STAY_URLS=()
for i in 1 2 3; do ((i == LOST)) || STAY_URLS+=("--url=${LB_URLS[i - 1]}"); done
step "Figure 5: $LOST_NODE cut off under load (writes included)"
run docker -H "$HOST1_SSH" service ps --filter desired-state=running --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}' userstack_app
# Load on the nodes that stay: a client of a lost node has lost its load balancer too.
load_start nodeloss --duration 120 --workers 4 --rate 15 --token-file "$TOKENS" --write-every 3 --created "$work/created" \
    "${STAY_URLS[@]}"
sleep 3
t0=$(date +%s%3N)
run ip link set "us-$HOSTS_NAME-$LOST" down
# Recovered: three app tasks running and healthy on the nodes that remain.
recovered() { [[ $(running_tasks app | grep -v "^$LOST_NODE " | grep -c ' Running ') == 3 ]]; }
until recovered; do
    (($(date +%s%3N) - t0 >= 90000)) && break
    sleep 1
done
T_RECOVER=$(secs "$t0" "$(date +%s%3N)")
sleep 5
load_stop nodeloss
run docker -H "$HOST1_SSH" node ls
run docker -H "$HOST1_SSH" service ps --filter desired-state=running --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}' userstack_app
# all_ids FILE : every user's id, read through the API page by page, one per line into FILE.
all_ids() {
    local after=""
    : >"$1"
    while :; do
        curl -sS --max-time 20 -H "@$AUTH_HEADER" "${LB_URLS[0]}/users?limit=1000${after:+&after=$after}" >"$work/page.json"
        jq -r '.[].id' "$work/page.json" >>"$1"
        [[ $(jq length "$work/page.json") == 1000 ]] || break
        after=$(jq -r '.[-1].id' "$work/page.json")
    done
}
# Every acknowledged write is in the table (read through the API, all pages).
created=$(sort -u "$work/created" | wc -l)
all_ids "$work/ids"
lost=$(comm -23 <(sort -u "$work/created") <(sort -u "$work/ids") | wc -l)
figure "node loss: $(jqf nodeloss .requests) requests, $(jqf nodeloss .failed) failed, recovered in $T_RECOVER s ($LOST_NODE had $lost_tasks app task(s); failures by kind: $(kinds nodeloss); writes: $created acknowledged, $lost lost)"
expect "the app was back to 3 running replicas within 30 s" bash -c "recovered_ms=\$(awk -v s=$T_RECOVER 'BEGIN{print s*1000}'); (( \${recovered_ms%.*} <= 30000 ))"
expect "no acknowledged write was lost" expect_eq 0 "$lost"
expect "writes were acknowledged during the loss (> 50)" bash -c "(( $created > 50 ))"
run ip link set "us-$HOSTS_NAME-$LOST" up
wait_until 90 "$LOST_NODE is Ready again" bash -c "[[ \$(docker -H $HOST1_SSH node inspect --format '{{.Status.State}}' $LOST_NODE) == ready ]]"

# --- 6. data survives stack rm + deploy -----------------------------------------------------------
step "Figure 6: the data survives docker stack rm and deploy"
# Read again now, not reused from figure 5: a write the cut-off node was running when its client
# gave up (not acknowledged) can still commit once the link is back; such rows are counted. The
# read waits until Swarm has stopped that node's old app tasks: after that nothing can commit late.
lost_ssh=HOST${LOST}_SSH
no_app_on_lost_node() { [[ -z $(docker -H "${!lost_ssh}" ps -q --filter label=com.docker.swarm.service.name=userstack_app) ]]; }
wait_until 90 "the old app tasks on $LOST_NODE are stopped" no_app_on_lost_node
all_ids "$work/ids_before"
late=$(comm -13 <(sort -u "$work/ids") <(sort -u "$work/ids_before") | wc -l)
users_before=$(wc -l <"$work/ids_before")
"$SWARM" down
run docker -H "$HOST1_SSH" volume ls --filter name=userstack_pgdata
"$SWARM" deploy
all_ids "$work/ids_after"
users_after=$(wc -l <"$work/ids_after")
figure "data after stack rm + deploy: $users_before users before, $users_after after ($late unacknowledged write(s) of figure 5 committed once the node was back)"
expect "every user is still there after stack rm + deploy" expect_eq "$(sort "$work/ids_before")" "$(sort "$work/ids_after")"
expect "GET /users still lists Ada" users_json "${LB_URLS[2]}" "$has_ada"

# --- 7. digests -----------------------------------------------------------------------------------
step "Figure 7: the nodes run the digests push printed"
run cat "$SWARM_STATE/images.env"
# For every running container of the stack on every node: the digests its image has there.
: >"$work/running"
for i in 1 2 3; do
    ssh_var=HOST${i}_SSH
    for c in $(docker -H "${!ssh_var}" ps -q --filter label=com.docker.stack.namespace=userstack); do
        docker -H "${!ssh_var}" inspect --format '{{index .Config.Labels "com.docker.swarm.service.name"}} {{.Image}}' "$c" |
            while read -r svc id; do
                printf '%s %s %s\n' "$svc" "$(host_name_of "$i")" \
                    "$(docker -H "${!ssh_var}" image inspect --format '{{join .RepoDigests " "}}' "$id")"
            done >>"$work/running"
    done
done
run cat "$work/running"
digest_ok=0 digest_total=0
while read -r svc _node digests; do
    digest_total=$((digest_total + 1))
    var=$(case $svc in userstack_app) echo APP_IMAGE ;; userstack_db) echo POSTGRES_IMAGE ;;
        userstack_redis) echo REDIS_IMAGE ;; userstack_lb) echo HAPROXY_IMAGE ;; esac)
    want=$(grep "^$var=" "$SWARM_STATE/images.env" | cut -d= -f2)
    [[ " $digests " == *" $want "* ]] && digest_ok=$((digest_ok + 1))
done <"$work/running"
pushed_ok=$(comm -12 <(sort "$work/pushed.env" | grep -v '^APP_IMAGE=') <(sort "$SWARM_STATE/images.env" | grep -v '^APP_IMAGE=') | wc -l)
figure "digests: $digest_ok of $digest_total containers on 3 nodes run the digest push printed ($pushed_ok of 3 base images unchanged since the first push, the app at the update's)"
expect "every container runs the digest push printed" expect_eq "$digest_total" "$digest_ok"
expect "the containers are spread over the 3 nodes" bash -c "(( $digest_total >= 6 ))"

log "timings: hosts ${T_HOSTS} s, init ${T_INIT} s, push ${T_PUSH} s, deploy ${T_DEPLOY} s, rolling update ${T_UPDATE} s, rollback ${T_ROLLBACK} s, node loss recovery ${T_RECOVER} s"
