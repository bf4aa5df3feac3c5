#!/usr/bin/env bash
# The GPU platforms that scripts/test.sh does not cover with its emulator build (docs/gpu.md):
#   build-amd     SPARKLE_GPU=amd: the .hip code compiled by clang-15 for gfx906, gfx908,
#                 gfx90a and gfx1030; the GPU tests (engine + HIP runtime, linked) are built and
#                 run (with no AMD GPU here they exercise the no-GPU fallback). sparkled is not
#                 built here: its server code is the emulator build's, compiled again (CI time).
#   build-nvidia  SPARKLE_GPU=nvidia, only when /usr/local/cuda/bin/nvcc exists: the same for
#                 sm_90 through the HIP-on-CUDA shim.
# Only the GPU test binaries (<dir>/gpu_tests.txt), and sparkled for NVIDIA, are built, with
# ccache when it is installed, so that sources already compiled for build/ are not compiled again.
# SPARKLE_AMD_BUILD_DIR / SPARKLE_NVIDIA_BUILD_DIR override the two directory names.
set -euo pipefail
cd "$(dirname "$0")/.."

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_HIP_COMPILER_LAUNCHER=ccache
            -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi

build_and_test() {  # DIR MODE TARGET...
  local dir=$1 mode=$2
  shift 2
  echo "== $dir: SPARKLE_GPU=$mode"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARKLE_BUILD_TESTS=ON \
    -DSPARKLE_BUILD_BENCH=OFF -DSPARKLE_GPU="$mode" "${launcher[@]}" >/dev/null
  cmake --build "$dir" -j "$(nproc)" --target "$@"
  local test log
  log=$(mktemp)
  while read -r test; do
    [ -n "$test" ] || continue
    echo "-- $test"
    if ! "$test" --gtest_brief=1 >"$log" 2>&1; then
      cat "$log"
      rm -f "$log"
      return 1
    fi
    grep -E '^\[ *(PASSED|SKIPPED) *\] [0-9]+ test' "$log" || true
  done < "$dir/gpu_tests.txt"
  rm -f "$log"
}

# No AMD GPU is expected anywhere CI runs: a GPU requirement meant for NVIDIA must not fail here.
amd_dir=${SPARKLE_AMD_BUILD_DIR:-build-amd}
nvidia_dir=${SPARKLE_NVIDIA_BUILD_DIR:-build-nvidia}
SPARKLE_REQUIRE_GPU= build_and_test "$amd_dir" amd sparkle_gpu_tests
echo "$amd_dir: the GPU tests were NOT run on a GPU (no AMD GPU): they checked the fallback"

if [ -x /usr/local/cuda/bin/nvcc ]; then
  build_and_test "$nvidia_dir" nvidia sparkled sparkle_gpu_tests
  if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "$nvidia_dir: the GPU tests ran on: $(nvidia-smi -L | head -1)"
  else
    echo "$nvidia_dir: the GPU tests were NOT run on a GPU (no NVIDIA driver/GPU here):" \
         "built and linked for sm_90, they checked the fallback"
  fi
else
  echo "$nvidia_dir: skipped, /usr/local/cuda/bin/nvcc not found"
fi
