#!/usr/bin/env bash
# The batched page statement (crates/storage-pg/src/pool.rs, LIST_MANY) as the server's pooled
# connections run it (its generic plan, plan_cache_mode=force_generic_plan), EXPLAIN ANALYZE of
# four pages, with PostgreSQL's JIT on (PostgreSQL's default) and off (the server's setting
# since 43eb94a). On a big table the generic plan's estimate passes jit_above_cost, and the
# plan with JIT on shows the compilation it paid for ("JIT: … Timing: … Emission").
#
#   bench/pg-plan.sh 'host=/tmp port=5432 user=postgres dbname=postgres'
#
# The database needs the users table (userstack migrate) with at least a few hundred rows.
set -euo pipefail

conninfo=${1:?usage: bench/pg-plan.sh CONNINFO}
max=$(psql "$conninfo" -XAtc 'SELECT max(id) - 200 FROM users')
afters="ARRAY[0, $((max / 3)), $((max / 2)), $max]"
echo "users: $(psql "$conninfo" -XAtc 'SELECT count(*) FROM users'); $(psql "$conninfo" -XAtc "SELECT 'jit_above_cost ' || current_setting('jit_above_cost') || ', JIT available: ' || pg_jit_available()")"
for jit in on off; do
    echo "== jit=$jit"
    psql "$conninfo" -X -q -v ON_ERROR_STOP=1 <<SQL
SET plan_cache_mode = force_generic_plan;
SET jit = $jit;
PREPARE page_batch(int8[], int8[]) AS
    SELECT u.id, u.name, u.email, u.created_at, u.updated_at, r.n
    FROM unnest(\$1::int8[], \$2::int8[]) WITH ORDINALITY AS r(after, lim, n)
    CROSS JOIN LATERAL (SELECT id, name, email, created_at, updated_at
                        FROM users WHERE id > r.after ORDER BY id LIMIT r.lim) u;
EXPLAIN (ANALYZE, BUFFERS) EXECUTE page_batch($afters, ARRAY[101, 101, 101, 101]);
SQL
done
