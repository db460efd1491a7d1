#!/usr/bin/env bash
# Regenerates docs/dashboard.png, the README's picture of the dashboard. It runs the dashboard's
# browser test (tests/browser/dashboard.test.mjs: the demo under the supervisor on ports
# 18000-18005, headless Chromium) with its scene for the README: SCREENSHOT_SECONDS (default
# 300, enough to fill the charts' 5 minutes) of traffic in waves over the three backends,
# backend-2 killed from its card 40 s before the end, and the top of the page (header, backend
# cards, charts; 1280 px wide) taken while it is down. The picture replaces docs/dashboard.png
# only when the whole test passed. Installs what it needs as scripts/test.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${SCREENSHOT_SECONDS:-300}"
out=docs/dashboard.png
tmp=target/dashboard-readme.png

./scripts/install-test-deps.sh
cargo build --release --bins
rm -f "$tmp"
echo "== dashboard in headless Chromium, ${seconds} s of traffic"
(cd tests/browser && LB_BIN_DIR="$PWD/../../target/release" DASHBOARD_SCREENSHOT="$tmp" \
    DASHBOARD_SCENE_SECONDS="$seconds" node --test)
mkdir -p docs
cp "$tmp" "$out"
echo "$out: $(wc -c <"$out") bytes"
