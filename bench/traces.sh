#!/usr/bin/env bash
# What traces cost: run.sh's create-order and get-order scenarios (POST
# /api/v1/orders, GET /api/v1/orders/{id} on stageworks on SQLite) with
# traces off, then again with every span exported over OTLP/HTTP to
# bench/otlp-sink on loopback (which decodes each export, counts its spans
# and answers 200 at once). The sink's counts after the traced runs show the
# spans really left.
#
#   bench/traces.sh                                   # RUNS runs of DURATION each, medians, off then on
#   SCENARIOS="create-order-pg get-order-pg" bench/traces.sh   # the same on PostgreSQL
#   SAMPLE_RATIO=0.1 bench/traces.sh                  # one trace in ten recorded
#   SKIP_BUILD=1 DURATION=5s WARMUP=0 RUNS=1 bench/traces.sh   # a smoke run
#
# Environment: everything bench/run.sh reads (DURATION, RUNS, CONNECTIONS,
# THREADS, WARMUP, SKIP_BUILD, STAGEWORKS_BIN, PG_ADMIN_URL, …: see its
# header), and SCENARIOS ("create-order get-order"), SAMPLE_RATIO (1.0:
# telemetry.sample_ratio of the traced runs), MODES ("off on"), SINK_BIN
# (default the release build of bench/otlp-sink).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

SCENARIOS=${SCENARIOS:-"create-order get-order"}
SAMPLE_RATIO=${SAMPLE_RATIO:-1.0}
MODES=${MODES:-"off on"}
SKIP_BUILD=${SKIP_BUILD:-}

die() { echo "traces.sh: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is needed"

if [[ -z $SKIP_BUILD ]]; then
    echo "+ cargo build --release --locked -p otlp-sink -p stageworks --bin stageworks"
    timeout 3600 cargo build --release --locked -p otlp-sink -p stageworks --bin stageworks
fi
target_dir=$(timeout 60 cargo metadata --format-version 1 --no-deps --offline |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
SINK_BIN=${SINK_BIN:-$target_dir/release/otlp-sink}
[[ -x $SINK_BIN ]] || die "no otlp-sink binary at $SINK_BIN (unset SKIP_BUILD to build it)"

tmp=$(mktemp -d)
sink_pid=
cleanup() {
    if [[ -n $sink_pid ]]; then
        kill "$sink_pid" 2>/dev/null || true
        wait "$sink_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

"$SINK_BIN" 127.0.0.1:0 >"$tmp/sink.log" 2>&1 &
sink_pid=$!
sink_addr=
for _ in $(seq 1 100); do
    sink_addr=$(sed -n 's/^listening on //p' "$tmp/sink.log")
    [[ -n $sink_addr ]] && break
    kill -0 "$sink_pid" 2>/dev/null || die "otlp-sink did not start: $(cat "$tmp/sink.log")"
    sleep 0.05
done
[[ -n $sink_addr ]] || die "otlp-sink did not print its address"
echo "otlp-sink on $sink_addr"

# Shows run.sh's output and keeps it in $1, without the lines it makes for
# bench/all.sh's table: the traced/untraced ratio below is this script's.
without_headlines() { grep -v $'^headline\t' | tee "$1"; }
# requests/s of scenario $2 in run.sh's table kept in $1.
rps_of() { awk -F'|' -v s="$2" '{ gsub(/ /, "", $2); gsub(/ /, "", $3) } $2 == s { print $3; exit }' "$1"; }

# run.sh builds once (unless told not to); the second mode reuses that build.
built=$SKIP_BUILD
for mode in $MODES; do
    case $mode in
    off)
        echo "== traces off"
        env -u STAGEWORKS__TELEMETRY__OTLP_ENDPOINT SKIP_BUILD="$built" SCENARIOS="$SCENARIOS" \
            bench/run.sh | without_headlines "$tmp/off.txt"
        ;;
    on)
        before=$(curl -fsS "http://$sink_addr/stats")
        echo "== traces on: every span to http://$sink_addr (sample_ratio $SAMPLE_RATIO)"
        STAGEWORKS__TELEMETRY__OTLP_ENDPOINT="http://$sink_addr" \
            STAGEWORKS__TELEMETRY__SAMPLE_RATIO="$SAMPLE_RATIO" \
            SKIP_BUILD="$built" SCENARIOS="$SCENARIOS" bench/run.sh | without_headlines "$tmp/on.txt"
        after=$(curl -fsS "http://$sink_addr/stats")
        echo "otlp-sink before: $before"
        echo "otlp-sink after:  $after"
        ;;
    *) die "unknown mode $mode (off, on)" ;;
    esac
    built=1
done

if [[ -f $tmp/off.txt && -f $tmp/on.txt ]]; then
    for scenario in $SCENARIOS; do
        off=$(rps_of "$tmp/off.txt" "$scenario")
        on=$(rps_of "$tmp/on.txt" "$scenario")
        if [[ -n $off && -n $on ]]; then
            awk -v on="$on" -v off="$off" -v s="$scenario" -v r="$SAMPLE_RATIO" \
                'BEGIN { if (off > 0) printf "traces on / off, %s: %.2f\nheadline\ttraces on (sample_ratio %s), %s\trequests/s\t%s\ttraces off %s\t%.2f\n", s, on / off, r, s, on, off, on / off }'
        fi
    done
fi
