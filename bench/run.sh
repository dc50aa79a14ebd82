#!/usr/bin/env bash
# Stageworks against a bare hyper server (bench/hello), on loopback, with wrk;
# and stageworks on PostgreSQL against pgbench doing the same INSERT.
#
#   bench/run.sh                         # all scenarios, 10 s each
#   DURATION=30s CONNECTIONS=64 bench/run.sh
#   SCENARIOS=hello bench/run.sh         # only the bare server
#   SCENARIOS="create-order-pg pgbench-insert" bench/run.sh
#
# Scenarios (each one run of DURATION after a WARMUP run):
#   hello            GET /                    on hyper-hello (the ceiling)
#   live             GET /live                on stageworks (SQLite)
#   create-order     POST /api/v1/orders      on stageworks (SQLite; bench/create_order.lua)
#   get-order        GET /api/v1/orders/{id}  on stageworks (SQLite), an order made with curl
#   create-order-pg  POST /api/v1/orders      on a second stageworks, on PostgreSQL
#   get-order-pg     GET /api/v1/orders/{id}  on that one, an order made with curl
#   pgbench-insert   pgbench -M prepared running bench/pgbench_insert.sql (the
#                    same single-row INSERT), -c = stageworks' PostgreSQL pool size
#
# Environment: DURATION (10s), CONNECTIONS (32), THREADS (2; also pgbench's
# -j), WARMUP (2s, 0 to skip), SCENARIOS ("hello live create-order get-order
# create-order-pg get-order-pg pgbench-insert"), CONFIG (config.toml),
# BENCH_USER_ID (a fixed uuid), SKIP_BUILD (1 to use the binaries already
# built), STAGEWORKS_BIN (another stageworks binary to measure; default the
# release build), VERBOSE (1 to print wrk's and pgbench's output),
# PG_ADMIN_URL (postgres://postgres@127.0.0.1:5432/test: where the bench's own
# database is created, and dropped on exit), PGBENCH (default the newest
# /usr/lib/postgresql/*/bin/pgbench, else pgbench on PATH).
# Any STAGEWORKS__* variable set by the caller reaches stageworks as well;
# STAGEWORKS__DATABASE__MAX_CONNECTIONS (the PostgreSQL pool size) is also
# pgbench's -c.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
SCENARIOS=${SCENARIOS:-hello live create-order get-order login create-order-pg get-order-pg pgbench-insert}
CONFIG=${CONFIG:-$repo/config.toml}
BENCH_USER_ID=${BENCH_USER_ID:-0190a5c4-6a1e-7c3b-9f2d-5b8e4a7d1c20}
# The account the order scenarios sign in as (created by the run).
BENCH_EMAIL=${BENCH_EMAIL:-bench@example.com}
BENCH_PASSWORD=${BENCH_PASSWORD:-bench-password-long-enough}
export BENCH_EMAIL BENCH_PASSWORD # read by bench/login.lua
SKIP_BUILD=${SKIP_BUILD:-}
VERBOSE=${VERBOSE:-}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
PGBENCH=${PGBENCH:-}
export BENCH_USER_ID
# psql and pgbench give up on an unreachable server after 5 s.
export PGCONNECT_TIMEOUT=5

die() {
    echo "bench: $*" >&2
    exit 1
}

