#!/usr/bin/env bash
# Slow clients against the balancer: slowhttptest opens 1,000 connections in slowloris mode
# (headers trickled forever) and then 1,000 in slow-body mode (a POST body trickled forever)
# against port 8000, while loadgen times normal requests in an open loop (200 requests/s from 8
# connections, latency measured from each request's scheduled start). Prints, per attack, the
# normal requests' success rate and latency percentiles, and what slowhttptest saw.
#
#   ./scripts/attack.sh             both attacks, 30 s each
#   ATTACK_SECONDS=60 ./scripts/attack.sh
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${ATTACK_SECONDS:-30}"
connections="${ATTACK_CONNECTIONS:-1000}"

if ! command -v slowhttptest >/dev/null 2>&1; then
    echo "installing slowhttptest"
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get install -y -qq slowhttptest >/dev/null 2>&1 \
        || { as_root apt-get update -qq && as_root apt-get install -y -qq slowhttptest >/dev/null; }
fi
cargo build --release --bins --quiet
bin=target/release
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

for port in 8000 8001 8002 8003 8004; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use: stop whatever listens there (./scripts/start.sh?) first" >&2
        exit 1
    fi
done

for i in 1 2 3; do
    "$bin/backend" --port "800$i" --name "backend-$i" --quiet >/dev/null &
    pids+=($!)
done
# The defaults an operator runs with: a request head must arrive within 10 s (408 after it),
# a body may pause for at most client_idle (60 s) between bytes.
cat >"$work/lb.toml" <<TOML
listen = "127.0.0.1:8000"
admin = "127.0.0.1:8004"
access_log = false
[[backend]]
address = "127.0.0.1:8001"
[[backend]]
address = "127.0.0.1:8002"
[[backend]]
address = "127.0.0.1:8003"
TOML
"$bin/lb" --config "$work/lb.toml" 2>"$work/lb.log" &
lb=$!
pids+=("$lb")
for port in 8000 8001 8002 8003; do
    for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
done

rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$lb/status"; }

attack() { # name, slowhttptest mode flags...
    local name=$1
    shift
    echo "== $name: $connections slow connections for ${seconds}s, normal requests timed meanwhile"
    slowhttptest "$@" -c "$connections" -r 500 -i 5 -l "$seconds" -p 3 \
        -g -o "$work/$name" >"$work/$name.out" 2>&1 &
    local attacker=$!
    pids+=("$attacker")
    # Let the attack open its connections first.
    sleep 3
    local open
    open=$(ss -Htn state established "( sport = :8000 )" | wc -l)
    echo "connections to the balancer when the measurement starts: $open"
    "$bin/loadgen" --target 127.0.0.1:8000 --connections 8 --rate 200 \
        --duration "$((seconds - 6))" --timeout 10 | sed 's/^/  /'
    wait "$attacker" 2>/dev/null || true
    echo "slowhttptest's last status:"
    sed 's/\x1b\[[0-9;]*m//g' "$work/$name.out" \
        | grep -E "^ *(pending|connected|error|closed|service available):" | tail -5 | sed 's/^ */  /'
    echo "balancer peak RSS so far: $(rss_kib) KiB"
    echo
}

attack slowloris -H -u http://127.0.0.1:8000/ -x 24
attack slow-body -B -u http://127.0.0.1:8000/sink -t POST -s 65536 -x 10

if kill -0 "$lb" 2>/dev/null; then
    echo "the balancer is still up"
else
    echo "the balancer died" >&2
    exit 1
fi
