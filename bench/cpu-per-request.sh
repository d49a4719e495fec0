#!/usr/bin/env bash
# Server CPU per request of one userstack binary on one path, for A/B pairs of binaries on a
# shared machine where req/s drifts: CPU per request moves much less with the other load.
#
#   DATABASE_URL=... REDIS_URL=redis://127.0.0.1:6379 bench/cpu-per-request.sh BIN root|warm|pg|id|post [SECONDS [CONNECTIONS [THREADS]]]
#
# root: GET / (no I/O: the HTTP stack alone). warm: GET /users (one page, from the cache after
# the first request). pg: GET /users?limit=100 with a distinct after= per request
# (bench/pages.lua) on a server whose Redis is a closed port and whose backoff is a day, so every
# read goes to PostgreSQL (the database needs 10^5 users).
# id: GET /users/{id}, distinct ids over 1..10^5 (bench/wrk.lua's user-cold mode), the same way.
# post: POST /users with a unique email per request (bench/wrk.lua's post mode). wrk: THREADS
# threads (default 1) over CONNECTIONS connections (default 32; bench/run.sh's paths: 2 threads,
# 64 connections), 1 s of warm-up, then SECONDS (default 6) measured; the server's utime+stime
# from /proc over that window divided by the requests wrk counted, the same for PostgreSQL (every
# postgres process), and for pg, id and post the mean size of the server's batches (its /metrics:
# userstack_db_batched_jobs_total / userstack_db_batches_total). Run two binaries in turn, several
# times, and compare the medians.
#
# With PROFILE=FILE, perf (Debian's linux-perf) samples the server's CPU clock over the measured
# window into FILE, kernel included (what callgrind does not see), and the samples are printed
# grouped by part, each part's share also in microseconds of the request's CPU: the symbol each
# sample fell in decides (inlined code counts where it was inlined). The binary needs its
# symbols: build it with CARGO_PROFILE_RELEASE_STRIP=false.
#
# With SYSCALLS=FILE, strace counts the server's system calls over the measured window into FILE
# and prints them per request: which calls a request costs the kernel. strace stops the server
# at every call, so that run's req/s and CPU figures are strace's, not the server's.
set -euo pipefail

usage="usage: bench/cpu-per-request.sh BIN root|warm|pg|id|post [SECONDS [CONNECTIONS [THREADS]]]"
bin=${1:?$usage}
mode=${2:?$usage}
secs=${3:-6}
conns=${4:-32}
threads=${5:-1}
: "${DATABASE_URL:?DATABASE_URL is needed}" "${REDIS_URL:?REDIS_URL is needed}"
here=$(dirname -- "${BASH_SOURCE[0]}")
run="cpu$$-$EPOCHSECONDS" # unique emails and cache keys per run, also in a reused database
redis=$REDIS_URL extra=() script=() warmup_args=() run_args=() path=/users kind=
case $mode in
    root) path=/ ;;
    warm) ;;
    pg)
        redis=redis://127.0.0.1:1 extra=(CACHE_BACKOFF_MS=86400000) script=(-s "$here/pages.lua")
        kind=page ;;
    id)
        redis=redis://127.0.0.1:1 extra=(CACHE_BACKOFF_MS=86400000) script=(-s "$here/wrk.lua")
        kind=user
        warmup_args=(-- user-cold "$threads" 100000 0 x)
        run_args=(-- user-cold "$threads" 100000 500000 x) ;;
    post)
        script=(-s "$here/wrk.lua") kind=create
        warmup_args=(-- post 1 1 0 "$run-warm-up")
        run_args=(-- post 1 1 0 "$run") ;;
    *) echo "mode must be root, warm, pg, id or post" >&2; exit 2 ;;
esac
if [[ -n ${PROFILE:-} ]] && ! command -v perf >/dev/null; then
    echo "PROFILE needs perf: apt-get install linux-perf" >&2
    exit 2
fi
if [[ -n ${SYSCALLS:-} ]] && ! command -v strace >/dev/null; then
    echo "SYSCALLS needs strace: apt-get install strace" >&2
    exit 2
fi
export WRK_OUT=/dev/null # wrk.lua's JSON result: not needed here
# shellcheck source=bench/server.sh
. "$here/server.sh"
if (($(ulimit -n) < conns + 200)); then
    ulimit -n "$(ulimit -Hn)"
fi
# The connection cap and the in-flight bound above CONNECTIONS, as bench/run.sh's sweep sets them.
start_server "$bin" DATABASE_POOL_SIZE=16 REDIS_URL="$redis" REDIS_KEY_PREFIX="$run:" \
    MAX_CONNECTIONS=$((conns + 100)) MAX_IN_FLIGHT=$((conns + 100)) "${extra[@]}"
