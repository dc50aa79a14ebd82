#!/usr/bin/env bash
# The notifications service under load (issue 14's benchmark): `send` and
# `send-bulk` accepted per second, delivered per second to an SMTP sink and
# a webhook receiver (both hosted by the load generator, testkit's), and
# created_at → delivery p50/p99 at a steady open-loop rate
# (bench/notify/src/main.rs says how each figure is taken).
#
#   bench/notify.sh                          # SQLite, every scenario
#   BACKENDS="sqlite postgres" bench/notify.sh
#   SCENARIOS="latency-email latency-webhook" RATE=250 bench/notify.sh
#   SENDERS=16 bench/notify.sh               # more sends in flight per channel
#
# Environment: SCENARIOS (send-email send-webhook bulk-email bulk-webhook
# latency-email latency-webhook), CONCURRENCY (16 closed-loop clients),
# DURATION (10 s of each closed-loop send), BULK_BATCHES (5) of BULK_SIZE
# (1000) then one of BIG_BULK (10000) recipients, RATE (500/s) for
# LATENCY_SECS (20), PER_SECOND (100000: each provider's rate limit, raised
# from its default of 50 so that it is not what is measured), SENDERS
# (empty: the config's, 4), MAX_BODY_BYTES (empty: the default 1 MiB),
# BACKENDS ("sqlite"; "postgres" makes its own database in PG_ADMIN_URL's
# server, dropped on exit), PG_ADMIN_URL
# (postgres://postgres@127.0.0.1:5432/test), SKIP_BUILD (1: use the release
# binaries already built), SAMPLE_EVERY (2 s between /admin/actors samples).
# STAGEWORKS__* variables reach stageworks.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

SCENARIOS=${SCENARIOS:-send-email send-webhook bulk-email bulk-webhook latency-email latency-webhook}
CONCURRENCY=${CONCURRENCY:-16}
DURATION=${DURATION:-10}
BULK_BATCHES=${BULK_BATCHES:-5}
BULK_SIZE=${BULK_SIZE:-1000}
BIG_BULK=${BIG_BULK:-10000}
RATE=${RATE:-500}
LATENCY_SECS=${LATENCY_SECS:-20}
PER_SECOND=${PER_SECOND:-100000}
SENDERS=${SENDERS:-}
MAX_BODY_BYTES=${MAX_BODY_BYTES:-}
BACKENDS=${BACKENDS:-sqlite}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
SAMPLE_EVERY=${SAMPLE_EVERY:-2}
export PGCONNECT_TIMEOUT=5

