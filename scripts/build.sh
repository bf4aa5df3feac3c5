#!/usr/bin/env bash
# Configures and builds everything into ./build (Release with debug info). Extra arguments go
# to cmake's configure step, e.g. scripts/build.sh -DSPARKLE_BUILD_TESTS=OFF.
#
# GPU platform (docs/gpu.md): SPARKLE_GPU from the environment or -DSPARKLE_GPU=..., else
# nvidia when an NVIDIA GPU and nvcc are present, else amd when hipcc is installed (setup.sh
# installs it; the daemon then uses an AMD GPU if there is one and otherwise serves on the CPU,
# saying why in its log and `sparklectl status`), else off.
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=${SPARKLE_GPU:-}
if [ -z "$gpu" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ] && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    gpu=nvidia
  elif command -v hipcc >/dev/null && [ -d /usr/lib/x86_64-linux-gnu/cmake/hip-lang ]; then
    gpu=amd
  else
    gpu=off
  fi
fi
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_HIP_COMPILER_LAUNCHER=ccache
            -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARKLE_GPU="$gpu" \
  "${launcher[@]}" "$@" >/dev/null
# Two cores and 24 GiB: gRPC-heavy translation units take ~1 GiB each, so -j follows nproc.
cmake --build build -j "$(nproc)"
