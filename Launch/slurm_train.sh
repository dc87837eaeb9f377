#!/usr/bin/env bash
# NPROC=4 [NPROC_PER_NODE=4] [CPUS_PER_TASK=1] [TIME=hh:mm:ss] [REQUEUE=1] Launch/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train args...]
# As mmseg's slurm_train.sh: srun starts NPROC ranks through PMIx (Open MPI is built with it).
#
# Preemption and time limits: Slurm sends SIGTERM to the ranks (scancel, preemption, the time limit) and SIGKILL
# KillWait seconds later; ocr-ddp finishes the step, checkpoints and exits 0. SIGNAL_LEAD seconds (default 300)
# before the time limit srun also sends SIGUSR1 (--signal), which means the same, so that even a long step and its
# checkpoint end before Slurm's kill. The same command with --resume continues exactly.
# REQUEUE=1 submits the job with sbatch --requeue instead (the output of every run appended to
# WORK_DIR/slurm-<jobid>.out): the batch shell receives SIGUSR1 ahead of the limit (B:USR1@SIGNAL_LEAD), passes it to
# the ranks, and once they have checkpointed requeues the job, which resumes from the newest checkpoint. Slurm holds a
# requeued job for about two minutes (Reason=BeginTime) before it starts it again. Extra srun/sbatch flags: SRUN_ARGS.
set -euo pipefail
# sbatch runs a copy of this script from slurmd's spool directory, away from common.sh and the binary: the
# submission passes its own path along (OCR_DDP_SLURM_SCRIPT, exported to the job and kept across requeues).
if [[ -n "${SLURM_JOB_ID:-}" && -n "${OCR_DDP_SLURM_SCRIPT:-}" ]]; then
    source "$(dirname "$OCR_DDP_SLURM_SCRIPT")/common.sh"
else
    source "$(dirname "$0")/common.sh"
fi
if (( $# < 4 )); then
    echo "usage: NPROC=4 $0 PARTITION JOB_NAME CONFIG WORK_DIR [train args...]" >&2
    exit 2
fi
PARTITION=$1 JOB_NAME=$2 CONFIG=$3 WORK_DIR=$4
shift 4
NPROC=${NPROC:-4}
NPROC_PER_NODE=${NPROC_PER_NODE:-$NPROC}
CPUS_PER_TASK=${CPUS_PER_TASK:-1}
SIGNAL_LEAD=${SIGNAL_LEAD:-300}
require_binary
shape=(-p "$PARTITION" --job-name="$JOB_NAME" --ntasks="$NPROC" --ntasks-per-node="$NPROC_PER_NODE"
       --cpus-per-task="$CPUS_PER_TASK")
[[ -n "${TIME:-}" ]] && shape+=(--time="$TIME")

if [[ "${REQUEUE:-0}" == 1 && -z "${SLURM_JOB_ID:-}" ]]; then
    mkdir -p "$WORK_DIR"
    OCR_DDP_SLURM_SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
    export OCR_DDP_SLURM_SCRIPT OCR_DDP
    # shellcheck disable=SC2086
    exec sbatch "${shape[@]}" --requeue --signal=B:USR1@"$SIGNAL_LEAD" --output="$WORK_DIR/slurm-%j.out" \
        --open-mode=append --export=ALL ${SRUN_ARGS:-} "$0" "$PARTITION" "$JOB_NAME" "$CONFIG" "$WORK_DIR" "$@"
fi

step=(srun --kill-on-bad-exit=1 --mpi=pmix)
if [[ -n "${SLURM_JOB_ID:-}" && "${REQUEUE:-0}" == 1 ]]; then
    # Inside the requeueable batch job: the allocation is ours already; a requeued run resumes.
    resume=()
    [[ -f "$WORK_DIR/last_checkpoint" ]] && resume=(--resume)
    # srun no longer takes --cpus-per-task from the batch job's environment (Slurm 22.05): it is given again.
    # shellcheck disable=SC2086
    run_forwarding_stop "${step[@]}" --cpus-per-task="$CPUS_PER_TASK" ${SRUN_ARGS:-} \
        env OPENBLAS_NUM_THREADS="$CPUS_PER_TASK" "$OCR_DDP" train "$CONFIG" --work-dir "$WORK_DIR" "${resume[@]}" "$@" \
        || exit $?
    if (( STOP_FORWARDED )); then
        echo "checkpointed ahead of the time limit: requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID"
    fi
    exit 0
fi
# shellcheck disable=SC2086
exec "${step[@]}" "${shape[@]}" --signal=USR1@"$SIGNAL_LEAD" ${SRUN_ARGS:-} \
    env OPENBLAS_NUM_THREADS="$CPUS_PER_TASK" "$OCR_DDP" train "$CONFIG" --work-dir "$WORK_DIR" "$@"
