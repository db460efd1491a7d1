#!/usr/bin/env bash
# Starts the demo in the foreground under the supervisor (src/bin/supervisor/): three backends
# on 8001-8003, the balancer on 8000 and HTTPS on 8443 (config: lb.toml; the certificate comes from
# scripts/certs.sh), and the supervisor's control API on 8005,
# which the dashboard uses to kill and restart them. Ctrl-C or SIGTERM stops every process; the
# children die with the supervisor even if it is killed outright.
#
#   ./scripts/start.sh                          the demo
#   ./scripts/start.sh --backends 4             other arguments go to the supervisor (--help)
#   ./scripts/start.sh -- --log-level debug     arguments after -- go to the balancer
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins
# The demo's HTTPS listener (lb.toml's [tls]) serves a certificate of a private CA made here once.
./scripts/certs.sh certs >/dev/null

echo "dashboard:  http://127.0.0.1:8004/ (the balancer's admin API) or open frontend/index.html"
echo "supervisor: http://127.0.0.1:8005/api/processes (unless --control says otherwise; see 'control on')"
echo "lb on http://127.0.0.1:8000 and https://localhost:8443 (curl --cacert certs/ca.crt),"
echo "backends on 8001-8003. Ctrl-C stops everything."
exec target/release/supervisor --config lb.toml "$@"
