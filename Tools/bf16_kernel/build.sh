#!/usr/bin/env bash
# Builds and runs the standalone test and microbenchmark of Sources/COCRBF16 with gcc (no Swift build involved).
#   Tools/bf16_kernel/build.sh          test (every kernel), then bench
#   Tools/bf16_kernel/build.sh test     test only
#   Tools/bf16_kernel/build.sh bench [all|peak|ours|sgemm|winograd]   bench only (see bench_bf16.c; ours/sgemm: one column;
#                                        winograd: the 16-product batches of R18-D8's Winograd passes)
# Needs gcc and libopenblas-dev (Launch/install-deps.sh installs it). Binaries go to $OUT (default /tmp/bf16_kernel).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../../Sources/COCRBF16"
out="${OUT:-/tmp/bf16_kernel}"
mkdir -p "$out"
what="${1:-all}"
flags=(-O3 -Wall -Wextra -Werror -std=gnu11 -I"$src/include" -I"$src")

if [[ $what == all || $what == test ]]; then
    gcc "${flags[@]}" "$src"/*.c "$here/test_bf16.c" -o "$out/test_bf16" -lm -lpthread
    # Every kernel this machine can run: one the CPU lacks falls back (the "kernel:" line says which ran).
    for kernel in amx avx512bf16 portable; do
        echo "== test, OCR_BF16_KERNEL=$kernel"
        OCR_BF16_KERNEL=$kernel "$out/test_bf16"
    done
fi

if [[ $what == all || $what == bench ]]; then
    read -r -a blas_flags <<<"$(pkg-config --cflags --libs openblas)"
    gcc "${flags[@]}" "$src"/*.c "$here/bench_bf16.c" -o "$out/bench_bf16" "${blas_flags[@]}" -lm -lpthread
    echo "== bench"
    # OpenBLAS picks its kernel and threads itself here, as in the trainer's benchmarks (README).
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=2 "$out/bench_bf16" "${2:-all}"
fi
