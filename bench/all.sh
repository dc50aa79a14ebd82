#!/usr/bin/env bash
# Every scenario of bench/ in one run, the peers of ../shared/peers among
# them (run.sh), and one table of what each measured against what it is
# compared with (a peer, a bare server, calm, an offered rate or a bound):
# each script prints its own tables and, for this one, `headline` lines
# (tab-separated: scenario, figure, value, against, ratio), which are
# gathered here into one Markdown table.
#
#   bench/all.sh                          # everything, each script on its defaults (51 min on 2 cores)
#   QUICK=1 bench/all.sh                  # every script briefly: a check of the scripts, figures meaningless
#   ONLY="run pipeline soak" bench/all.sh # some of them
#
# Writes every script's output and the table under OUT
# (bench/results/<UTC time>), prints the table at the end, and exits 1 if
# any script failed (the table says which). Environment: OUT, ONLY (run
# pipeline overload notify audit admin admin-cpu traces chaos soak),
# QUICK, SKIP_BUILD (1 to use the release binaries already built).
# STAGEWORKS__* variables reach every stageworks.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

ONLY=${ONLY:-run pipeline overload notify audit admin admin-cpu traces chaos soak}
OUT=${OUT:-$repo/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

if [[ -z ${SKIP_BUILD:-} ]]; then
    echo "+ building every release binary the scripts use"
    cargo build --release -q --workspace --bins
    # chaos.sh and soak.sh inject faults: their stageworks is built apart.
    CARGO_TARGET_DIR=$repo/target/fault-injection cargo build --release -q -p stageworks --features fault-injection
fi
export SKIP_BUILD=1

# The short settings of QUICK=1, per script.
quick() {
    case $1 in
        run) echo "DURATION=2s WARMUP=0 RUNS=1 LAG_ORDERS=500 LAG_RATES=250" ;;
        pipeline) echo "DURATION=3 RATES=250" ;;
        overload) echo "DURATION=3 SCENARIOS=login-4x" ;;
        notify) echo "DURATION=3 BULK_BATCHES=1 BULK_SIZE=100 BIG_BULK=200 LATENCY_SECS=3" ;;
        audit) echo "DURATION=3 ENTRIES=2000 SEARCH_SECONDS=1" ;;
        admin) echo "RUNS=1 DURATION=2s SAMPLES=20" ;;
        admin-cpu) echo "SECONDS_EACH=3" ;;
        traces) echo "DURATION=2s WARMUP=0 RUNS=1" ;;
        chaos) echo "DURATION=2s" ;;
        soak) echo "MINUTES=1 WARM_UP=20 SAMPLE_EVERY=10" ;;
    esac
}

# What differs from a script's own defaults in a full run: audit seeds
# 200,000 entries instead of a million (PostgreSQL takes them at ~470/s;
# the million-entry search figures come from bench/audit.sh alone).
full() {
    case $1 in
        audit) echo "ENTRIES=200000" ;;
    esac
}

failed=()
started=$SECONDS
for name in $ONLY; do
    script=bench/$name.sh
    if [[ ! -x $script ]]; then
        echo "== $name: no $script" | tee -a "$OUT/failed.txt"
        failed+=("$name")
        continue
    fi
    settings=()
    if [[ -n ${QUICK:-} ]]; then
        read -r -a settings <<<"$(quick "$name")"
    else
        read -r -a settings <<<"$(full "$name")"
    fi
    echo
    echo "== $name ($script ${settings[*]:-}) at $(date -u +%H:%M:%S)"
    if ! env "${settings[@]}" "$script" 2>&1 | tee "$OUT/$name.txt"; then
        echo "== $name FAILED (its output: $OUT/$name.txt)"
        failed+=("$name")
    fi
done

machine="$(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1), $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
{
    echo "bench/all.sh at $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (uncommitted changes)'), $(date -u +%Y-%m-%d), $machine, $(( (SECONDS - started) / 60 )) min${QUICK:+, QUICK=1 (figures meaningless)}"
    echo
    echo "| scenario | figure | value | against | ratio |"
    echo "|---|---|---|---|---|"
    for name in $ONLY; do
        [[ -f $OUT/$name.txt ]] || continue
        grep $'^headline\t' "$OUT/$name.txt" | cut -f2- | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }' || true
    done
    if ((${#failed[@]} > 0)); then
        echo
        echo "failed: ${failed[*]} (their outputs in $OUT)"
    fi
} >"$OUT/table.md"
echo
cat "$OUT/table.md"
echo "(every script's output in $OUT)"
((${#failed[@]} == 0))
