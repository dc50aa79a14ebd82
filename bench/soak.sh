#!/usr/bin/env bash
# The soak (issue 17): a release stageworks built with the fault-injection
# feature (a request with `x-fault: panic` makes a worker panic) under a
# steady mixed load on orders, billing, auth and notifications for MINUTES,
# while billing is made to crash every CRASH_EVERY seconds. bench/soak
# (src/main.rs says how each figure is taken) samples RSS and open
# descriptors from /proc and prints a table; the run fails when RSS drifts
# more than 10 % from the end of the warm-up, descriptors other than the
# database files grow (those may grow up to the pools' bound), any service
# but billing answers an error, or billing never restarted or is not
# serving again by itself once the crashes stop.
#
#   bench/soak.sh                           # 10 minutes
#   MINUTES=30 bench/soak.sh
#   MINUTES=2 WARM_UP=30 bench/soak.sh      # a short check of the script
#
# Environment: MINUTES (10), CLIENTS (8), RATE (25 requests/s per client),
# CRASH (billing), CRASH_EVERY (3), SAMPLE_EVERY (30), WARM_UP (60),
# SKIP_BUILD (1 to use the binaries already built). The fault-injection
# build goes to target/fault-injection (as bench/chaos.sh's), apart from
# the plain release build.
# STAGEWORKS__* variables reach stageworks.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

MINUTES=${MINUTES:-10}
CLIENTS=${CLIENTS:-8}
RATE=${RATE:-25}
CRASH=${CRASH:-billing}
CRASH_EVERY=${CRASH_EVERY:-3}
SAMPLE_EVERY=${SAMPLE_EVERY:-30}
WARM_UP=${WARM_UP:-60}
soak_target=$repo/target/fault-injection

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stageworks-soak.XXXXXX")
cleanup() {
    stop_stageworks
    rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -z ${SKIP_BUILD:-} ]]; then
    CARGO_TARGET_DIR=$soak_target cargo build --release -q -p stageworks --features fault-injection
    cargo build --release -q -p soak-bench
fi

token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
export STAGEWORKS__ADMIN__TOKEN=$token
start_stageworks "$soak_target/release/stageworks" "$tmp/data" \
    STAGEWORKS__RATE_LIMIT__ENABLED=false

echo "# soak: $(nproc) cores, $(git rev-parse --short HEAD), ${MINUTES} min, $CLIENTS clients x $RATE/s, $CRASH crashing every ${CRASH_EVERY}s"
target/release/soak-bench --public "$public" --admin "$admin" --pid "$server" \
    --minutes "$MINUTES" --clients "$CLIENTS" --rate "$RATE" --crash "$CRASH" \
    --crash-every "$CRASH_EVERY" --sample-every "$SAMPLE_EVERY" --warm-up "$WARM_UP" 2> "$tmp/errors.log" || {
    status=$?
    echo "errors seen, by kind (the crashing service's and the others'):" >&2
    # (|| true: head stops reading early, and pipefail would end the script on
    # sort's SIGPIPE before the soak's own exit status.)
    sort "$tmp/errors.log" | uniq -c | sort -rn | head -n 20 >&2 || true
    exit "$status"
}
echo "errors seen by the load (all from $CRASH expected): $(wc -l <"$tmp/errors.log")"
sort "$tmp/errors.log" | uniq -c | sort -rn | head -n 5
