#!/usr/bin/env bash
# The quick start: install what is missing, build, write the synthetic dataset, train the quick-start OCRNet under
# mpirun -n 4, evaluate the final checkpoint and print the per-class table. WORK_DIR and NPROC may be overridden;
# AMP=1 trains in bf16 mixed precision (train --amp); CFG_OPTIONS="K=V ..." adds config overrides to training
# (e.g. model_wrapper_cfg.gradient_payload=bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
source Launch/common.sh
WORK_DIR=${WORK_DIR:-work_dirs/quickstart}
NPROC=${NPROC:-4}
AMP_FLAG=()
[[ "${AMP:-0}" == 1 ]] && AMP_FLAG=(--amp)

bash Launch/install-deps.sh
swift build -c release
mkdir -p "$WORK_DIR"
[[ -d "$WORK_DIR/synthetic/gtFine" ]] || "$OCR_DDP" make-synthetic "$WORK_DIR/synthetic"
mpirun_flags "$NPROC"
start=$(date +%s)
mpirun "${MPIRUN_FLAGS[@]}" -n "$NPROC" "$OCR_DDP" train Configs/quickstart.yaml --work-dir "$WORK_DIR" \
    "${AMP_FLAG[@]}" --cfg-options data.data_root="$WORK_DIR/synthetic" ${CFG_OPTIONS:-}
trained=$(date +%s)
mpirun "${MPIRUN_FLAGS[@]}" -n "$NPROC" "$OCR_DDP" eval Configs/quickstart.yaml "$WORK_DIR/$(cat "$WORK_DIR/last_checkpoint")" \
    --work-dir "$WORK_DIR" --show-dir "$WORK_DIR/show" --cfg-options data.data_root="$WORK_DIR/synthetic"
echo "quick start: training took $((trained - start)) s on $NPROC ranks; predictions to look at in $WORK_DIR/show"
