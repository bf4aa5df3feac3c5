#!/usr/bin/env bash
# Configures and builds everything into ./build (Release with debug info). Extra arguments go
# to cmake's configure step, e.g. scripts/build.sh -DSPARKLE_BUILD_TESTS=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
# Two cores and 24 GiB: gRPC-heavy translation units take ~1 GiB each, so -j follows nproc.
cmake --build build -j "$(nproc)"
