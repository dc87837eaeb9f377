#!/usr/bin/env bash
# Launch/dist_train.sh CONFIG NPROC [train args...]
# Trains with NPROC MPI ranks on this machine, or across machines with HOSTFILE=path (an Open MPI hostfile;
# the binary and data must be at the same paths on every host). Each rank uses cores/ranks-on-its-node BLAS
# threads unless OPENBLAS_NUM_THREADS is set. Extra Open MPI settings go through OMPI_MCA_* variables.
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
exec mpirun "${MPIRUN_FLAGS[@]}" -n "$NPROC" "$OCR_DDP" train "$CONFIG" "$@"
