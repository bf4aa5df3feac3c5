#!/usr/bin/env bash
# Installs the Debian 12 packages sparkled needs to build, run and test. Idempotent; asks apt
# only for what is missing. Needs root (or sudo) the first time.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libspdlog-dev libdnnl-dev libssl-dev
  # FP16 <-> FP32 conversion (engine/core/data_type.h): header-only.
  libfp16-dev
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
  # KServe v2 REST (docs/protocol.md): cpp-httplib for HTTP/HTTPS, RapidJSON for JSON.
  libcpp-httplib-dev rapidjson-dev
  # Fuzzing (docs/operations.md#fuzzing, scripts/fuzz.sh): libFuzzer with clang-15.
  clang-15 libfuzzer-15-dev
  # Scale-out tests (tests/scaleout/, docs/operations.md "Scale-out: DNS, proxies"): network
  # namespaces (ip), a real DNS server (dnsmasq binary only, no service) and a real L7 proxy
  # (nginx; the test runs its own, the packaged service is kept from starting below).
  iproute2 dnsmasq-base nginx
  # Container image test (tests/deploy/container_test.sh, docs/operations.md "Container image"):
  # podman with runc (crun fails here), a debootstrapped Debian base, rootless helpers podman
  # expects; python3-yaml for the Kubernetes manifests test (tests/deploy/k8s_manifests_test.sh).
  podman runc debootstrap uidmap fuse-overlayfs slirp4netns python3-yaml
)
# `kubectl kustomize` for the manifests test: a kubectl already on PATH (any source) is kept;
# else the `kubectl` package where an apt source offers it, else Debian 12's kubernetes-client
# (kubectl 1.20, kustomize v2: deploy/k8s is kept to what it builds).
if ! command -v kubectl >/dev/null; then
  if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    PACKAGES+=(kubectl)
  else
    PACKAGES+=(kubernetes-client)
  fi
fi

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