pid=$server_pid port=$server_port
curl -fs "http://127.0.0.1:$port/users" >/dev/null
wrk -t"$threads" -c"$conns" -d1s "${script[@]}" "http://127.0.0.1:$port$path" "${warmup_args[@]}" >/dev/null
# utime and stime: what the process ran itself, and what the kernel ran for it (system calls).
ticks() { awk '{print $14, $15}' "/proc/$pid/stat"; }
# PostgreSQL's side of the same requests: every postgres process on the machine, so run it where
# only the database under test runs. A change to the batching moves work between the two. A
# process that ends between the glob and its read makes cat fail; the others still count.
pg_ticks() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
        awk '$2 == "(postgres)" {t += $14 + $15} END {print t + 0}'
}
# The server's batches of this mode's kind so far, and the requests they served (its /metrics).
batches() {
    curl -fs "http://127.0.0.1:$port/metrics" | awk -v kind="{kind=\"$kind\"}" '
        $1 == "userstack_db_batches_total" kind {b = $2}
        $1 == "userstack_db_batched_jobs_total" kind {j = $2}
        END {print b + 0, j + 0}'
}
if [[ -n ${SYSCALLS:-} ]]; then
    strace -c -f -p "$pid" -o "$SYSCALLS" 2>/dev/null &
    tracer=$!
    # Attached to every thread before the window opens, and outside the CPU figures.
    sleep 1
fi
read -r batches_before jobs_before < <(batches)
read -r user_before sys_before < <(ticks)
pg_before=$(pg_ticks)
if [[ -n ${PROFILE:-} ]]; then
    perf record -q -e cpu-clock -F 999 -p "$pid" -o "$PROFILE" -- sleep "$secs" 2>/dev/null &
    profiler=$!
fi
out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" "${script[@]}" "http://127.0.0.1:$port$path" "${run_args[@]}")
if [[ -n ${SYSCALLS:-} ]]; then
    kill -INT "$tracer" # detaches and writes its counts
    wait "$tracer" || true
fi
read -r user_after sys_after < <(ticks)
pg_after=$(pg_ticks)
read -r batches_after jobs_after < <(batches)
requests=$(awk '/requests in/ {print $1}' <<<"$out")
failed=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
us() { echo $(($1 * 1000000 / $(getconf CLK_TCK) / requests)); }
user=$((user_after - user_before)) sys=$((sys_after - sys_before))
echo "$(basename -- "$bin") $mode: $((requests / secs)) req/s, $(us $((user + sys))) us/req server CPU" \
    "($(us "$user") user, $(us "$sys") system), $(us $((pg_after - pg_before))) us/req PostgreSQL," \
    "${kind:+$(awk -v b=$((batches_after - batches_before)) -v j=$((jobs_after - jobs_before)) \
        'BEGIN {if (b > 0) printf "%.1f", j / b; else printf "-"}') ${kind}s per batch, }non-2xx ${failed:-0}"
if [[ -n ${PROFILE:-} ]]; then
    wait "$profiler"
    # perf's lines: "  4.81%  [kernel.kallsyms]  [k] finish_task_switch.isra.0".
    perf report -i "$PROFILE" --stdio --no-children --sort dso,sym --percent-limit 0 2>/dev/null |
        awk -v per_req="$(us $((user + sys)))" '/^ *[0-9.]+%/ {
            pct = $1; sub(/%/, "", pct); line = $0
            if (line ~ /\[kernel/) part = "kernel (system calls, TCP, scheduling)"
            else if (line ~ /tokio_postgres|postgres_protocol|postgres_types|fallible_iterator|tokio_util::codec|futures_channel|TryCollect/) part = "PostgreSQL driver (messages, rows, column decoding)"
            else if (line ~ /userstack_storage_pg/) part = "storage adapter (userstack_storage_pg)"
            else if (line ~ /userstack_core::json|serde_json/) part = "the page'"'"'s JSON (userstack_core::json)"
            else if (line ~ /[ _]mi_|malloc|free|alloc::/) part = "allocation (mimalloc, Vec growth)"
            else if (line ~ /__mem(move|cpy|set)/) part = "memory copies (libc)"
            else if (line ~ /hyper|axum|tower|http::|httparse|metrics|userstack_server/) part = "HTTP (hyper, axum, tower, our middleware)"
            else if (line ~ /tokio::|mio::/) part = "tokio runtime (tasks, timers, I/O readiness)"
            else part = "other (futures, bytes, std, libc)"
            sum[part] += pct
        }
        END { for (p in sum) printf "%6.1f%%  %5.1f us/req  %s\n", sum[p], sum[p] * per_req / 100, p }' | sort -rn
fi
if [[ -n ${SYSCALLS:-} ]]; then
    # strace's lines: "% time, seconds, usecs/call, calls, [errors,] syscall".
    echo "system calls per request (strace -c over the window, $requests requests):"
    awk -v requests="$requests" '$1 ~ /^[0-9.]+$/ && $NF != "total" {
            printf "%8.3f  %s\n", $4 / requests, $NF
        }' "$SYSCALLS" | sort -rn
fi