# --- processes, temp dir and bench database, cleaned up however the script ends
tmp=$(mktemp -d "${TMPDIR:-/tmp}/stageworks-bench.XXXXXX")
pids=()    # the servers
current="" # the wrk or pgbench run in progress
pg_db=""   # the bench database, once its creation has been attempted
cleanup() {
    local pid i
    if [[ -n $current ]]; then
        kill "$current" 2>/dev/null || true
        wait "$current" 2>/dev/null || true
    fi
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    # Graceful shutdown gets 10 s, then SIGKILL.
    for pid in "${pids[@]}"; do
        for ((i = 0; i < 40; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # WITH (FORCE) ends whatever session is still connected to it.
    if [[ -n $pg_db ]] &&
        ! timeout 30 psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 \
            -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null; then
        echo "bench: could not drop the database $pg_db; drop it by hand:" \
            "psql '$PG_ADMIN_URL' -c 'DROP DATABASE \"$pg_db\" WITH (FORCE)'" >&2
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- arguments --------------------------------------------------------------
# wrk durations: a number of seconds, or with an s/m/h suffix.
to_seconds() {
    local d=$1
    case $d in
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *h) echo $((${d%h} * 3600)) ;;
        *) echo "$d" ;;
    esac
}
for v in CONNECTIONS THREADS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $(to_seconds "$DURATION") =~ ^[1-9][0-9]*$ ]] || die "DURATION must look like 10, 10s, 1m (got '$DURATION')"
[[ $WARMUP == 0 || $(to_seconds "$WARMUP") =~ ^[1-9][0-9]*$ ]] || die "WARMUP must be 0 or like 2s (got '$WARMUP')"
((THREADS <= CONNECTIONS)) || die "THREADS ($THREADS) must not exceed CONNECTIONS ($CONNECTIONS)"

want_hello=""
want_sqlite=""  # the stageworks on SQLite
want_pg=""      # the stageworks on PostgreSQL
want_pgbench="" # pgbench
for s in $SCENARIOS; do
    case $s in
        hello) want_hello=1 ;;
        live | create-order | get-order | login) want_sqlite=1 ;;
        create-order-pg | get-order-pg) want_pg=1 ;;
        pgbench-insert) want_pgbench=1 ;;
        *) die "unknown scenario '$s' (hello, live, create-order, get-order, login, create-order-pg, get-order-pg, pgbench-insert)" ;;
    esac
done
# pgbench-insert reads its -c from stageworks' configuration: it needs the binary.
want_stageworks=$want_sqlite$want_pg$want_pgbench
want_postgres=$want_pg$want_pgbench

# --- tools --------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || die "wrk is missing: apt-get install wrk"
    echo "installing wrk (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
for tool in curl python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done
if [[ -n $want_postgres ]]; then
    command -v psql >/dev/null 2>&1 || die "psql is missing (apt-get install postgresql-client)"
fi
if [[ -n $want_pgbench ]]; then
    if [[ -z $PGBENCH ]]; then
        PGBENCH=$(find /usr/lib/postgresql -path '*/bin/pgbench' 2>/dev/null | sort -V | tail -n 1)
        PGBENCH=${PGBENCH:-$(command -v pgbench || true)}
    fi
    [[ -n $PGBENCH && -x $PGBENCH ]] || die "pgbench is missing (apt-get install postgresql-contrib, or set PGBENCH)"
fi

# --- build ----------------------------------------------------------------------
build=(cargo build --release --locked)
[[ -n $want_hello ]] && build+=(-p hyper-hello --bin hyper-hello)
[[ -n $want_stageworks ]] && build+=(-p stageworks --bin stageworks)
if [[ -z $SKIP_BUILD ]]; then
    echo "+ ${build[*]}"
    "${build[@]}"
