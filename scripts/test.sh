#!/usr/bin/env bash
# Everything CI checks: formatting, lints, and every test (unit, integration, doc).
set -euo pipefail
cd "$(dirname "$0")/.."

# The integration tests drive curl as a real client.
if ! command -v curl >/dev/null 2>&1; then
    echo "installing curl"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq curl; else sudo apt-get update -qq && sudo apt-get install -y -qq curl; fi
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
cargo test --doc
