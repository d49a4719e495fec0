#!/usr/bin/env bash
# Performance benchmark of the userstack server. Starts its own PostgreSQL and Redis on free
# loopback ports in temporary directories, builds (or reuses) the release binary, loads users,
# drives load with wrk and prints one table of results. Everything it starts is stopped and
# removed on exit, also on failure or Ctrl-C. docs/performance.md shows a run and reads it.
#
#   bench/run.sh                 full run (10^6 rows, 3 x 10 s per path, medians), ~5 minutes
#   bench/run.sh --quick         CI smoke run (10^4 rows, 1 x 1 s per path); asserts no errors,
#                                never timings
#
# Options:
#   --quick              tiny durations, 10^4 rows, one repeat
#   --duration S         seconds per measured run (default 10; quick 1)
#   --connections N      wrk connections (default 64)
#   --threads N          wrk threads (default 2)
#   --repeats N          measured runs per path; the table shows medians (default 3; quick 1)
#   --rows N             users in the big table (default 1000000; quick 10000)
#   --bin PATH           use this userstack binary instead of building target/release/userstack
#   -h, --help           this text
#
# Needs: cargo (unless --bin), wrk, curl, ss, psql and the PostgreSQL 15 server binaries
# (/usr/lib/postgresql/15/bin), redis-server, redis-cli. .ci/install.sh installs them. When run
# as root, PostgreSQL runs as the `postgres` user (initdb refuses root).
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/.." && pwd)
lua=$here/wrk.lua

quick=0
duration=
connections=64
threads=2
repeats=
rows=
bin=
built=0

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() {
    echo "bench: error: $*" >&2
    exit 1
}
positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, got '$2'"; }

while (($#)); do
    case $1 in
    --quick) quick=1 ;;
    --duration | --connections | --threads | --repeats | --rows | --bin)
        (($# >= 2)) || die "$1 needs a value"
        case $1 in
        --duration) positive "$1" "$2" && duration=$2 ;;
        --connections) positive "$1" "$2" && connections=$2 ;;
        --threads) positive "$1" "$2" && threads=$2 ;;
        --repeats) positive "$1" "$2" && repeats=$2 ;;
        --rows) positive "$1" "$2" && rows=$2 ;;
        --bin) bin=$2 ;;
        esac
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

if ((quick)); then
    : "${duration:=1}" "${repeats:=1}" "${rows:=10000}"
    warmup=1
else
    : "${duration:=10}" "${repeats:=3}" "${rows:=1000000}"
    warmup=2
fi
small_rows=1000
((rows > small_rows + 100)) || die "--rows must exceed $((small_rows + 100))"
((connections >= threads)) || die "--connections must be at least --threads"

pgbin=/usr/lib/postgresql/15/bin
for tool in wrk curl ss psql redis-server redis-cli "$pgbin/initdb" "$pgbin/pg_ctl"; do
    command -v "$tool" >/dev/null || die "$tool not found (run .ci/install.sh)"
done

say() { echo "==> $*" >&2; }

