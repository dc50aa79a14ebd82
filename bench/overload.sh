#!/usr/bin/env bash
# Overload is not failure (issue 12): each scenario floods one route of a
# fresh stageworks (the repository's config.toml, rate limits off as behind
# a load balancer) far past what its service can serve, with a light read
# probe beside it, and reports the shed rate, the p99 of the requests that
# were admitted, GET /api/v1/orders/{id}'s p99 during the flood against calm,
# restarts during the flood (must be 0), the circuit, and the answer right
# after (bench/overload/src/main.rs says how each figure is taken).
#
#   bench/overload.sh                                   # every scenario, SQLite
#   SCENARIOS="login-4x" DURATION=10 bench/overload.sh
#   BACKENDS="sqlite postgres" bench/overload.sh
#
# Scenarios: login-512 (512 closed-loop clients logging in, the issue's
# wrk -c512 reproducer), login-4x and create-order-4x (open loop at 4x the
# capacity measured just before on the same server).
#
# Environment: SCENARIOS ("login-512 login-4x create-order-4x"), DURATION
# (flood seconds, 20), FACTOR (4), BACKENDS ("sqlite"), PG_ADMIN_URL
# (postgres://postgres@127.0.0.1:5432/test: where a postgres run's own
# database is created, and dropped on exit), SKIP_BUILD (1 to use the release
# binaries already built). STAGEWORKS__* variables reach stageworks.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

SCENARIOS=${SCENARIOS:-login-512 login-4x create-order-4x}
DURATION=${DURATION:-20}
FACTOR=${FACTOR:-4}
BACKENDS=${BACKENDS:-sqlite}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
export PGCONNECT_TIMEOUT=5

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stageworks-overload.XXXXXX")
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
    cargo build --release -q -p stageworks -p overload-bench
fi
# 512 clients, their sockets and the server's: more than a default 1,024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

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

echo "# overload: $(nproc) cores, $(git rev-parse --short HEAD), flood ${DURATION}s, factor $FACTOR"
run=0
for backend in $BACKENDS; do
    for scenario in $SCENARIOS; do
        run=$((run + 1))
        case $scenario in
            login-512) flood=(--target login --closed 512) ;;
            login-4x) flood=(--target login --factor "$FACTOR") ;;
            create-order-4x) flood=(--target create-order --factor "$FACTOR") ;;
            *)
                echo "unknown scenario $scenario (login-512, login-4x, create-order-4x)" >&2
                exit 2
                ;;
        esac
        case $backend in
            sqlite)
                start "$tmp/sqlite-$run"
                ;;
            postgres)
                pg_db="stageworks_overload_$$_$run"
                psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$pg_db\"" >/dev/null
                start "$tmp/postgres-$run" STAGEWORKS__DATABASE__URL="${PG_ADMIN_URL%/*}/$pg_db"
                ;;
            *)
                echo "unknown backend $backend (sqlite, postgres)" >&2
                exit 2
                ;;
        esac
        target/release/overload-bench --url "http://$public" --admin "http://$admin" \
            --duration "$DURATION" --label "$backend $scenario" "${flood[@]}"
        if grep -q '"accept failed' "$tmp/$backend-$run.log"; then
            echo "  (the server logged accept failures: $(grep -c '"accept failed' "$tmp/$backend-$run.log") lines)"
        fi
        stop
        if [[ -n $pg_db ]]; then
            psql "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null || true
            pg_db=""
        fi
    done
done
