#!/usr/bin/env bash
# hostb.sh start|stop|status|env : a second Docker host on this machine, for the task-2 tests.
#
# Host B is a network namespace with its own dockerd (own data root, socket, exec root, bridge)
# and its own sshd, joined to this machine ("host A") by a veth pair. From host A it behaves like
# a separate, air-gapped server: it has none of host A's images, no route to the internet, and is
# reached only over its address, by ssh (DOCKER_HOST=ssh://root@ADDR) and on the ports it
# publishes. Nothing here touches host A's own daemon.
#
# The daemon and sshd also share a mount namespace of their own, with a tmpfs at HOSTB_DIR that
# exists only there: a file put there over ssh is on host B and not on host A, as on a real
# second machine. That is what shows that compose bind-mounts file secrets from the *daemon's*
# host (the rest of the file system is shared, which the tests do not rely on).
#
#   start   create it (idempotent: an already running host B is checked and kept; a half-made
#           one is removed first) and print the time the daemon took to start
#   stop    remove everything: containers, daemon and its data root, sshd, keys, veth, namespace
#           (idempotent; also after a failed start)
#   status  exit 0 if host B answers over ssh
#   gone    exit 0 if nothing of host B is left (what `stop` ends with)
#   env     print `export` lines for the tests: HOSTB_ADDR, HOSTB_SSH (ssh://root@ADDR),
#           HOSTB_SOCKET (unix://…, host B's daemon seen from this machine), HOSTB_DIR (a scratch
#           directory that only host B sees; gone with host B), and PATH with an ssh/scp wrapper that uses
#           the generated client config (key, known_hosts) - ssh has no environment variable for
#           a config file, and the docker CLI runs plain `ssh` from PATH.
#
# Settings (environment): HOSTB_NET (default 10.250.2; host A gets .1, host B .2, as a /30),
# HOSTB_STORAGE_DRIVER (default: host A's storage driver), HOSTB_START_TIMEOUT (default 180 s),
# HOSTB_SCRATCH_SIZE (the tmpfs at HOSTB_DIR, default 3g: the offline bundle is unpacked there).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../../deploy/lib/common.sh
source "$here/../../deploy/lib/common.sh"

NS=userstack-hostb
NETNS_PATH=/var/run/netns/$NS
VETH_A=ushb-a        # stays on host A
VETH_B=ushb-b        # moved into the namespace
NET=${HOSTB_NET:-10.250.2}
ADDR_A=$NET.1
ADDR_B=$NET.2
RUN_DIR=/run/userstack-hostb          # sockets, pid files, ssh keys and configs
DATA_DIR=/var/lib/userstack-hostb     # dockerd data root and host B's scratch space
SOCK=$RUN_DIR/docker.sock
DOCKER_PIDFILE=$RUN_DIR/docker.pid
SSHD_PIDFILE=$RUN_DIR/sshd.pid
SCRATCH=$DATA_DIR/scratch            # host B's own tmpfs (see above)
START_TIMEOUT=${HOSTB_START_TIMEOUT:-180}

docker_b() { docker -H "unix://$SOCK" "$@"; }

# The processes in host B's namespace: dockerd, its containerd and shims, docker-proxy, sshd.
# Containers have namespaces of their own and are removed through the daemon first.
ns_pids() { if [[ -e $NETNS_PATH ]]; then ip netns pids "$NS" 2>/dev/null || true; fi; }

print_env() {
    cat <<EOF
export HOSTB_ADDR=$ADDR_B
export HOSTB_SSH=ssh://root@$ADDR_B
export HOSTB_SOCKET=unix://$SOCK
export HOSTB_DIR=$SCRATCH
export PATH=$RUN_DIR/bin:\$PATH
EOF
}

ssh_ok() { "$RUN_DIR/bin/ssh" "root@$ADDR_B" true; }