# --- cleanup ------------------------------------------------------------------------------------
work=
pgdata=
redis_pid=
declare -A server_pid=()
sampler_pid=
as_postgres=()
((EUID == 0)) && as_postgres=(runuser -u postgres --)

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if ((status != 0)) && [[ -n $work ]]; then
        for log in "$work"/server-*.log "$work/pg/server.log" "$work/redis.log"; do
            [[ -s $log ]] || continue
            echo "--- last lines of ${log#"$work"/}" >&2
            tail -n 20 "$log" >&2
        done
    fi
    [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null && wait "$sampler_pid" 2>/dev/null
    local name
    for name in "${!server_pid[@]}"; do
        kill "${server_pid[$name]}" 2>/dev/null && wait "${server_pid[$name]}" 2>/dev/null
    done
    [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    if [[ -n $pgdata && -f $pgdata/postmaster.pid ]]; then
        "${as_postgres[@]}" "$pgbin/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1
    fi
    [[ -n $work ]] && rm -rf "$work"
    ((status == 0)) || echo "bench: failed (exit $status); everything it started is stopped" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d "${TMPDIR:-/tmp}/userstack-bench.XXXXXX")
chmod 0755 "$work" # the postgres user must reach its data directory inside

declare -A taken=()
free_port() { # variable: sets it to a loopback port nothing uses (and this script did not pick)
    local candidate
    for _ in $(seq 500); do
        candidate=$((20000 + RANDOM % 40000))
        [[ -z ${taken[$candidate]:-} ]] || continue
        if [[ -z $(ss -Htan "( sport = :$candidate or dport = :$candidate )") ]]; then
            taken[$candidate]=1
            printf -v "$1" '%s' "$candidate"
            return
        fi
    done
    die "no free loopback port found"
}

wait_for() { # description, seconds, command...
    local what=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what did not come up within ${limit}s"
        sleep 0.2
    done
}

# --- PostgreSQL and Redis -----------------------------------------------------------------------
pg_port='' redis_port='' closed_port=''
free_port pg_port
free_port redis_port
free_port closed_port # nothing listens here: the cache-bypassed server's "Redis"

say "PostgreSQL 15 on 127.0.0.1:$pg_port (data in $work/pg)"
pgdata=$work/pg
mkdir -p "$pgdata"
((EUID == 0)) && chown postgres: "$pgdata"
"${as_postgres[@]}" "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --no-sync \
    >"$work/initdb.log" 2>&1 || {
    cat "$work/initdb.log" >&2
    die "initdb failed"
}
"${as_postgres[@]}" "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pgdata -c max_connections=100" \
    start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$pg_port PGUSER=postgres PGPASSWORD=unused PGDATABASE=postgres
psql_q() { psql -X -q -v ON_ERROR_STOP=1 -Atc "$1"; }

say "Redis on 127.0.0.1:$redis_port (256 MB, volatile-lru: cached pages may be evicted, the generation counter not)"
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$work" --save '' --appendonly no \
    --maxmemory 256mb --maxmemory-policy volatile-lru --logfile "$work/redis.log" &
redis_pid=$!
wait_for Redis 30 redis-cli -p "$redis_port" ping

# --- the binary ---------------------------------------------------------------------------------
if [[ -z $bin ]]; then
    command -v cargo >/dev/null || die "cargo not found (or pass --bin PATH)"
    say "cargo build --release --locked -p userstack-server (in $root)"
    (cd "$root" && cargo build --release --locked -p userstack-server)
    bin=${CARGO_TARGET_DIR:-$root/target}/release/userstack
    built=1
fi
[[ -x $bin ]] || die "no executable at $bin"
bin=$(cd -- "$(dirname -- "$bin")" && pwd)/$(basename -- "$bin")

say "userstack migrate"
RUST_LOG=warn "$bin" migrate 2>"$work/migrate.log" || {
    cat "$work/migrate.log" >&2
    die "migrate failed"
}

load_users() { # first last
    say "loading users $1..$2 (INSERT ... SELECT generate_series)"
    psql_q "INSERT INTO users (name, email)
            SELECT 'User ' || g, 'user' || g || '@example.com' FROM generate_series($1, $2) g"
    psql_q "VACUUM ANALYZE users"
}

# --- the servers --------------------------------------------------------------------------------
declare -A server_port=()
start_server() { # name redis_url extra-env...
    local name=$1 redis_url=$2 port
    shift 2
    free_port port
    say "server '$name' on 127.0.0.1:$port (REDIS_URL=$redis_url${*:+ $*})"
    env HOST=127.0.0.1 PORT="$port" REDIS_URL="$redis_url" RUST_LOG=warn "$@" \
        "$bin" serve >"$work/server-$name.log" 2>&1 &
    server_pid[$name]=$!
    server_port[$name]=$port
    wait_for "server '$name'" 60 curl -fsS "http://127.0.0.1:$port/healthz"
}

