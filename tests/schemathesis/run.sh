#!/usr/bin/env bash
# Schemathesis against the release binary: starts `stageworks` on a fresh
# data directory (SQLite, memory key-value store, embedded defaults, rate
# limits raised far above what the run sends), registers a user, makes an
# admin with `stageworks user create --admin`, and fuzzes every operation of
# /api/v1/openapi.json twice, once with each one's bearer token, with every
# check and the stateful phase. Exits non-zero on any failure.
#
#   tests/schemathesis/run.sh                 # the CI run (fixed seed and example count)
#   SCHEMATHESIS_MAX_EXAMPLES=500 tests/schemathesis/run.sh   # a longer run
#   STAGEWORKS_BIN=path/to/stageworks tests/schemathesis/run.sh  # another binary
#
# See tests/schemathesis/README.md for what it checks and the longer run.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
seed=${SCHEMATHESIS_SEED:-20261203}
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-100}

if [[ -n ${STAGEWORKS_BIN:-} ]]; then
    bin=$STAGEWORKS_BIN
else
    (cd "$root" && cargo build --release --bin stageworks)
    bin=${CARGO_TARGET_DIR:-$root/target}/release/stageworks
fi
[[ -x $bin ]] || { echo "error: no stageworks binary at $bin" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
admin_port=$(free_port)
base="http://127.0.0.1:$port"

# Embedded defaults (no config.toml in the working directory), everything in
# the temporary directory; every limit far above the run's requests, so a
# 429 is a finding, not the run's own traffic.
export STAGEWORKS__DATA_DIR="$work/data"
export STAGEWORKS__SERVER__LISTEN="127.0.0.1:$port"
export STAGEWORKS__ADMIN__LISTEN="127.0.0.1:$admin_port"
export STAGEWORKS__RATE_LIMIT__API__REQUESTS=100000000
export STAGEWORKS__RATE_LIMIT__AUTH__REQUESTS=100000000
export STAGEWORKS__RATE_LIMIT__USER__REQUESTS=100000000
export STAGEWORKS__SERVICES__AUTH__EMAIL_LIMIT__REQUESTS=100000000
export STAGEWORKS__TOKENS__ACCESS_TTL=2h
export STAGEWORKS__LOG__LEVEL=${STAGEWORKS__LOG__LEVEL:-warn}

cd "$work"
"$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -sf "$base/ready" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf "$base/ready" >/dev/null || { echo "error: the server is not ready" >&2; cat "$work/server.log" >&2; exit 1; }

user_password='schemathesis user password'
admin_password='schemathesis admin password'
curl -sf -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"user@example.com\",\"password\":\"$user_password\",\"name\":\"User\"}" >/dev/null
echo "$admin_password" | "$bin" user create --email admin@example.com --admin >/dev/null

login() {
    curl -sf -X POST "$base/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$2\"}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

status=0
total=0
# One run per caller. Logout, and deleting a session (the stateful phase
# finds the caller's own in GET /sessions), end the session of the token
# the run is sent with, and every later request of it would be a 401: they
# get a run of their own, last, with a token of their own.
fuzz() {
    local who=$1 token=$2
    shift 2
    local log=$work/$who.log
    echo "--- schemathesis as $who: seed $seed, at most $max_examples examples per operation"
    if ! schemathesis --config-file "$root/tests/schemathesis/schemathesis.toml" run \
        "$base/api/v1/openapi.json" \
        --checks all \
        --seed "$seed" \
        --max-examples "$max_examples" \
        --workers 1 \
        --no-shrink \
        --request-timeout 10 \
        -H "Authorization: Bearer $token" \
        "$@" 2>&1 | tee "$log"; then
        status=1
    fi
    # The summary's "Test cases: N generated, ...".
    local cases
    cases=$(grep -Eo '^ *[0-9]+ generated' "$log" | tail -1 | tr -dc 0-9)
    echo "--- $who: ${cases:-0} generated test cases"
    total=$((total + ${cases:-0}))
}

ending=(post_api_v1_auth_logout delete_api_v1_auth_sessions_id)
fuzz user "$(login user@example.com "$user_password")" \
    --exclude-operation-id "${ending[0]}" --exclude-operation-id "${ending[1]}"
fuzz admin "$(login admin@example.com "$admin_password")" \
    --exclude-operation-id "${ending[0]}" --exclude-operation-id "${ending[1]}"
fuzz session-enders "$(login user@example.com "$user_password")" \
    --include-operation-id "${ending[0]}" --include-operation-id "${ending[1]}"

echo "=== schemathesis: $total generated test cases in all"
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "error: the server died during the run" >&2
    status=1
fi
if grep -q 'panicked' "$work/server.log"; then
    echo "error: the server panicked:" >&2
    grep -A5 'panicked' "$work/server.log" >&2
    status=1
fi
exit $status
