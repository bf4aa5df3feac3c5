#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a passing test suite: installs what is
# missing, builds everything (tests and benchmarks included) and runs every test with ctest.
# build/ uses the HIP-on-CPU emulator (SPARKLE_GPU=emu), so every GPU test runs here too; then
# scripts/test_sanitizers.sh runs the whole suite again under ASan+UBSan and the engine tests
# under TSan, scripts/test_gpu_builds.sh builds the AMD and NVIDIA variants and runs their
# fallback tests, and scripts/fuzz.sh runs every libFuzzer target (corpus, then 20 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DSPARKLE_BUILD_TESTS=ON -DSPARKLE_BUILD_BENCH=ON -DSPARKLE_GPU=emu
# setup.sh installed prometheus, podman/debootstrap, dnsmasq and nginx, so the Prometheus scrape,
# container and scale-out tests must run, never skip (they need root, which CI has).
(cd build && SPARKLE_REQUIRE_PROMETHEUS=1 SPARKLE_REQUIRE_CONTAINER=1 SPARKLE_REQUIRE_NETNS=1 \
   ctest --output-on-failure -j 2 --timeout 900 "$@")
# The whole suite again under ASan+UBSan (build-asan), the engine tests under TSan (build-tsan).
scripts/test_sanitizers.sh
scripts/test_gpu_builds.sh
# libFuzzer targets (tests/fuzz): their committed corpora, then 20 s of fuzzing each.
scripts/fuzz.sh
