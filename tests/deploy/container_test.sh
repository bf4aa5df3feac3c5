#!/usr/bin/env bash
# deploy/Containerfile: build the runtime image with podman from a debootstrapped Debian 12 base
# and run it: the daemon in the container answers health and one infer, runs as the image's
# non-root user as PID 1, and drains on `podman stop` (SIGTERM) with exit code 0 well before
# podman's kill timeout. Podman settings: /work/shared/reference/containers.md (runc,
# cgroupfs, default_ulimits within the hard limits, one storage.conf from the first call).
#
# The container runs with --network=none: its own network namespace with only a loopback, so
# the image's default `--listen=0.0.0.0:8001` is what is tested and nothing is exposed on the
# host; sparklectl runs inside it (`podman exec`, the image's own copy). KServe v2 REST
# (--http_listen=0.0.0.0:8000) is checked with the host's curl run inside the container's network
# namespace (`nsenter -t <its pid> -n curl ...`): the image carries no HTTP client.
#
# Cache: podman's whole state (the debian-base:12 image made by debootstrap, apt layers) lives
# in ${SPARKLE_CONTAINER_CACHE:-/var/cache/sparkle-podman}; the first run needs the Debian
# archive (debootstrap, apt-get in the build) and takes ~2-3 min, later runs seconds.
# Exit 77 (ctest: skipped), with one reason line, only when podman/runc/debootstrap are missing
# or we are not root; SPARKLE_REQUIRE_CONTAINER=1 turns that into a failure.
# usage: container_test.sh SOURCE_DIR SPARKLED SPARKLECTL
set -euo pipefail
src=$1
sparkled=$2
sparklectl=$3

