#!/usr/bin/env bash
# What one admin stream costs, as CPU time rather than throughput (which
# moves by more between runs than a stream could take): an idle stageworks'
# time on CPU (the sum over its threads of /proc/PID/task/*/schedstat, in
# ns) over SECONDS_EACH with no stream, then as long with one /admin/stream
# client connected.
#
#   bench/admin-cpu.sh            # SECONDS_EACH=30, the release build
#
# Environment: SECONDS_EACH (30), STAGEWORKS_BIN (default the release build;
# `cargo build --release --bin stageworks` first), CONFIG (config.toml).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
SECONDS_EACH=${SECONDS_EACH:-30}
CONFIG=${CONFIG:-$repo/config.toml}
if [[ -z ${STAGEWORKS_BIN:-} ]]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    STAGEWORKS_BIN="$target_dir/release/stageworks"
fi
[[ -x $STAGEWORKS_BIN ]] || { echo "error: no binary at $STAGEWORKS_BIN" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
addr="127.0.0.1:$(free_port)"
admin="127.0.0.1:$(free_port)"
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
STAGEWORKS__DATA_DIR="$tmp/data" STAGEWORKS__SERVER__LISTEN="$addr" \
    STAGEWORKS__ADMIN__LISTEN="$admin" STAGEWORKS__ADMIN__TOKEN="$token" \
    STAGEWORKS__LOG__LEVEL=warn "$STAGEWORKS_BIN" serve --config "$CONFIG" >"$tmp/log" 2>&1 &
pid=$!
pids+=("$pid")
for _ in $(seq 1 300); do
    curl -sf "http://$addr/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://$addr/ready" >/dev/null || { cat "$tmp/log" >&2; exit 1; }
sleep 5 # start-up's own work done

# Nanoseconds on CPU of all the process's threads (schedstat's first field:
# utime + stime in clock ticks would be 10 ms coarse).
cpu_ticks() { cat /proc/"$pid"/task/*/schedstat | awk '{ ns += $1 } END { printf "%d\n", ns }'; }
closed_start=$(cpu_ticks)
sleep "$SECONDS_EACH"
closed_end=$(cpu_ticks)

curl -sN -H "authorization: Bearer $token" "http://$admin/admin/stream" >"$tmp/stream.txt" &
pids+=($!)
sleep 2
open_start=$(cpu_ticks)
sleep "$SECONDS_EACH"
open_end=$(cpu_ticks)
snapshots=$(grep -c '^event: snapshot' "$tmp/stream.txt" || true)
bytes=$(stat -c %s "$tmp/stream.txt")

python3 - 1000000000 "$SECONDS_EACH" "$closed_start" "$closed_end" "$open_start" "$open_end" "$snapshots" "$bytes" <<'PY'
import sys
tick, secs, c0, c1, o0, o1, snapshots, size = (float(v) for v in sys.argv[1:])
closed = (c1 - c0) / tick / secs * 1000
opened = (o1 - o0) / tick / secs * 1000
print(f"CPU of the process: {closed:.2f} ms/s with no stream, {opened:.2f} ms/s with one "
      f"(a stream: {opened - closed:.2f} ms/s); {snapshots:.0f} snapshots received, "
      f"{size / max(snapshots, 1):.0f} bytes each")
print(f"headline\tadmin stream CPU\tCPU ms/s of the process\t{opened:.2f} (one stream)\t{closed:.2f} (none)\t{opened / max(closed, 1e-9):.2f}")
PY
