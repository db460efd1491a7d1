#!/usr/bin/env bash
# Slow-client attacks against the balancer, with normal traffic timed alongside.
#
# Three demo backends (8001-8003) and the balancer on 8000 (admin 8004), default timeouts
# (client_header 10s: a head must be complete 10 s after its first byte, else 408 and close).
# slowhttptest opens $CONNECTIONS connections (default 1000) on loopback, for $DURATION seconds
# (default 30) in each mode:
#   slowloris (-H): request heads that never end, one more header line every 10 s
#   slow body (-B): POSTs announcing 8 KiB and sending a few bytes every 10 s
# Meanwhile normal clients keep making requests: loadgen on 4 keep-alive connections, and a
# curl loop opening a new connection for every request (it has to get through the accept queue
# the attack fills). For each phase it prints their success rate and p50/p99 latency.
#
#   ./scripts/attack.sh                 both attacks
#   ./scripts/attack.sh slowloris|body  one of them
set -euo pipefail
cd "$(dirname "$0")/.."

modes=("${@:-slowloris body}")
read -r -a modes <<<"${modes[*]}"
connections=${CONNECTIONS:-1000}
duration=${DURATION:-30}
rate=200      # new attack connections per second: all of them open after connections/rate s
interval=10   # seconds between two follow-up pieces of an attack connection

if ! command -v slowhttptest >/dev/null 2>&1; then
    echo "installing slowhttptest"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y -qq slowhttptest || { $sudo apt-get update -qq && $sudo apt-get install -y -qq slowhttptest; }
fi
for tool in curl awk sort; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is needed" >&2; exit 1; }
done
# slowhttptest needs a descriptor per connection, the balancer two (client and backend).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((2 * connections + 200)) ]; then
    echo "descriptor limit $(ulimit -n) is too low for $connections connections" >&2
    exit 1
fi

cargo build --release --bins --quiet
bin=target/release
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

cat >"$work/lb.toml" <<TOML
listen = "127.0.0.1:8000"
admin = "127.0.0.1:8004"
access_log = false
[[backend]]
name = "backend-1"
address = "127.0.0.1:8001"
[[backend]]
name = "backend-2"
address = "127.0.0.1:8002"
[[backend]]
name = "backend-3"
address = "127.0.0.1:8003"
TOML

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}

for i in 1 2 3; do
    "$bin/backend" --port "800$i" --name "backend-$i" --quiet >/dev/null &
    pids+=($!)
done
"$bin/lb" --config "$work/lb.toml" 2>"$work/lb.log" &
lb=$!
pids+=("$lb")
wait_port 8001; wait_port 8002; wait_port 8003; wait_port 8000

# New-connection requests for $1 seconds; one "status seconds" line per request in $2.
curl_loop() {
    local until=$((SECONDS + $1))
    while [ "$SECONDS" -lt "$until" ]; do
        curl -s -o /dev/null --max-time 10 -w '%{http_code} %{time_total}\n' \
            http://127.0.0.1:8000/ >>"$2" || echo "000 10" >>"$2"
        sleep 0.01
    done
}

# "name: N requests, S% ok, p50 X ms, p99 Y ms, max Z ms" from "status seconds" lines.
summarize() {
    sort -k2 -g "$2" | awk -v name="$1" '
        { n++; t[n] = $2 * 1000; if ($1 == 200) ok++ }
        END {
            if (n == 0) { printf "%s: no requests\n", name; exit }
            p50 = t[int((n - 1) * 0.50 + 1.5)]; p99 = t[int((n - 1) * 0.99 + 1.5)]
            printf "%s: %d requests, %.2f%% ok, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                name, n, 100 * ok / n, p50, p99, t[n]
        }'
}

# Normal traffic for $1 seconds: loadgen (keep-alive) and the curl loop (new connections).
measure() {
    local tag=$1 secs=$2
    "$bin/loadgen" --target 127.0.0.1:8000 --connections 4 --duration "$secs" --timeout 10 \
        >"$work/loadgen-$tag.txt" &
    local load=$!
    pids+=("$load")
    curl_loop "$secs" "$work/curl-$tag.txt"
    wait "$load"
    local sent failed lat
    sent=$(sed -n 's/^requests sent: *//p' "$work/loadgen-$tag.txt")
    failed=$(sed -n 's/^requests failed: *//p' "$work/loadgen-$tag.txt")
    lat=$(sed -n 's/^latency: *//p' "$work/loadgen-$tag.txt")
    awk -v s="$sent" -v f="$failed" -v l="$lat" 'BEGIN {
        printf "  keep-alive (loadgen, 4 conns): %d requests, %.2f%% ok, %s\n", s, s ? 100 * (s - f) / s : 0, l }'
    echo "  $(summarize "new connection per request (curl)" "$work/curl-$tag.txt")"
}

echo "== baseline: no attack (10 s)"
measure baseline 10
echo

ramp=$(( (connections + rate - 1) / rate + 2 ))
for mode in "${modes[@]}"; do
    case "$mode" in
        slowloris) flag=-H ;;
        body) flag=-B ;;
        *) echo "unknown mode $mode (slowloris or body)" >&2; exit 2 ;;
    esac
    echo "== $mode: slowhttptest $flag -c $connections -r $rate -i $interval -s 8192 -l $duration -u http://127.0.0.1:8000/"
    slowhttptest "$flag" -c "$connections" -r "$rate" -i "$interval" -s 8192 -l "$duration" \
        -u http://127.0.0.1:8000/ -p 3 -g -o "$work/slow-$mode" >"$work/slow-$mode.log" 2>&1 &
    attack=$!
    pids+=("$attack")
    # Measure once every attack connection is open, until shortly before the attack ends.
    sleep "$ramp"
    echo "  while attacking (from ${ramp} s to $((duration - 2)) s):"
    measure "$mode" $((duration - 2 - ramp))
    wait "$attack" || true
    # slowhttptest's own view, per second: closed, pending, connected, service available.
    csv="$work/slow-$mode.csv"
    if [ -f "$csv" ]; then
        awk -F, 'NR > 1 && $4 + 0 > peak { peak = $4 + 0 } NR > 1 { last = $0; if ($5 + 0 == 0) down++ }
            END { split(last, f, ","); printf "  slowhttptest: at most %d attack connections open at once, %d closed by the server at the end; service unavailable %d s (its own probe)\n", peak, f[2], down + 0 }' "$csv"
    fi
    echo "  balancer: VmHWM $(awk '/VmHWM/ { print $2, $3 }' "/proc/$lb/status"), $(ls "/proc/$lb/fd" | wc -l) descriptors now, alive: $(kill -0 "$lb" 2>/dev/null && echo yes || echo no)"
    echo
    # Let the balancer close what the attack left before the next one.
    sleep 2
done
