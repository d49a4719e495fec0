# shellcheck shell=bash
# Sourced by bench/cpu-per-request.sh and bench/rss-at-connections.sh (not run by itself).
#
# start_server BIN PORT [NAME=VALUE ...]: runs `BIN serve` on 127.0.0.1:PORT with the operational
# routes on the same port, RUST_LOG=warn, CACHE_TIMEOUT_MS=1000 and the given settings; stops it
# on exit; returns once /healthz answers. Sets server_pid.
start_server() {
    local bin=$1 port=$2
    shift 2
    server_log=$(mktemp)
    env HOST=127.0.0.1 PORT="$port" ADMIN_PORT=0 RUST_LOG=warn CACHE_TIMEOUT_MS=1000 "$@" \
        "$bin" serve >"$server_log" 2>&1 &
    server_pid=$!
    trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -f -- "$server_log"' EXIT
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && return 0
        sleep 0.1
    done
    echo "the server did not answer on port $port:" >&2
    cat -- "$server_log" >&2
    return 1
}
