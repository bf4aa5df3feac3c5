#!/usr/bin/env bash
# Fused relu(conv + bias + residual) vs conv + client-side add/relu on one daemon, in alternating
# rounds (epilogue_bench.cc; docs/performance.md "Fused epilogue"). Client and daemon share the
# machine's cores, as a co-located client would.
#
# Usage: bench/epilogue_bench.sh [CONCURRENCY] [ROUNDS] [SECONDS]   defaults 16 5 4
#   BUILD (env): build directory, default build.
set -euo pipefail
conc=${1:-16}
rounds=${2:-5}
seconds=${3:-4}
build=${BUILD:-build}
port=$((20000 + RANDOM % 20000))
log=$(mktemp /tmp/epilogue_bench.XXXXXX.log)
"$build/server/sparkled" --listen=127.0.0.1:$port --http_listen= --metrics_address= \
  >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  "$build/client/sparklectl" --target=127.0.0.1:$port health >/dev/null 2>&1 && break
  sleep 0.2
done
grep -m1 "oneDNN isa" "$log" || true
"$build/bench/epilogue_bench" --target=127.0.0.1:$port --concurrency="$conc" \
  --rounds="$rounds" --seconds="$seconds"
