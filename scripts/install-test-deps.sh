#!/usr/bin/env bash
# Installs what the test suite drives besides cargo, when missing: curl (a real client in the
# integration tests), openssl (the TLS tests' certificates, and `openssl s_client`), python3 (its
# ssl module is another TLS client), nghttp (an HTTP/2 client), HAProxy (the L4 tier of the fleet
# test), Python's prometheus_client (the reference parser for /metrics), h2 (the HTTP/2
# conformance suite's hand-made frames) and grpcio (gRPC servers and clients for the HTTP/2
# backend tests), Debian's Chromium and the
# playwright-core npm package (the dashboard's browser test). Idempotent and quick when
# everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_missing=()
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
command -v openssl >/dev/null 2>&1 || apt_missing+=(openssl)
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
command -v haproxy >/dev/null 2>&1 || apt_missing+=(haproxy)
command -v nghttp >/dev/null 2>&1 || apt_missing+=(nghttp2-client)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs npm)
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3 python3-pip)
if [ "${#apt_missing[@]}" -gt 0 ]; then
    echo "installing ${apt_missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

if ! python3 -c "import prometheus_client" >/dev/null 2>&1; then
    echo "installing prometheus_client"
    python3 -m pip install --quiet prometheus_client 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages prometheus_client
fi

if ! python3 -c "import h2" >/dev/null 2>&1; then
    echo "installing h2 (Python)"
    python3 -m pip install --quiet h2 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages h2
fi

if ! python3 -c "import grpc" >/dev/null 2>&1; then
    echo "installing grpcio (Python)"
    python3 -m pip install --quiet grpcio 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages grpcio
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "installing playwright-core"
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
