#!/usr/bin/env bash
# Launch/bench_vs_pytorch.sh — ocr-ddp bench against PyTorch (Tools/bench_pytorch.py) on the same OCRNet, the
# same crop, batch, ranks and threads, alternating the two tools so that load or clock drift on the machine hits
# both alike. Settings:
#   a  R18-D8 256×256, batch 2, 1 process × 2 threads
#   b  R18-D8 256×256, batch 1 per rank, 2 ranks × 1 thread (ocr-ddp: mpirun, sync BN; PyTorch: DDP over gloo,
#      plain BN, since PyTorch has no SyncBatchNorm on CPU)
#   c  R50-D8 512×1024, batch 1, 1 process × 2 threads (slow: tens of seconds per step)
# Environment: ROUNDS (3), ITERS (timed steps per run, 5), WARMUP (2), SETTINGS ("a,b,c"), OCR_DDP (binary),
# OUT (directory for the raw JSON lines and logs; default a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3} ITERS=${ITERS:-5} WARMUP=${WARMUP:-2} SETTINGS=${SETTINGS:-a,b,c}
OCR_DDP=${OCR_DDP:-.build/release/ocr-ddp}
OUT=${OUT:-$(mktemp -d -t bench_vs_pytorch.XXXXXX)}
CONFIG=Configs/ocrnet_r50-d8_4xb2-40k_cityscapes-512x1024.yaml  # depth and batch are overridden per setting

declare -A SETTING=(  # depth  crop  batch-per-rank  ranks  threads-per-rank
    [a]="18 256x256 2 1 2"
    [b]="18 256x256 1 2 1"
    [c]="50 512x1024 1 1 2"
)

[[ -x "$OCR_DDP" ]] || { echo "error: $OCR_DDP not found: run swift build -c release first" >&2; exit 1; }
# Tools/bench_pytorch.py builds the model with Tools/make_golden.py, which also imports numpy and safetensors.
python3 -c "import torch, numpy, safetensors" 2>/dev/null \
    || { echo "error: PyTorch not importable: pip install torch numpy safetensors" >&2; exit 1; }
IFS=, read -r -a SELECTED <<<"$SETTINGS"
for s in "${SELECTED[@]}"; do
    [[ -n "${SETTING[$s]:-}" ]] || { echo "error: unknown setting '$s' in SETTINGS (a, b, c)" >&2; exit 1; }
done
mkdir -p "$OUT"
for s in "${SELECTED[@]}"; do rm -f "$OUT/$s".*.jsonl "$OUT/$s".*.log; done  # a reused OUT must not mix runs
echo "raw results in $OUT"

# Benchmark as a user's machine runs: no pinned OpenBLAS kernel or cache size, so OpenBLAS picks its own.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

# One machine, so no binding (the BLAS threads of a rank may use any core); root needs the explicit permission, and
# --oversubscribe keeps mpirun from refusing when a container reports fewer slots than ranks.
MPIRUN=(mpirun --bind-to none --oversubscribe)
[[ $(id -u) -eq 0 ]] && MPIRUN+=(--allow-run-as-root)

# record FILE THREADS CMD...: runs CMD with THREADS BLAS/OpenMP threads per process and appends its last stdout
# line (the JSON result) to FILE; the whole output goes to FILE's .log, shown in part if CMD fails.
record() {
    local file=$1 threads=$2
    shift 2
    local log=${file%.jsonl}.log stdout=$OUT/last_run.out
    if ! OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads "$@" >"$stdout" 2>>"$log"; then
        cat "$stdout" >>"$log"
        echo "error: failed: $*; last lines of $log:" >&2
        tail -n 5 "$log" >&2
        exit 1
    fi
    cat "$stdout" >>"$log"
    tail -n 1 "$stdout" >>"$file"
}

# The sgemm rate per thread count, for reference: bench-convs prints it second, and at a 16×16 input the conv
# shapes it times afterwards take milliseconds. Median of 7: a single stalled run on a shared machine halves it.
declare -A SGEMM
for s in "${SELECTED[@]}"; do
    read -r _ _ _ _ threads <<<"${SETTING[$s]}"
    [[ -n "${SGEMM[$threads]:-}" ]] && continue
    SGEMM[$threads]=$(OPENBLAS_NUM_THREADS=$threads "$OCR_DDP" bench-convs --height 16 --width 16 --repeats 7 \
        --threads "$threads" | sed -n 's/^sgemm .*: \([0-9.]*\) GFLOP\/s$/\1/p')
done

