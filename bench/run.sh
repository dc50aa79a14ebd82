#!/usr/bin/env bash
# Stageworks against a bare hyper server (bench/hello), on loopback, with wrk;
# stageworks on PostgreSQL against pgbench doing the same INSERT; and
# stageworks side by side with the peer servers of ../shared/peers (plain
# axum + sqlx on SQLite and on PostgreSQL, the Fastify + pg + RabbitMQ stack).
#
#   bench/run.sh                         # every scenario: RUNS runs of DURATION each, medians
#   DURATION=30s CONNECTIONS=32 bench/run.sh
#   SCENARIOS=hello bench/run.sh         # only the bare server
#   SCENARIOS="create-order-pg pgbench-insert" bench/run.sh
#   SCENARIOS="create-order peer-axum-sqlite-create peer-fastify-create" bench/run.sh
#   SKIP_BUILD=1 DURATION=2s WARMUP=0 RUNS=1 LAG_ORDERS=1000 bench/run.sh   # a smoke run of everything
#
# Scenarios (each RUNS measured runs of DURATION after one WARMUP run; the
# median is reported):
#   hello            GET /                    on hyper-hello (the ceiling)
#   live             GET /live                on stageworks (SQLite)
#   create-order     POST /api/v1/orders      on stageworks (SQLite), as the bench user
#   get-order        GET /api/v1/orders/{id}  on stageworks (SQLite), over GET_IDS orders seeded just before
#   login            POST /api/v1/auth/login  on stageworks (SQLite; bench/login.lua)
#   create-order-pg  POST /api/v1/orders      on a second stageworks, on PostgreSQL
#   get-order-pg     GET /api/v1/orders/{id}  on that one, over GET_IDS seeded orders
#   pgbench-insert   pgbench -M prepared running bench/pgbench_insert.sql (the
#                    same single-row INSERT), -c = stageworks' PostgreSQL pool size
#   peer-axum-sqlite-create, peer-axum-sqlite-get
#                    POST /orders, GET /orders/{id} on axum-sqlx on SQLite
#   peer-axum-pg-create, peer-axum-pg-get
#                    the same on axum-sqlx on PostgreSQL (the bench database)
#   peer-fastify-create, peer-fastify-get
#                    POST /orders (insert + RabbitMQ publish; the consumer
#                    invoices.js running), GET /orders/:id on the Fastify stack
#   lag-pg           order -> invoice lag of stageworks on PostgreSQL
#                    (the peers' seed002-fastify/stageworks_lag.mjs), per LAG_RATES
#   peer-fastify-lag the same for the Fastify stack (seed002-fastify/lag.mjs)
# The create and get scenarios use the peers' wrk script tools/req.lua, body
# tools/body_amount.json and tools/seed.py for stageworks and peers alike
# (stageworks falls back to bench/create_order.lua and one order when
# PEERS_DIR has no tools/). After each measured create run on stageworks or
# Fastify the script reports the orders still without an invoice and how long
# until they all have one.
#
# Environment: DURATION (10s), RUNS (3), CONNECTIONS (64), THREADS (2; also
# pgbench's -j), WARMUP (3s, 0 to skip), SCENARIOS (all of the above),
# CONFIG (config.toml), BENCH_USER_ID (a fixed uuid), SKIP_BUILD (1 to use
# the binaries already built), STAGEWORKS_BIN (another stageworks binary to
# measure; default the release build), VERBOSE (1 to print wrk's, pgbench's
# and the lag tools' output), PG_ADMIN_URL
# (postgres://postgres@127.0.0.1:5432/test: where the bench's own database is
# created, and dropped on exit), PGBENCH (default the newest
# /usr/lib/postgresql/*/bin/pgbench, else pgbench on PATH), PEERS_DIR
# (<repo>/../shared/peers), GET_IDS (1000), DRAIN_TIMEOUT (300 s), LAG_ORDERS
# (2000), LAG_RATES ("500 1000", orders/s), BROKER_URL
# (amqp://guest:guest@127.0.0.1:5672). Any STAGEWORKS__* variable set by the
# caller reaches stageworks as well; STAGEWORKS__DATABASE__MAX_CONNECTIONS (the
# PostgreSQL pool size) is also pgbench's -c and the PostgreSQL peers' pool;
# STAGEWORKS__ADMIN__TOKEN (default: a random one per run) is the admin token.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-3s}
all_scenarios="hello live create-order peer-axum-sqlite-create get-order peer-axum-sqlite-get login"
all_scenarios+=" create-order-pg peer-axum-pg-create pgbench-insert peer-fastify-create"
all_scenarios+=" get-order-pg peer-axum-pg-get peer-fastify-get lag-pg peer-fastify-lag"
SCENARIOS=${SCENARIOS:-$all_scenarios}
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
PEERS_DIR=${PEERS_DIR:-$repo/../shared/peers}
GET_IDS=${GET_IDS:-1000}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
LAG_ORDERS=${LAG_ORDERS:-2000}
LAG_RATES=${LAG_RATES:-500 1000}
BROKER_URL=${BROKER_URL:-amqp://guest:guest@127.0.0.1:5672}
export BENCH_USER_ID
# psql and pgbench give up on an unreachable server after 5 s.
export PGCONNECT_TIMEOUT=5
# Built by this script from PEERS_DIR (shared/ may be read-only): axum-sqlx's
# target directory, and node_modules per package-lock.json.
peer_target="$repo/target/peers"

die() {
    echo "bench: $*" >&2
    exit 1
}

# --- processes, temp dir and bench database, cleaned up however the script ends
tmp=$(mktemp -d "${TMPDIR:-/tmp}/stageworks-bench.XXXXXX")
pids=()           # the servers
current=""        # the wrk, pgbench, node or build run in progress
pg_db=""          # the bench database, once its creation has been attempted
node_dir=""       # the run's copy of seed002-fastify, once made
queue_created="" # 1 once the Fastify stack may have declared its queue
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
    # The Fastify stack's durable queue lives in the broker, not in the bench database.
    if [[ -n $queue_created ]] && ! amqp_delete_queue >/dev/null 2>&1; then
        echo "bench: could not delete the RabbitMQ queue peer_orders at $BROKER_URL" >&2
    fi
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
for v in CONNECTIONS THREADS RUNS GET_IDS DRAIN_TIMEOUT LAG_ORDERS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for rate in $LAG_RATES; do
    [[ $rate =~ ^[1-9][0-9]*$ ]] || die "LAG_RATES must be positive integers, orders/s (got '$LAG_RATES')"
done
[[ $(to_seconds "$DURATION") =~ ^[1-9][0-9]*$ ]] || die "DURATION must look like 10, 10s, 1m (got '$DURATION')"
[[ $WARMUP == 0 || $(to_seconds "$WARMUP") =~ ^[1-9][0-9]*$ ]] || die "WARMUP must be 0 or like 2s (got '$WARMUP')"
((THREADS <= CONNECTIONS)) || die "THREADS ($THREADS) must not exceed CONNECTIONS ($CONNECTIONS)"

want_hello=""
want_sqlite=""       # the stageworks on SQLite
want_pg=""           # the stageworks on PostgreSQL
want_pgbench=""      # pgbench
want_axum_sqlite=""  # axum-sqlx on SQLite
want_axum_pg=""      # axum-sqlx on PostgreSQL
want_fastify=""      # orders.js + invoices.js + RabbitMQ
want_node=""         # the seed002-fastify folder's node_modules (the stack, or stageworks_lag.mjs)
for s in $SCENARIOS; do
    case $s in
        hello) want_hello=1 ;;
        live | create-order | get-order | login) want_sqlite=1 ;;
        create-order-pg | get-order-pg) want_pg=1 ;;
        lag-pg) want_pg=1 want_node=1 ;;
        pgbench-insert) want_pgbench=1 ;;
        peer-axum-sqlite-create | peer-axum-sqlite-get) want_axum_sqlite=1 ;;
        peer-axum-pg-create | peer-axum-pg-get) want_axum_pg=1 ;;
        peer-fastify-create | peer-fastify-get | peer-fastify-lag) want_fastify=1 want_node=1 ;;
        *) die "unknown scenario '$s' (one of: ${all_scenarios// /, })" ;;
    esac
