#!/usr/bin/env bash
# Installs the Debian 12 packages sparkled needs to build, run and test. Idempotent; asks apt
# only for what is missing. Needs root (or sudo) the first time.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libspdlog-dev libdnnl-dev libssl-dev
  # Weight identity (docs/architecture.md): XXH3-128 finds batching candidates.
  libxxhash-dev
  # TLS (docs/operations.md, Security): the security tests make their certificates with it.
  openssl
  libgtest-dev libgmock-dev
  # systemd integration (docs/operations.md): sd_notify for Type=notify and the watchdog;
  # systemd for `systemd-analyze verify` of deploy/sparkled.service in the deploy_files test.
  libsystemd-dev systemd
  # GPU builds (docs/gpu.md): HIP for AMD (clang-15, ROCm 5.2), the HIP-on-CPU emulator's
  # fibers, and ccache so that scripts/test_gpu_builds.sh recompiles only what differs.
  hipcc libamdhip64-dev libboost-context-dev ccache
  # Metrics (docs/metrics.md): prometheus-cpp; the Prometheus server and curl for the scrape
  # test, which runs its own prometheus (the packaged service is kept from starting below).
  prometheus-cpp-dev prometheus curl
  # Fuzzing (docs/operations.md#fuzzing, scripts/fuzz.sh): libFuzzer with clang-15.
  clang-15 libfuzzer-15-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian starts a packaged daemon on install (prometheus would take port 9090); a policy-rc.d
# that answers 101 is Debian's way to forbid that during this install. An existing one (most
# containers ship one) is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
