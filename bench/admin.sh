#!/usr/bin/env bash
# What the admin page costs (issue 16): throughput of GET /api/v1/orders/{id}
# and POST /api/v1/orders with the page's live stream closed and open (curl
# clients kept connected to /admin/stream, as the page's reader is), then the
# resident memory the history takes once its rings are full.
#
#   bench/admin.sh                                   # DURATION=10s per run, RUNS=3, medians
#   SKIP_BUILD=1 DURATION=2s RUNS=1 WARMUP=0 bench/admin.sh   # a smoke run
#
# Environment: DURATION (10s), RUNS (3), WARMUP (2s, 0 to skip), CONNECTIONS
# (64), THREADS (2), STREAMS (1: stream clients in the "open" runs), FILL_EVERY
# (10ms: the history interval of the memory run, so the 720 samples fill in
# seconds), SAMPLES (720), SKIP_BUILD, STAGEWORKS_BIN (default the release
# build), CONFIG (config.toml), VERBOSE (1: wrk's output).
#
# The memory run: two stageworks with admin.history_every=FILL_EVERY and the
# same traffic (a sign-in, an order), one keeping 2 samples, one SAMPLES;
# each is read (RSS, series count) once its rings are full. A ring holds a
# fixed number of samples whatever the interval, so full rings of 720 are
# what one hour at the default 5 s holds: the script prints series × samples
# × 4 B (+ 8 B per timestamp) for 720 samples at 5 s beside the measured
# difference.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
STREAMS=${STREAMS:-1}
FILL_EVERY=${FILL_EVERY:-10ms}
SAMPLES=${SAMPLES:-720}
CONFIG=${CONFIG:-$repo/config.toml}
VERBOSE=${VERBOSE:-}
ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
EMAIL=bench-admin@example.com
PASSWORD=bench-password-long-enough

die() { echo "error: $*" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done
if ! command -v wrk >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || die "wrk is missing: apt-get install wrk"
    echo "installing wrk (Debian)"
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
if [[ -z ${STAGEWORKS_BIN:-} ]]; then
    [[ -n ${SKIP_BUILD:-} ]] || cargo build --release --bin stageworks
    target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    STAGEWORKS_BIN="$target_dir/release/stageworks"
fi
[[ -x $STAGEWORKS_BIN ]] || die "no binary at $STAGEWORKS_BIN"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME ENV...: a stageworks on free ports; sets addr, admin, pid.
start() {
    local name=$1
    shift
    addr="127.0.0.1:$(free_port)"
    admin="127.0.0.1:$(free_port)"
    mkdir -p "$tmp/data-$name"
    env "$@" \
        STAGEWORKS__DATA_DIR="$tmp/data-$name" \
        STAGEWORKS__SERVER__LISTEN="$addr" \
        STAGEWORKS__ADMIN__LISTEN="$admin" \
        STAGEWORKS__ADMIN__TOKEN="$ADMIN_TOKEN" \
        STAGEWORKS__LOG__LEVEL=warn \
        STAGEWORKS__RATE_LIMIT__ENABLED=false \
        "$STAGEWORKS_BIN" serve --config "$CONFIG" >"$tmp/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 300); do
        curl -sf "http://$addr/ready" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$tmp/$name.log" >&2; die "stageworks ($name) exited"; }
        sleep 0.1
    done
    die "stageworks ($name) never became ready"
}

# A signed-in user with one order: sets token and order.
sign_in() {
    curl -sS -o /dev/null -X POST -H 'content-type: application/json' \
        -d "{\"email\": \"$EMAIL\", \"password\": \"$PASSWORD\", \"name\": \"Bench\"}" \
        "http://$addr/api/v1/auth/register"
    token=$(curl -sS -X POST -H 'content-type: application/json' \
        -d "{\"email\": \"$EMAIL\", \"password\": \"$PASSWORD\"}" "http://$addr/api/v1/auth/login" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])') || die "login failed"
    order=$(curl -sS -X POST -H 'content-type: application/json' -H "authorization: Bearer $token" \
        -d '{"amount": 5000, "currency": "USD"}' "http://$addr/api/v1/orders" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])') || die "create failed"
}

# wrk_rps ARGS...: requests per second of one wrk run.
wrk_rps() {
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@")
    [[ -z $VERBOSE ]] || echo "$out" >&2
    awk '/^Requests\/sec/ {print $2}' <<<"$out"
}

median() { python3 -c 'import statistics, sys; print(f"{statistics.median(float(v) for v in sys.argv[1:]):.0f}")' "$@"; }

open_streams() {
    stream_pids=()
    for _ in $(seq 1 "$STREAMS"); do
        curl -sN -H "authorization: Bearer $ADMIN_TOKEN" "http://$admin/admin/stream" >"$tmp/stream-$RANDOM.txt" &
        stream_pids+=($!)
        pids+=($!)
    done
    sleep 1.5
    local open
    open=$(curl -sS -H "authorization: Bearer $ADMIN_TOKEN" "http://$admin/metrics" | awk '/^admin_streams_open / {print $2}')
    echo "    streams open (admin_streams_open): ${open:-0}"
}

close_streams() {
    for p in "${stream_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1.5
}

