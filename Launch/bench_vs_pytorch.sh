#!/usr/bin/env bash
# Launch/bench_vs_pytorch.sh — ocr-ddp bench against PyTorch (Tools/bench_pytorch.py) on the same OCRNet, the
# same crop, batch, ranks and threads, alternating the two tools so that load or clock drift on the machine hits
# both alike. Settings:
#   a  R18-D8 256×256, batch 2, 1 process × 2 threads
#   b  R18-D8 256×256, batch 1 per rank, 2 ranks × 1 thread (ocr-ddp: mpirun, sync BN; PyTorch: DDP over gloo,
#      plain BN, since PyTorch has no SyncBatchNorm on CPU)
#   c  R50-D8 512×1024, batch 1, 1 process × 2 threads (slow: tens of seconds per step)
#   d  HRNetV2-W18 OCRNet 512×1024, batch 2, 1 process × 2 threads (PyTorch: mmseg's own model through
#      Tools/bench_hrnet_torch.py, NCHW, channels_last and bf16; slower still)
#   e  HRNetV2-W48 OCRNet, as d
# Each setting runs ocr-ddp in fp32 and bf16 (--amp) and PyTorch in every mode of Tools/bench_pytorch.py (NCHW,
# channels_last, torch.compile: fp32; channels_last + bf16 autocast), then compares each of our precisions with
# PyTorch's fastest mode of the same precision.
# Environment: ROUNDS (3), ITERS (timed steps per run, 5), WARMUP (2), SETTINGS ("a,b,c"; also d, e),
# OURS ("fp32,bf16"), TORCH ("nchw,channels_last,compile,bf16"), OCR_DDP (binary), OUT (directory for the raw JSON
# lines and logs; default a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3} ITERS=${ITERS:-5} WARMUP=${WARMUP:-2} SETTINGS=${SETTINGS:-a,b,c}
IFS=, read -r -a OURS_MODES <<<"${OURS:-fp32,bf16}"
IFS=, read -r -a TORCH_MODES <<<"${TORCH:-nchw,channels_last,compile,bf16}"
OCR_DDP=${OCR_DDP:-.build/release/ocr-ddp}
OUT=${OUT:-$(mktemp -d -t bench_vs_pytorch.XXXXXX)}
CONFIG=Configs/ours/ocrnet_r50-d8_4xb2-40k_cityscapes-512x1024.yaml  # depth and batch are overridden per setting

declare -A SETTING=(  # network (ResNet depth or HRNet name)  crop  batch-per-rank  ranks  threads-per-rank
    [a]="18 256x256 2 1 2"
    [b]="18 256x256 1 2 1"
    [c]="50 512x1024 1 1 2"
    [d]="hr18 512x1024 2 1 2"
    [e]="hr48 512x1024 2 1 2"
)

[[ -x "$OCR_DDP" ]] || { echo "error: $OCR_DDP not found: run swift build -c release first" >&2; exit 1; }
# Tools/bench_pytorch.py builds the model with Tools/make_golden.py, which also imports numpy and safetensors.
python3 -c "import torch, numpy, safetensors" 2>/dev/null \
    || { echo "error: PyTorch not importable: pip install torch numpy safetensors" >&2; exit 1; }