done
# pgbench-insert reads its -c from stageworks' configuration: it needs the binary.
want_stageworks=$want_sqlite$want_pg$want_pgbench
want_postgres=$want_pg$want_pgbench$want_axum_pg$want_fastify
want_axum=$want_axum_sqlite$want_axum_pg
want_peers=$want_axum$want_node

# The peers' tools (one wrk script and one seeder for every target) measure
# stageworks too when they are there; without them stageworks' order
# scenarios use bench/create_order.lua and a single order.
if [[ -n $want_peers ]]; then
    [[ -d $PEERS_DIR ]] || die "no peers at $PEERS_DIR (set PEERS_DIR, or leave out the peer-* and lag-pg scenarios)"
fi
if [[ -d $PEERS_DIR ]]; then
    PEERS_DIR=$(cd "$PEERS_DIR" && pwd)
fi
req_lua="$PEERS_DIR/tools/req.lua"
seed_py="$PEERS_DIR/tools/seed.py"
body_json="$PEERS_DIR/tools/body_amount.json"
if [[ -f $req_lua && -f $seed_py && -f $body_json ]]; then
    sw_client=peers
else
    [[ -z $want_peers ]] || die "PEERS_DIR ($PEERS_DIR) lacks tools/req.lua, tools/seed.py or tools/body_amount.json"
    sw_client=bench
fi

# --- tools --------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || die "wrk is missing: apt-get install wrk"
    echo "installing wrk (Debian)"
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends wrk >/dev/null
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
if [[ -n $want_node ]]; then
    for tool in node npm; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (the Fastify peer and the lag tools need Node.js 20 or newer)"
    done
    node_major=$(timeout 10 node -p 'process.versions.node.split(".")[0]')
    ((node_major >= 20)) || die "Node.js $(node --version) is too old for the Fastify peer (fastify 5 needs 20 or newer)"
fi

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

# median VALUE...: of the numeric ones ("-" when there are none).
median() {
    printf '%s\n' "$@" | awk '$1 ~ /^[0-9]+(\.[0-9]+)?$/' | sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) print "-"
            else if (NR % 2) print v[(NR + 1) / 2]
            else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# sum VALUE...
sum() {
    printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%d\n", s }'
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

# uses_pg SCENARIO: whether it loads PostgreSQL.
uses_pg() {
    case $1 in
        *-pg | *-pg-* | peer-fastify-*) return 0 ;;
        *) return 1 ;;
    esac
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

# amqp_node JS: runs an ES module snippet with the run's copy of the Fastify
# peer's node_modules (amqplib), BROKER_URL in its environment.
amqp_node() {
    [[ -n $node_dir ]] || return 1
    BROKER_URL=$BROKER_URL timeout 30 env -C "$node_dir" node --input-type=module -e "$1"
}
# Deletes the Fastify stack's queue (and whatever it holds); prints how many
# messages it held.
amqp_delete_queue() {
    amqp_node "import amqp from 'amqplib';
const c = await amqp.connect(process.env.BROKER_URL);
const ch = await c.createChannel();
const r = await ch.deleteQueue('peer_orders');
console.log(r.messageCount);
await c.close();"
}

# drain KIND T0: waits (DRAIN_TIMEOUT at most) until every order has its
# invoice, and prints "BACKLOG SAMPLED UNPUBLISHED PENDING SECONDS": the
# orders still without an invoice at the first sample, taken SAMPLED seconds
# after T0 (an $EPOCHREALTIME, the end of the load), and the seconds from T0
# until none is left (">N" when DRAIN_TIMEOUT ran out). KIND sqlite or pg: the stageworks of that kind,
# through GET /admin/events: in-process an order's event stays unpublished in
# the orders outbox until billing has settled it (billing's pending events are
# among them), so the backlog is the orders outbox's `unpublished`; with
# Redis Streams an event is published once it is in the stream, so the
# backlog is `unpublished` + billing's `pending`. KIND fastify: the peer_orders
# rows without a peer_invoices row, from the bench database.
drain_py='
import json, subprocess, sys, time, urllib.request
mode, target, token, t0, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
SQL = ("SELECT count(*) FROM peer_orders o "
       "WHERE NOT EXISTS (SELECT 1 FROM peer_invoices i WHERE i.order_id = o.id)")

