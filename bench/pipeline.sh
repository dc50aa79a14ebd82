#!/usr/bin/env bash
# The order-to-invoice pipeline under load, on SQLite and on PostgreSQL:
# orders/s accepted, order→invoice latency p50/p99, the billing subscriber's
# largest lag while loading and how long invoicing took to catch up
# (bench/pipeline/src/main.rs says how each figure is taken).
#
#   bench/pipeline.sh                       # both backends, 10 s, 16 writers
#   DURATION=30 CONCURRENCY=32 bench/pipeline.sh
#   BACKENDS=sqlite bench/pipeline.sh
#   RATES="250 500 1000" bench/pipeline.sh  # open loop at these orders/s
#
# Environment: DURATION (seconds, 10), CONCURRENCY (16), BACKENDS ("sqlite
# postgres"), RATES (orders/s, each run on a fresh server; "0", the default,
# is closed loop: as fast as the writers go), PG_ADMIN_URL (postgres://postgres@127.0.0.1:5432/test: where the
# bench's own database is created, and dropped on exit), SKIP_BUILD (1 to use
# the release binaries already built). STAGEWORKS__* variables reach stageworks.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-16}
BACKENDS=${BACKENDS:-sqlite postgres}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
export PGCONNECT_TIMEOUT=5

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stageworks-pipeline.XXXXXX")
server=""
pg_db=""
cleanup() {
    if [[ -n $server ]]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    if [[ -n $pg_db ]]; then
        psql "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -z ${SKIP_BUILD:-} ]]; then
    cargo build --release -q -p stageworks -p pipeline-bench
fi

# Starts stageworks on free loopback ports; sets $public and $admin.
start() {
    local data=$1
    shift
    env "$@" \
        STAGEWORKS__DATA_DIR="$data" \
        STAGEWORKS__SERVER__LISTEN=127.0.0.1:0 \
        STAGEWORKS__ADMIN__LISTEN=127.0.0.1:0 \
        STAGEWORKS__LOG__FORMAT=json \
        STAGEWORKS__LOG__LEVEL=warn,stageworks=info \
        STAGEWORKS__RATE_LIMIT__ENABLED=false \
        target/release/stageworks serve --config config.toml >"$data.log" 2>&1 &
    server=$!
    for _ in $(seq 1 200); do
        if line=$(grep -m1 '"stageworks is serving"' "$data.log" 2>/dev/null); then
            public=$(python3 -c 'import json,sys; f=json.loads(sys.argv[1])["fields"]; print(f["public_addr"], f["admin_addr"])' "$line")
            admin=${public#* }
            public=${public% *}
            until curl -fs "http://$public/ready" >/dev/null; do sleep 0.1; done
            return
        fi
        sleep 0.1
    done
    cat "$data.log" >&2
    echo "stageworks did not start" >&2
    exit 1
}

stop() {
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
}

RATES=${RATES:-0}
run=0
for backend in $BACKENDS; do
    for rate in $RATES; do
        run=$((run + 1))
        case $backend in
            sqlite)
                start "$tmp/sqlite-$run"
                ;;
            postgres)
                pg_db="stageworks_pipeline_$$_$run"
                psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$pg_db\"" >/dev/null
                start "$tmp/postgres-$run" STAGEWORKS__DATABASE__URL="${PG_ADMIN_URL%/*}/$pg_db"
                ;;
            *)
                echo "unknown backend $backend (sqlite, postgres)" >&2
                exit 2
                ;;
        esac
        target/release/pipeline-bench --url "http://$public" --admin "http://$admin" \
            --duration "$DURATION" --concurrency "$CONCURRENCY" --rate "$rate" --label "$backend"
        stop
        if [[ -n $pg_db ]]; then
            psql "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null || true
            pg_db=""
        fi
    done
done