IFS=, read -r -a SELECTED <<<"$SETTINGS"
for s in "${SELECTED[@]}"; do
    [[ -n "${SETTING[$s]:-}" ]] || { echo "error: unknown setting '$s' in SETTINGS (a, b, c, d, e)" >&2; exit 1; }
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
        runs=()
        for mode in "${OURS_MODES[@]}"; do runs+=("ocr-ddp.$mode"); done
        for mode in "${TORCH_MODES[@]}"; do
            [[ $depth == hr* && $mode == compile ]] && continue  # the HRNet tool has no torch.compile mode
            runs+=("pytorch.$mode")
        done
        # Odd rounds run the list forwards, even rounds backwards: no tool or mode always gets the warmer machine.
        if (( round % 2 == 0 )); then
            for (( i = 0, j = ${#runs[@]} - 1; i < j; i++, j-- )); do t=${runs[i]}; runs[i]=${runs[j]}; runs[j]=$t; done
        fi
        echo "round $round/$ROUNDS, setting $s: ${SETTING[$s]} (depth crop batch ranks threads): ${runs[*]}"
        for run in "${runs[@]}"; do
            tool=${run%%.*} mode=${run#*.}
            if [[ $tool == ocr-ddp && $depth == hr* ]]; then
                cmd=("$OCR_DDP" bench "Configs/ocrnet_${depth}_4xb2-80k_cityscapes-512x1024.yaml" --crop "$crop"
                     --iters "$ITERS" --warmup "$WARMUP" --cfg-options "data.batch_size=$batch")
                [[ $mode == bf16 ]] && cmd+=(--amp)
            elif [[ $tool == ocr-ddp ]]; then
                cmd=("$OCR_DDP" bench "$CONFIG" --crop "$crop" --iters "$ITERS" --warmup "$WARMUP"
                     --cfg-options "model.backbone.depth=$depth" "data.batch_size=$batch")
                [[ $mode == bf16 ]] && cmd+=(--amp)
                if (( ranks > 1 )); then
                    cmd=("${MPIRUN[@]}" -n "$ranks" -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS "${cmd[@]}")
                fi
            elif [[ $depth == hr* ]]; then
                cmd=(python3 Tools/bench_hrnet_torch.py --models "$depth" --crop "$crop" --batch "$batch"
                     --threads "$threads" --iters "$ITERS" --warmup "$WARMUP" --mode "$mode")
            else
                cmd=(python3 Tools/bench_pytorch.py --depth "$depth" --crop "$crop" --batch "$batch"
                     --threads "$threads" --ranks "$ranks" --iters "$ITERS" --warmup "$WARMUP" --mode "$mode")
            fi
            record "$OUT/$s.$run.jsonl" "$threads" "${cmd[@]}"
        done
    done
done

sgemm_rates=() depths=()
for threads in "${!SGEMM[@]}"; do sgemm_rates+=("$threads=${SGEMM[$threads]}"); done
for s in "${SELECTED[@]}"; do depths+=("$s=${SETTING[$s]%% *}"); done
python3 - "$OUT" "${sgemm_rates[*]}" "${depths[@]}" <<'EOF'
import glob, json, os, statistics, sys

# argv: OUT, "threads=GFLOP/s ...", then setting=depth for each setting in the order run
out, sgemm = sys.argv[1], dict(a.split("=") for a in sys.argv[2].split())
depths = dict(a.split("=") for a in sys.argv[3:])

def runs(setting):
    """{"ocr-ddp.fp32": [json, ...], "pytorch.channels_last": [...], ...} of one setting."""
    found = {}
    for path in sorted(glob.glob(f"{out}/{setting}.*.jsonl")):
        with open(path) as f:
            found[os.path.basename(path)[len(setting) + 1:-len(".jsonl")]] = [json.loads(line) for line in f]
    return found

def ips(run_list):
    return statistics.median(r["img_per_s"] for r in run_list)

header = (f"{'set':3} {'net':6} {'crop':9} {'ranks×thr':9} {'b/rank':6} {'prec':5} {'img/s ocr-ddp':>13} "
          f"{'PyTorch best (mode)':>30} {'ours/theirs':>11} {'RSS MB/rank ours':>16} {'theirs':>7}")
print("\n" + header + "\n" + "-" * len(header))
footer = []
for s in depths:
    found = runs(s)
    described = next(v[0] for k, v in found.items() if k.startswith("pytorch."))
    for precision, ours_key, torch_modes in (("fp32", "ocr-ddp.fp32", ("nchw", "channels_last", "compile")),
                                             ("bf16", "ocr-ddp.bf16", ("bf16",))):
        theirs = {m: found[f"pytorch.{m}"] for m in torch_modes if f"pytorch.{m}" in found}
        if ours_key not in found or not theirs:
            continue
        best = max(theirs, key=lambda m: ips(theirs[m]))
        ours_ips, theirs_ips = ips(found[ours_key]), ips(theirs[best])
        net = depths[s].upper() if depths[s].startswith("hr") else f"R{depths[s]}-D8"
        print(f"{s:3} {net:6} {'x'.join(map(str, described['crop'])):9} "
              f"{str(described['ranks']) + '×' + str(described['threads_per_rank']):9} {described['batch_per_rank']:6} "
              f"{precision:5} {ours_ips:13.3f} {theirs_ips:14.3f} ({best:>13}) {ours_ips / theirs_ips:11.2f} "
              f"{max(r['peak_rss_mb'] for r in found[ours_key]):16.0f} "
              f"{max(r['peak_rss_mb'] for r in theirs[best]):7.0f}")
    flops = f"forward {described['forward_conv_gflop']:.1f} GFLOP per rank and step; " \
        if "forward_conv_gflop" in described else ""
    footer.append(f"{s}: {flops}img/s per round: "
                  + "; ".join(f"{k} {[round(r['img_per_s'], 3) for r in v]}" for k, v in found.items()))
print("\nimg/s: median over rounds of each run's median step (all ranks' images). RSS: largest rank's peak, MiB.")
print("PyTorch best: its fastest mode of the same precision (fp32: NCHW, channels_last, torch.compile; bf16: "
      "channels_last + autocast).")
print("\n".join(footer))
first = runs(next(iter(depths)))
ours = [v[0] for k, v in first.items() if k.startswith("ocr-ddp.")]
core = ours[0]["openblas_core"] if ours else "?"
bf16 = next((r for r in ours if r.get("precision") == "bfloat16"), None)
print(f"ocr-ddp: OpenBLAS core {core}; sgemm 2048³ "
      + ", ".join(f"{rate} GFLOP/s at {t} thread(s)" for t, rate in sorted(sgemm.items()))
      + (f"; bf16 kernel {bf16['bf16_kernel']}, {bf16['bf16_gemm_gflops']:.0f} GFLOP/s (2048³, all ranks)"
         if bf16 else ""))
torch_run = next(v[0] for k, v in first.items() if k.startswith("pytorch."))
print(f"PyTorch: {torch_run['framework']}, oneDNN (mkldnn) available: {torch_run['mkldnn']}")
EOF
echo "raw results in $OUT"
