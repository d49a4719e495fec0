#!/usr/bin/env bash
# hosts.sh [--name NAME] [--count N] start|stop|status|gone|env : N more Docker hosts on this
# machine, for the multi-host tests (task 2: one host "hostb"; task 3: a swarm of "node1".."node3").
#
# Each host is a network namespace with its own dockerd (own data root, socket, exec root,
# pidfile, bridge subnet --bip, --config-file), its own sshd, hostname and mount namespace. All of
# them and this machine ("host A") are joined by one Linux bridge, so every host reaches every
# other one and host A over its address. Seen from host A a host behaves like a separate,
# air-gapped server: it has none of host A's images, no route to the internet, and is reached
# only over its address, by ssh (DOCKER_HOST=ssh://root@ADDR) and on the ports it publishes.
# Nothing here touches host A's own daemon.
#
# Each host's daemon and sshd share a mount namespace of their own, with two tmpfs that exist
# only there: a scratch directory (a file put there over ssh is on that host only, as on a real
# second machine) and /etc/docker/certs.d (so each daemon trusts exactly the registry CAs that
# were installed on *it*).
#
#   start   create them (idempotent: running hosts are checked and kept; half-made ones are
#           removed first) and print the time each daemon took to start
#   stop    remove everything: swarm membership, containers, daemons and their data roots,
#           sshds, keys, veths, the bridge and its forwarding rule, namespaces (idempotent; also
#           after a failed start)
#   status  exit 0 if every host answers over ssh
#   gone    exit 0 if nothing of them is left (what `stop` ends with)
#   env     print `export` lines for the tests. For each host i (1..N): HOST<i>_NAME, HOST<i>_ADDR,
#           HOST<i>_SSH (ssh://root@ADDR), HOST<i>_SOCKET (unix://…, its daemon seen from this
#           machine), HOST<i>_DIR (its scratch directory); HOSTS_ADDR_A (host A on the bridge),
#           HOSTS_COUNT; and PATH with an ssh/scp wrapper that uses the generated client config
#           (key, known_hosts): ssh has no environment variable for a config file, and the docker
#           CLI runs plain `ssh` from PATH.
#
# Options and settings (environment): --name NAME / USERSTACK_HOSTS_NAME (default hostb; at most
# 10 characters: it names the bridge and veths), --count N / USERSTACK_HOSTS_COUNT (default 1;
# one host is called NAME, several NAME1..NAMEn), USERSTACK_HOSTS_NET (default 10.250.2 for hostb,
# 10.250.3 otherwise: host A gets .1, host i gets .(1+i), a /24), USERSTACK_HOSTS_STORAGE_DRIVER
# (default: host A's), USERSTACK_HOSTS_START_TIMEOUT (default 180 s), USERSTACK_HOSTS_SCRATCH_SIZE
# (each scratch tmpfs, default 3g: the offline bundle is unpacked there).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../../deploy/lib/common.sh
source "$here/../../deploy/lib/common.sh"

NAME=${USERSTACK_HOSTS_NAME:-hostb}
COUNT=${USERSTACK_HOSTS_COUNT:-1}
cmd=""
while (($#)); do
    case $1 in
        --name) NAME=${2:?--name needs a value}; shift 2 ;;
        --count) COUNT=${2:?--count needs a value}; shift 2 ;;
        start | stop | status | gone | env) cmd=$1; shift ;;
        *) die "usage: $0 [--name NAME] [--count N] start|stop|status|gone|env" ;;
    esac
