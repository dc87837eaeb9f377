#!/usr/bin/env bash
# The test command (README "Tests"; .ci/run calls it). Numeric tests run in a release build: debug builds are
# 10–300× slower on the kernels. Then each fuzz target runs FUZZ_SECONDS (default 5) as a smoke test, so the
# targets keep building and their seeds keep running (Launch/fuzz.sh; FUZZ_SECONDS=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release
swift test -c release "$@"
if [[ "${FUZZ_SECONDS:-5}" != 0 ]]; then
    for target in safetensors png jpeg config trainer-state; do
        bash Launch/fuzz.sh "$target" "${FUZZ_SECONDS:-5}" > ".build/fuzz-smoke-$target.log" 2>&1 \
            || { tail -40 ".build/fuzz-smoke-$target.log"; echo "fuzz smoke test of $target failed"; exit 1; }
        grep -h "stat::number_of_executed_units" ".build/fuzz-smoke-$target.log" | sed "s/^/fuzz $target: /"
    done
fi
