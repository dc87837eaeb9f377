#!/usr/bin/env bash
# Launch/dist_train.sh CONFIG NPROC [train args...]
# Trains with NPROC MPI ranks on this machine, or across machines with HOSTFILE=path (an Open MPI hostfile;
# the binary and data must be at the same paths on every host). Each rank uses cores/ranks-on-its-node BLAS
# threads unless OPENBLAS_NUM_THREADS is set. Extra Open MPI settings go through OMPI_MCA_* variables.
#
# Preemption: SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 to this script reaches the ranks as SIGUSR1, which mpirun passes
# on without ending the job: every rank finishes its step, rank 0 checkpoints, and the script exits 0. (mpirun that
# receives SIGTERM itself forwards it, kills the ranks odls_base_sigkill_timeout seconds later, 1 by default, and
# exits 1 whatever they did.) Where something may signal mpirun directly (a scheduler signalling every process of
# the job), mpirun's kill grace is KILL_GRACE seconds (default 30; OMPI_MCA_odls_base_sigkill_timeout wins): set it
# above a step plus a checkpoint. mpirun also waits about twice the grace before it ends a job that failed.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( $# < 2 )); then
    echo "usage: $0 CONFIG NPROC [train args...]" >&2
    exit 2
fi
CONFIG=$1 NPROC=$2
shift 2
require_binary
mpirun_flags "$NPROC"
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-${KILL_GRACE:-30}}
# Tells the ranks that stop signals arrive as SIGUSR1 (their warning about a short kill grace names KILL_GRACE).
export OCR_DDP_STOP_FORWARDED=1
run_forwarding_stop mpirun "${MPIRUN_FLAGS[@]}" -n "$NPROC" "$OCR_DDP" train "$CONFIG" "$@"
