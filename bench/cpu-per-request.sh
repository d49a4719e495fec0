#!/usr/bin/env bash
# Server CPU per request of one userstack binary on one path, for A/B pairs of binaries on a
# shared machine where req/s drifts: CPU per request moves much less with the other load.
#
#   DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379 bench/cpu-per-request.sh BIN warm|pg [SECONDS]
#
# warm: GET /users (one page, from Redis after the first request). pg: GET /users?limit=100 with a
# distinct after= per request (bench/pages.lua) on a server whose Redis is a closed port and whose
# backoff is a day, so every read goes to PostgreSQL (the database needs 10^5 users). wrk: one
# thread, 32 connections, 1 s of warm-up, then SECONDS measured; the server's utime+stime from
# /proc over that window divided by the requests wrk counted. Run two binaries in turn, several
# times, and compare the medians.
set -euo pipefail

bin=${1:?usage: bench/cpu-per-request.sh BIN warm|pg [SECONDS]}
mode=${2:?usage: bench/cpu-per-request.sh BIN warm|pg [SECONDS]}
secs=${3:-6}
: "${DATABASE_URL:?DATABASE_URL is needed}" "${REDIS_URL:?REDIS_URL is needed}"
here=$(dirname -- "${BASH_SOURCE[0]}")
port=$((20000 + RANDOM % 20000))
redis=$REDIS_URL extra=() script=()
case $mode in
    warm) ;;
    pg) redis=redis://127.0.0.1:1 extra=(CACHE_BACKOFF_MS=86400000) script=(-s "$here/pages.lua") ;;
    *) echo "mode must be warm or pg" >&2; exit 2 ;;
esac
log=$(mktemp)
env HOST=127.0.0.1 PORT="$port" ADMIN_PORT=0 RUST_LOG=warn CACHE_TIMEOUT_MS=1000 \
    DATABASE_POOL_SIZE=16 REDIS_URL="$redis" REDIS_KEY_PREFIX="cpu$port:" "${extra[@]}" \
    "$bin" serve >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f -- "$log"' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$port/users" >/dev/null
wrk -t1 -c32 -d1s "${script[@]}" "http://127.0.0.1:$port/users" >/dev/null
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(ticks)
out=$(wrk -t1 -c32 -d"${secs}s" "${script[@]}" "http://127.0.0.1:$port/users")
after=$(ticks)
requests=$(awk '/requests in/ {print $1}' <<<"$out")
failed=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
echo "$(basename -- "$bin") $mode: $((requests / secs)) req/s, $(((after - before) * 1000000 / $(getconf CLK_TCK) / requests)) us/req server CPU, non-2xx ${failed:-0}"
