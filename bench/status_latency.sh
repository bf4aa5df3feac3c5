#!/usr/bin/env bash
# `sparklectl status` latency while the daemon is under load (issue 5 bar: < 100 ms).
# Starts sparkled, runs `sparklectl bench` against it, and times RUNS invocations of
# `sparklectl status` (whole process: start, connect, GetStatus, print) during the load; prints
# min / median / max in ms. Run by hand:  bench/status_latency.sh [BUILD_DIR] [RUNS]
set -euo pipefail
build=${1:-build}
runs=${2:-30}
port=${PORT:-18431}
target=127.0.0.1:$port
"$build/server/sparkled" --listen="$target" --metrics_address= --log_level=warn &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
until "$build/client/sparklectl" --target="$target" --timeout=1s health >/dev/null 2>&1; do
  sleep 0.1
done
"$build/client/sparklectl" --target="$target" bench --shape_class=mixed --concurrency=32 \
  --duration=60s --warmup=0s >/dev/null &
load=$!
sleep 2  # load running
# Side by side: `status` and, as the floor that no daemon change can lower, `help` (the same
# process start and exit under the same CPU contention, without any RPC).
times=()
floor=()
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  "$build/client/sparklectl" --target="$target" status >/dev/null
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000 )))
  start=$(date +%s%N)
  "$build/client/sparklectl" help >/dev/null
  end=$(date +%s%N)
  floor+=($(( (end - start) / 1000 )))
  sleep 0.2
done
queued=$("$build/client/sparklectl" --target="$target" queue --json)
kill $load 2>/dev/null || true
wait $load 2>/dev/null || true
summary() {
  sort -n | awk -v what="$1" '
    { t[NR] = $1 }
    END { printf "%-34s %d runs: min %.1f ms  median %.1f ms  max %.1f ms\n",
          what, NR, t[1] / 1000, t[int((NR + 1) / 2)] / 1000, t[NR] / 1000 }'
}
printf '%s\n' "${times[@]}" | summary "sparklectl status under load:"
printf '%s\n' "${floor[@]}" | summary "sparklectl help (process floor):"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
echo "queue during the load: $queued"