fi
target_dir=$(cargo metadata --format-version 1 --no-deps --offline |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release"
STAGEWORKS_BIN=${STAGEWORKS_BIN:-$bin/stageworks}

# --- helpers ----------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_ready NAME PID URL LOG: until URL answers 2xx (30 s at most).
wait_ready() {
    local name=$1 pid=$2 url=$3 log=$4 i
    for ((i = 0; i < 120; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: $name exited during start-up; its log:" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.25
    done
    echo "bench: $name did not answer $url within 30 s; its log:" >&2
    tail -n 40 "$log" >&2
    exit 1
}

# wrk prints latencies as 512.00us, 1.20ms, 2.00s, 1.00m: in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 0.001; else if (u == "ms") f = 1; else if (u == "s") f = 1000
        else if (u == "m") f = 60000; else if (u == "h") f = 3600000; else { print "?"; exit }
        printf "%.3f", n * f }'
}

# Runs a command in the background and waits for it: bash handles a signal
# during `wait` at once, but only after a foreground command has ended.
run_waiting() {
    "$@" &
    current=$!
    wait "$current"
    current=""
}

# pg_sql URL SQL...: runs SQL with psql, stopping at the first error.
pg_sql() {
    local url=$1
    shift
    timeout 60 psql "$url" -X -q -v ON_ERROR_STOP=1 "$@"
}

# A checkpoint before each measured PostgreSQL run, so that none of them pays
# for the writes of the one before (best effort: it needs superuser or
# pg_checkpoint).
pg_checkpoint() {
    pg_sql "$pg_url" -c CHECKPOINT >/dev/null 2>&1 || true
}

# effective_config ENV...: `stageworks check-config` under these variables,
# as "max_connections workers read_connections".
effective_config() {
    env "$@" "$STAGEWORKS_BIN" check-config --config "$CONFIG" 2>"$tmp/check-config.err" |
        python3 -c 'import sys, tomllib
c = tomllib.loads(sys.stdin.read())
print(c["database"]["max_connections"], c["services"]["orders"]["workers"], c["database"]["read_connections"])' ||
        die "stageworks check-config failed: $(cat "$tmp/check-config.err")"
}

declare -A rps p50 p99 non2xx errors total
ran=()

# bench NAME URL [wrk options...]
bench() {
    local name=$1 url=$2 out="$tmp/$1.wrk" limit
    shift 2
    local wrk=(wrk -t"$THREADS" -c"$CONNECTIONS" "$@")
    if [[ $WARMUP != 0 ]]; then
        echo "  $name: warm-up $WARMUP"
        limit=$(($(to_seconds "$WARMUP") + 30))
        run_waiting timeout "$limit" "${wrk[@]}" -d"$WARMUP" "$url" >/dev/null
    fi
    [[ $name == *-pg ]] && pg_checkpoint
    echo "  $name: $DURATION, $CONNECTIONS connections, $THREADS threads -> $url"
    limit=$(($(to_seconds "$DURATION") + 30))
    run_waiting timeout "$limit" "${wrk[@]}" -d"$DURATION" --latency "$url" >"$out"
    [[ -n $VERBOSE ]] && sed 's/^/    | /' "$out"

    rps[$name]=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2; exit }' "$out")")
    p99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$out")")
    non2xx[$name]=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    non2xx[$name]=${non2xx[$name]:-0}
    errors[$name]=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    errors[$name]=${errors[$name]:-0}
    total[$name]=$(awk '/ requests in / { print $1; exit }' "$out")
    [[ -n ${rps[$name]} ]] || die "could not read wrk's output for $name: $(cat "$out")"
    ran+=("$name")
}

# bench_pgbench NAME: pgbench-insert. Requests/s is pgbench's tps without the
# initial connection time; p50/p99 come from its per-transaction log (-l:
# each transaction's latency in microseconds, as the client saw it); non-2xx
# is its failed transactions, errors its aborted clients.
bench_pgbench() {
    local name=$1 out="$tmp/$1.pgbench" log="$tmp/$1.log" limit rc
    local pgbench=("$PGBENCH" -n -M prepared -c "$pg_pool" -j "$pg_threads"
        -f "$repo/bench/pgbench_insert.sql" -D "user_id=$BENCH_USER_ID")
    if [[ $WARMUP != 0 ]]; then
        echo "  $name: warm-up $WARMUP"
        limit=$(($(to_seconds "$WARMUP") + 30))
        run_waiting timeout "$limit" "${pgbench[@]}" -T "$(to_seconds "$WARMUP")" "$pg_url" >"$out" 2>&1 ||
            die "pgbench's warm-up failed: $(tail -n 20 "$out")"
    fi
    pg_checkpoint
    echo "  $name: $DURATION, pgbench -c $pg_pool -j $pg_threads -M prepared -> $pg_db"
    limit=$(($(to_seconds "$DURATION") + 30))
    mkdir -p "$log"
    rc=0
    run_waiting timeout "$limit" "${pgbench[@]}" -T "$(to_seconds "$DURATION")" \
        -l --log-prefix="$log/tx" "$pg_url" >"$out" 2>&1 || rc=$?
    [[ -n $VERBOSE ]] && sed 's/^/    | /' "$out"

    # "tps = N (without initial connection time)"; before 14, "(excluding connections establishing)".
    rps[$name]=$(awk '/^tps = / && !/including/ { printf "%.2f", $3; exit }' "$out")
    [[ -n ${rps[$name]} ]] || die "could not read pgbench's output for $name (exit $rc): $(cat "$out")"
    total[$name]=$(awk -F ': ' '/^number of transactions actually processed:/ { split($2, a, "/"); print a[1]; exit }' "$out")
    non2xx[$name]=$(awk '/^number of failed transactions:/ { print $5; exit }' "$out")
    non2xx[$name]=${non2xx[$name]:-0}
    errors[$name]=$(grep -c 'aborted' "$out" || true)
    if ((rc != 0 && errors[$name] == 0)); then
        errors[$name]=1
    fi
    pg_latency_avg=$(awk '/^latency average = / { print $4, $5; exit }' "$out")
    # Nearest-rank percentiles of the logged latencies (field 3, microseconds;
    # failed transactions log a word there instead).
    read -r "p50[$name]" "p99[$name]" < <(cat "$log"/tx.* 2>/dev/null |
        awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "- -"; exit }
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
            printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')
    rm -rf "$log"
    ran+=("$name")
}

