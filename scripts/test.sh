#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a passing test suite: installs what is
# missing, builds everything (tests and benchmarks included) and runs every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DSPARKLE_BUILD_TESTS=ON -DSPARKLE_BUILD_BENCH=ON
cd build
ctest --output-on-failure -j 2 --timeout 900 "$@"
