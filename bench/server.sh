# shellcheck shell=bash
# Sourced by bench/cpu-per-request.sh and bench/rss-at-connections.sh (not run by itself).
#
# start_server BIN [NAME=VALUE ...]: runs `BIN serve` on a random 127.0.0.1 port with the
# operational routes on the same port, RUST_LOG=warn, CACHE_TIMEOUT_MS=1000 and the given
# settings; stops it on exit; returns once /healthz answers. A port that turns out to be taken
# (the server exits at once) is replaced by another, a few times. Sets server_pid and
# server_port.
start_server() {
    local bin=$1 attempt
    shift
    server_log=$(mktemp)
    trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; rm -f -- "$server_log"' EXIT
    for attempt in 1 2 3 4 5; do
        server_port=$((20000 + RANDOM % 20000))
        env HOST=127.0.0.1 PORT="$server_port" ADMIN_PORT=0 RUST_LOG=warn CACHE_TIMEOUT_MS=1000 \
            "$@" "$bin" serve >"$server_log" 2>&1 &
        server_pid=$!
        for _ in $(seq 100); do
            curl -fs "http://127.0.0.1:$server_port/healthz" >/dev/null && return 0
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        if ! grep -q "Address already in use" "$server_log"; then
            break
        fi
        echo "port $server_port was taken (attempt $attempt); trying another" >&2
    done
    echo "the server did not answer on port $server_port:" >&2
    cat -- "$server_log" >&2
    return 1
}