# settle: waits until the event pipeline has drained (every outbox published,
# nothing pending for any subscriber), so that a run does not pay for the
# audit and analytics work the previous create run left behind.
settle() {
    local started=$SECONDS
    while :; do
        curl -sS -H "authorization: Bearer $ADMIN_TOKEN" "http://$admin/admin/events" |
            python3 -c 'import json, sys
o = json.load(sys.stdin)
busy = sum(s["pending"] or 0 for s in o["subscribers"]) + sum(p["unpublished"] or 0 for p in o["producers"])
sys.exit(1 if busy else 0)' && return 0
        ((SECONDS - started < 600)) || die "the event pipeline did not drain in 10 minutes"
        sleep 1
    done
}

# run_once SCENARIO: requests per second of one run.
run_once() {
    if [[ $1 == get ]]; then
        wrk_rps -H "authorization: Bearer $token" "http://$addr/api/v1/orders/$order"
    else
        wrk_rps -s bench/create_order.lua -H "authorization: Bearer $token" "http://$addr/api/v1/orders"
    fi
}

# measure: each scenario RUNS times, closed and open in turn, in ABBA order
# (so both see the same database and the same machine on average), each run
# after the pipeline drained.
measure() {
    local scenario closed open run
    for scenario in get create; do
        closed=()
        open=()
        for run in $(seq 1 "$RUNS"); do
            # Closed first on odd runs, open first on even ones: a create
            # run grows the database the next one writes to, so a fixed
            # order would favour whichever mode always came first.
            if ((run % 2)); then
                settle
                closed+=("$(run_once "$scenario")")
            fi
            open_streams
            settle
            open+=("$(run_once "$scenario")")
            close_streams
            if ((run % 2 == 0)); then
                settle
                closed+=("$(run_once "$scenario")")
            fi
        done
        printf '  %-16s %-7s %10s req/s  (runs: %s)\n' "stream closed" "$scenario" "$(median "${closed[@]}")" "${closed[*]}"
        printf '  %-16s %-7s %10s req/s  (runs: %s)\n' "stream open" "$scenario" "$(median "${open[@]}")" "${open[*]}"
        python3 -c 'import statistics, sys
closed, opened = (statistics.median(float(v) for v in a.split()) for a in sys.argv[1:3])
print(f"  {sys.argv[3]}: open / closed = {opened / closed:.3f}")
print(f"headline\tadmin stream open, {sys.argv[3]}\trequests/s\t{opened:.0f}\tstream closed {closed:.0f}\t{opened / closed:.2f}")' "${closed[*]}" "${open[*]}" "$scenario"
    done
}

echo "== throughput: stream closed vs open ($STREAMS stream(s)), $RUNS x $DURATION, $CONNECTIONS connections"
start bench
sign_in
if [[ $WARMUP != 0 ]]; then
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -H "authorization: Bearer $token" "http://$addr/api/v1/orders/$order" >/dev/null
fi
measure
events=$(cat "$tmp"/stream-*.txt 2>/dev/null | grep -c '^event: snapshot' || true)
echo "  snapshots the stream client(s) received: $events"
kill "$pid" 2>/dev/null || true

echo "== memory: history filled at $FILL_EVERY, $SAMPLES samples vs 2 (the same traffic otherwise)"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
history() { curl -sS -H "authorization: Bearer $ADMIN_TOKEN" "http://$admin/admin/history"; }
figure() { python3 -c "import json, sys; h = json.load(sys.stdin); print($1)"; }
# fill CAP: a stageworks whose rings hold CAP samples, signed in and filled;
# sets rss (KiB) and series, then stops it.
fill() {
    local cap=$1 samples started
    start "fill-$cap" STAGEWORKS__ADMIN__HISTORY_EVERY="$FILL_EVERY" STAGEWORKS__ADMIN__HISTORY_SAMPLES="$cap"
    sign_in
    started=$SECONDS
    while :; do
        samples=$(history | figure 'h["samples"]')
        ((samples >= cap)) && break
        ((SECONDS - started < 120)) || die "the history never filled ($samples of $cap samples)"
        sleep 0.5
    done
    sleep 2 # the sign-in's argon2 buffers returned, a few more samples taken
    rss=$(rss_kib)
    series=$(history | figure 'len(h["series"])')
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
fill 2
rss_small=$rss
fill "$SAMPLES"
rss_full=$rss
python3 - "$series" "$SAMPLES" "$rss_small" "$rss_full" <<'PY'
import sys
series, samples, small, full = (int(v) for v in sys.argv[1:])
rings = series * samples * 4 + samples * 8
hour = 720
print(f"  series: {series}, samples: {samples}")
print(f"  RSS: {small / 1024:.1f} MiB with 2 samples kept, {full / 1024:.1f} MiB with {samples} "
      f"(difference {(full - small) / 1024:+.2f} MiB; RSS also moves with the allocator, so a difference "
      f"below a few MiB is noise)")
print(f"  rings: {series} series x {samples} samples x 4 B + {samples} timestamps x 8 B = {rings / 1024:.1f} KiB")
print(f"  at the default (5 s, {hour} samples = 1 h): {series} x {hour} x 4 B + {hour} x 8 B = "
      f"{(series * hour * 4 + hour * 8) / 1024:.1f} KiB; the bound (512 series x {hour}) is "
      f"{(512 * hour * 4 + hour * 8) / 1024:.0f} KiB")
PY
