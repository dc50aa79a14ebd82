#!/usr/bin/env bash
# Stageworks against a bare hyper server (bench/hello), on loopback, with wrk.
#
#   bench/run.sh                         # all scenarios, 10 s each
#   DURATION=30s CONNECTIONS=64 bench/run.sh
#   SCENARIOS=hello bench/run.sh         # only the bare server
#
# Scenarios (each one run of DURATION after a WARMUP run):
#   hello            GET /                    on hyper-hello (the ceiling)
#   live             GET /live                on stageworks (SQLite)
#   create-order     POST /api/v1/orders      on stageworks (SQLite; bench/create_order.lua)
#   get-order        GET /api/v1/orders/{id}  on stageworks (SQLite), an order made with curl
#   create-order-pg  POST /api/v1/orders      on a second stageworks on PostgreSQL
#   get-order-pg     GET /api/v1/orders/{id}  on that one
#   pgbench-insert   pgbench -M prepared, bench/pgbench_insert.sql: the same
#                    single-row INSERT, with -c = stageworks' PostgreSQL pool size
#
# Environment: DURATION (10s), CONNECTIONS (32), THREADS (2; also pgbench -j),
# WARMUP (2s, 0 to skip), SCENARIOS ("hello live create-order get-order
# create-order-pg get-order-pg pgbench-insert"), CONFIG (config.toml),
# BENCH_USER_ID (a fixed uuid), SKIP_BUILD (1 to use the binaries already
# built), STAGEWORKS_BIN (another stageworks binary to measure; default the
# release build), VERBOSE (1 to print wrk's and pgbench's output), PG_ADMIN_URL
# (postgres://postgres@127.0.0.1:5432/test: where the bench database is
# created and dropped), PGBENCH (the pgbench binary; default the newest
# /usr/lib/postgresql/*/bin/pgbench, else pgbench on PATH).
# Any STAGEWORKS__* variable set by the caller reaches stageworks as well
# (STAGEWORKS__DATABASE__MAX_CONNECTIONS: the pool size, and pgbench's -c).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
SCENARIOS=${SCENARIOS:-hello live create-order get-order}
CONFIG=${CONFIG:-$repo/config.toml}
BENCH_USER_ID=${BENCH_USER_ID:-0190a5c4-6a1e-7c3b-9f2d-5b8e4a7d1c20}
SKIP_BUILD=${SKIP_BUILD:-}
VERBOSE=${VERBOSE:-}
export BENCH_USER_ID

die() {
    echo "bench: $*" >&2
    exit 1
}

# --- processes and temp dir, cleaned up however the script ends -----------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/stageworks-bench.XXXXXX")
pids=()    # the servers
current="" # the wrk run in progress
cleanup() {
    local pid i
    if [[ -n $current ]]; then
        kill "$current" 2>/dev/null || true
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
want_stageworks=""
for s in $SCENARIOS; do
    case $s in
        hello) want_hello=1 ;;
        live | create-order | get-order) want_stageworks=1 ;;
        *) die "unknown scenario '$s' (hello, live, create-order, get-order)" ;;
    esac
done

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

if [[ -n $want_stageworks ]]; then
    [[ -f $CONFIG ]] || die "no config file at $CONFIG"
    sw_addr="127.0.0.1:$(free_port)"
    admin_addr="127.0.0.1:$(free_port)"
    [[ $sw_addr != "$admin_addr" ]] || admin_addr="127.0.0.1:$(free_port)"
    mkdir -p "$tmp/data"
    STAGEWORKS__DATA_DIR="$tmp/data" \
        STAGEWORKS__SERVER__LISTEN="$sw_addr" \
        STAGEWORKS__ADMIN__LISTEN="$admin_addr" \
        STAGEWORKS__LOG__LEVEL=warn \
        "$STAGEWORKS_BIN" serve --config "$CONFIG" >"$tmp/stageworks.log" 2>&1 &
    pids+=($!)
    wait_ready stageworks "${pids[-1]}" "http://$sw_addr/live" "$tmp/stageworks.log"
    echo "stageworks on $sw_addr (admin $admin_addr, data $tmp/data)"

    # The order that get-order reads, made once beforehand.
    created=$(curl -sS --max-time 10 -w '\n%{http_code}' -X POST \
        -H 'content-type: application/json' -H "x-user-id: $BENCH_USER_ID" \
        -d '{"amount": 5000, "currency": "USD"}' "http://$sw_addr/api/v1/orders")
    code=${created##*$'\n'}
    [[ $code == 201 ]] || die "POST /api/v1/orders answered $code: ${created%$'\n'*}"
    order_id=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "${created%$'\n'*}")
    code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
        -H "x-user-id: $BENCH_USER_ID" "http://$sw_addr/api/v1/orders/$order_id")
    [[ $code == 200 ]] || die "GET /api/v1/orders/$order_id answered $code"
    echo "order $order_id created for get-order"
fi

# --- scenarios --------------------------------------------------------------------------
echo
echo "machine: $(nproc) cores, $(awk -F ': ' '/^model name/ { print $2; exit }' /proc/cpuinfo),"\
    "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $(rustc --version)"
echo "wrk: $(wrk --version 2>&1 | awk 'NR == 1 { print $2 }'); duration $DURATION, $CONNECTIONS connections, $THREADS threads, warm-up $WARMUP"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
echo
for s in $SCENARIOS; do
    case $s in
        hello) bench hello "http://$hello_addr/" ;;
        live) bench live "http://$sw_addr/live" ;;
        create-order) bench create-order "http://$sw_addr/api/v1/orders" -s "$repo/bench/create_order.lua" ;;
        get-order) bench get-order "http://$sw_addr/api/v1/orders/$order_id" -H "x-user-id: $BENCH_USER_ID" ;;
    esac
done

# --- table ------------------------------------------------------------------------------
echo
row() { printf '| %-13s | %12s | %10s | %10s | %10s | %8s | %8s |\n' "$@"; }
row scenario "requests/s" "p50 (ms)" "p99 (ms)" requests non-2xx errors
row ------------- ------------ ---------- ---------- ---------- -------- --------
for s in "${ran[@]}"; do
    row "$s" "${rps[$s]}" "${p50[$s]}" "${p99[$s]}" "${total[$s]}" "${non2xx[$s]}" "${errors[$s]}"
done

ratio() {
    local a=$1 b=$2
    if [[ -n ${rps[$a]:-} && -n ${rps[$b]:-} ]]; then
        awk -v x="${rps[$a]}" -v y="${rps[$b]}" -v a="$a" -v b="$b" \
            'BEGIN { if (y > 0) printf "%-13s / %-5s = %.2f (%.0f%% of the bare server'"'"'s requests/s)\n", a, b, x / y, 100 * x / y }'
    fi
}
echo
ratio live hello
ratio get-order hello
ratio create-order hello

bad=0
for s in "${ran[@]}"; do
    ((non2xx[$s] + errors[$s] == 0)) || bad=1
done
if ((bad)); then
    echo
    echo "warning: some requests failed (non-2xx or socket errors): those figures are not comparable." >&2
fi
