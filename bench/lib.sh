# Shell helpers of the bench scripts that came after lib.sh (soak.sh,
# all.sh): starting a stageworks on free loopback ports and stopping it.
# Source it from a script that has `set -euo pipefail` and `$repo`.
#
#   start_stageworks BIN DATA_DIR [VAR=value ...]   # sets $server, $public, $admin
#   stop_stageworks                                  # SIGTERM, waits
#
# The older scripts keep start()/cleanup() copies of their own; moving them
# here is a mechanical change still to make.

server=""
public=""
admin=""

start_stageworks() {
    local bin=$1 data=$2
    shift 2
    mkdir -p "$data"
    env "$@" \
        STAGEWORKS__DATA_DIR="$data" \
        STAGEWORKS__SERVER__LISTEN=127.0.0.1:0 \
        STAGEWORKS__ADMIN__LISTEN=127.0.0.1:0 \
        STAGEWORKS__LOG__FORMAT=json \
        STAGEWORKS__LOG__LEVEL=warn,stageworks=info \
        "$bin" serve --config "$repo/config.toml" >"$data.log" 2>&1 &
    server=$!
    local line addrs
    for _ in $(seq 1 300); do
        if line=$(grep -m1 '"stageworks is serving"' "$data.log" 2>/dev/null); then
            addrs=$(python3 -c 'import json,sys; f=json.loads(sys.argv[1])["fields"]; print(f["public_addr"], f["admin_addr"])' "$line")
            public=${addrs% *}
            admin=${addrs#* }
            until curl -fs "http://$public/ready" >/dev/null; do sleep 0.1; done
            return 0
        fi
        if ! kill -0 "$server" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    cat "$data.log" >&2
    echo "stageworks did not start" >&2
    return 1
}

stop_stageworks() {
    if [[ -n $server ]]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
    fi
}
