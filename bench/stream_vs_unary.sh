#!/usr/bin/env bash
# ModelStreamInfer vs unary ModelInfer on one daemon, in alternating rounds (this machine's load
# drifts: only side-by-side ratios mean anything). Each round runs `sparklectl bench` unary, then
# with --stream, at CONCURRENCY in flight; prints requests/s and the daemon's CPU time per
# request (utime + stime from /proc/PID/stat over warm-up and window, divided by the requests of
# the window: an overestimate alike for both modes; compare the ratio).
#
# Usage: bench/stream_vs_unary.sh [CLASS] [CONCURRENCY] [ROUNDS] [DURATION]
#   defaults tiny 64 4 4s. BUILD (env): build directory, default build. CHANNELS (env, default 4).
set -euo pipefail
class=${1:-tiny}
conc=${2:-64}
rounds=${3:-4}
duration=${4:-4s}
build=${BUILD:-build}
channels=${CHANNELS:-4}
port=$((20000 + RANDOM % 20000))
out=$(mktemp -d /tmp/stream_vs_unary.XXXXXX)
"$build/server/sparkled" --listen=127.0.0.1:$port --metrics_address= >"$out/sparkled.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  "$build/client/sparklectl" --target=127.0.0.1:$port health >/dev/null 2>&1 && break
  sleep 0.2
done
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$pid/stat"; }
for round in $(seq "$rounds"); do
  for mode in unary stream; do
    extra=()
    [ "$mode" = stream ] && extra=(--stream)
    c0=$(cpu)
    "$build/client/sparklectl" --target=127.0.0.1:$port bench --channels="$channels" \
      --shape_class="$class" --concurrency="$conc" --duration="$duration" --warmup=1s \
      "${extra[@]}" --csv="$out/$mode.csv" >/dev/null
    c1=$(cpu)
    line=$(tail -n 1 "$out/$mode.csv")
    rps=$(cut -d, -f2 <<<"$line")
    requests=$(cut -d, -f12 <<<"$line")
    echo "round $round $mode: req/s $rps, daemon CPU $(awk -v a="$c0" -v b="$c1" -v n="$requests" \
      'BEGIN {printf "%.0f", (b - a) * 1e6 / n}') us/request"
  done
done
echo "logs: $out"
