#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another, each for SECONDS (default 600).
#
#   scripts/fuzz.sh                       # all six targets, 10 minutes each
#   scripts/fuzz.sh 60 chunked            # one target, one minute
#   FUZZ_ARGS=-max_len=65536 scripts/fuzz.sh 600 connection   # extra libFuzzer flags
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, -Cpasses=sancov-module, ...);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. New corpus entries go to
# fuzz/corpus/TARGET (ignored by git), crashes to fuzz/artifacts/TARGET, the log to
# fuzz/logs/TARGET.log; the last lines of each log carry the figures (runs, exec/s, cov, ft).
# Each target gets fuzz/TARGET.dict if there is one (tls.dict), fuzz/http.dict otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(request_head chunked connection tls h2_frames h2_headers)
fi

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1

mkdir -p fuzz/logs
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    dict=fuzz/http.dict
    [ -f "fuzz/$target.dict" ] && dict="fuzz/$target.dict"
    echo "== $target for ${seconds}s (log: fuzz/logs/$target.log)"
    status=0
    cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -dict="$dict" -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"fuzz/logs/$target.log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::|^SUMMARY|panicked' "fuzz/logs/$target.log" || true
    # the tls target's own tally (inputs, probes, handshake-timeout closes), its last line
    grep -E '^tls: ' "fuzz/logs/$target.log" | tail -1 || true
    if [ "$status" -ne 0 ]; then
        echo "$target: failed (exit $status); input in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
done
