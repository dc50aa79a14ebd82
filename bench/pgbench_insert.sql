-- pgbench script for the pgbench-insert scenario: the single-row INSERT that
-- POST /api/v1/orders (no idempotency key) makes, straight from pgbench.
-- run.sh creates pgbench_bench.orders in the bench database from the orders
-- service's own PostgreSQL migrations (same columns, checks and index), and
-- passes -D user_id=$BENCH_USER_ID -M prepared, so :user_id is a bound
-- parameter like stageworks' $2. Differences from stageworks' statement:
-- the id is gen_random_uuid() (v4, random; stageworks binds a UUIDv7) and
-- the times are now() (stageworks binds them), amount/currency/status are
-- literals (stageworks binds all eight values).
INSERT INTO pgbench_bench.orders (id, user_id, amount, currency, description, status, created_at, updated_at)
VALUES (gen_random_uuid(), :user_id, 5000, 'USD', NULL, 'created', now(), now());