done
[[ $NAME =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "--name must be 1-10 lower-case letters/digits, starting with a letter"
[[ $COUNT =~ ^[1-9]$ ]] || die "--count must be 1..9"
if [[ $NAME == hostb ]]; then NET=${USERSTACK_HOSTS_NET:-10.250.2}; else NET=${USERSTACK_HOSTS_NET:-10.250.3}; fi
ADDR_A=$NET.1
BRIDGE=us-$NAME                           # on host A, holds ADDR_A
RUN_ROOT=/run/userstack-$NAME             # sockets, pid files, ssh keys and configs
DATA_ROOT=/var/lib/userstack-$NAME        # dockerd data roots and scratch spaces
CLIENT_DIR=$RUN_ROOT/client
START_TIMEOUT=${USERSTACK_HOSTS_START_TIMEOUT:-180}
CERTS_D=/etc/docker/certs.d

# Per host i: its name, namespace, address, veth (host A's end), directories.
host_name() { if ((COUNT == 1)); then echo "$NAME"; else echo "$NAME$1"; fi; }
ns_of() { echo "userstack-$(host_name "$1")"; }
addr_of() { echo "$NET.$((1 + $1))"; }
veth_of() { echo "us-$NAME-$1"; }
run_of() { echo "$RUN_ROOT/$(host_name "$1")"; }
data_of() { echo "$DATA_ROOT/$(host_name "$1")"; }
sock_of() { echo "$(run_of "$1")/docker.sock"; }
docker_i() { docker -H "unix://$(sock_of "$1")" "${@:2}"; }
HOSTS=()
for ((i = 1; i <= COUNT; i++)); do HOSTS+=("$i"); done

# The processes in a host's namespace: dockerd, its containerd and shims, docker-proxy, sshd.
ns_pids() { if [[ -e /var/run/netns/$(ns_of "$1") ]]; then ip netns pids "$(ns_of "$1")" 2>/dev/null || true; fi; }

print_env() {
    local i
    for i in "${HOSTS[@]}"; do
        printf 'export HOST%s_NAME=%s\n' "$i" "$(host_name "$i")"
        printf 'export HOST%s_ADDR=%s\n' "$i" "$(addr_of "$i")"
        printf 'export HOST%s_SSH=ssh://root@%s\n' "$i" "$(addr_of "$i")"
        printf 'export HOST%s_SOCKET=unix://%s\n' "$i" "$(sock_of "$i")"
        printf 'export HOST%s_DIR=%s/scratch\n' "$i" "$(data_of "$i")"
    done
    printf 'export HOSTS_COUNT=%s\nexport HOSTS_ADDR_A=%s\n' "$COUNT" "$ADDR_A"
    # shellcheck disable=SC2016 # $PATH is for the shell that evals this
    printf 'export PATH=%s/bin:$PATH\n' "$CLIENT_DIR"
}

ssh_ok() { "$CLIENT_DIR/bin/ssh" "root@$(addr_of "$1")" true; }

# over_ssh_docker_ok I : the daemon seen through ssh is host I's (its data root), not host A's.
over_ssh_docker_ok() {
    local root
    root=$(PATH="$CLIENT_DIR/bin:$PATH" DOCKER_HOST="ssh://root@$(addr_of "$1")" \
        docker info --format '{{.DockerRootDir}}') || return 1
    [[ $root == "$(data_of "$1")/docker" ]]
}

all_up() {
    local i
    [[ -x $CLIENT_DIR/bin/ssh ]] || return 1
    for i in "${HOSTS[@]}"; do
        ssh_ok "$i" 2>/dev/null || return 1
        over_ssh_docker_ok "$i" || return 1
    done
}

require() {
    local c missing=()
    [[ $EUID -eq 0 ]] || die "hosts.sh must run as root (network namespaces, more dockerds)"
    for c in ip nsenter unshare dockerd docker ssh ssh-keygen scp iptables /usr/sbin/sshd /usr/lib/openssh/sftp-server; do
        command -v "$c" >/dev/null || missing+=("$c")
    done
    ((${#missing[@]} == 0)) ||
        die "missing: ${missing[*]} (install iproute2, util-linux, iptables, docker.io, openssh-client, openssh-server)"
}

# With br_netfilter loaded, frames crossing a bridge go through host A's FORWARD chain, whose
# policy Docker sets to DROP: without this rule the hosts could not reach each other.
forward_rule=(-i "$BRIDGE" -o "$BRIDGE" -m comment --comment "userstack tests/e2e/hosts.sh $NAME" -j ACCEPT)

start_network() {
    step "Hosts: bridge $BRIDGE ($ADDR_A/24) on host A"
    local i routes ns veth addr
    for i in "${HOSTS[@]}"; do
        routes=$(ip -4 route show to match "$(addr_of "$i")" | grep -v '^default' || true)
        [[ -z $routes ]] || die "$(addr_of "$i") is already routed here ($routes); set USERSTACK_HOSTS_NET to a free /24 prefix"
    done
    run ip link add "$BRIDGE" type bridge
    run ip addr add "$ADDR_A/24" dev "$BRIDGE"
    run ip link set "$BRIDGE" up
    if iptables -L DOCKER-USER -n >/dev/null 2>&1; then
        run iptables -I DOCKER-USER "${forward_rule[@]}"
    else
        run iptables -I FORWARD "${forward_rule[@]}"
    fi
    for i in "${HOSTS[@]}"; do
        ns=$(ns_of "$i") veth=$(veth_of "$i") addr=$(addr_of "$i")
        step "Host $(host_name "$i"): network namespace $ns, $veth on $BRIDGE <-> eth0 ($addr)"
        run ip netns add "$ns"
        run ip link add "$veth" type veth peer name "$veth-b"
        run ip link set "$veth-b" netns "$ns"
        run ip -n "$ns" link set "$veth-b" name eth0
        run ip link set "$veth" master "$BRIDGE"
        run ip link set "$veth" up
        run ip -n "$ns" addr add "$addr/24" dev eth0
        run ip -n "$ns" link set eth0 up
        run ip -n "$ns" link set lo up
    done
}

# start_daemon I : host I's dockerd and the tmpfs mounts of its own.
start_daemon() {
    local i=$1 hname rundir datadir sock ns driver t0 dpid bip
    hname=$(host_name "$i") rundir=$(run_of "$i") datadir=$(data_of "$i") sock=$(sock_of "$i") ns=$(ns_of "$i")
    bip="172.$((20 + i)).0.1/16"
    step "Host $hname: its own dockerd"
    mkdir -p "$rundir" "$datadir/docker" "$datadir/scratch"
    chmod 0700 "$rundir" "$datadir"
    driver=${USERSTACK_HOSTS_STORAGE_DRIVER:-$(docker info --format '{{.Driver}}' 2>/dev/null || true)}
    # Our own (nearly empty) config file: the default /etc/docker/daemon.json is host A's and
    # names host A's data root.
    if [[ -n $driver ]]; then
        jq -n --arg d "$driver" '{"storage-driver": $d}' >"$rundir/daemon.json"
    else
        echo '{}' >"$rundir/daemon.json"
    fi
    run cat "$rundir/daemon.json"
    # nsenter --net (not `ip netns exec`, which remounts /sys and leaves dockerd without the
    # devices cgroup); unshare --mount: the host's own mount table (slave: host A's mounts still
    # show, the host's do not leak back); --uts: its own hostname, which names it in a swarm.
    # setsid: the daemon must outlive this script.
    t0=$(date +%s%3N)
    log "nsenter --net=/var/run/netns/$ns unshare --mount --uts --propagation slave sh -c 'hostname $hname; exec dockerd --config-file $rundir/daemon.json --data-root $datadir/docker -H unix://$sock --exec-root $rundir/exec --pidfile $rundir/docker.pid --bip $bip'  (log: $rundir/dockerd.log)"
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid nsenter --net="/var/run/netns/$ns" unshare --mount --uts --propagation slave \
        sh -c 'hostname "$0" && exec "$@"' "$hname" dockerd \
        --config-file "$rundir/daemon.json" \
        --data-root "$datadir/docker" \
        -H "unix://$sock" \
        --exec-root "$rundir/exec" \
        --pidfile "$rundir/docker.pid" \
        --bip "$bip" \
        </dev/null >"$rundir/dockerd.log" 2>&1 &
    wait_until "$START_TIMEOUT" "$hname's dockerd answers on unix://$sock" docker_i "$i" version
    log "$hname's dockerd took $(awk -v ms="$(($(date +%s%3N) - t0))" 'BEGIN{printf "%.1f", ms/1000}') s to start"
    run docker -H "unix://$sock" info --format 'name={{.Name}} root={{.DockerRootDir}} driver={{.Driver}} images={{.Images}} containers={{.Containers}}'
    dpid=$(cat "$rundir/docker.pid")
    run nsenter --target "$dpid" --mount mount -t tmpfs -o "size=${USERSTACK_HOSTS_SCRATCH_SIZE:-3g},mode=0700" "userstack-$hname" "$datadir/scratch"
    run nsenter --target "$dpid" --mount mount -t tmpfs -o size=1m,mode=0755 "userstack-$hname-certs" "$CERTS_D"
}

# start_sshd I : host I's sshd on its address, key-only root login, in its daemon's namespaces.
start_sshd() {
    local i=$1 hname addr rundir sshd_dir dpid
    hname=$(host_name "$i") addr=$(addr_of "$i") rundir=$(run_of "$i")
    sshd_dir=$rundir/sshd
    step "Host $hname: sshd on $addr:22, key-only root login"
    mkdir -p "$sshd_dir"
    chmod 0700 "$sshd_dir"
    run ssh-keygen -q -t ed25519 -N '' -C "userstack $hname host key" -f "$sshd_dir/host_ed25519_key"
    install -m 0600 "$CLIENT_DIR/id_ed25519.pub" "$sshd_dir/authorized_keys"
    {
        echo "# $hname's sshd (tests/e2e/hosts.sh); listens only on the host's address"
        echo "ListenAddress $addr"
        echo "HostKey $sshd_dir/host_ed25519_key"
        echo "PidFile $rundir/sshd.pid"
        echo "AuthorizedKeysFile $sshd_dir/authorized_keys"
        echo "PermitRootLogin prohibit-password"
        echo "PubkeyAuthentication yes"
        echo "PasswordAuthentication no"
        echo "KbdInteractiveAuthentication no"
        echo "UsePAM no"
        echo "X11Forwarding no"
        echo "AllowTcpForwarding no"
        echo "PrintMotd no"
        echo "# Sessions on the host talk to its daemon, like on a server whose dockerd owns"
        echo "# /var/run/docker.sock: this is what makes DOCKER_HOST=ssh://root@$addr work."
        echo "SetEnv DOCKER_HOST=unix://$(sock_of "$i")"
        echo "Subsystem sftp /usr/lib/openssh/sftp-server"
    } >"$sshd_dir/sshd_config"
    run /usr/sbin/sshd -t -f "$sshd_dir/sshd_config"
    dpid=$(cat "$rundir/docker.pid")
    # In the daemon's namespaces: ssh sessions see the host's files and name, like the daemon.
    run nsenter --target "$dpid" --net --mount --uts /usr/sbin/sshd -f "$sshd_dir/sshd_config" -E "$rundir/sshd.log"
    printf '%s %s\n' "$addr" "$(cut -d' ' -f1,2 "$sshd_dir/host_ed25519_key.pub")" >>"$CLIENT_DIR/known_hosts"
    printf 'Host %s\n    User root\n    IdentityFile %s\n    IdentitiesOnly yes\n    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n    BatchMode yes\n    ConnectTimeout 10\n' \
        "$addr" "$CLIENT_DIR/id_ed25519" "$CLIENT_DIR/known_hosts" >>"$CLIENT_DIR/ssh_config"
}

start() {
    require
    if [[ -e $RUN_ROOT || -e /var/run/netns/$(ns_of 1) ]]; then
        if all_up; then
            log "hosts $NAME ($COUNT) are already running"
            return 0
        fi
        warn "half-made hosts $NAME exist; removing them first"
        stop
    fi
    start_network
    mkdir -p "$CLIENT_DIR/bin"
    chmod 0700 "$RUN_ROOT" "$CLIENT_DIR"
    : >"$CLIENT_DIR/known_hosts"
    : >"$CLIENT_DIR/ssh_config"
    run ssh-keygen -q -t ed25519 -N '' -C "userstack $NAME client key" -f "$CLIENT_DIR/id_ed25519"
    # The tmpfs over certs.d is mounted in each host's own mount namespace; the mount point
    # must exist in the file system they share with host A. Docker's own directory: it stays
    # (removing it could pull the mount point from under another set of hosts).
    mkdir -p "$CERTS_D"
    # sshd's privilege-separation directory; normally made by the openssh-server unit.
    if [[ ! -d /run/sshd ]]; then
        install -d -m 0755 /run/sshd
        touch "$RUN_ROOT/made-run-sshd"
    fi
    local i tool addr
    for i in "${HOSTS[@]}"; do start_daemon "$i"; done
    for i in "${HOSTS[@]}"; do start_sshd "$i"; done
    # The client side: the hosts' real host keys in a known_hosts file we write (so host key
    # checking stays strict), our key, and an ssh/scp wrapper that points at this config.
    for tool in ssh scp; do
        printf '#!/bin/sh\n# %s with the client config of tests/e2e/hosts.sh (%s)\nexec /usr/bin/%s -F %s "$@"\n' \
            "$tool" "$NAME" "$tool" "$CLIENT_DIR/ssh_config" >"$CLIENT_DIR/bin/$tool"
        chmod 0755 "$CLIENT_DIR/bin/$tool"
    done
    for i in "${HOSTS[@]}"; do
        addr=$(addr_of "$i")
        wait_until 30 "sshd on $addr accepts our key" ssh_ok "$i"
        step "Host $(host_name "$i"): check it is reachable as a separate Docker host"
        # shellcheck disable=SC2016 # expanded by the host's shell
        run "$CLIENT_DIR/bin/ssh" "root@$addr" 'echo "$(hostname): DOCKER_HOST=$DOCKER_HOST"; ip -4 -brief addr show; findmnt -no FSTYPE,TARGET '"$(data_of "$i")/scratch; findmnt -no FSTYPE,TARGET $CERTS_D"
        run_sh "PATH=$CLIENT_DIR/bin:\$PATH DOCKER_HOST=ssh://root@$addr docker info --format 'name={{.Name}} root={{.DockerRootDir}} images={{.Images}}'"
        over_ssh_docker_ok "$i" || die "DOCKER_HOST=ssh://root@$addr does not reach $(host_name "$i")'s daemon"
    done
    log "hosts up: $(for i in "${HOSTS[@]}"; do printf '%s=ssh://root@%s ' "$(host_name "$i")" "$(addr_of "$i")"; done)(eval \"\$($0 --name $NAME --count $COUNT env)\" for the ssh config)"
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

stop_host() {
    local i=$1 hname rundir ids pid
    hname=$(host_name "$i") rundir=$(run_of "$i")
    if [[ -S $(sock_of "$i") ]] && docker_i "$i" version >/dev/null 2>&1; then
        # A swarm node leaves first (its tasks stop), then its containers go.
        if [[ $(docker_i "$i" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null) == active ]]; then
            try docker -H "unix://$(sock_of "$i")" swarm leave --force || true
        fi
        ids=$(docker_i "$i" ps -aq)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086 # one id per word
            run docker -H "unix://$(sock_of "$i")" rm -f $ids
        fi
    fi
    if [[ -r $rundir/docker.pid ]]; then
        kill_pid "$(cat "$rundir/docker.pid")" "$hname's dockerd" 30
    fi
    if [[ -r $rundir/sshd.pid ]]; then
        kill_pid "$(cat "$rundir/sshd.pid")" "$hname's sshd" 10
    fi
    # Whatever is still in the namespace was started by the host (containerd, shims, sessions).
    for pid in $(ns_pids "$i"); do
        kill_pid "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80 || echo "pid $pid")" 10
    done
}

stop() {
    [[ $EUID -eq 0 ]] || die "hosts.sh must run as root"
    step "Hosts $NAME: remove everything"
    local i mnt chain
    for i in "${HOSTS[@]}"; do stop_host "$i"; done
    # dockerd lives in host A's mount namespace: a killed daemon can leave mounts (netns files,
    # layers) under its directories, and rm -rf cannot cross them. Deepest first.
    while read -r mnt; do
        run umount -l "$mnt"
    done < <(awk -v a="$RUN_ROOT" -v b="$DATA_ROOT" \
        'index($5, a"/") == 1 || index($5, b"/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
    if [[ -e $RUN_ROOT/made-run-sshd ]]; then rmdir /run/sshd 2>/dev/null || true; fi
    if [[ -e $RUN_ROOT ]]; then run rm -rf "$RUN_ROOT"; fi
    if [[ -e $DATA_ROOT ]]; then run rm -rf "$DATA_ROOT"; fi
    for i in "${HOSTS[@]}"; do
        if ip link show "$(veth_of "$i")" >/dev/null 2>&1; then run ip link del "$(veth_of "$i")"; fi
        if [[ -e /var/run/netns/$(ns_of "$i") ]]; then run ip netns del "$(ns_of "$i")"; fi
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then run ip link del "$BRIDGE"; fi
    for chain in DOCKER-USER FORWARD; do
        while iptables -C "$chain" "${forward_rule[@]}" 2>/dev/null; do
            run iptables -D "$chain" "${forward_rule[@]}"
        done
    done
    verify_gone
}

# verify_gone : fail unless nothing of the hosts is left.
verify_gone() {
    local left=() i chain pid
    for i in "${HOSTS[@]}"; do
        [[ -e /var/run/netns/$(ns_of "$i") ]] && left+=("namespace $(ns_of "$i")")
        ip link show "$(veth_of "$i")" >/dev/null 2>&1 && left+=("link $(veth_of "$i")")
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && left+=("bridge $BRIDGE")
    for chain in DOCKER-USER FORWARD; do
        iptables -C "$chain" "${forward_rule[@]}" 2>/dev/null && left+=("iptables rule in $chain")
    done
    [[ -e $RUN_ROOT ]] && left+=("$RUN_ROOT")
    [[ -e $DATA_ROOT ]] && left+=("$DATA_ROOT")
    grep -qF -e " $RUN_ROOT/" -e " $DATA_ROOT/" /proc/self/mountinfo && left+=("mounts under $RUN_ROOT or $DATA_ROOT")
    # A dockerd or sshd started by us names our directories on its command line.
    for pid in $(pgrep -x dockerd; pgrep -x sshd); do
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -e "$RUN_ROOT/" -e "$DATA_ROOT/" &&
            left+=("process $pid")
    done
    ((${#left[@]} == 0)) || die "hosts $NAME left behind: ${left[*]}"
    log "hosts $NAME are gone (no namespace, veth, bridge, rule, processes, mounts, $RUN_ROOT or $DATA_ROOT)"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    status) all_up ;;
    gone) verify_gone ;;
    env) print_env ;;
    *) die "usage: $0 [--name NAME] [--count N] start|stop|status|gone|env" ;;
esac
