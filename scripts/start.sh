#!/usr/bin/env bash
# Starts the demo in the foreground: three backends on 8001-8003 and the balancer on 8000
# (config: lb.toml). Ctrl-C or SIGTERM stops every process this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins
bin=target/release

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT

for i in 1 2 3; do
    "$bin/backend" --port "800$i" --name "backend-$i" --quiet &
    pids+=($!)
done
"$bin/lb" --config lb.toml "$@" &
lb_pid=$!
pids+=("$lb_pid")

echo "lb on http://127.0.0.1:8000 — backends on 8001-8003. Ctrl-C stops everything."
# Returns when the balancer exits (or on Ctrl-C, through the trap).
wait "$lb_pid"
