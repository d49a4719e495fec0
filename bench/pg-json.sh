#!/usr/bin/env bash
# PostgreSQL's own cost of building a page's JSON (or arrays), against returning the rows: what
# the server would save by passing PostgreSQL's bytes through is paid here instead, on the same
# cores.
#
#   bench/pg-json.sh 'host=/tmp port=5432 user=postgres dbname=postgres' [SECONDS] [PAIRS]
#
# The database needs the users table (userstack migrate) with at least 10^5 rows and TimeZone
# UTC. pgbench, one connection, prepared, a random after= per query; the three statements run in
# turn, PAIRS times, SECONDS each, so drift of a shared machine hits all three alike. Compare the
# latency averages: with one connection each is PostgreSQL's time per query plus a local round
# trip. "rows" is the server's statement today; "json_agg" is PostgreSQL's cheapest JSON (not the
# API's bytes: a space and a newline between objects, "+00:00" for UTC); "api bytes" is one that
# gives the API's exact bytes; "arrays" is the page as one row of five arrays (`array_agg` per
# column), which would spare the server's driver its work per row.
set -euo pipefail

conninfo=${1:?usage: bench/pg-json.sh CONNINFO [SECONDS] [PAIRS]}
seconds=${2:-5}
pairs=${3:-3}
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

page='SELECT id, name, email, created_at, updated_at FROM users WHERE id > :after ORDER BY id LIMIT 101'
max=$(psql "$conninfo" -Atc 'SELECT max(id) - 200 FROM users')
printf '\\set after random(0, %s)\n%s;\n' "$max" "$page" >"$work/rows.sql"
printf '\\set after random(0, %s)\nSELECT json_agg(u) FROM (%s) u;\n' "$max" "$page" >"$work/json_agg.sql"
printf '\\set after random(0, %s)\nSELECT %s FROM (%s) u;\n' "$max" \
    "'[' || replace(string_agg(row_to_json(u)::text, ',' ORDER BY u.id), '+00:00\"', 'Z\"') || ']'" \
    "$page" >"$work/api_bytes.sql"
printf '\\set after random(0, %s)\nSELECT %s FROM (%s) u;\n' "$max" \
    'array_agg(id), array_agg(name), array_agg(email), array_agg(created_at), array_agg(updated_at)' \
    "$page" >"$work/arrays.sql"

echo "pgbench -c1 -M prepared, ${seconds} s per statement, ${pairs} rounds; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$pairs"); do
    for statement in rows json_agg api_bytes arrays; do
        latency=$(pgbench -n -M prepared -c1 -j1 -T "$seconds" -f "$work/$statement.sql" "$conninfo" 2>/dev/null |
            sed -n 's/^latency average = //p')
        printf 'round %s  %-10s %s\n' "$round" "$statement" "$latency"
    done
done
