#!/usr/bin/env bash
# Everything CI checks: formatting, lints, every Rust test (unit, integration, doc), and the
# dashboard's browser test in headless Chromium. Installs what the tests drive when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
cargo test --doc
echo "== dashboard in headless Chromium"
cargo build --release --bins
(cd tests/browser && LB_BIN_DIR="$PWD/../../target/release" node --test)