stop_server() {
    local name=$1
    vmhwm_of "$name" >>"$work/hwm-$name"
    kill "${server_pid[$name]}"
    wait "${server_pid[$name]}" || true
    unset "server_pid[$name]"
}

vmhwm_of() { awk '/^VmHWM:/ {print $2}' "/proc/${server_pid[$1]}/status"; }

metric() { # name metric-line-prefix
    curl -fsS "http://127.0.0.1:${server_port[$1]}/metrics" | awk -v p="$2" 'index($0, p) == 1 {print $NF; exit}'
}
cache_counts() { # name -> "hit miss bypass error"
    curl -fsS "http://127.0.0.1:${server_port[$1]}/metrics" | awk '
        /^userstack_cache_operations_total\{result="hit"\}/ {h = $NF}
        /^userstack_cache_operations_total\{result="miss"\}/ {m = $NF}
        /^userstack_cache_operations_total\{result="bypass"\}/ {b = $NF}
        /^userstack_cache_operations_total\{result="error"\}/ {e = $NF}
        END {print h + 0, m + 0, b + 0, e + 0}'
}

# Samples, every 0.5 s while wrk runs, the server's PostgreSQL pool and PostgreSQL's own count
# of this application's sessions; the max of each is written to $work/sample-<tag>.
start_sampler() { # name tag
    local name=$1 out=$work/sample-$2
    (
        set +e
        pool=0 act=0
        while :; do
            p=$(metric "$name" 'userstack_pool_connections{pool="postgres"}')
            a=$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'userstack'" 2>/dev/null)
            [[ $p =~ ^[0-9]+$ ]] && ((p > pool)) && pool=$p
            [[ $a =~ ^[0-9]+$ ]] && ((a > act)) && act=$a
            echo "$pool $act" >"$out.tmp" && mv "$out.tmp" "$out"
            sleep 0.5
        done
    ) &
    sampler_pid=$!
}
stop_sampler() {
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=
}

# --- one path -----------------------------------------------------------------------------------
results=$work/results.tsv # label run rps p50 p99 p999 errors requests
: >"$results"
declare -A hits=() cache_errors=() pgconns=() pgactivity=() server_of=() cpu=()
order=()

