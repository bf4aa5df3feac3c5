#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running daemon: installs what is missing,
# builds, and starts sparkled in the foreground on 127.0.0.1:8001. Flags are passed through,
# e.g. scripts/run.sh --listen=0.0.0.0:8001 --log_level=debug.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh -DSPARKLE_BUILD_TESTS=OFF -DSPARKLE_BUILD_BENCH=OFF
exec build/server/sparkled "$@"
