#!/usr/bin/env bash
# Installs the Debian packages ocr-ddp builds and runs with (skipped when all are present). Needs root or sudo.
set -euo pipefail
packages=(libopenblas-dev libopenmpi-dev openmpi-bin pkg-config libspng-dev libturbojpeg0-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
