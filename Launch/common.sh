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
