#!/usr/bin/env bash
# The test command (README "Tests"; .ci/run calls it). Numeric tests run in a release build: debug builds are
# 10–300× slower on the kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release
swift test -c release "$@"
