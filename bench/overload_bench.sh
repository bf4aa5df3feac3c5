#!/usr/bin/env bash
# Overload: does memory stay bounded by flags, and goodput hold, when one client keeps far more
# requests in flight than the daemon can run? Starts sparkled with its DEFAULT flags (only the
# port and metrics address differ) on a free loopback port, then for each class runs ROUNDS
# rounds alternating 16 and 256 requests in flight (`sparklectl bench`, one client; goodput =
# OK responses per second, the REQ/s column), and prints per round the ratio
# goodput(256) / goodput(16) and, at the end, the daemon's peak RSS (VmHWM, /proc/PID/status).
# Bars (docs/operations.md "Memory bounds"): ratio >= 0.9 for both classes, VmHWM <= 1 GiB.
#
# Usage: bench/overload_bench.sh [BUILD_DIR] [ROUNDS] [DURATION]
#   BUILD_DIR default build; ROUNDS default 3; DURATION per level default 10s.
#   CHANNELS (env, default 1): gRPC connections the one client spreads its load over.
#   LARGE / SMALL (env): the shape classes, default resnet_3x3_56_b8 (N=8, C=K=64, 56x56, 3x3,
#   pad 1: 6.4 MB in and out) and small_3x3.
set -euo pipefail
build=${1:-build}
rounds=${2:-3}
duration=${3:-10s}
channels=${CHANNELS:-1}
large=${LARGE:-resnet_3x3_56_b8}
small=${SMALL:-small_3x3}
port=$((20000 + RANDOM % 20000))
out=$(mktemp -d /tmp/overload_bench.XXXXXX)

"$build/server/sparkled" --listen=127.0.0.1:$port --metrics_address= --log_level=warn \
  > "$out/daemon.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$build/client/sparklectl" --target=127.0.0.1:$port health > /dev/null 2>&1 && break
  sleep 0.1
done

# goodput CLASS CONCURRENCY: the REQ/s (OK responses per second) of one bench level.
goodput() {
  "$build/client/sparklectl" --target=127.0.0.1:$port bench --shape_class="$1" \
    --concurrency="$2" --channels="$channels" --warmup=2s --duration="$duration" \
    > "$out/bench.txt" 2>&1 || true
  awk -v c="$1" '$1 == c {v = $3} END {print (v == "" ? 0 : v)}' "$out/bench.txt"
}

for class in "$large" "$small"; do
  ratios=()
  for ((r = 1; r <= rounds; ++r)); do
    g16=$(goodput "$class" 16)
    g256=$(goodput "$class" 256)
    ratio=$(awk -v a="$g256" -v b="$g16" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
    ratios+=("$ratio")
    echo "$class round $r: goodput 16 in flight $g16/s, 256 in flight $g256/s, ratio $ratio"
    grep -E "ERRORS|$class" "$out/bench.txt" | tail -1 | sed 's/^/    last level: /'
  done
  printf '%s\n' "${ratios[@]}" | sort -n |
    awk -v c="$class" '{v[NR] = $1} END {printf "%s ratio min %s median %s max %s (bar >= 0.9)\n", c, v[1], v[int((NR + 1) / 2)], v[NR]}'
done
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
echo "daemon peak RSS (VmHWM): $hwm kB = $(awk -v k="$hwm" 'BEGIN {printf "%.0f", k / 1024}') MiB (bar <= 1024 MiB)"
kill -TERM $pid
wait $pid || true
echo "logs: $out"