for (( round = 1; round <= ROUNDS; round++ )); do
    for s in "${SELECTED[@]}"; do
        read -r depth crop batch ranks threads <<<"${SETTING[$s]}"
        ours=("$OCR_DDP" bench "$CONFIG" --crop "$crop" --iters "$ITERS" --warmup "$WARMUP"
              --cfg-options "model.backbone.depth=$depth" "data.batch_size=$batch")
        if (( ranks > 1 )); then
            ours=("${MPIRUN[@]}" -n "$ranks" -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS "${ours[@]}")
        fi
        theirs=(python3 Tools/bench_pytorch.py --depth "$depth" --crop "$crop" --batch "$batch" --threads "$threads"
                --ranks "$ranks" --iters "$ITERS" --warmup "$WARMUP")
        echo "round $round/$ROUNDS, setting $s: ${SETTING[$s]} (depth crop batch ranks threads)"
        # Odd rounds start with ocr-ddp, even rounds with PyTorch: neither always runs on the warmer machine.
        if (( round % 2 )); then
            record "$OUT/$s.ocr-ddp.jsonl" "$threads" "${ours[@]}"
            record "$OUT/$s.pytorch.jsonl" "$threads" "${theirs[@]}"
        else
            record "$OUT/$s.pytorch.jsonl" "$threads" "${theirs[@]}"
            record "$OUT/$s.ocr-ddp.jsonl" "$threads" "${ours[@]}"
        fi
    done
done

sgemm_rates=() depths=()
for threads in "${!SGEMM[@]}"; do sgemm_rates+=("$threads=${SGEMM[$threads]}"); done
for s in "${SELECTED[@]}"; do depths+=("$s=${SETTING[$s]%% *}"); done
python3 - "$OUT" "${sgemm_rates[*]}" "${depths[@]}" <<'EOF'
import json, statistics, sys

# argv: OUT, "threads=GFLOP/s ...", then setting=depth for each setting in the order run
out, sgemm = sys.argv[1], dict(a.split("=") for a in sys.argv[2].split())
depths = dict(a.split("=") for a in sys.argv[3:])
settings = list(depths)

def runs(setting, tool):
    with open(f"{out}/{setting}.{tool}.jsonl") as f:
        return [json.loads(line) for line in f]

def effective_gflops(run_list, forward_gflop):
    # Training ≈ 3 forward passes of FLOPs (backward computes two GEMMs per forward one), over all ranks' images.
    step_s = statistics.median(r["ms_per_step"] for r in run_list) / 1e3
    return 3 * forward_gflop * run_list[0]["ranks"] / step_s

header = (f"{'set':3} {'net':6} {'crop':9} {'ranks×thr':9} {'b/rank':6} {'img/s ocr-ddp':>13} {'img/s torch':>11} "
          f"{'ours/theirs':>11} {'RSS MB/rank ours':>16} {'theirs':>7} {'GFLOP/s ours':>12} {'theirs':>7}")
print("\n" + header + "\n" + "-" * len(header))
footer = []
for s in settings:
    ours, theirs = runs(s, "ocr-ddp"), runs(s, "pytorch")
    described = theirs[0]  # crop, ranks, batch, and the FLOP count that ocr-ddp's line lacks (same network)
    ours_ips = statistics.median(r["img_per_s"] for r in ours)
    theirs_ips = statistics.median(r["img_per_s"] for r in theirs)
    print(f"{s:3} {'R' + depths[s] + '-D8':6} {'x'.join(map(str, described['crop'])):9} "
          f"{str(described['ranks']) + '×' + str(described['threads_per_rank']):9} {described['batch_per_rank']:6} "
          f"{ours_ips:13.3f} {theirs_ips:11.3f} {ours_ips / theirs_ips:11.2f} "
          f"{max(r['peak_rss_mb'] for r in ours):16.0f} {max(r['peak_rss_mb'] for r in theirs):7.0f} "
          f"{effective_gflops(ours, described['forward_conv_gflop']):12.1f} "
          f"{effective_gflops(theirs, described['forward_conv_gflop']):7.1f}")
    footer.append(f"{s}: forward {described['forward_conv_gflop']:.1f} GFLOP per rank and step; img/s per round: "
                  f"ocr-ddp {[round(r['img_per_s'], 3) for r in ours]}, "
                  f"torch {[round(r['img_per_s'], 3) for r in theirs]}"
                  + (f"; torch: {described['note'].split(';')[0]}" if "note" in described else ""))
print("\nimg/s: median over rounds of each run's median step (all ranks' images). RSS: largest rank's peak, MiB.")
print("GFLOP/s: 3 × forward conv+bmm GFLOP × ranks / median step time (whole step, all ranks together).")
print("\n".join(footer))
core = runs(settings[0], "ocr-ddp")[0].get("openblas_core", "?")
torch_run = runs(settings[0], "pytorch")[0]
print(f"ocr-ddp: OpenBLAS core {core}; sgemm 2048³ "
      + ", ".join(f"{rate} GFLOP/s at {t} thread(s)" for t, rate in sorted(sgemm.items())))
print(f"PyTorch: {torch_run['framework']}, oneDNN (mkldnn) available: {torch_run['mkldnn']}")
EOF
echo "raw results in $OUT"
