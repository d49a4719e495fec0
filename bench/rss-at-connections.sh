#!/usr/bin/env bash
# Peak resident memory of one userstack binary while wrk holds CONNECTIONS keep-alive connections
# on one path, and where its cache reads were answered (memory, Redis, the store), for A/B pairs:
#
#   DATABASE_URL=... REDIS_URL=... bench/rss-at-connections.sh BIN PATH CONNECTIONS [SECONDS] [NAME=VALUE ...]
#
# e.g. bench/rss-at-connections.sh target/release/userstack /users 5000 6 LOCAL_CACHE_BYTES=0.
# The server runs with MAX_CONNECTIONS and MAX_IN_FLIGHT above CONNECTIONS and its operational
# routes on the public port; VmRSS is sampled every 0.3 s while wrk (2 threads, 10 s timeout)
# runs, and the server's CPU time (utime + stime) over the run is divided by wrk's requests; the
# cache counters come from /metrics afterwards, and the server's warnings during the
# load follow, counted by message. Needs `ulimit -n` above CONNECTIONS plus a few hundred (the
# bench's crates/bench raises it itself; here it is the shell's).
set -euo pipefail

usage="usage: bench/rss-at-connections.sh BIN PATH CONNECTIONS [SECONDS] [NAME=VALUE ...]"
bin=${1:?$usage}
path=${2:?$usage}
conns=${3:?$usage}
secs=${4:-6}
shift $(($# < 4 ? $# : 4))
: "${DATABASE_URL:?DATABASE_URL is needed}" "${REDIS_URL:?REDIS_URL is needed}"
if (($(ulimit -n) < conns + 200)); then
    ulimit -n "$(ulimit -Hn)"
fi
# shellcheck source=bench/server.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/server.sh"
start_server "$bin" MAX_CONNECTIONS=$((conns + 100)) MAX_IN_FLIGHT=$((conns + 100)) \
    REDIS_KEY_PREFIX="rss$$:" "$@"
pid=$server_pid port=$server_port
curl -fs "http://127.0.0.1:$port$path" >/dev/null
out=$(mktemp)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
ticks_before=$(ticks)
wrk -t2 -c"$conns" -d"${secs}s" --timeout 10s "http://127.0.0.1:$port$path" >"$out" 2>&1 &
load=$!
peak=0
while kill -0 "$load" 2>/dev/null; do
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    ((rss > peak)) && peak=$rss
    sleep 0.3
done
wait "$load"
cpu_ticks=$(($(ticks) - ticks_before))
counter() {
    curl -fs "http://127.0.0.1:$port/metrics" |
        awk -v r="$1" '$1 == "userstack_cache_operations_total{result=\"" r "\"}" {print $2}'
}
requests=$(awk '/requests in/ {print $1}' "$out")
cpu_us=$((cpu_ticks * 1000000 / $(getconf CLK_TCK) / (requests > 0 ? requests : 1)))
errors=$(awk '/Socket errors/ {print $0}' "$out" | sed 's/^ *//')
non_2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
echo "$(basename -- "$bin") $path, $conns connections${*:+ $*}: peak RSS $((peak / 1024)) MiB;" \
    "$requests requests, non-2xx ${non_2xx:-0}, server CPU $cpu_us us/req; cache reads from memory $(counter memory_hit)," \
    "from Redis $(counter hit), missed $(counter miss), answered by another read's load $(counter shared), bypassed $(counter bypass);" \
    "failed cache calls $(counter error)${errors:+; $errors}"
# What the server warned about under the load (start-up's own warnings left out), by message.
grep -E '^[^ ]+ +(WARN|ERROR) ' "$server_log" | grep -v ' userstack_server::cli: ' |
    sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -5 || true
rm -f -- "$out"
