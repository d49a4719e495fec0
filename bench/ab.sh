#!/usr/bin/env bash
# Two userstack binaries in turns on one path, and the medians of what bench/cpu-per-request.sh
# printed for each: the A/B comparison of a change on a shared machine whose speed drifts.
#
#   DATABASE_URL=... REDIS_URL=... bench/ab.sh BIN_A BIN_B MODE [ROUNDS [SECONDS [CONNECTIONS [THREADS]]]]
#
# MODE, SECONDS, CONNECTIONS and THREADS are cpu-per-request.sh's (defaults here: 4 s, 64
# connections, 2 threads, as bench/run.sh's paths). Each round runs both binaries, A first in odd
# rounds and B first in even ones (A B B A …), so that a drift favours neither. ROUNDS defaults
# to 6. Prints every run, then per binary the medians of req/s, server and PostgreSQL CPU per
# request and the batch size, and in how many rounds B's server + PostgreSQL CPU per request was
# below A's.
set -euo pipefail

usage="usage: bench/ab.sh BIN_A BIN_B MODE [ROUNDS [SECONDS [CONNECTIONS [THREADS]]]]"
a=${1:?$usage} b=${2:?$usage} mode=${3:?$usage}
rounds=${4:-6} secs=${5:-4} conns=${6:-64} threads=${7:-2}
here=$(dirname -- "${BASH_SOURCE[0]}")
runs=$(mktemp)
trap 'rm -f -- "$runs"' EXIT

echo "A: $a"
echo "B: $b"
echo "$mode, $rounds rounds of ${secs}s, $conns connections, $threads threads"
for round in $(seq "$rounds"); do
    order=(A B)
    ((round % 2 == 0)) && order=(B A)
    for which in "${order[@]}"; do
        bin=$a
        [[ $which == B ]] && bin=$b
        if ! line=$("$here/cpu-per-request.sh" "$bin" "$mode" "$secs" "$conns" "$threads"); then
            echo "round $round $which: bench/cpu-per-request.sh $bin $mode failed" >&2
            exit 1
        fi
        echo "round $round $which: $line"
        echo "$round $which $line" >>"$runs"
    done
done

# A line: "3 B us-b pg: 14977 req/s, 63 us/req server CPU (..), 48 us/req PostgreSQL, 11.6 pages
# per batch, non-2xx 0"; the batch size is "-" for a binary without the counters or a mode
# without batches.
awk '
    function median(list, n,    sorted, i, j, t) {
        for (i = 1; i <= n; i++) sorted[i] = list[i]
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && sorted[j - 1] > sorted[j]; j--) {
                t = sorted[j]; sorted[j] = sorted[j - 1]; sorted[j - 1] = t
            }
        return n % 2 ? sorted[(n + 1) / 2] : (sorted[n / 2] + sorted[n / 2 + 1]) / 2
    }
    {
        w = $2; n[w]++
        for (i = 1; i <= NF; i++) {
            if ($i == "req/s,") rps[w, n[w]] = $(i - 1)
            if ($i == "us/req" && $(i + 1) == "server") srv[w, n[w]] = $(i - 1)
            if ($i == "us/req" && $(i + 1) == "PostgreSQL,") pg[w, n[w]] = $(i - 1)
            if ($i == "per" && $(i + 1) == "batch,") { batch[w, n[w]] = $(i - 2); kind = $(i - 1) }
            if ($i == "non-2xx") failed[w] += $(i + 1)
        }
        total[$1, w] = srv[w, n[w]] + pg[w, n[w]]
    }
    END {
        split("A B", which, " ")
        for (k = 1; k <= 2; k++) {
            w = which[k]; sizes = 1
            for (i = 1; i <= n[w]; i++) {
                r[i] = rps[w, i]; s[i] = srv[w, i]; p[i] = pg[w, i]; bs[i] = batch[w, i]
                if (bs[i] == "-" || bs[i] == "") sizes = 0
            }
            size = sizes ? sprintf("%.1f %s", median(bs, n[w]), kind) : "-"
            printf "%s: median %d req/s, %.1f us/req server, %.1f us/req PostgreSQL, %s per batch, non-2xx %d\n",
                w, median(r, n[w]), median(s, n[w]), median(p, n[w]), size, failed[w]
        }
        for (round = 1; round <= n["A"]; round++) below += total[round, "B"] < total[round, "A"]
        printf "B below A (server + PostgreSQL us/req) in %d of %d rounds\n", below, n["A"]
    }' "$runs"