# start_stageworks KIND ENV...: a stageworks process (KIND sqlite or pg) with
# these variables, on free loopback ports; then creates the order that
# get-order reads and checks that it reads back. Sets sw_addr[KIND] and
# order_id[KIND].
declare -A sw_addr order_id token suffix=([sqlite]=get-order [pg]=get-order-pg)
start_stageworks() {
    local kind=$1 addr admin created code i log="$tmp/stageworks-$1.log"
    shift
    addr="127.0.0.1:$(free_port)"
    admin="127.0.0.1:$(free_port)"
    [[ $addr != "$admin" ]] || admin="127.0.0.1:$(free_port)"
    mkdir -p "$tmp/data-$kind"
    env "$@" \
        STAGEWORKS__DATA_DIR="$tmp/data-$kind" \
        STAGEWORKS__SERVER__LISTEN="$addr" \
        STAGEWORKS__ADMIN__LISTEN="$admin" \
        STAGEWORKS__LOG__LEVEL=warn \
        STAGEWORKS__RATE_LIMIT__ENABLED="${STAGEWORKS__RATE_LIMIT__ENABLED:-false}" \
        "$STAGEWORKS_BIN" serve --config "$CONFIG" >"$log" 2>&1 &
    pids+=($!)
    # /ready: the orders workers are up (on PostgreSQL, its schema migrated).
    wait_ready "stageworks ($kind)" "${pids[-1]}" "http://$addr/ready" "$log"
    echo "stageworks ($kind) on $addr (admin $admin, data $tmp/data-$kind)"

    # A signed-in bench user: every order request carries its access token.
    curl -sS --max-time 10 -o /dev/null -X POST -H 'content-type: application/json' \
        -d "{\"email\": \"$BENCH_EMAIL\", \"password\": \"$BENCH_PASSWORD\", \"name\": \"Bench\"}" \
        "http://$addr/api/v1/auth/register"
    login=$(curl -sS --max-time 10 -X POST -H 'content-type: application/json' \
        -d "{\"email\": \"$BENCH_EMAIL\", \"password\": \"$BENCH_PASSWORD\"}" \
        "http://$addr/api/v1/auth/login")
    token[$kind]=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["access_token"])' "$login") ||
        die "login ($kind) failed: $login"

    # The order that get-order reads, made once beforehand (a 503 while a
    # worker is still starting is retried for 30 s).
    for ((i = 0; i < 60; i++)); do
        created=$(curl -sS --max-time 10 -w '\n%{http_code}' -X POST \
            -H 'content-type: application/json' -H "authorization: Bearer ${token[$kind]}" \
            -d '{"amount": 5000, "currency": "USD"}' "http://$addr/api/v1/orders")
        code=${created##*$'\n'}
        [[ $code == 503 ]] || break
        sleep 0.5
    done
    [[ $code == 201 ]] || die "POST /api/v1/orders ($kind) answered $code: ${created%$'\n'*}; log: $(tail -n 20 "$log")"
    order_id[$kind]=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "${created%$'\n'*}")
    code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
        -H "authorization: Bearer ${token[$kind]}" "http://$addr/api/v1/orders/${order_id[$kind]}")
    [[ $code == 200 ]] || die "GET /api/v1/orders/${order_id[$kind]} ($kind) answered $code"
    echo "order ${order_id[$kind]} created for ${suffix[$kind]}"
    sw_addr[$kind]=$addr
}

