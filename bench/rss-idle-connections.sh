#!/usr/bin/env bash
# What a server holds per keep-alive connection between requests, for userstack and for hyper
# alone: each server's resident memory before and after CONNECTIONS clients each sent one
# `GET /`, read the answer whole and stayed connected, idle (bench/hold_connections.py):
#
#   DATABASE_URL=... REDIS_URL=... bench/rss-idle-connections.sh BIN [CONNECTIONS]
#
# Three servers in turn: BIN (userstack, MAX_CONNECTIONS above CONNECTIONS), hyper alone
# (crates/bench/src/bin/hyper-floor.rs, built here), and hyper alone answering with the headers
# userstack's `GET /` sends (HEADERS=userstack). The concurrency sweep of bench/run.sh measures
# peak RSS under load; this isolates the part that stays with each connection. It also prints
# each server's CPU over IDLE_SECS (default 15) while the connections sit idle: what its
# timeouts' timers cost when nothing happens.
set -euo pipefail

usage="usage: bench/rss-idle-connections.sh BIN [CONNECTIONS]"
bin=${1:?$usage}
conns=${2:-10000}
idle_secs=${IDLE_SECS:-15}
: "${DATABASE_URL:?DATABASE_URL is needed}" "${REDIS_URL:?REDIS_URL is needed}"
here=$(dirname -- "${BASH_SOURCE[0]}")
if (($(ulimit -n) < conns + 200)); then
    ulimit -n "$(ulimit -Hn)"
fi
echo "==> building hyper alone (crates/bench/src/bin/hyper-floor.rs)" >&2
cargo build --release --locked --quiet --manifest-path "$here/../Cargo.toml" -p userstack-bench --bin hyper-floor
floor=$here/../target/release/hyper-floor

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME PID PORT: holds the connections, prints the server's RSS before and with them.
measure() {
    local name=$1 pid=$2 port=$3 ready before after holder ticks
    ready=$(mktemp -u)
    before=$(rss_kib "$pid")
    python3 "$here/hold_connections.py" "$port" "$conns" / "$ready" &
    holder=$!
    while [[ ! -e $ready ]]; do
        kill -0 "$holder" 2>/dev/null || { wait "$holder"; return 1; }
        sleep 0.2
    done
    sleep 1 # let the server finish with the last answers
    after=$(rss_kib "$pid")
    ticks=$(cpu_ticks "$pid")
    sleep "$idle_secs"
    ticks=$(($(cpu_ticks "$pid") - ticks))
    kill "$holder"
    wait "$holder" 2>/dev/null || true
    rm -f -- "$ready"
    echo "$name: RSS $((before / 1024)) MiB before, $((after / 1024)) MiB with $conns idle" \
        "connections: $(((after - before) * 1024 / conns)) bytes per connection;" \
        "CPU while idle $((ticks * 1000 / $(getconf CLK_TCK) / idle_secs)) ms per second over ${idle_secs} s"
}

# shellcheck source=bench/server.sh
. "$here/server.sh"
start_server "$bin" MAX_CONNECTIONS=$((conns + 100)) MAX_IN_FLIGHT=$((conns + 100)) \
    REDIS_KEY_PREFIX="idle$$:"
measure "$(basename -- "$bin")" "$server_pid" "$server_port"
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true

for headers in "" userstack; do
    port=$((20000 + RANDOM % 20000))
    if [[ -n $headers ]]; then
        HEADERS=$headers PORT=$port "$floor" &
    else
        PORT=$port "$floor" &
    fi
    pid=$!
    until curl -fs "http://127.0.0.1:$port/" >/dev/null; do
        kill -0 "$pid" 2>/dev/null || { echo "hyper alone did not start on port $port" >&2; exit 1; }
        sleep 0.1
    done
    measure "hyper alone${headers:+, HEADERS=$headers}" "$pid" "$port"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
