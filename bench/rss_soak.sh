#!/usr/bin/env bash
# RSS under sustained mixed load: starts sparkled on a free loopback port, drives it with
# `sparklectl bench --shape_class=mixed` for DURATION seconds (default 300), samples the
# daemon's VmRSS every 10 s, and prints the samples and the spread after the first minute.
# Usage: bench/rss_soak.sh [DURATION_S] [BUILD_DIR]
set -euo pipefail
duration=${1:-300}
build=${2:-build}
port=$((20000 + RANDOM % 20000))
"$build/server/sparkled" --listen=127.0.0.1:$port --threads=2 --log_level=warn &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
"$build/client/sparklectl" --target=127.0.0.1:$port bench --shape_class=mixed \
  --concurrency=16 --warmup=0s --duration=${duration}s > /tmp/rss_soak_bench.txt &
bench=$!
samples=()
for ((t = 0; t <= duration; t += 10)); do
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  samples+=("$rss")
  echo "t=${t}s rss=${rss} kB"
  sleep 10
done
wait $bench
tail -2 /tmp/rss_soak_bench.txt
# Spread after warm-up (t >= 60 s): (max - min) / min.
printf '%s\n' "${samples[@]:6}" | sort -n | awk 'NR==1{min=$1} {max=$1} END{printf "after 60 s: min %d kB, max %d kB, spread %.1f %%\n", min, max, 100*(max-min)/min}'
kill -TERM $pid; wait $pid
