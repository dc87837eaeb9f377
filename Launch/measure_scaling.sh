#!/usr/bin/env bash
# Launch/measure_scaling.sh OUT.jsonl: the measurements Tools/scaling_model.py is fitted from and checked against
# (README "Scaling"), on simulated clusters of this machine (Launch/simcluster.sh, root): every JSON line that
# `ocr-ddp bench` / `bench-allreduce` prints, tagged with the run's hosts, ranks per host, link rate and model.
#   - single-process compute: R18-D8 256×256 batch 2 and R50-D8 512×1024 batch 1, one thread, no launcher;
#   - 2 hosts × 1 rank at each rate (unshaped, 25, 10, 1 Gbit/s): the all-reduce alone over 4 B … 64 MB (fp32
#     nonblocking and blocking, bf16 nonblocking), and training steps of both models (polling overlap; the thread overlap too, whose
#     allreduce phase is the buckets' transfer time);
#   - 2 hosts × 2 ranks at 1 and 10 Gbit/s (oversubscribed: compute is slowed, communication is what to read): flat
#     and hierarchical all-reduce, fp32 and bf16 (training steps at 1 Gbit/s).
# One thread per rank, and the benchmark rules of the README: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (the binary
# then picks its core; the JSON names it). MODELS=r18 skips the R50 runs (about 5 minutes of the total).
set -euo pipefail
if (( $# != 1 )); then
    echo "usage: $0 OUT.jsonl" >&2
    exit 2
fi
OUT=$1
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/.build/release/ocr-ddp"
MODELS=${MODELS:-r18 r50}
CONFIG="$ROOT/Configs/ours/ocrnet_r50-d8_4xb2-40k_cityscapes-512x1024.yaml"
declare -A MODEL_ARGS=(
    [r18]="$CONFIG --crop 256x256 --iters 3 --warmup 1 --cfg-options data.batch_size=2 model.backbone.depth=18 model.decode_head.0.in_channels=256 model.decode_head.1.in_channels=512"
    [r50]="$CONFIG --crop 512x1024 --iters 2 --warmup 1 --cfg-options data.batch_size=1"
)
SIZES=4,64,1K,16K,256K,1M,4M,16M,64M
: > "$OUT"

# record TAGS COMMAND...: runs COMMAND and appends its JSON lines to OUT with TAGS (a JSON object's members) added.
record() {
    local tags=$1
    shift
    echo "== $tags: $*" >&2
    "$@" | python3 -c '
import json, sys
tags = json.loads("{" + sys.argv[1] + "}")
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        entry = json.loads(line)
        entry.update(tags)
        print(json.dumps(entry, sort_keys=True))
' "$tags" >> "$OUT"
}

export -n OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
export OPENBLAS_NUM_THREADS=1
MPIRUN=(mpirun -x OPENBLAS_NUM_THREADS)

for model in $MODELS; do
    # shellcheck disable=SC2086
    record "\"kind\": \"compute\", \"model\": \"$model\", \"hosts\": 1, \"slots\": 1, \"rate\": \"none\"" \
        "$BIN" bench ${MODEL_ARGS[$model]}
done

for rate in none 25gbit 10gbit 1gbit; do
    tags="\"hosts\": 2, \"slots\": 1, \"rate\": \"$rate\""
    for variant in "fp32 polling" "fp32 thread" "bf16 polling"; do
        read -r payload overlap <<< "$variant"
        record "\"kind\": \"allreduce\", $tags" "$ROOT/Launch/simcluster.sh" 2 "$rate" \
            "${MPIRUN[@]}" -n 2 "$BIN" bench-allreduce --sizes $SIZES --repeats 5 --gradient-payload "$payload" \
            --overlap "$overlap"
    done
    for model in $MODELS; do
        overlaps="polling"
        [[ $model == r18 || $rate == 1gbit ]] && overlaps="polling thread"
        for overlap in $overlaps; do
            # shellcheck disable=SC2086
            record "\"kind\": \"train\", \"model\": \"$model\", $tags" "$ROOT/Launch/simcluster.sh" 2 "$rate" \
                "${MPIRUN[@]}" -n 2 "$BIN" bench ${MODEL_ARGS[$model]} --overlap "$overlap"
        done
        if [[ $rate == 1gbit || $rate == 10gbit ]]; then
            # shellcheck disable=SC2086
            record "\"kind\": \"train\", \"model\": \"$model\", $tags" "$ROOT/Launch/simcluster.sh" 2 "$rate" \
                "${MPIRUN[@]}" -n 2 "$BIN" bench ${MODEL_ARGS[$model]} model_wrapper_cfg.gradient_payload=bf16
        fi
    done
done

for rate in 1gbit 10gbit; do
    tags="\"hosts\": 2, \"slots\": 2, \"rate\": \"$rate\""
    for variant in "fp32 flat" "fp32 hierarchical" "bf16 flat" "bf16 hierarchical"; do
        read -r payload topology <<< "$variant"
        record "\"kind\": \"allreduce\", $tags" env SLOTS=2 "$ROOT/Launch/simcluster.sh" 2 "$rate" \
            "${MPIRUN[@]}" -n 4 "$BIN" bench-allreduce --sizes $SIZES --repeats 5 --gradient-payload "$payload" \
            --allreduce "$topology"
        [[ $rate == 1gbit ]] || continue
        # shellcheck disable=SC2086
        record "\"kind\": \"train\", \"model\": \"r18\", $tags" env SLOTS=2 "$ROOT/Launch/simcluster.sh" 2 1gbit \
            "${MPIRUN[@]}" -n 4 "$BIN" bench ${MODEL_ARGS[r18]} data.batch_size=1 \
            model_wrapper_cfg.gradient_payload="$payload" model_wrapper_cfg.allreduce="$topology"
    done
done
echo "wrote $(wc -l < "$OUT") lines to $OUT" >&2