admin_email=notify-bench@example.com
NOTIFY_BENCH_PASSWORD=notify-bench-password-$RANDOM$RANDOM
export NOTIFY_BENCH_PASSWORD

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stageworks-notify.XXXXXX")
server=""
sampler=""
bench=""
pg_db=""
stop_pid() {
    if [[ -n $1 ]]; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_pid "$bench"
    stop_pid "$sampler"
    stop_pid "$server"
    if [[ -n $pg_db ]]; then
        psql "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z ${SKIP_BUILD:-} ]]; then
    timeout 1800 cargo build --release -q -p stageworks -p notify-bench
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The settings every run gets: the email provider at the bench's SMTP sink
# (no TLS), a webhook signing secret, both rate limits raised.
settings() {
    local n=STAGEWORKS__SERVICES__NOTIFICATIONS
    echo "STAGEWORKS__RATE_LIMIT__ENABLED=false"
    echo "${n}__EMAIL__HOST=127.0.0.1"
    echo "${n}__EMAIL__PORT=$smtp_port"
    echo "${n}__EMAIL__SECURITY=none"
    echo "${n}__EMAIL__FROM=Stageworks bench <bench@stageworks.test>"
    echo "${n}__EMAIL__PER_SECOND=$PER_SECOND"
    echo "${n}__WEBHOOK__SECRET=notify-bench-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    echo "${n}__WEBHOOK__PER_SECOND=$PER_SECOND"
    [[ -z $SENDERS ]] || echo "${n}__SENDERS=$SENDERS"
    [[ -z $MAX_BODY_BYTES ]] || echo "STAGEWORKS__SERVER__MAX_BODY_BYTES=$MAX_BODY_BYTES"
}

# Makes the admin, starts stageworks on free loopback ports; sets $public and $admin.
start() {
    local data=$1
    shift
    mapfile -t env_settings < <(settings)
    local common=("${env_settings[@]}" "$@"
        STAGEWORKS__DATA_DIR="$data"
        STAGEWORKS__SERVER__LISTEN=127.0.0.1:0
        STAGEWORKS__ADMIN__LISTEN=127.0.0.1:0
        STAGEWORKS__LOG__FORMAT=json
        STAGEWORKS__LOG__LEVEL=warn,stageworks=info)
    mkdir -p "$data"
    printf '%s\n' "$NOTIFY_BENCH_PASSWORD" | env "${common[@]}" \
        timeout 60 target/release/stageworks user create --config config.toml --email "$admin_email" --admin >/dev/null
    env "${common[@]}" timeout 60 target/release/stageworks check-config --config config.toml >"$data.config"
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

# The effective notifications settings, from check-config (secrets masked).
show_settings() {
    python3 - "$1" <<'EOF'
import sys, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
n = cfg["services"]["notifications"]
db = cfg.get("database", {})
print("settings: notifications senders=%s workers=%s call_timeout=%s lease=%s poll_every=%s;"
      % (n.get("senders"), n.get("workers"), n.get("call_timeout"), n.get("lease"), n.get("poll_every")),
      "email per_second=%s timeout=%s security=%s; webhook per_second=%s timeout=%s;"
      % (n["email"].get("per_second"), n["email"].get("timeout"), n["email"].get("security"),
         n["webhook"].get("per_second"), n["webhook"].get("timeout")),
      "server.max_body_bytes=%s; database %s" % (cfg["server"].get("max_body_bytes"), db.get("url") or "SQLite (data_dir)"))
EOF
}

# Samples /admin/actors every SAMPLE_EVERY s into $1.N.json.
sample_actors() {
    local i=0
    while sleep "$SAMPLE_EVERY"; do
        i=$((i + 1))
        curl -fs -m 2 "http://$admin/admin/actors" >"$1.$i.json" 2>/dev/null || true
    done
}

# The notifications services in /admin/actors over the samples: the
# deepest queue seen, messages handled, restarts, circuit, last failure.
summarise_actors() {
    python3 - "$@" <<'EOF'
import json, sys
services, n = {}, 0
def walk(node):
    yield node
    for child in node.get("children", []):
        yield from walk(child)
for path in sys.argv[1:]:
    try:
        tree = json.load(open(path))
    except Exception:
        continue
    n += 1
    for node in walk(tree.get("root", tree)):
        name = node.get("name", "")
        if node.get("kind") != "service" or not name.startswith("notifications"):
            continue
        s = services.setdefault(name, {"depth": 0})
        s["depth"] = max(s["depth"], node.get("mailbox_depth", 0))
        s["wait"] = max(s.get("wait", 0.0), (node.get("queue") or {}).get("wait_ms", 0.0))
        s["restarts"] = node.get("restarts", 0)
        s["circuit"] = (node.get("circuit") or {}).get("state", "-")
        failures = [c.get("last_failure") for c in [node] + node.get("children", []) if c.get("last_failure")]
        if failures:
            s["last_failure"] = json.dumps(failures[-1])[:200]
print("/admin/actors, %d samples:" % n)
for name, s in sorted(services.items()):
    print("  %s: queue depth max %d, queue wait max %.1f ms, %d restarts, circuit %s%s"
          % (name, s["depth"], s["wait"], s.get("restarts", 0), s.get("circuit"),
             ("; last failure " + s["last_failure"]) if "last_failure" in s else ""))
EOF
}

# The mean time of one provider send per channel, from the server's
# notification_send_duration_seconds (the admin listener's /metrics).
send_durations() {
    curl -fs -m 5 "http://$admin/metrics" | python3 -c '
import re, sys
sums, counts = {}, {}
for line in sys.stdin:
    m = re.match(r"notification_send_duration_seconds_(sum|count)\{[^}]*channel=\"(\w+)\"[^}]*\} (\S+)", line)
    if m:
        (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
for channel in sorted(counts):
    if counts[channel]:
        print("provider send time (server metric): %s mean %.2f ms over %d sends"
              % (channel, 1000 * sums[channel] / counts[channel], counts[channel]))
' || echo "no /metrics"
}

# WARN and ERROR lines of the server's log, counted by message.
summarise_log() {
    python3 - "$1" <<'EOF'
import collections, json, sys
seen = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    level = entry.get("level", "")
    if level in ("WARN", "ERROR"):
        fields = entry.get("fields", {})
        seen[(level, fields.get("message", ""), str(fields.get("error", ""))[:160])] += 1
print("server log: %d warnings, %d errors" % (
    sum(n for (l, _, _), n in seen.items() if l == "WARN"), sum(n for (l, _, _), n in seen.items() if l == "ERROR")))
for (level, message, error), n in seen.most_common(8):
    print("  %dx %s %s%s" % (n, level, message, (": " + error) if error else ""))
EOF
}

echo "machine: $(nproc) cores, $(awk -F ': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $(rustc --version)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
run=0
for backend in $BACKENDS; do
    run=$((run + 1))
    smtp_port=$(free_port)
    case $backend in
        sqlite) start "$tmp/sqlite-$run" ;;
        postgres)
            pg_db="stageworks_notify_$$_$run"
            psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$pg_db\"" >/dev/null
            start "$tmp/postgres-$run" STAGEWORKS__DATABASE__URL="${PG_ADMIN_URL%/*}/$pg_db"
            ;;
        *)
            echo "unknown backend $backend (sqlite, postgres)" >&2
            exit 2
            ;;
    esac
    echo
    echo "== $backend: stageworks (pid $server) on $public (admin $admin), SMTP sink on 127.0.0.1:$smtp_port"
    show_settings "$tmp/$backend-$run.config"
    sample_actors "$tmp/actors-$run" &
    sampler=$!
    # In the background, so that a signal reaches the trap at once (the
    # cleanup stops it too).
    timeout 3600 target/release/notify-bench --url "http://$public" --smtp-port "$smtp_port" \
        --email "$admin_email" --server-pid "$server" --scenarios "$SCENARIOS" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --bulk-batches "$BULK_BATCHES" \
        --bulk-size "$BULK_SIZE" --big-bulk "$BIG_BULK" --rate "$RATE" --latency-secs "$LATENCY_SECS" &
    bench=$!
    wait "$bench"
    bench=""
    stop_pid "$sampler"
    sampler=""
    echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    summarise_actors "$tmp/actors-$run".*.json
    send_durations
    summarise_log "$tmp/$backend-$run.log"
    stop_pid "$server"
    server=""
    if [[ -n $pg_db ]]; then
        psql "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null || true
        pg_db=""
    fi
done
