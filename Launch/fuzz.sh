#!/usr/bin/env bash
# Fuzz one parser with libFuzzer and AddressSanitizer for SECONDS (default 60):
#   Launch/fuzz.sh safetensors|png|jpeg|config|trainer-state [SECONDS]
# Builds into .build/fuzz (swiftc -sanitize=fuzzer,address). Seeds come from Fuzz/Corpus/TARGET (committed);
# what libFuzzer discovers goes to .build/fuzz-corpus/TARGET, crashing inputs to .build/fuzz-artifacts/TARGET/.
# A crash found here is fixed and its input committed under Fuzz/Regressions/TARGET, which the test suite replays.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:?usage: Launch/fuzz.sh safetensors|png|jpeg|config|trainer-state [SECONDS]}
DURATION=${2:-60}
swift build -c release --build-path .build/fuzz --product "fuzz-$TARGET" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld   # gold fails on the sanitizer runtime (internal error)
mkdir -p ".build/fuzz-corpus/$TARGET" ".build/fuzz-artifacts/$TARGET"
# rss_limit_mb: an input that makes the parser allocate more than this is a finding (a lying header).
".build/fuzz/release/fuzz-$TARGET" -max_total_time="$DURATION" -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix=".build/fuzz-artifacts/$TARGET/" \
    ".build/fuzz-corpus/$TARGET" "Fuzz/Corpus/$TARGET"
