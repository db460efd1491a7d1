#!/usr/bin/env bash
# Starts the demo in the foreground under the supervisor (src/bin/supervisor.rs): three backends
# on 8001-8003, the balancer on 8000 (config: lb.toml), and the supervisor's control API on 8005,
# which the dashboard uses to kill and restart them. Ctrl-C or SIGTERM stops every process; the
# children die with the supervisor even if it is killed outright.
#
#   ./scripts/start.sh                          the demo
#   ./scripts/start.sh --backends 4             other arguments go to the supervisor (--help)
#   ./scripts/start.sh -- --log-level debug     arguments after -- go to the balancer
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins

echo "dashboard:  http://127.0.0.1:8004/ (the balancer's admin API) or open frontend/index.html"
echo "supervisor: http://127.0.0.1:8005/api/processes (unless --control says otherwise; see 'control on')"
echo "lb on http://127.0.0.1:8000, backends on 8001-8003. Ctrl-C stops everything."
exec target/release/supervisor --config lb.toml "$@"
