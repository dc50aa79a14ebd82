#!/usr/bin/env bash
# Runs every fuzz target for a while, each starting from its committed seeds
# (fuzz/seeds/<target>/, which hold the regressions too: every input that
# once crashed is kept there, so each run replays it first).
#
#   fuzz/run.sh [seconds per target, default 15] [target...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). libFuzzer's
# instrumentation needs nightly flags; the machine has one stable toolchain,
# so RUSTC_BOOTSTRAP=1 lets it take them. New inputs go to a scratch corpus
# under $FUZZ_WORK_DIR (default: a temp dir), never into the seeds; a crash
# leaves its input in fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-15}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list)
fi
work=${FUZZ_WORK_DIR:-$(mktemp -d)}
export RUSTC_BOOTSTRAP=1

# No `cargo fuzz build` first: `cargo fuzz run` builds with flags of its own
# (a debuginfo override), so a separate build was thrown away and every
# dependency built twice.
printf '%-16s %8s %8s %10s %8s\n' target seconds execs corpus cov
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    log="$work/$target.log"
    if ! cargo fuzz run -O "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -seed=1 -print_final_stats=1 >"$log" 2>&1; then
        echo "error: fuzz target $target failed:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    printf '%-16s %8s %8s %10s %8s\n' "$target" "$seconds" "${execs:-?}" \
        "$(find "$corpus" -type f | wc -l)" "${cov:-?}"
done