# over_ssh_docker_ok : the daemon seen through ssh is host B's (its data root), not host A's.
over_ssh_docker_ok() {
    local root
    root=$(PATH="$RUN_DIR/bin:$PATH" DOCKER_HOST="ssh://root@$ADDR_B" \
        docker info --format '{{.DockerRootDir}}') || return 1
    [[ $root == "$DATA_DIR/docker" ]]
}

require() {
    local cmd missing=()
    [[ $EUID -eq 0 ]] || die "hostb.sh must run as root (network namespaces, a second dockerd)"
    for cmd in ip nsenter dockerd docker ssh ssh-keygen scp /usr/sbin/sshd /usr/lib/openssh/sftp-server; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) ||
        die "missing: ${missing[*]} (install iproute2, util-linux, docker.io, openssh-client, openssh-server)"
}

start() {
    require
    if [[ -e $NETNS_PATH ]]; then
        if ssh_ok 2>/dev/null && over_ssh_docker_ok; then
            log "host B is already running at $ADDR_B"
            return 0
        fi
        warn "a half-made host B exists; removing it first"
        stop
    fi

    step "Host B: network namespace $NS, veth $VETH_A ($ADDR_A) <-> $VETH_B ($ADDR_B)"
    # The /30 must not be routed anywhere already, or host B would shadow a real network.
    local routes
    routes=$(ip -4 route show to match "$ADDR_B" | grep -v '^default' || true)
    [[ -z $routes ]] || die "$ADDR_B is already routed here ($routes); set HOSTB_NET to a free /30 prefix"
    run ip netns add "$NS"
    run ip link add "$VETH_A" type veth peer name "$VETH_B"
    run ip link set "$VETH_B" netns "$NS"
    run ip addr add "$ADDR_A/30" dev "$VETH_A"
    run ip link set "$VETH_A" up
    run ip -n "$NS" addr add "$ADDR_B/30" dev "$VETH_B"
    run ip -n "$NS" link set "$VETH_B" up
    run ip -n "$NS" link set lo up
    run ip -n "$NS" -4 -brief addr show

    step "Host B: its own dockerd"
    mkdir -p "$RUN_DIR" "$DATA_DIR/docker" "$SCRATCH"
    chmod 0700 "$RUN_DIR" "$DATA_DIR"
    local driver=${HOSTB_STORAGE_DRIVER:-$(docker info --format '{{.Driver}}' 2>/dev/null || true)}
    # Our own (nearly empty) config file: the default /etc/docker/daemon.json is host A's and
    # names host A's data root.
    if [[ -n $driver ]]; then
        jq -n --arg d "$driver" '{"storage-driver": $d}' >"$RUN_DIR/daemon.json"
    else
        echo '{}' >"$RUN_DIR/daemon.json"
    fi
    run cat "$RUN_DIR/daemon.json"
    # nsenter --net (not `ip netns exec`, which remounts /sys and leaves dockerd without the
    # devices cgroup); unshare --mount: host B's own mount table (slave: host A's mounts still
    # show, B's do not leak back). setsid: the daemon must outlive this script.
    local t0 t1
    t0=$(date +%s%3N)
    log "nsenter --net=$NETNS_PATH unshare --mount --propagation slave dockerd --config-file $RUN_DIR/daemon.json --data-root $DATA_DIR/docker -H unix://$SOCK --exec-root $RUN_DIR/exec --pidfile $DOCKER_PIDFILE --bip 172.31.0.1/16  (log: $RUN_DIR/dockerd.log)"
    setsid nsenter --net="$NETNS_PATH" unshare --mount --propagation slave dockerd \
        --config-file "$RUN_DIR/daemon.json" \
        --data-root "$DATA_DIR/docker" \
        -H "unix://$SOCK" \
        --exec-root "$RUN_DIR/exec" \
        --pidfile "$DOCKER_PIDFILE" \
        --bip 172.31.0.1/16 \
        </dev/null >"$RUN_DIR/dockerd.log" 2>&1 &
    wait_until "$START_TIMEOUT" "host B's dockerd answers on unix://$SOCK" docker_b version
    t1=$(date +%s%3N)
    HOSTB_DOCKERD_START_MS=$((t1 - t0))
    log "host B's dockerd took $(awk -v ms="$HOSTB_DOCKERD_START_MS" 'BEGIN{printf "%.1f", ms/1000}') s to start"
    run docker -H "unix://$SOCK" info --format 'name={{.Name}} root={{.DockerRootDir}} driver={{.Driver}} images={{.Images}} containers={{.Containers}}'
    local dpid
    dpid=$(cat "$DOCKER_PIDFILE")
    run nsenter --target "$dpid" --mount mount -t tmpfs -o "size=${HOSTB_SCRATCH_SIZE:-3g},mode=0700" userstack-hostb "$SCRATCH"

    step "Host B: sshd on $ADDR_B:22, key-only root login"
    local sshd_dir=$RUN_DIR/sshd client_dir=$RUN_DIR/client
    mkdir -p "$sshd_dir" "$client_dir" "$RUN_DIR/bin"
    chmod 0700 "$sshd_dir" "$client_dir"
    run ssh-keygen -q -t ed25519 -N '' -C "userstack-hostb host key" -f "$sshd_dir/host_ed25519_key"
    run ssh-keygen -q -t ed25519 -N '' -C "userstack-hostb client key" -f "$client_dir/id_ed25519"
    install -m 0600 "$client_dir/id_ed25519.pub" "$sshd_dir/authorized_keys"
    # sshd's privilege-separation directory; normally made by the openssh-server unit.
    if [[ ! -d /run/sshd ]]; then
        install -d -m 0755 /run/sshd
        touch "$RUN_DIR/made-run-sshd"
    fi
    cat >"$sshd_dir/sshd_config" <<EOF
# host B's sshd (tests/e2e/hostb.sh); listens only on host B's veth address
ListenAddress $ADDR_B
HostKey $sshd_dir/host_ed25519_key
PidFile $SSHD_PIDFILE
AuthorizedKeysFile $sshd_dir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
# Sessions on host B talk to host B's daemon, like on a server whose dockerd owns
# /var/run/docker.sock: this is what makes DOCKER_HOST=ssh://root@$ADDR_B work.
SetEnv DOCKER_HOST=unix://$SOCK
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    run /usr/sbin/sshd -t -f "$sshd_dir/sshd_config"
    # In the daemon's namespaces: ssh sessions see host B's files, like the daemon does.
    run nsenter --target "$dpid" --net --mount /usr/sbin/sshd -f "$sshd_dir/sshd_config" -E "$RUN_DIR/sshd.log"

    # The client side: host B's real host key in a known_hosts file we write (so host key
    # checking stays strict), our key, and an ssh/scp wrapper that points at this config.
    printf '%s %s\n' "$ADDR_B" "$(cut -d' ' -f1,2 "$sshd_dir/host_ed25519_key.pub")" >"$client_dir/known_hosts"
    cat >"$client_dir/ssh_config" <<EOF
Host $ADDR_B
    User root
    IdentityFile $client_dir/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $client_dir/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
EOF
    local tool
    for tool in ssh scp; do
        printf '#!/bin/sh\n# %s with host B'\''s client config (tests/e2e/hostb.sh)\nexec /usr/bin/%s -F %s "$@"\n' \
            "$tool" "$tool" "$client_dir/ssh_config" >"$RUN_DIR/bin/$tool"
        chmod 0755 "$RUN_DIR/bin/$tool"
    done
    wait_until 30 "sshd on $ADDR_B accepts our key" ssh_ok

    step "Host B: check it is reachable as a separate Docker host"
    # shellcheck disable=SC2016 # expanded by host B's shell
    run "$RUN_DIR/bin/ssh" "root@$ADDR_B" 'echo "DOCKER_HOST=$DOCKER_HOST"; ip -4 -brief addr show; findmnt -no FSTYPE,TARGET '"$SCRATCH"
    run findmnt -no FSTYPE,TARGET --target "$SCRATCH"
    run_sh "PATH=$RUN_DIR/bin:\$PATH DOCKER_HOST=ssh://root@$ADDR_B docker info --format 'root={{.DockerRootDir}} images={{.Images}}'"
    over_ssh_docker_ok || die "DOCKER_HOST=ssh://root@$ADDR_B does not reach host B's daemon"
    log "host B is up: DOCKER_HOST=ssh://root@$ADDR_B (eval \"\$($0 env)\" for the ssh config)"
}

