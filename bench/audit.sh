#!/usr/bin/env bash
# Audit and analytics under load (issue 15's benchmark), on one fresh
# server per backend, in four steps (bench/audit/src/main.rs says how each
# figure is taken):
#   1. pipeline: orders at full speed from 50 users; audit entries
#      recorded/s against the events published, each subscriber's lag p99
#      (event → applied, analytics' is "event → counted"), analytics' count;
#   2. seed: entries posted until audit holds ENTRIES (1,000,000);
#   3. search: p50/p99 of each indexed filter over those entries;
#   4. export: the whole log as CSV, rows/s, first byte, server RSS peak.
#
#   bench/audit.sh                           # SQLite and PostgreSQL, a million entries
#   BACKENDS=sqlite ENTRIES=200000 bench/audit.sh
#   STEPS="pipeline" DURATION=30 bench/audit.sh
#
# Environment: BACKENDS ("sqlite postgres"), STEPS ("pipeline seed search
# export"), DURATION (10 s of orders), CONCURRENCY (16 order writers),
# ENTRIES (1000000), SEED_CONCURRENCY (32), SEARCH_SECONDS (10 per filter),
# SEARCH_CONCURRENCY (8), PG_ADMIN_URL (postgres://postgres@127.0.0.1:5432/test:
# the bench's own database is created there and dropped on exit),
# SKIP_BUILD (1: use the release binaries already built).
# STAGEWORKS__* variables reach stageworks.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

BACKENDS=${BACKENDS:-sqlite postgres}
STEPS=${STEPS:-pipeline seed search export}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-16}
ENTRIES=${ENTRIES:-1000000}
SEED_CONCURRENCY=${SEED_CONCURRENCY:-32}
SEARCH_SECONDS=${SEARCH_SECONDS:-10}
SEARCH_CONCURRENCY=${SEARCH_CONCURRENCY:-8}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
export PGCONNECT_TIMEOUT=5

admin_email=audit-bench@example.com
AUDIT_BENCH_PASSWORD=audit-bench-password-$RANDOM$RANDOM
export AUDIT_BENCH_PASSWORD

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stageworks-audit.XXXXXX")
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
trap 'exit 130' INT TERM

if [[ -z ${SKIP_BUILD:-} ]]; then
    timeout 1800 cargo build --release -q -p stageworks -p audit-bench
fi

# Makes the admin, starts stageworks on free loopback ports; sets $public and $admin.
start() {
    local data=$1
    shift
    local common=("$@"
        STAGEWORKS__DATA_DIR="$data"
        STAGEWORKS__SERVER__LISTEN=127.0.0.1:0
        STAGEWORKS__ADMIN__LISTEN=127.0.0.1:0
        STAGEWORKS__LOG__FORMAT=json
        STAGEWORKS__LOG__LEVEL=warn,stageworks=info
        STAGEWORKS__RATE_LIMIT__ENABLED=false
        # The bench signs in once; seeding PostgreSQL takes longer than
        # the default 15 min access token lives (its searches got 401).
        STAGEWORKS__TOKENS__ACCESS_TTL="${STAGEWORKS__TOKENS__ACCESS_TTL:-6h}")
    mkdir -p "$data"
    printf '%s\n' "$AUDIT_BENCH_PASSWORD" | env "${common[@]}" \
        timeout 60 target/release/stageworks user create --config config.toml --email "$admin_email" --admin >/dev/null
    env "${common[@]}" target/release/stageworks serve --config config.toml >"$data.log" 2>&1 &
    server=$!
    for _ in $(seq 1 300); do
        if line=$(grep -m1 '"stageworks is serving"' "$data.log" 2>/dev/null); then
            public=$(python3 -c 'import json,sys; f=json.loads(sys.argv[1])["fields"]; print(f["public_addr"], f["admin_addr"])' "$line")
            admin=${public#* }
            public=${public% *}
            for _ in $(seq 1 300); do
                curl -fs "http://$public/ready" >/dev/null && return
                sleep 0.1
            done
            break
        fi
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    cat "$data.log" >&2
    echo "stageworks did not start (or never became ready)" >&2
    exit 1
}

stop() {
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
}

echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(git rev-parse --short HEAD)"
for backend in $BACKENDS; do
    case $backend in
        sqlite)
            start "$tmp/sqlite"
            ;;
        postgres)
            pg_db="stageworks_audit_bench_$$"
            psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$pg_db\"" >/dev/null
            start "$tmp/postgres" STAGEWORKS__DATABASE__URL="${PG_ADMIN_URL%/*}/$pg_db"
            ;;
        *)
            echo "unknown backend $backend (sqlite, postgres)" >&2
            exit 2
            ;;
    esac
    bench=(target/release/audit-bench --url "http://$public" --admin "http://$admin"
        --email "$admin_email" --sample "$tmp/$backend-sample.json" --label "$backend")
    for step in $STEPS; do
        case $step in
            pipeline) "${bench[@]}" pipeline --duration "$DURATION" --concurrency "$CONCURRENCY" ;;
            seed) "${bench[@]}" seed --entries "$ENTRIES" --concurrency "$SEED_CONCURRENCY" ;;
            search) "${bench[@]}" search --seconds "$SEARCH_SECONDS" --concurrency "$SEARCH_CONCURRENCY" ;;
            export) "${bench[@]}" export --server-pid "$server" ;;
            *)
                echo "unknown step $step (pipeline seed search export)" >&2
                exit 2
                ;;
        esac
    done
    stop
    if [[ -n $pg_db ]]; then
        psql "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null || true
        pg_db=""
    fi
done