skip() {
  if [ "${SPARKLE_REQUIRE_CONTAINER:-0}" = 1 ]; then
    echo "FAIL: $* (SPARKLE_REQUIRE_CONTAINER=1)"
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "not root (podman here needs root: rootless has no subuid setup)"
for tool in podman runc debootstrap curl nsenter; do
  command -v "$tool" >/dev/null || skip "$tool not installed (scripts/setup.sh)"
done

t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
W=${SPARKLE_CONTAINER_CACHE:-/var/cache/sparkle-podman}
mkdir -p "$W/tmp" "$W/libpod-tmp"
# One test at a time per cache (the store and the base image are shared).
exec 9>"$W/lock"
flock -w 600 9 || { echo "FAIL: $W/lock held for 10 min"; exit 1; }

nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
cat > "$W/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$W/libpod-tmp"
EOF
cat > "$W/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$W/run"
graphroot = "$W/storage"
EOF
export CONTAINERS_CONF=$W/containers.conf CONTAINERS_STORAGE_CONF=$W/storage.conf TMPDIR=$W/tmp

work=$(mktemp -d)
name=sparkle-test-$$
cleanup() {
  podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. The base image: debootstrap once, then cached.
base=localhost/debian-base:12
if podman image exists "$base"; then
  echo "base image $base cached in $W"
else
  mirror=$(grep -hoP '^URIs:\s*\K\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null |
           grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=$(grep -hoP '^deb\s+\K\S+(?=\s+bookworm\s)' /etc/apt/sources.list |
                               head -1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "making $base: debootstrap --variant=minbase bookworm from $mirror"
  rootfs=$W/rootfs
  rm -rf "$rootfs"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1
  then
    tail -20 "$work/debootstrap.log"
    echo "FAIL: debootstrap (needs the Debian archive at $mirror)"
    exit 1
  fi
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import -q - "$base" >/dev/null
  rm -rf "$rootfs"
  echo "base image made ($(elapsed) s)"
fi

# 2. The image: runtime packages from the binaries' direct NEEDED libraries (ldd -> dpkg -S).
packages() {
  local needed paths
  needed=$(for b in "$@"; do readelf -d "$b" | grep -oP 'NEEDED.*\[\K[^]]+'; done | sort -u)
  # The path ldd resolves, and its twin across the merged /usr (dpkg knows one of them).
  paths=$(for b in "$@"; do ldd "$b"; done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' |
    sort -u | while read -r lib path; do
      grep -qxF "$lib" <<<"$needed" || continue
      echo "$path"
      case $path in /usr/*) echo "${path#/usr}" ;; *) echo "/usr$path" ;; esac
    done)
  # One dpkg call (each one reads the whole file database): "pkg:arch: /path" per match; it
  # exits 1 for the twins it does not know.
  # shellcheck disable=SC2086
  { dpkg -S $paths 2>/dev/null || true; } | cut -d: -f1 | sort -u | paste -sd' '
}
pkgs=$(packages "$sparkled" "$sparklectl")
default_pkgs=$(grep -oP '^ARG RUNTIME_PACKAGES="\K[^"]+' "$src/deploy/Containerfile")
build_args=()
if [ "$pkgs" != "$default_pkgs" ]; then
  echo "note: these binaries need '$pkgs' (deploy/Containerfile default: '$default_pkgs')"
  build_args=(--build-arg "RUNTIME_PACKAGES=$pkgs")
fi
mkdir "$work/ctx"
cp "$sparkled" "$sparklectl" "$work/ctx/"
image=localhost/sparkled:test
if ! podman build --network=host -q -f "$src/deploy/Containerfile" "${build_args[@]}" \
    -t "$image" "$work/ctx" > "$work/build.log" 2>&1; then
  tail -30 "$work/build.log"
  echo "FAIL: podman build"
  exit 1
fi
echo "image $image built ($(elapsed) s)"
podman image prune -f >/dev/null 2>&1 || true  # earlier builds' layers

fail() {
  echo "FAIL: $*"
  echo "--- container log:"
  podman logs "$name" 2>&1 | tail -30 || true
  exit 1
}
# The image's promises, from its configuration.
cmd=$(podman image inspect -f '{{json .Config.Cmd}}' "$image")
grep -q -- '--listen=0.0.0.0:8001' <<<"$cmd" || fail "image CMD does not listen on 0.0.0.0: $cmd"
grep -q -- '--http_listen=0.0.0.0:8000' <<<"$cmd" ||
  fail "image CMD does not serve REST on 0.0.0.0:8000: $cmd"
user=$(podman image inspect -f '{{.Config.User}}' "$image")
[ "${user%%:*}" = 65532 ] || fail "image user is '$user', not 65532"
stopsig=$(podman image inspect -f '{{.Config.StopSignal}}' "$image")
[ "$stopsig" = SIGTERM ] || fail "image STOPSIGNAL is '$stopsig'"

# 3. Run it: the image's own CMD plus a drain delay (to see the drain's NOT_SERVING phase).
podman run -d --name "$name" --network=none "$image" \
  --listen=0.0.0.0:8001 --http_listen=0.0.0.0:8000 --metrics_address=0.0.0.0:8002 --threads=1 \
  --drain_delay=1s --drain_timeout=10s >/dev/null || fail "podman run"
ctl() { podman exec "$name" /usr/local/bin/sparklectl --target=127.0.0.1:8001 --timeout=5s "$@"; }
ready=0
for _ in $(seq 1 300); do  # up to 30 s: oneDNN's first start in a fresh container
  if ctl health >/dev/null 2>&1; then ready=1; break; fi
  [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the daemon exited"
  sleep 0.1
done
[ $ready = 1 ] || fail "not ready within 30 s: $(ctl health 2>&1 | tr '\n' ' ')"
echo "daemon ready in the container ($(elapsed) s)"
ctl health
[ "$(podman exec "$name" cat /proc/1/comm)" = sparkled ] || fail "PID 1 is not sparkled"
[ "$(podman exec "$name" id -u)" = 65532 ] || fail "not running as uid 65532"
out=$(ctl infer --input_shape=1x8x16x16 --weight_shape=8x8x3x3 --bias_shape=8 --pad=1 2>&1) ||
  fail "infer: $out"
echo "$out"
grep -q 'output  *1x8x16x16 FP32' <<<"$out" || fail "infer did not report a 1x8x16x16 output"
# KServe v2 REST on --http_listen=0.0.0.0:8000, from the host's curl in the container's network
# namespace: ready is 200, and one JSON infer (all-ones 1x1x3x3 input and 3x3 weight, no padding:
# the one output element is 9).
pid=$(podman inspect -f '{{.State.Pid}}' "$name")
rest() { nsenter -t "$pid" -n curl -s --max-time 10 "$@"; }
code=$(rest -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v2/health/ready) || true
[ "$code" = 200 ] || fail "REST GET /v2/health/ready answered '$code' (want 200)"
ones='[1,1,1,1,1,1,1,1,1]'
body='{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,3,3],"data":'$ones'},'
body+='{"name":"weight","datatype":"FP32","shape":[1,1,3,3],"data":'$ones'}]}'
answer=$(rest -f -H 'Content-Type: application/json' --data "$body" \
  http://127.0.0.1:8000/v2/models/conv2d/infer) || fail "REST POST /v2/models/conv2d/infer failed"
tr -d ' \n' <<<"$answer" | grep -Eq '"shape":\[1,1,1,1\].*"data":\[9(\.0*)?\]' ||
  fail "REST infer answered $answer (want shape [1,1,1,1], data [9])"
echo "REST: GET /v2/health/ready 200, POST /v2/models/conv2d/infer -> $answer"
# /metrics on --metrics_address=0.0.0.0:8002 (bash's /dev/tcp: the image has no HTTP client)
# counted the request.
metrics=$(podman exec "$name" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8002 &&
  printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3') || fail "no /metrics on 8002"
grep -qE '^sparkle_requests_total\{.*\} [1-9]' <<<"$metrics" ||
  fail "/metrics has no counted request: $(grep '^sparkle_requests_total' <<<"$metrics")"

# 4. Stop: SIGTERM -> drain -> exit 0, long before podman's 30 s kill.
s0=$(date +%s.%N)
podman stop -t 30 "$name" >/dev/null || fail "podman stop"
stop_s=$(awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
logs=$(podman logs "$name" 2>&1)
grep -q 'received SIGTERM' <<<"$logs" || fail "no SIGTERM drain in the log"
[ "$code" = 0 ] || fail "exit code $code after podman stop (want 0: drained)"
awk -v s="$stop_s" 'BEGIN { exit !(s < 20) }' || fail "stop took ${stop_s} s (killed, not drained?)"
grep -E 'SIGTERM|drain|still serving' <<<"$logs" | head -5
echo "container: image built and run, health + infer (gRPC and REST) answered, podman stop drained in" \
     "$stop_s s with exit code 0 (total $(elapsed) s)"