# CPU time (clock ticks) of one process, and of PostgreSQL (postmaster, its live children, and
# the children that exited, which the kernel adds to the postmaster's cutime/cstime).
ticks() { # pid [with-children]
    local stat
    stat=$(<"/proc/$1/stat") || return 1
    awk -v c="${2:-0}" '{ print $12 + $13 + (c ? $14 + $15 : 0) }' <<<"${stat##*) }"
}
pg_ticks() {
    local postmaster stat sum=0
    postmaster=$(head -n 1 "$pgdata/postmaster.pid")
    for stat in /proc/[0-9]*/stat; do # the postmaster's children, without needing procps
        { stat=$(<"$stat"); } 2>/dev/null || continue # exited meanwhile
        stat=${stat##*) }
        read -r -a stat <<<"$stat"
        ((stat[1] == postmaster)) && sum=$((sum + stat[11] + stat[12]))
    done
    echo $((sum + $(ticks "$postmaster" 1)))
}
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
cpu_snapshot() { # name -> "server postgres redis machine time"
    echo "$(ticks "${server_pid[$1]}") $(pg_ticks) $(ticks "$redis_pid") $(machine_ticks) $EPOCHREALTIME"
}

# bench label server path mode modulus
bench() {
    local label=$1 name=$2 path=$3 mode=$4 modulus=$5
    local url="http://127.0.0.1:${server_port[$name]}$path"
    local slice=$((modulus / (repeats + 1)))
    ((slice > 0)) || slice=1
    order+=("$label")
    server_of[$label]=$name
    say "$label: GET/POST $url ($mode), ${warmup}s warm-up + $repeats x ${duration}s, $connections connections, $threads threads"
    local before after run out cpu_before cpu_after wrk_cpu=0 TIMEFORMAT='WRKCPU %3U %3S'
    run_wrk() { # run-index seconds
        time wrk -t "$threads" -c "$connections" -d "${2}s" --timeout 5s -s "$lua" "$url" \
            -- "$mode" "$threads" "$modulus" "$(($1 * slice))" "$$-$1-$RANDOM"
    }
    run_wrk 0 "$warmup" >"$work/wrk-warmup.out" 2>&1 || {
        cat "$work/wrk-warmup.out" >&2
        die "wrk failed"
    }
    before=$(cache_counts "$name")
    start_sampler "$name" "${#order[@]}"
    cpu_before=$(cpu_snapshot "$name")
    for run in $(seq "$repeats"); do
        out=$({ run_wrk "$run" "$duration"; } 2>&1) || {
            echo "$out" >&2
            die "wrk failed"
        }
        kill -0 "${server_pid[$name]}" 2>/dev/null || die "server '$name' exited during the run"
        wrk_cpu=$(awk -v s="$wrk_cpu" '/^WRKCPU / { s += $2 + $3 } END { print s }' <<<"$out")
        awk -v label="$label" -v run="$run" '
            /^RESULT / {
                for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
                errors = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
                printf "%s\t%d\t%.1f\t%.3f\t%.3f\t%.3f\t%d\t%d\n", label, run,
                    r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1000,
                    r["p99_us"] / 1000, r["p999_us"] / 1000, errors, r["requests"]
                found = 1
            }
            END { exit !found }' <<<"$out" >>"$results" || {
            echo "$out" >&2
            die "no RESULT line from wrk"
        }
        tail -n 1 "$results" | awk -F'\t' '{printf "    run %d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, %d errors\n", $2, $3, $4, $5, $6, $7}' >&2
    done
    cpu_after=$(cpu_snapshot "$name")
    stop_sampler
    after=$(cache_counts "$name")
    hits[$label]=$(awk -v b="$before" -v a="$after" 'BEGIN {
        split(b, x, " "); split(a, y, " ")
        h = y[1] - x[1]; m = y[2] - x[2]; p = y[3] - x[3]
        if (h + m + p == 0) print "-"; else printf "%.0f%%", 100 * h / (h + m + p) }')
    cache_errors[$label]=$(awk -v b="$before" -v a="$after" 'BEGIN { split(b, x, " "); split(a, y, " "); print y[4] - x[4] }')
    # cores used over the measured runs: server postgres redis wrk other, and server CPU per request
    cpu[$label]=$(awk -v b="$cpu_before" -v a="$cpu_after" -v w="$wrk_cpu" -v hz="$(getconf CLK_TCK)" \
        -v n="$(awk -F'\t' -v l="$label" '$1 == l { s += $8 } END { print s + 0 }' "$results")" 'BEGIN {
        split(b, x, " "); split(a, y, " "); t = y[5] - x[5]
        srv = (y[1] - x[1]) / hz; pg = (y[2] - x[2]) / hz; rd = (y[3] - x[3]) / hz; all = (y[4] - x[4]) / hz
        other = all - srv - pg - rd - w; if (other < 0) other = 0
        printf "%.2f %.2f %.2f %.2f %.2f %.0f", srv / t, pg / t, rd / t, w / t, other / t, n ? 1e6 * srv / n : 0 }')
    local sample="0 0"
    [[ -f $work/sample-${#order[@]} ]] && sample=$(<"$work/sample-${#order[@]}")
    pgconns[$label]=${sample% *}
    pgactivity[$label]=${sample#* }
}

# --- the runs -----------------------------------------------------------------------------------
start=$SECONDS
load_users 1 "$small_rows"
start_server bypass "redis://127.0.0.1:$closed_port" CACHE_BACKOFF_MS=86400000
# The first request finds Redis down; from then on the server bypasses it (backoff of a day).
curl -fsS -o /dev/null "http://127.0.0.1:${server_port[bypass]}/users?limit=1"
bench "GET /users bypassed, 10^3 rows" bypass /users page $((small_rows - 100))
stop_server bypass

load_users $((small_rows + 1)) "$rows"

start_server main "redis://127.0.0.1:$redis_port"
bench "GET / (no I/O)" main / static 1
curl -fsS -o /dev/null "http://127.0.0.1:${server_port[main]}/users"
bench "GET /users warm cache" main /users static 1
bench "GET /users cache miss (distinct keys)" main /users page $((rows - 100))
bench "GET /users/{id} warm (1000 ids)" main /users/1 user-hot 1000
bench "GET /users/{id} cold (distinct ids)" main /users/1 user-cold "$rows"
bench "GET /cache" main /cache static 1
bench "POST /users" main /users post 1

start_server bypass "redis://127.0.0.1:$closed_port" CACHE_BACKOFF_MS=86400000
curl -fsS -o /dev/null "http://127.0.0.1:${server_port[bypass]}/users?limit=1"
bench "GET /users cache bypassed (PG)" bypass /users page $((rows - 100))
stop_server bypass
main_hwm=$(vmhwm_of main)
stop_server main
elapsed=$((SECONDS - start))

# --- the table ----------------------------------------------------------------------------------
median() { # label column -> median over the runs
    awk -F'\t' -v l="$1" -v c="$2" '$1 == l {v[n++] = $c + 0} END {
        if (!n) { print "nan"; exit }
        for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2 }' "$results"
}
range() {
    awk -F'\t' -v l="$1" '$1 == l { if (min == "" || $3 + 0 < min) min = $3 + 0; if ($3 + 0 > max) max = $3 + 0 }
        END { printf "%.0f-%.0f", min, max }' "$results"
}
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }

ceiling=$(median "GET / (no I/O)" 3)
errors=$(awk -F'\t' '{e += $7} END {print e + 0}' "$results")
requests=$(awk -F'\t' '{r += $8} END {print r + 0}' "$results")
image=$(timeout 20 docker image inspect userstack:latest --format '{{.Size}}' 2>/dev/null |
    awk '{printf "%.1f MB (userstack:latest)", $1 / 1e6}') || true
[[ -n $image ]] || image="n/a (image not built)"
pool_peak=0 activity_peak=0
for label in "${order[@]}"; do
    [[ ${server_of[$label]} == main ]] || continue # only the main server ran then
    ((${pgconns[$label]:-0} > pool_peak)) && pool_peak=${pgconns[$label]}
    ((${pgactivity[$label]:-0} > activity_peak)) && activity_peak=${pgactivity[$label]}
done

# The paths in table order: label as measured, and as shown.
paths=(
    "GET / (no I/O)" "GET / (no I/O)"
    "GET /users warm cache" "GET /users warm cache"
    "GET /users cache bypassed (PG)" "GET /users cache bypassed (PostgreSQL)"
    "GET /users cache miss (distinct keys)" "GET /users cold cache (MGET+PG+SET)"
    "GET /users/{id} warm (1000 ids)" "GET /users/{id} warm (1000 ids)"
    "GET /users/{id} cold (distinct ids)" "GET /users/{id} cold (distinct ids)"
    "POST /users" "POST /users"
    "GET /cache" "GET /cache"
)
separator() { # a Markdown header separator for columns of these widths (r: right-aligned)
    local w line="|"
    for w in "$@"; do
        line+=$(printf -- '-%.0s' $(seq $((${w%r} + 1))))
        [[ $w == *r ]] && line+=":" || line+="-"
        line+="|"
    done
    echo "$line"
}
results_table() {
    local i l rps c
    printf '| %-38s | %7s | %6s | %6s | %6s | %8s | %-11s | %4s | %5s | %3s | %6s | %-24s |\n' path req/s "x GET/" \
        "p50 ms" "p99 ms" "p99.9 ms" "req/s range" hits c.err PG us/req "cores srv/pg/redis/wrk/+"
    separator 38 7r 6r 6r 6r 8r 11 4r 5r 3r 6r 24
    for ((i = 0; i < ${#paths[@]}; i += 2)); do
        l=${paths[i]}
        rps=$(median "$l" 3)
        read -r -a c <<<"${cpu[$l]:-0 0 0 0 0 0}"
        printf '| %-38s | %7.0f | %6.2f | %6.2f | %6.2f | %8.2f | %-11s | %4s | %5s | %3s | %6s | %-24s |\n' \
            "${paths[i + 1]}" "$rps" "$(awk -v a="$rps" -v b="$ceiling" 'BEGIN {print a / b}')" \
            "$(median "$l" 4)" "$(median "$l" 5)" "$(median "$l" 6)" "$(range "$l")" \
            "${hits[$l]}" "${cache_errors[$l]}" "${pgconns[$l]:-?}" "${c[5]}" "${c[0]}/${c[1]}/${c[2]}/${c[3]}/${c[4]}"
    done
}
latency_line() { # label rows
    printf '  %9s rows: p50 %6.2f ms, p99 %6.2f ms, p99.9 %6.2f ms, %6.0f req/s\n' "$2" \
        "$(median "$1" 4)" "$(median "$1" 5)" "$(median "$1" 6)" "$(median "$1" 3)"
}
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$root" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || revision+=" + uncommitted changes in crates/"
if ((built)); then
    binary="$bin, built from this checkout at $revision"
else
    binary="$bin (--bin; the checkout is at $revision)"
fi

cat <<EOF

userstack benchmark, $(date -u +%Y-%m-%dT%H:%MZ)
binary: $binary
machine: $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
load: wrk -t$threads -c$connections, $repeats x ${duration}s per path after a ${warmup}s warm-up, medians of the runs;
  $rows users; wrk, the server, PostgreSQL and Redis share the machine
server: RUST_LOG=warn, otherwise defaults (DATABASE_POOL_SIZE=16, REDIS_POOL_SIZE=4, CACHE_TTL_SECS=60,
  CACHE_TIMEOUT_MS=100, CACHE_BACKOFF_MS=1000)
"cache bypassed": a second server whose REDIS_URL is a closed port (after its first failure the
  service bypasses Redis; CACHE_BACKOFF_MS=86400000 keeps it bypassed), distinct after= per request
"cold cache"/"cold": the normal server, every request a distinct, never cached after= or id

$(results_table)

x GET/: throughput relative to GET / in this run. req/s range: min-max over the runs.
hits: share of the server's cache reads that Redis answered (the rest: misses, or reads that
  bypassed Redis after a cache error). c.err: failed or timed-out Redis calls (each makes the
  server bypass Redis for CACHE_BACKOFF_MS; writes made meanwhile bump the generation after it).
PG: most PostgreSQL connections in the server's pool (userstack_pool_connections{pool="postgres"},
  sampled every 0.5 s). us/req: server CPU time per request.
cores: CPU cores (of $(nproc)) used while measuring by the server, PostgreSQL (all backends), Redis,
  wrk, and (+) everything else on the machine.

GET /users?limit=100 with the cache bypassed (PostgreSQL path), distinct after= over the table:
$(latency_line "GET /users bypassed, 10^3 rows" "$small_rows")
$(latency_line "GET /users cache bypassed (PG)" "$rows")

peak RSS of the server (VmHWM): $(mb "$main_hwm") (main server: every path but "bypassed"), $(mb "$(sort -n "$work/hwm-bypass" | tail -n 1)") (bypass server)
PostgreSQL connections at peak: $pool_peak in the main server's pool (max 16); $activity_peak in pg_stat_activity (application_name='userstack')
users table at the end: $(psql_q "SELECT count(*) || ' rows, ' || pg_size_pretty(pg_total_relation_size('users')) || ' with its indexes' FROM users"); PostgreSQL shared_buffers $(psql_q "SHOW shared_buffers")
release binary: $(stat -c %s "$bin" | awk '{printf "%.1f MB", $1 / 1e6}')
app image: $image
requests: $requests, failed (non-2xx + socket errors): $errors; wall time ${elapsed}s
EOF

((errors == 0)) || die "$errors requests failed (non-2xx or socket errors); see the runs above"
