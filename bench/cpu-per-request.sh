#!/usr/bin/env bash
# Server CPU per request of one userstack binary on one path, for A/B pairs of binaries on a
# shared machine where req/s drifts: CPU per request moves much less with the other load.
#
#   DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379 bench/cpu-per-request.sh BIN warm|pg|id|post [SECONDS [CONNECTIONS [THREADS]]]
#
# warm: GET /users (one page, from the cache after the first request). pg: GET /users?limit=100
# with a distinct after= per request (bench/pages.lua) on a server whose Redis is a closed port
# and whose backoff is a day, so every read goes to PostgreSQL (the database needs 10^5 users).
# id: GET /users/{id}, distinct ids over 1..10^5 (bench/wrk.lua's user-cold mode), the same way.
# post: POST /users with a unique email per request (bench/wrk.lua's post mode). wrk: THREADS
# threads (default 1) over CONNECTIONS connections (default 32; bench/run.sh's paths: 2 threads,
# 64 connections), 1 s of warm-up, then SECONDS (default 6) measured; the server's utime+stime
# from /proc over that window divided by the requests wrk counted. Run two binaries in turn,
# several times, and compare the medians.
set -euo pipefail

usage="usage: bench/cpu-per-request.sh BIN warm|pg|id|post [SECONDS [CONNECTIONS [THREADS]]]"
bin=${1:?$usage}
mode=${2:?$usage}
secs=${3:-6}
conns=${4:-32}
threads=${5:-1}
: "${DATABASE_URL:?DATABASE_URL is needed}" "${REDIS_URL:?REDIS_URL is needed}"
here=$(dirname -- "${BASH_SOURCE[0]}")
run="cpu$$-$EPOCHSECONDS" # unique emails and cache keys per run, also in a reused database
redis=$REDIS_URL extra=() script=() warmup_args=() run_args=()
case $mode in
    warm) ;;
    pg) redis=redis://127.0.0.1:1 extra=(CACHE_BACKOFF_MS=86400000) script=(-s "$here/pages.lua") ;;
    id)
        redis=redis://127.0.0.1:1 extra=(CACHE_BACKOFF_MS=86400000) script=(-s "$here/wrk.lua")
        warmup_args=(-- user-cold "$threads" 100000 0 x)
        run_args=(-- user-cold "$threads" 100000 500000 x) ;;
    post)
        script=(-s "$here/wrk.lua")
        warmup_args=(-- post 1 1 0 "$run-warm-up")
        run_args=(-- post 1 1 0 "$run") ;;
    *) echo "mode must be warm, pg, id or post" >&2; exit 2 ;;
esac
export WRK_OUT=/dev/null # wrk.lua's JSON result: not needed here
# shellcheck source=bench/server.sh
. "$here/server.sh"
start_server "$bin" DATABASE_POOL_SIZE=16 REDIS_URL="$redis" REDIS_KEY_PREFIX="$run:" "${extra[@]}"
pid=$server_pid port=$server_port
curl -fs "http://127.0.0.1:$port/users" >/dev/null
wrk -t"$threads" -c"$conns" -d1s "${script[@]}" "http://127.0.0.1:$port/users" "${warmup_args[@]}" >/dev/null
# utime and stime: what the process ran itself, and what the kernel ran for it (system calls).
ticks() { awk '{print $14, $15}' "/proc/$pid/stat"; }
read -r user_before sys_before < <(ticks)
out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" "${script[@]}" "http://127.0.0.1:$port/users" "${run_args[@]}")
read -r user_after sys_after < <(ticks)
requests=$(awk '/requests in/ {print $1}' <<<"$out")
failed=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
us() { echo $(($1 * 1000000 / $(getconf CLK_TCK) / requests)); }
user=$((user_after - user_before)) sys=$((sys_after - sys_before))
echo "$(basename -- "$bin") $mode: $((requests / secs)) req/s, $(us $((user + sys))) us/req server CPU" \
    "($(us "$user") user, $(us "$sys") system), non-2xx ${failed:-0}"