# --- configuration ----------------------------------------------------------------
if [[ -n $want_stageworks ]]; then
    [[ -f $CONFIG ]] || die "no config file at $CONFIG"
    [[ -x $STAGEWORKS_BIN ]] || die "no stageworks binary at $STAGEWORKS_BIN (unset SKIP_BUILD to build it)"
fi
# The SQLite process gets no database URL, whatever the caller's environment.
sqlite_env=(STAGEWORKS__DATABASE__URL= STAGEWORKS__SERVICES__ORDERS__DATABASE_URL=)
if [[ -n $want_sqlite ]]; then
    config=$(effective_config "${sqlite_env[@]}")
    read -r _ sqlite_workers sqlite_readers <<<"$config"
fi

# --- the bench database -------------------------------------------------------------
if [[ -n $want_postgres ]]; then
    pg_sql "$PG_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>"$tmp/psql.err" ||
        die "PostgreSQL at $PG_ADMIN_URL does not answer (set PG_ADMIN_URL, or leave out the PostgreSQL scenarios: SCENARIOS=\"hello live create-order get-order\"): $(cat "$tmp/psql.err")"
    pg_db="stageworks_bench_$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
    pg_sql "$PG_ADMIN_URL" -c "CREATE DATABASE \"$pg_db\"" >/dev/null
    pg_url=$(python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$PG_ADMIN_URL" "$pg_db")
    pg_env=(STAGEWORKS__DATABASE__URL="$pg_url" STAGEWORKS__SERVICES__ORDERS__DATABASE_URL="$pg_url")
    config=$(effective_config "${pg_env[@]}")
    read -r pg_pool pg_workers _ <<<"$config"
    pg_threads=$((THREADS < pg_pool ? THREADS : pg_pool))
    echo "bench database $pg_db (dropped on exit)"
fi
if [[ -n $want_pgbench ]]; then
    # pgbench's table: the orders service's own migrations, in another schema.
    migrations=()
    for f in "$repo"/actors/src/orders/migrations/postgres/*.sql; do
        migrations+=(-f "$f")
    done
    pg_sql "$pg_url" -c 'CREATE SCHEMA pgbench_bench' >/dev/null
    PGOPTIONS="-c search_path=pgbench_bench" pg_sql "$pg_url" -1 "${migrations[@]}" >/dev/null
fi

# --- servers ------------------------------------------------------------------------
if [[ -n $want_hello ]]; then
    "$bin/hyper-hello" 127.0.0.1:0 >"$tmp/hello.log" 2>&1 &
    pids+=($!)
    for ((i = 0; i < 40; i++)); do
        grep -q '^listening on ' "$tmp/hello.log" && break
        sleep 0.25
    done
    hello_addr=$(sed -n 's/^listening on //p' "$tmp/hello.log")
    [[ -n $hello_addr ]] || die "hyper-hello did not start: $(cat "$tmp/hello.log")"
    wait_ready hyper-hello "${pids[-1]}" "http://$hello_addr/" "$tmp/hello.log"
    echo "hyper-hello on $hello_addr"
fi
[[ -n $want_sqlite ]] && start_stageworks sqlite "${sqlite_env[@]}"
[[ -n $want_pg ]] && start_stageworks pg "${pg_env[@]}"

# --- scenarios --------------------------------------------------------------------------
echo
echo "machine: $(nproc) cores, $(awk -F ': ' '/^model name/ { print $2; exit }' /proc/cpuinfo),"\
    "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $(rustc --version)"
echo "wrk: $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }'); duration $DURATION, $CONNECTIONS connections, $THREADS threads, warm-up $WARMUP"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
if [[ -n $want_sqlite ]]; then
    echo "stageworks on SQLite: $sqlite_workers orders workers, $sqlite_readers reader connections + 1 writer"
fi
if [[ -n $want_postgres ]]; then
    echo "PostgreSQL: $(pg_sql "$pg_url" -At -c 'SHOW server_version'), $(pg_sql "$pg_url" -At \
        -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
            WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'wal_level')")"
    [[ -n $want_pg ]] && echo "stageworks on PostgreSQL: $pg_workers orders workers, a pool of $pg_pool connections"
    [[ -n $want_pgbench ]] && echo "pgbench: $("$PGBENCH" --version | awk '{ print $3 }'), -c $pg_pool -j $pg_threads -M prepared"
fi
echo
for s in $SCENARIOS; do
    case $s in
        hello) bench hello "http://$hello_addr/" ;;
        live) bench live "http://${sw_addr[sqlite]}/live" ;;
        create-order) bench create-order "http://${sw_addr[sqlite]}/api/v1/orders" -s "$repo/bench/create_order.lua" -H "authorization: Bearer ${token[sqlite]}" ;;
        login) bench login "http://${sw_addr[sqlite]}/api/v1/auth/login" -s "$repo/bench/login.lua" ;;
        get-order) bench get-order "http://${sw_addr[sqlite]}/api/v1/orders/${order_id[sqlite]}" -H "authorization: Bearer ${token[sqlite]}" ;;
        create-order-pg) bench create-order-pg "http://${sw_addr[pg]}/api/v1/orders" -s "$repo/bench/create_order.lua" -H "authorization: Bearer ${token[pg]}" ;;
        get-order-pg) bench get-order-pg "http://${sw_addr[pg]}/api/v1/orders/${order_id[pg]}" -H "authorization: Bearer ${token[pg]}" ;;
        pgbench-insert) bench_pgbench pgbench-insert ;;
    esac
done

# --- table ------------------------------------------------------------------------------
echo
row() { printf '| %-15s | %12s | %10s | %10s | %10s | %8s | %8s |\n' "$@"; }
row scenario "requests/s" "p50 (ms)" "p99 (ms)" requests non-2xx errors
row --------------- ------------ ---------- ---------- ---------- -------- --------
for s in "${ran[@]}"; do
    row "$s" "${rps[$s]}" "${p50[$s]}" "${p99[$s]}" "${total[$s]}" "${non2xx[$s]}" "${errors[$s]}"
done
if [[ -n ${rps[pgbench-insert]:-} ]]; then
    echo "pgbench-insert: requests/s is pgbench's tps (without connection time); p50/p99 from its"
    echo "per-transaction log; non-2xx = failed transactions, errors = aborted clients;" \
        "pgbench's own latency average = $pg_latency_avg"
fi

# ratio A B NOTE: A's requests/s over B's.
ratio() {
    local a=$1 b=$2 note=$3
    if [[ -n ${rps[$a]:-} && -n ${rps[$b]:-} ]]; then
        awk -v x="${rps[$a]}" -v y="${rps[$b]}" -v a="$a" -v b="$b" -v note="$note" \
            'BEGIN { if (y > 0) printf "%-15s / %-14s = %.2f (%s)\n", a, b, x / y, sprintf(note, 100 * x / y) }'
    fi
}
echo
bare="%.0f%% of the bare server's requests/s"
ratio live hello "$bare"
ratio get-order hello "$bare"
ratio create-order hello "$bare"
ratio login hello "$bare"
ratio get-order-pg hello "$bare"
ratio create-order-pg hello "$bare"
ratio create-order-pg pgbench-insert "%.0f%% of pgbench's single-row INSERTs with as many connections; the aim is at least 80%%"

bad=0
for s in "${ran[@]}"; do
    ((non2xx[$s] + errors[$s] == 0)) || bad=1
done
if ((bad)); then
    echo
    echo "warning: some requests failed (non-2xx, socket errors, failed transactions or aborted clients): those figures are not comparable." >&2
fi
