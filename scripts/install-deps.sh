#!/usr/bin/env bash
# Installs the Debian packages deft needs, if any are missing. Idempotent and
# quiet when everything is present. Usage: scripts/install-deps.sh
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenblas-dev libdnnl-dev libcmocka-dev zlib1g-dev
  libopenmpi-dev openmpi-bin
  dataset-fashion-mnist gnuplot-nox iproute2
  clang libclang-rt-14-dev
  python3-torch python3-torchvision python3-pytest python3-numpy
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install-deps: missing packages (${missing[*]}) and not root; run:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
