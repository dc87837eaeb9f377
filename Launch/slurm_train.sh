#!/usr/bin/env bash
# NPROC=4 [NPROC_PER_NODE=4] [CPUS_PER_TASK=1] Launch/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train args...]
# As mmseg's slurm_train.sh: srun starts NPROC ranks through PMIx (Open MPI is built with it). Slurm sends SIGTERM
# before preempting or at the time limit; ocr-ddp then finishes the step, checkpoints and exits 0, and the same
# command with --resume continues exactly. Extra srun flags go in SRUN_ARGS.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( $# < 4 )); then
    echo "usage: NPROC=4 $0 PARTITION JOB_NAME CONFIG WORK_DIR [train args...]" >&2
    exit 2
fi
PARTITION=$1 JOB_NAME=$2 CONFIG=$3 WORK_DIR=$4
shift 4
NPROC=${NPROC:-4}
NPROC_PER_NODE=${NPROC_PER_NODE:-$NPROC}
CPUS_PER_TASK=${CPUS_PER_TASK:-1}
require_binary
# shellcheck disable=SC2086
exec srun -p "$PARTITION" --job-name="$JOB_NAME" --ntasks="$NPROC" --ntasks-per-node="$NPROC_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 --mpi=pmix ${SRUN_ARGS:-} \
    env OPENBLAS_NUM_THREADS="$CPUS_PER_TASK" "$OCR_DDP" train "$CONFIG" --work-dir "$WORK_DIR" "$@"
