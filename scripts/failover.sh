#!/usr/bin/env bash
# Failover under load: three backends (8001-8003), the balancer on 8000 with health checks every
# second, 32 keep-alive connections of GET load for 20 s.
#   kill scenario: backend-2 is SIGKILLed at 5 s and started again at 12 s.
#   hang scenario: backend-2 is SIGSTOPped at 5 s (accepts, never answers) and resumed at 12 s.
# Prints requests sent and failed, per-phase shares, and how long backend-2 took to come back.
#
#   ./scripts/failover.sh            both scenarios
#   ./scripts/failover.sh kill|hang  one of them
set -euo pipefail
cd "$(dirname "$0")/.."

scenarios=("${@:-kill hang}")
read -r -a scenarios <<<"${scenarios[*]}"
interval_s=1
rise=2
fall=2
response_timeout_s=3
duration=20

cargo build --release --bins --quiet
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

for port in 8000 8001 8002 8003; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use: stop whatever listens there (./scripts/start.sh?) first" >&2
        exit 1
    fi
done

cat >"$work/lb.toml" <<TOML
listen = "127.0.0.1:8000"
admin = "127.0.0.1:8004"
access_log = false
[health]
interval = "${interval_s}s"
timeout = "1s"
rise = $rise
fall = $fall
[timeouts]
backend_response = "${response_timeout_s}s"
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

now_ms() { date +%s%3N; }

started=
start_backend() { # name port; sets $started (not a subshell, so cleanup knows the pid)
    "$bin/backend" --port "$2" --name "$1" --quiet >/dev/null &
    started=$!
    pids+=("$started")
}

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}

run_scenario() {
    local scenario=$1
    local b1 b2 b3 lb load_start restart_at
    start_backend backend-1 8001; b1=$started
    start_backend backend-2 8002; b2=$started
    start_backend backend-3 8003; b3=$started
    "$bin/lb" --config "$work/lb.toml" 2>"$work/lb-$scenario.log" &
    lb=$!
    pids+=("$lb")
    wait_port 8001; wait_port 8002; wait_port 8003; wait_port 8000

    echo "== scenario: $scenario (health every ${interval_s}s, rise $rise, fall $fall, backend_response ${response_timeout_s}s)"
    load_start=$(now_ms)
    "$bin/loadgen" --target 127.0.0.1:8000 --connections 32 --duration "$duration" \
        --mark 5 --mark 12 --watch backend-2 >"$work/load-$scenario.txt" &
    local load=$!
    pids+=("$load")

    sleep 5
    if [ "$scenario" = kill ]; then
        kill -KILL "$b2"; wait "$b2" 2>/dev/null || true
        echo "t=$(( $(now_ms) - load_start ))ms  backend-2 killed (SIGKILL)"
        sleep 7
        start_backend backend-2 8002; b2=$started
        restart_at=$(( $(now_ms) - load_start ))
        echo "t=${restart_at}ms  backend-2 started again"
    else
        kill -STOP "$b2"
        echo "t=$(( $(now_ms) - load_start ))ms  backend-2 hangs (SIGSTOP: accepts, never answers)"
        sleep 7
        kill -CONT "$b2"
        restart_at=$(( $(now_ms) - load_start ))
        echo "t=${restart_at}ms  backend-2 resumed (SIGCONT)"
    fi
    wait "$load"
    cat "$work/load-$scenario.txt"

    local first
    first=$(sed -n 's/^first backend-2 response after .*: at \([0-9.]*\)s$/\1/p' "$work/load-$scenario.txt")
    if [ -n "$first" ]; then
        local back_ms
        back_ms=$(awk -v f="$first" -v r="$restart_at" 'BEGIN { printf "%d", f * 1000 - r }')
        echo "backend-2 back in rotation ${back_ms} ms after it came back (bound: interval x rise + 1 s = $(( interval_s * rise + 1 )) s)"
    else
        echo "backend-2 never came back in rotation"
    fi
    echo "balancer log (health flips):"
    grep -E "is (up|down)" "$work/lb-$scenario.log" | sed 's/^/  /' || true
    echo

    kill "$lb" "$b1" "$b2" "$b3" 2>/dev/null || true
    wait "$lb" "$b1" "$b2" "$b3" 2>/dev/null || true
}

for scenario in "${scenarios[@]}"; do
    case "$scenario" in
        kill|hang) run_scenario "$scenario" ;;
        *) echo "unknown scenario $scenario (kill or hang)" >&2; exit 2 ;;
    esac
done