def sample():
    """(orders without an invoice, orders outbox unpublished, billing pending); None: unknown."""
    if mode == "sql":
        out = subprocess.run(["psql", target, "-X", "-q", "-A", "-t", "-c", SQL],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.strip()), None, None
    req = urllib.request.Request(target, headers={"authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=5) as r:
        d = json.load(r)
    unpublished = next((p.get("unpublished") for p in d.get("producers", []) if p.get("name") == "orders"), None)
    billing = [s for s in d.get("subscribers", []) if s.get("name") == "billing"]
    pending = billing[0].get("pending") if billing else 0
    if unpublished is None or pending is None:
        return None, unpublished, pending
    backlog = unpublished if d.get("transport") == "memory" else unpublished + pending
    return backlog, unpublished, pending

first, error = None, None
while True:
    try:
        backlog, unpublished, pending = sample()
    except Exception as e:  # noqa: BLE001 - report it and keep polling
        backlog = unpublished = pending = None
        error = e
    now = time.time()
    if first is None and backlog is not None:
        first = (backlog, f"{now - t0:.2f}", unpublished, pending)
    if backlog == 0 and pending in (None, 0):
        done = f"{now - t0:.2f}"
        break
    if now - t0 >= limit:
        done = f">{limit:.0f}"
        if error is not None:
            print(f"bench: drain: {error}", file=sys.stderr)
        break
    time.sleep(0.1 if mode == "admin" else 0.25)
show = lambda v: "-" if v is None else str(v)
print(*(show(v) for v in (first or (None, None, None, None))), done)
'
drain() {
    local kind=$1 t0=$2
    case $kind in
        sqlite | pg)
            timeout $((DRAIN_TIMEOUT + 60)) python3 -c "$drain_py" admin \
                "http://${sw_admin[$kind]}/admin/events" "$ADMIN_TOKEN" "$t0" "$DRAIN_TIMEOUT"
            ;;
        fastify)
            timeout $((DRAIN_TIMEOUT + 60)) python3 -c "$drain_py" sql "$pg_url" "" "$t0" "$DRAIN_TIMEOUT"
            ;;
    esac
}
# settle: waits (DRAIN_TIMEOUT at most) until every stageworks started so far
# is idle: every outbox published and nothing pending for any subscriber
# (audit and analytics included, which catch up long after the invoices),
# so that no run, of stageworks or of a peer, shares the machine with the
# catch-up a previous create run left behind.
settle_py='
import json, sys, time, urllib.request
token, limit, urls = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
start = time.time()
for url in urls:
    while True:
        req = urllib.request.Request(url, headers={"authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                d = json.load(r)
            busy = sum(s.get("pending") or 0 for s in d.get("subscribers", [])) + \
                sum(p.get("unpublished") or 0 for p in d.get("producers", []))
        except Exception:  # noqa: BLE001 - a server that cannot answer is not idle
            busy = -1
        if busy == 0:
            break
        if time.time() - start >= limit:
            print(f"bench: settle: {url} still busy ({busy}) after {limit:.0f}s", file=sys.stderr)
            break
        time.sleep(0.25)
waited = time.time() - start
if waited >= 1:
    print(f"    (waited {waited:.1f}s for the event pipelines to drain)", file=sys.stderr)
'
settle() {
    local urls=() kind
    for kind in "${!sw_admin[@]}"; do
        urls+=("http://${sw_admin[$kind]}/admin/events")
    done
    ((${#urls[@]} > 0)) || return 0
    timeout $((DRAIN_TIMEOUT + 60)) python3 -c "$settle_py" "$ADMIN_TOKEN" "$DRAIN_TIMEOUT" "${urls[@]}" || true
}

# drain_quietly KIND: before a measured run, so that it starts with no backlog.
drain_quietly() {
    local out
    out=$(drain "$1" "$EPOCHREALTIME")
    if [[ $out == *'>'* ]]; then
        echo "  warning: $1 still had orders without an invoice after ${DRAIN_TIMEOUT}s: $out" >&2
    fi
}

# RSS of the servers: sampled after each scenario on them (after its backlog
# drained), so the last sample is the RSS after the last load; VmHWM is the peak.
declare -A server_pids server_label rss_kb hwm_kb
servers=() # in start order
add_server() {
    local key=$1 label=$2
    shift 2
    server_pids[$key]="$*"
    server_label[$key]=$label
    servers+=("$key")
}
server_for() {
    case $1 in
        hello) echo hello ;;
        live | create-order | get-order) echo sqlite ;;
        login) echo sqlite-login ;;
        create-order-pg | get-order-pg | lag-pg) echo pg ;;
        peer-axum-sqlite-*) echo axum-sqlite ;;
        peer-axum-pg-*) echo axum-pg ;;
        peer-fastify-*) echo fastify ;;
        *) echo "" ;;
    esac
}
sample_rss() {
    local key=$1 pid rss=0 hwm=0 r h
    # Sign-ins hash with argon2id (19 MiB each) on blocking threads, which the
    # allocator keeps: stageworks' RSS after login is its own row.
    if [[ $key == sqlite-login && -z ${server_pids[$key]:-} && -n ${server_pids[sqlite]:-} ]]; then
        add_server sqlite-login "stageworks (SQLite), after login" "${server_pids[sqlite]}"
    fi
    [[ -n $key && -n ${server_pids[$key]:-} ]] || return 0
    for pid in ${server_pids[$key]}; do
        read -r r h < <(awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { print r + 0, h + 0 }' \
            "/proc/$pid/status" 2>/dev/null || echo "0 0")
        rss=$((rss + r))
        hwm=$((hwm + h))
    done
    rss_kb[$key]=$rss
    hwm_kb[$key]=$hwm
}

# --- build ----------------------------------------------------------------------
build=(cargo build --release --locked)
[[ -n $want_hello ]] && build+=(-p hyper-hello --bin hyper-hello)
[[ -n $want_stageworks ]] && build+=(-p stageworks --bin stageworks)
# axum-sqlx: one build with the sqlite feature serves both peers (the feature
# adds SQLite; DATABASE_URL picks the store at run time), into the project's
# target/ because shared/ may be read-only.
axum_build=(cargo build --release --locked --features sqlite --target-dir "$peer_target")
if [[ -z $SKIP_BUILD ]]; then
    if [[ -n $want_hello$want_stageworks ]]; then
        echo "+ ${build[*]}"
        run_waiting timeout 3600 "${build[@]}"
    fi
    if [[ -n $want_axum ]]; then
        echo "+ (cd $PEERS_DIR/axum-sqlx && ${axum_build[*]})"
        run_waiting timeout 3600 env -C "$PEERS_DIR/axum-sqlx" "${axum_build[@]}"
    fi
fi
target_dir=$(timeout 60 cargo metadata --format-version 1 --no-deps --offline |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release"
STAGEWORKS_BIN=${STAGEWORKS_BIN:-$bin/stageworks}
axum_bin="$peer_target/release/axum-sqlx"
if [[ -n $want_axum ]]; then
    [[ -x $axum_bin ]] || die "no axum-sqlx binary at $axum_bin (unset SKIP_BUILD to build it)"
fi

# The Fastify peer's code, run from a copy made for this run (next to a
# node_modules installed once per package-lock.json under target/peers), so
# that nothing is written into PEERS_DIR and the code is always the peers'.
if [[ -n $want_node ]]; then
    src="$PEERS_DIR/seed002-fastify"
    [[ -f $src/package-lock.json ]] || die "no $src/package-lock.json"
    lock_sum=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)
    npm_cache="$peer_target/npm-$lock_sum"
    if [[ ! -d $npm_cache/node_modules ]]; then
        echo "+ npm ci --no-audit --no-fund (seed002-fastify's package*.json, in $npm_cache)"
        rm -rf "$npm_cache.partial"
        mkdir -p "$npm_cache.partial"
        cp "$src/package.json" "$src/package-lock.json" "$npm_cache.partial/"
        run_waiting timeout 600 env -C "$npm_cache.partial" npm ci --no-audit --no-fund --loglevel=error
        mv "$npm_cache.partial" "$npm_cache"
    fi
    node_dir="$tmp/seed002-fastify"
    mkdir -p "$node_dir"
    cp "$src"/package*.json "$src"/*.js "$src"/*.mjs "$node_dir/"
    ln -s "$npm_cache/node_modules" "$node_dir/node_modules"
fi

declare -A rps p50 p99 non2xx errors total runs_rps
ran=()
bad=0
bench_bearer="" # the bearer token of the next bench (req.lua reads BEARER)
bench_drain=""  # sqlite, pg or fastify: measure the invoice backlog after each run

# parse_wrk FILE: "rps p50 p99 non2xx errors requests" of one wrk run.
parse_wrk() {
    local out=$1 r l50 l99 n e t
    r=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [[ -n $r ]] || die "could not read wrk's output: $(cat "$out")"
    l50=$(to_ms "$(awk '$1 == "50%" { print $2; exit }' "$out")")
    l99=$(to_ms "$(awk '$1 == "99%" { print $2; exit }' "$out")")
    n=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    e=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    t=$(awk '/ requests in / { print $1; exit }' "$out")
    echo "$r $l50 $l99 ${n:-0} ${e:-0} ${t:-0}"
}

backlog_rows=() # "scenario run backlog sampled unpublished pending seconds"

# bench NAME URL [wrk options...] [-- script arguments...]: one warm-up run,
# then RUNS measured runs; the figures are their medians (requests, non-2xx
# and errors their sums). Reads bench_bearer and bench_drain, and resets them.
bench() {
    local name=$1 url=$2 out limit r t0 drained
    shift 2
    local opts=() args=()
    while (($# > 0)); do
        if [[ $1 == -- ]]; then
            args=("$@")
            break
        fi
        opts+=("$1")
        shift
    done
    local wrk=(env BEARER="$bench_bearer" wrk -t"$THREADS" -c"$CONNECTIONS" "${opts[@]}")
    local l_rps=() l_p50=() l_p99=() l_n=() l_e=() l_t=() v
    settle
    if [[ $WARMUP != 0 ]]; then
        echo "  $name: warm-up $WARMUP"
        limit=$(($(to_seconds "$WARMUP") + 30))
        run_waiting timeout "$limit" "${wrk[@]}" -d"$WARMUP" "$url" "${args[@]}" >/dev/null
        [[ -z $bench_drain ]] || drain_quietly "$bench_drain"
    fi
    echo "  $name: $RUNS x $DURATION, $CONNECTIONS connections, $THREADS threads -> $url${args[*]:+ ${args[*]:1}}"
    limit=$(($(to_seconds "$DURATION") + 30))
    for ((r = 1; r <= RUNS; r++)); do
        out="$tmp/$name.$r.wrk"
        settle
        uses_pg "$name" && pg_checkpoint
        run_waiting timeout "$limit" "${wrk[@]}" -d"$DURATION" --latency "$url" "${args[@]}" >"$out"
        t0=$EPOCHREALTIME
        [[ -z $VERBOSE ]] || sed 's/^/    | /' "$out"
        read -r -a v < <(parse_wrk "$out")
        l_rps+=("${v[0]}") l_p50+=("${v[1]}") l_p99+=("${v[2]}") l_n+=("${v[3]}") l_e+=("${v[4]}") l_t+=("${v[5]}")
        if [[ -n $bench_drain ]]; then
            drained=$(drain "$bench_drain" "$t0")
            backlog_rows+=("$name $r $drained")
            echo "    run $r: ${v[0]} req/s; $(awk '{ printf "%s orders without an invoice %s s after the load, all invoiced after %s s", $1, $2, $5 }' <<<"$drained")"
        elif ((RUNS > 1)); then
            echo "    run $r: ${v[0]} req/s"
        fi
    done
    rps[$name]=$(median "${l_rps[@]}")
    p50[$name]=$(median "${l_p50[@]}")
    p99[$name]=$(median "${l_p99[@]}")
    non2xx[$name]=$(sum "${l_n[@]}")
    errors[$name]=$(sum "${l_e[@]}")
    total[$name]=$(sum "${l_t[@]}")
    runs_rps[$name]="${l_rps[*]}"
    ran+=("$name")
    bench_bearer=""
    bench_drain=""
}

# bench_pgbench NAME: pgbench-insert, RUNS runs after a warm-up, medians.
# Requests/s is pgbench's tps without the initial connection time; p50/p99
# come from its per-transaction log (-l: each transaction's latency in
# microseconds, as the client saw it); non-2xx is its failed transactions,
# errors its aborted clients.
pg_latency_avg=()
bench_pgbench() {
    local name=$1 out log="$tmp/$1.log" limit rc r
    local pgbench=("$PGBENCH" -n -M prepared -c "$pg_pool" -j "$pg_threads"
        -f "$repo/bench/pgbench_insert.sql" -D "user_id=$BENCH_USER_ID")
    local l_rps=() l_p50=() l_p99=() l_n=() l_e=() l_t=() tps n e a50 a99
    settle
    if [[ $WARMUP != 0 ]]; then
        echo "  $name: warm-up $WARMUP"
        limit=$(($(to_seconds "$WARMUP") + 30))
        run_waiting timeout "$limit" "${pgbench[@]}" -T "$(to_seconds "$WARMUP")" "$pg_url" >"$tmp/$name.warmup" 2>&1 ||
            die "pgbench's warm-up failed: $(tail -n 20 "$tmp/$name.warmup")"
    fi
    echo "  $name: $RUNS x $DURATION, pgbench -c $pg_pool -j $pg_threads -M prepared -> $pg_db"
    limit=$(($(to_seconds "$DURATION") + 30))
    for ((r = 1; r <= RUNS; r++)); do
        out="$tmp/$name.$r.pgbench"
        pg_checkpoint
        rm -rf "$log"
        mkdir -p "$log"
        rc=0
        run_waiting timeout "$limit" "${pgbench[@]}" -T "$(to_seconds "$DURATION")" \
            -l --log-prefix="$log/tx" "$pg_url" >"$out" 2>&1 || rc=$?
        [[ -z $VERBOSE ]] || sed 's/^/    | /' "$out"

        # "tps = N (without initial connection time)"; before 14, "(excluding connections establishing)".
        tps=$(awk '/^tps = / && !/including/ { printf "%.2f", $3; exit }' "$out")
        [[ -n $tps ]] || die "could not read pgbench's output for $name (exit $rc): $(cat "$out")"
        l_rps+=("$tps")
        l_t+=("$(awk -F ': ' '/^number of transactions actually processed:/ { split($2, a, "/"); print a[1]; exit }' "$out")")
        n=$(awk '/^number of failed transactions:/ { print $5; exit }' "$out")
        l_n+=("${n:-0}")
        e=$(grep -c 'aborted' "$out" || true)
        if ((rc != 0 && e == 0)); then
            e=1
        fi
        l_e+=("$e")
        pg_latency_avg+=("$(awk '/^latency average = / { print $4, $5; exit }' "$out")")
        # Nearest-rank percentiles of the logged latencies (field 3, microseconds;
        # failed transactions log a word there instead).
        read -r a50 a99 < <(cat "$log"/tx.* 2>/dev/null |
            awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n |
            awk '{ v[NR] = $1 } END {
                if (NR == 0) { print "- -"; exit }
                i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
                i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
                printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')
        l_p50+=("$a50") l_p99+=("$a99")
        ((RUNS == 1)) || echo "    run $r: $tps tps"
    done
    rm -rf "$log"
    rps[$name]=$(median "${l_rps[@]}")
    p50[$name]=$(median "${l_p50[@]}")
    p99[$name]=$(median "${l_p99[@]}")
    non2xx[$name]=$(sum "${l_n[@]}")
    errors[$name]=$(sum "${l_e[@]}")
    total[$name]=$(sum "${l_t[@]}")
    runs_rps[$name]="${l_rps[*]}"
    ran+=("$name")
}

# seed NAME URL [BEARER]: GET_IDS orders created just before NAME with the
# peers' tools/seed.py, their ids in $tmp/NAME.ids.
seed() {
    local name=$1 url=$2 bearer=${3:-}
    run_waiting env BEARER="$bearer" timeout 600 python3 "$seed_py" "$url" "$GET_IDS" "$body_json" "$tmp/$name.ids" \
        >"$tmp/$name.seed" 2>&1 || die "seeding $GET_IDS orders at $url failed: $(tail -n 5 "$tmp/$name.seed")"
    echo "  $name: $(cat "$tmp/$name.seed")"
}

# bench_lag NAME LABEL TOOL URL KIND [BEARER]: for each of LAG_RATES, LAG_ORDERS
# orders at that rate with the peers' lag tool; then the time from each 201
# to its invoice, and invoice created_at - order created_at.
lag_rows=() # "label|orders|rate|sent ms|post p50|post p99|lag p50|lag p99|lag max|negative|db p50|db p99|invoices"
lag_ran=""
bench_lag() {
    local name=$1 label=$2 tool=$3 url=$4 kind=$5 bearer=${6:-} rate out log rc row
    for rate in $LAG_RATES; do
        drain_quietly "$kind"
        uses_pg "$name" && pg_checkpoint
        out="$tmp/$name-$rate.json"
        log="$tmp/$name-$rate.log"
        echo "  $name: $LAG_ORDERS orders at $rate/s -> $url ($tool)"
        rc=0
        run_waiting env ORDERS_URL="$url" DATABASE_URL="$pg_url" BEARER="$bearer" \
            timeout $((LAG_ORDERS / rate + 200)) node "$node_dir/$tool" "$LAG_ORDERS" "$rate" "$out" \
            >"$log" 2>&1 || rc=$?
        [[ -z $VERBOSE ]] || sed 's/^/    | /' "$log"
        if row=$(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
p, l, d = r["post_latency_ms"], r["lag_after_201_ms"], r["lag_db_order_to_invoice_ms"]
print("|".join(str(x) for x in (sys.argv[2], r["orders"], r["rate_per_s"], r["burst_ms"], p["p50"], p["p99"],
      l["p50"], l["p99"], l["max"], l["negative"], d["p50"], d["p99"], r["invoices_found"])))' "$out" "$label" 2>"$tmp/lag-parse.err"); then
            lag_rows+=("$row")
            if ((rc != 0)); then
                echo "  warning: $name at $rate/s: not every order got its invoice within the tool's 120 s (exit $rc)" >&2
                bad=1
            fi
        else
            echo "  warning: $name at $rate/s failed (exit $rc): $(tail -n 5 "$log") $(cat "$tmp/lag-parse.err")" >&2
            lag_rows+=("$label|$LAG_ORDERS|$rate|failed|-|-|-|-|-|-|-|-|-")
            bad=1
        fi
    done
    lag_ran=1
}

# start_stageworks KIND ENV...: a stageworks process (KIND sqlite or pg) with
# these variables, on free loopback ports; signs the bench user in, then
# creates an order and checks that it reads back. Sets sw_addr[KIND],
# sw_admin[KIND], token[KIND] and order_id[KIND].
declare -A sw_addr sw_admin order_id token token_at
ADMIN_TOKEN=${STAGEWORKS__ADMIN__TOKEN:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}
# sign_in KIND: a fresh access token for the bench user (tokens live 15 minutes).
sign_in() {
    local kind=$1 login
    login=$(curl -sS --max-time 10 -X POST -H 'content-type: application/json' \
        -d "{\"email\": \"$BENCH_EMAIL\", \"password\": \"$BENCH_PASSWORD\"}" \
        "http://${sw_addr[$kind]}/api/v1/auth/login")
    token[$kind]=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["access_token"])' "$login") ||
        die "login ($kind) failed: $login"
    token_at[$kind]=$SECONDS
}
# fresh_token KIND: signs in again when the token is older than 10 minutes.
fresh_token() {
    if ((SECONDS - ${token_at[$1]} > 600)); then
        sign_in "$1"
    fi
}
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
        STAGEWORKS__ADMIN__TOKEN="$ADMIN_TOKEN" \
        STAGEWORKS__LOG__LEVEL=warn \
        STAGEWORKS__RATE_LIMIT__ENABLED="${STAGEWORKS__RATE_LIMIT__ENABLED:-false}" \
        "$STAGEWORKS_BIN" serve --config "$CONFIG" >"$log" 2>&1 &
    pids+=($!)
    # /ready: the orders workers are up (on PostgreSQL, its schema migrated).
    wait_ready "stageworks ($kind)" "${pids[-1]}" "http://$addr/ready" "$log"
    echo "stageworks ($kind) on $addr (admin $admin, data $tmp/data-$kind)"
    sw_addr[$kind]=$addr
    sw_admin[$kind]=$admin
    if [[ $kind == sqlite ]]; then
        add_server sqlite "stageworks (SQLite)" "${pids[-1]}"
    else
        add_server pg "stageworks (PostgreSQL)" "${pids[-1]}"
    fi

    # A signed-in bench user: every order request carries its access token.
    curl -sS --max-time 10 -o /dev/null -X POST -H 'content-type: application/json' \
        -d "{\"email\": \"$BENCH_EMAIL\", \"password\": \"$BENCH_PASSWORD\", \"name\": \"Bench\"}" \
        "http://$addr/api/v1/auth/register"
    sign_in "$kind"

    # An order made once beforehand, read back (a 503 while a worker is still
    # starting is retried for 30 s); get-order reads it when the peers' tools
    # are not there.
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
    code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
        -H "authorization: Bearer $ADMIN_TOKEN" "http://$admin/admin/events")
    [[ $code == 200 ]] || die "GET /admin/events ($kind) answered $code"
    echo "order ${order_id[$kind]} created and read back; /admin/events answers"
}

# start_axum KIND DATABASE_URL: the axum-sqlx peer (KIND sqlite or pg).
declare -A axum_addr
start_axum() {
    local kind=$1 url=$2 port log="$tmp/axum-$1.log" pool=10
    [[ $kind == sqlite ]] || pool=$pg_pool
    port=$(free_port)
    env DATABASE_URL="$url" PORT="$port" PG_POOL="$pool" "$axum_bin" >"$log" 2>&1 &
    pids+=($!)
    wait_ready "axum-sqlx ($kind)" "${pids[-1]}" "http://127.0.0.1:$port/live" "$log"
    axum_addr[$kind]="127.0.0.1:$port"
    if [[ $kind == sqlite ]]; then
        add_server axum-sqlite "axum-sqlx (SQLite)" "${pids[-1]}"
    else
        add_server axum-pg "axum-sqlx (PostgreSQL)" "${pids[-1]}"
    fi
    echo "axum-sqlx ($kind) on ${axum_addr[$kind]} (pool of $pool connections)"
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
    if [[ -x $STAGEWORKS_BIN ]]; then
        config=$(effective_config "${pg_env[@]}")
        read -r pg_pool pg_workers _ <<<"$config"
    else # only peers: no stageworks binary to ask
        pg_pool=${STAGEWORKS__DATABASE__MAX_CONNECTIONS:-10}
    fi
    pg_threads=$((THREADS < pg_pool ? THREADS : pg_pool))
    echo "bench database $pg_db (dropped on exit; the peers' tables live there too)"
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

# --- RabbitMQ, for the Fastify stack ---------------------------------------------------
if [[ -n $want_fastify ]]; then
    read -r broker_host broker_port < <(python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(p.hostname or "127.0.0.1", p.port or 5672)' "$BROKER_URL")
    broker_up() { timeout 3 bash -c "exec 3<>/dev/tcp/$broker_host/$broker_port" 2>/dev/null; }
    if ! broker_up; then
        # Started as .ci/run starts PostgreSQL and Redis: left running afterwards.
        if [[ $broker_host != 127.0.0.1 && $broker_host != localhost ]] || ! command -v rabbitmq-server >/dev/null 2>&1; then
            die "RabbitMQ at $BROKER_URL does not answer (set BROKER_URL, or leave out the peer-fastify-* scenarios)"
        fi
        echo "starting RabbitMQ (rabbitmq-server -detached; it stays running)"
        timeout 60 rabbitmq-server -detached >/dev/null 2>&1 || die "rabbitmq-server -detached failed"
        for ((i = 0; i < 120; i++)); do
            broker_up && break
            sleep 0.5
        done
        broker_up || die "RabbitMQ did not come up on $broker_host:$broker_port within 60 s"
    fi
    # A queue left by an interrupted run would feed its messages to this run's consumer.
    queue_created=1
    stale=$(amqp_delete_queue) || die "RabbitMQ at $BROKER_URL: could not delete the queue peer_orders"
    ((stale == 0)) || echo "deleted the stale RabbitMQ queue peer_orders ($stale messages)"
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
    add_server hello hyper-hello "${pids[-1]}"
    echo "hyper-hello on $hello_addr"
fi
[[ -z $want_sqlite ]] || start_stageworks sqlite "${sqlite_env[@]}"
[[ -z $want_pg ]] || start_stageworks pg "${pg_env[@]}"
[[ -z $want_axum_sqlite ]] || start_axum sqlite "sqlite:$tmp/axum-peer.db"
[[ -z $want_axum_pg ]] || start_axum pg "$pg_url"
if [[ -n $want_fastify ]]; then
    fastify_env=(DATABASE_URL="$pg_url" BROKER_URL="$BROKER_URL" PG_POOL="$pg_pool")
    invoices_port=$(free_port)
    env "${fastify_env[@]}" PORT="$invoices_port" node "$node_dir/invoices.js" >"$tmp/fastify-invoices.log" 2>&1 &
    pids+=($!)
    invoices_pid=$!
    wait_ready "invoices.js" "$invoices_pid" "http://127.0.0.1:$invoices_port/health" "$tmp/fastify-invoices.log"
    fastify_port=$(free_port)
    env "${fastify_env[@]}" PORT="$fastify_port" node "$node_dir/orders.js" >"$tmp/fastify-orders.log" 2>&1 &
    pids+=($!)
    wait_ready "orders.js" "${pids[-1]}" "http://127.0.0.1:$fastify_port/health" "$tmp/fastify-orders.log"
    fastify_addr="127.0.0.1:$fastify_port"
    add_server fastify "Fastify stack (orders.js + invoices.js)" "${pids[-1]}" "$invoices_pid"
    echo "Fastify stack: orders.js on $fastify_addr, invoices.js on 127.0.0.1:$invoices_port (pools $pg_pool, RabbitMQ $broker_host:$broker_port)"
fi

# --- scenarios --------------------------------------------------------------------------
echo
echo "machine: $(nproc) cores, $(awk -F ': ' '/^model name/ { print $2; exit }' /proc/cpuinfo),"\
    "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $(rustc --version)"
echo "wrk: $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }'); $RUNS runs of $DURATION (median), $CONNECTIONS connections, $THREADS threads, warm-up $WARMUP"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
if [[ $sw_client == peers ]]; then
    echo "client: $req_lua, body $(cat "$body_json"); GET over $GET_IDS orders seeded just before ($seed_py)"
else
    echo "client: bench/create_order.lua; get-order reads one order"
fi
if [[ -n $want_sqlite ]]; then
    echo "stageworks on SQLite: $sqlite_workers orders workers, $sqlite_readers reader connections + 1 writer"
fi
if [[ -n $want_postgres ]]; then
    echo "PostgreSQL: $(pg_sql "$pg_url" -At -c 'SHOW server_version'), $(pg_sql "$pg_url" -At \
        -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
            WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'wal_level')")"
    [[ -z $want_pg ]] || echo "stageworks on PostgreSQL: $pg_workers orders workers, a pool of $pg_pool connections"
    [[ -z $want_pgbench ]] || echo "pgbench: $("$PGBENCH" --version | awk '{ print $3 }'), -c $pg_pool -j $pg_threads -M prepared"
fi
if [[ -n $want_peers ]]; then
    echo "peers: $PEERS_DIR$([[ -z $want_axum ]] || echo "; axum-sqlx $axum_bin")$([[ -z $want_node ]] || echo "; node $(node --version)")"
fi
echo
for s in $SCENARIOS; do
    bench_bearer=""
    bench_drain=""
    case $s in
        hello) bench hello "http://$hello_addr/" ;;
        live) bench live "http://${sw_addr[sqlite]}/live" ;;
        login) bench login "http://${sw_addr[sqlite]}/api/v1/auth/login" -s "$repo/bench/login.lua" ;;
        create-order | create-order-pg)
            kind=sqlite
            [[ $s == create-order ]] || kind=pg
            fresh_token "$kind"
            bench_drain=$kind
            if [[ $sw_client == peers ]]; then
                bench_bearer=${token[$kind]}
                bench "$s" "http://${sw_addr[$kind]}" -s "$req_lua" -- post /api/v1/orders "$body_json"
            else
                bench "$s" "http://${sw_addr[$kind]}/api/v1/orders" -s "$repo/bench/create_order.lua" -H "authorization: Bearer ${token[$kind]}"
            fi
            ;;
        get-order | get-order-pg)
            kind=sqlite
            [[ $s == get-order ]] || kind=pg
            fresh_token "$kind"
            if [[ $sw_client == peers ]]; then
                seed "$s" "http://${sw_addr[$kind]}/api/v1/orders" "${token[$kind]}"
                drain_quietly "$kind"
                bench_bearer=${token[$kind]}
                bench "$s" "http://${sw_addr[$kind]}" -s "$req_lua" -- idsp /api/v1/orders/ "$tmp/$s.ids"
            else
                bench "$s" "http://${sw_addr[$kind]}/api/v1/orders/${order_id[$kind]}" -H "authorization: Bearer ${token[$kind]}"
            fi
            ;;
        pgbench-insert) bench_pgbench pgbench-insert ;;
        peer-axum-sqlite-create) bench "$s" "http://${axum_addr[sqlite]}" -s "$req_lua" -- post /orders "$body_json" ;;
        peer-axum-pg-create) bench "$s" "http://${axum_addr[pg]}" -s "$req_lua" -- post /orders "$body_json" ;;
        peer-axum-sqlite-get | peer-axum-pg-get)
            kind=sqlite
            [[ $s == peer-axum-sqlite-get ]] || kind=pg
            seed "$s" "http://${axum_addr[$kind]}/orders"
            bench "$s" "http://${axum_addr[$kind]}" -s "$req_lua" -- ids "$tmp/$s.ids"
            ;;
        peer-fastify-create)
            bench_drain=fastify
            bench "$s" "http://$fastify_addr" -s "$req_lua" -- post /orders "$body_json"
            ;;
        peer-fastify-get)
            seed "$s" "http://$fastify_addr/orders"
            drain_quietly fastify
            bench "$s" "http://$fastify_addr" -s "$req_lua" -- ids "$tmp/$s.ids"
            ;;
        lag-pg)
            fresh_token pg
            bench_lag "$s" "stageworks (PostgreSQL)" stageworks_lag.mjs "http://${sw_addr[pg]}/api/v1/orders" pg "${token[pg]}"
            ;;
        peer-fastify-lag)
            bench_lag "$s" "Fastify + RabbitMQ" lag.mjs "http://$fastify_addr/orders" fastify
            ;;
    esac
    sample_rss "$(server_for "$s")"
done

# --- tables -----------------------------------------------------------------------------
echo
row() { printf '| %-23s | %12s | %10s | %10s | %10s | %8s | %8s |\n' "$@"; }
if ((${#ran[@]} > 0)); then
    row scenario "requests/s" "p50 (ms)" "p99 (ms)" requests non-2xx errors
    row ----------------------- ------------ ---------- ---------- ---------- -------- --------
    for s in "${ran[@]}"; do
        row "$s" "${rps[$s]}" "${p50[$s]}" "${p99[$s]}" "${total[$s]}" "${non2xx[$s]}" "${errors[$s]}"
    done
    if ((RUNS > 1)); then
        echo "medians of $RUNS runs (requests, non-2xx and errors: sums); requests/s of each run:"
        for s in "${ran[@]}"; do
            printf '  %-23s %s\n' "$s" "${runs_rps[$s]}"
        done
    fi
fi
if [[ -n ${rps[pgbench-insert]:-} ]]; then
    echo "pgbench-insert: requests/s is pgbench's tps (without connection time); p50/p99 from its"
    echo "per-transaction log; non-2xx = failed transactions, errors = aborted clients;" \
        "pgbench's own latency average = $(
            IFS=,
            echo "${pg_latency_avg[*]}"
        )"
fi

if ((${#backlog_rows[@]} > 0)); then
    echo
    echo "events in flight at the end of each measured create run: orders without an invoice"
    echo "at the first sample after the load stopped (taken \"at (s)\" after it), and the seconds"
    echo "until every one had its invoice (stageworks: from /admin/events, the orders outbox's"
    echo "unpublished events and billing's pending ones; Fastify: peer_orders rows without a"
    echo "peer_invoices row, from the bench database):"
    brow() { printf '| %-23s | %3s | %18s | %6s | %11s | %9s | %17s |\n' "$@"; }
    brow scenario run "no invoice at end" "at (s)" unpublished pending "all invoiced (s)"
    brow ----------------------- --- ------------------ ------ ----------- --------- -----------------
    for r in "${backlog_rows[@]}"; do
        # shellcheck disable=SC2086 # "scenario run backlog sampled unpublished pending seconds"
        brow $r
    done
fi

if [[ -n $lag_ran ]]; then
    echo
    echo "order -> invoice lag (the peers' lag tools: an open-loop burst of orders at a fixed rate;"
    echo "201 -> invoice: invoice created_at minus the time the 201 reached the client;"
    echo "neg: invoices stamped before their 201 reached the client; db: invoice created_at minus"
    echo "order created_at; all in ms):"
    lrow() { printf '| %-23s | %6s | %6s | %9s | %8s | %8s | %12s | %8s | %8s | %5s | %8s | %8s | %8s |\n' "$@"; }
    lrow system orders rate/s "sent (ms)" "POST p50" "POST p99" "201->inv p50" "p99" max neg "db p50" "db p99" invoices
    lrow ----------------------- ------ ------ --------- -------- -------- ------------ -------- -------- ----- -------- -------- --------
    for r in "${lag_rows[@]}"; do
        IFS='|' read -r -a f <<<"$r"
        lrow "${f[@]}"
    done
fi

if ((${#servers[@]} > 0)); then
    echo
    echo "memory of the servers (VmRSS after the last load on each, VmHWM the peak; /proc/PID/status):"
    mrow() { printf '| %-40s | %13s | %13s | %13s |\n' "$@"; }
    mrow server "RSS (MiB)" "peak (MiB)" pids
    mrow ---------------------------------------- ------------- ------------- -------------
    for key in "${servers[@]}"; do
        if [[ -n ${rss_kb[$key]:-} ]]; then
            mrow "${server_label[$key]}" "$(awk -v k="${rss_kb[$key]}" 'BEGIN { printf "%.1f", k / 1024 }')" \
                "$(awk -v k="${hwm_kb[$key]}" 'BEGIN { printf "%.1f", k / 1024 }')" "${server_pids[$key]}"
        fi
    done
fi

# ratio A B NOTE: A's requests/s over B's.
ratio() {
    local a=$1 b=$2 note=$3
    if [[ -n ${rps[$a]:-} && -n ${rps[$b]:-} ]]; then
        awk -v x="${rps[$a]}" -v y="${rps[$b]}" -v a="$a" -v b="$b" -v note="$note" \
            'BEGIN { if (y > 0) printf "%-15s / %-23s = %.2f (%s)\n", a, b, x / y, sprintf(note, 100 * x / y) }'
        # The same, as a line of bench/all.sh's table.
        awk -v x="${rps[$a]}" -v y="${rps[$b]}" -v a="$a" -v b="$b" \
            'BEGIN { if (y > 0) printf "headline\t%s\trequests/s\t%s\t%s %s\t%.2f\n", a, x, b, y, x / y }'
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
ratio create-order peer-fastify-create "%.0f%% of the Fastify + RabbitMQ stack's creates (stageworks on SQLite, Fastify on PostgreSQL)"
ratio create-order-pg peer-fastify-create "%.0f%% of the Fastify + RabbitMQ stack's creates, both on PostgreSQL"
ratio create-order peer-axum-sqlite-create "%.0f%% of plain axum + sqlx's creates on SQLite (no events, no invoice)"
ratio create-order-pg peer-axum-pg-create "%.0f%% of plain axum + sqlx's creates on PostgreSQL (no events, no invoice)"
ratio get-order peer-axum-sqlite-get "%.0f%% of plain axum + sqlx's reads on SQLite"
ratio get-order-pg peer-axum-pg-get "%.0f%% of plain axum + sqlx's reads on PostgreSQL"
ratio get-order-pg peer-fastify-get "%.0f%% of the Fastify stack's reads, both on PostgreSQL"

for s in "${ran[@]}"; do
    ((non2xx[$s] + errors[$s] == 0)) || bad=1
done
if ((bad)); then
    echo
    echo "warning: some requests failed (non-2xx, socket errors, failed transactions, aborted clients or lag runs): those figures are not comparable." >&2
fi