# kill_pid PID NAME SECONDS : SIGTERM, wait up to SECONDS, then SIGKILL.
kill_pid() {
    local pid=$1 name=$2 limit=$3 waited=0
    kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < limit * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) did not stop in ${limit}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

stop() {
    [[ $EUID -eq 0 ]] || die "hostb.sh must run as root"
    step "Host B: remove everything"
    local ids pid
    if [[ -S $SOCK ]] && docker_b version >/dev/null 2>&1; then
        ids=$(docker_b ps -aq)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086 # one id per word
            run docker -H "unix://$SOCK" rm -f $ids
        fi
    fi
    if [[ -r $DOCKER_PIDFILE ]]; then
        kill_pid "$(cat "$DOCKER_PIDFILE")" "host B's dockerd" 30
    fi
    if [[ -r $SSHD_PIDFILE ]]; then
        kill_pid "$(cat "$SSHD_PIDFILE")" "host B's sshd" 10
    fi
    # Whatever is still in the namespace was started by host B (containerd, shims, ssh sessions).
    for pid in $(ns_pids); do
        kill_pid "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80 || echo "pid $pid")" 10
    done
    # dockerd lives in host A's mount namespace: a killed daemon can leave mounts (netns files,
    # layers) under its directories, and rm -rf cannot cross them. Deepest first.
    local mnt
    while read -r mnt; do
        run umount -l "$mnt"
    done < <(awk -v a="$RUN_DIR" -v b="$DATA_DIR" \
        'index($5, a"/") == 1 || index($5, b"/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
    if [[ -e $RUN_DIR/made-run-sshd ]]; then rmdir /run/sshd 2>/dev/null || true; fi
    if [[ -e $RUN_DIR ]]; then run rm -rf "$RUN_DIR"; fi
    if [[ -e $DATA_DIR ]]; then run rm -rf "$DATA_DIR"; fi
    if ip link show "$VETH_A" >/dev/null 2>&1; then run ip link del "$VETH_A"; fi
    if [[ -e $NETNS_PATH ]]; then run ip netns del "$NS"; fi
    verify_gone
}

# verify_gone : fail unless nothing of host B is left.
verify_gone() {
    local left=()
    [[ -e $NETNS_PATH ]] && left+=("namespace $NS")
    ip link show "$VETH_A" >/dev/null 2>&1 && left+=("link $VETH_A")
    [[ -e $RUN_DIR ]] && left+=("$RUN_DIR")
    [[ -e $DATA_DIR ]] && left+=("$DATA_DIR")
    grep -qF -e " $RUN_DIR/" -e " $DATA_DIR/" /proc/self/mountinfo && left+=("mounts under $RUN_DIR or $DATA_DIR")
    # A dockerd or sshd started by us names our directories on its command line.
    local pid
    for pid in $(pgrep -x dockerd; pgrep -x sshd); do
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -e "$RUN_DIR" -e "$DATA_DIR" &&
            left+=("process $pid")
    done
    ((${#left[@]} == 0)) || die "host B left behind: ${left[*]}"
    log "host B is gone (no namespace, veth, processes, mounts, $RUN_DIR or $DATA_DIR)"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) ssh_ok && over_ssh_docker_ok ;;
    gone) verify_gone ;;
    env) print_env ;;
    *) die "usage: $0 start|stop|status|gone|env" ;;
esac
