#!/usr/bin/env bash
# Launch/dist_test.sh CONFIG CHECKPOINT NPROC [eval args...]
# Evaluates CHECKPOINT (a WORK_DIR/iter_<N> directory or a model.safetensors) with the val split sharded over NPROC
# ranks; HOSTFILE=path spreads them over machines.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if (( $# < 3 )); then
    echo "usage: $0 CONFIG CHECKPOINT NPROC [eval args...]" >&2
    exit 2
fi
CONFIG=$1 CHECKPOINT=$2 NPROC=$3
shift 3
require_binary
mpirun_flags "$NPROC"
exec mpirun "${MPIRUN_FLAGS[@]}" -n "$NPROC" "$OCR_DDP" eval "$CONFIG" "$CHECKPOINT" "$@"
