# Shared by the launch scripts: the binary, and mpirun flags this machine needs.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OCR_DDP="${OCR_DDP:-$ROOT/.build/release/ocr-ddp}"

# mpirun refuses root without --allow-run-as-root, and more ranks than cores without --oversubscribe (one machine).
mpirun_flags() {
    local nproc=$1
    MPIRUN_FLAGS=()
    [[ $(id -u) -eq 0 ]] && MPIRUN_FLAGS+=(--allow-run-as-root)
    if [[ -n "${HOSTFILE:-}" ]]; then
        MPIRUN_FLAGS+=(--hostfile "$HOSTFILE")
    elif (( nproc > $(nproc) )); then
        MPIRUN_FLAGS+=(--oversubscribe)
    fi
}

require_binary() {
    if [[ ! -x "$OCR_DDP" ]]; then
        echo "error: $OCR_DDP not built; run: swift build -c release" >&2
        exit 1
    fi
}

# run_forwarding_stop CMD...: runs CMD (mpirun or srun) in its own process group, so that a terminal's Ctrl-C
# reaches this script only, and turns SIGTERM, SIGINT and SIGUSR1 to the script into one SIGUSR1 to CMD, which
# both launchers pass on to the ranks without aborting the job: "checkpoint at the end of this step, exit 0".
# Returns CMD's exit status; STOP_FORWARDED=1 afterwards if a stop was passed on.
run_forwarding_stop() {
    STOP_FORWARDED=0
    set -m
    "$@" &
    local pid=$! status=0
    set +m
    trap 'STOP_FORWARDED=1; kill -USR1 "$pid" 2>/dev/null || true' TERM INT USR1
    # A trapped signal interrupts wait (status > 128) while CMD runs on; a reaped CMD no longer answers kill -0.
    while true; do
        if wait "$pid"; then status=0; else status=$?; fi
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - TERM INT USR1
    return "$status"
}
