#!/usr/bin/env bash
# KServe v2 REST (Triton's binary tensor extension) vs gRPC ModelInfer on one daemon, in
# alternating rounds (this machine's load drifts: only side-by-side ratios mean anything). Each
# round runs `sparklectl bench` (gRPC, unary) and then wrk (Debian's wrk) posting a prepared
# binary body of the same convolution (input, weight and bias as binary data, binary output), at
# CONCURRENCY in flight; prints requests/s of each and their ratio, and the daemon's CPU time per
# request (utime + stime from /proc/PID/stat over the round, warm-up included, divided by the
# requests counted: an overestimate alike for both; compare the ratio). The two load generators
# differ (sparklectl's gRPC client, wrk), and share the 2 cores with the daemon: the daemon's
# CPU per request is the comparison of the two protocol paths, requests/s that of the setups.
#
# Usage: bench/rest_vs_grpc.sh [CONCURRENCY] [ROUNDS] [DURATION_S]
#   defaults 16 4 4. The convolution is `tiny`: 1x16x32x32, 16 filters 3x3, pad 1.
#   BUILD (env): build directory, default build. Needs wrk and python3.
set -euo pipefail
conc=${1:-16}
rounds=${2:-4}
duration=${3:-4}
build=${BUILD:-build}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 2; }
port=$((20000 + RANDOM % 20000))
http=$((port + 1))
out=$(mktemp -d /tmp/rest_vs_grpc.XXXXXX)
"$build/server/sparkled" --listen=127.0.0.1:$port --http_listen=127.0.0.1:$http \
  --http_threads="$conc" --metrics_address= >"$out/sparkled.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  "$build/client/sparklectl" --target=127.0.0.1:$port health >/dev/null 2>&1 && break
  sleep 0.2
done
# The body: JSON header, then input, weight and bias as little-endian FP32.
python3 - "$out/body.bin" "$out/header_length" <<'PY'
import json, random, struct, sys
n, c, h, w, k, r = 1, 16, 32, 32, 16, 3
sizes = {"input": [n, c, h, w], "weight": [k, c, r, r], "bias": [k]}
data = {name: [random.uniform(-1, 1) for _ in range(eval("*".join(map(str, s))))]
        for name, s in sizes.items()}
header = json.dumps({
    "parameters": {"pad_h": 1, "pad_w": 1},
    "inputs": [{"name": name, "datatype": "FP32", "shape": s,
                "parameters": {"binary_data_size": 4 * len(data[name])}}
               for name, s in sizes.items()],
    "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
body = header + b"".join(struct.pack(f"<{len(v)}f", *v) for v in data.values())
open(sys.argv[1], "wb").write(body)
open(sys.argv[2], "w").write(str(len(header)))
PY
cat >"$out/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$out/body.bin", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "$(cat "$out/header_length")"
LUA
# One request first: a wrong body would make wrk measure error replies.
curl -sf -o /dev/null -H "Inference-Header-Content-Length: $(cat "$out/header_length")" \
  --data-binary @"$out/body.bin" "http://127.0.0.1:$http/v2/models/conv2d/infer" ||
  { echo "the prepared REST request fails"; exit 1; }
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$pid/stat"; }
per_request() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {printf "%.0f", (b - a) / n * 1e6}'; }
ratios=()
cpu_ratios=()
for round in $(seq "$rounds"); do
  c0=$(cpu)
  "$build/client/sparklectl" --target=127.0.0.1:$port bench --shape_class=tiny \
    --concurrency="$conc" --duration="${duration}s" --warmup=1s --csv="$out/grpc.csv" >/dev/null
  c1=$(cpu)
  grpc=$(tail -n 1 "$out/grpc.csv" | cut -d, -f2)
  grpc_requests=$(tail -n 1 "$out/grpc.csv" | cut -d, -f12)
  wrk -t2 -c"$conc" -d"${duration}s" -s "$out/post.lua" \
    "http://127.0.0.1:$http/v2/models/conv2d/infer" >"$out/wrk.txt"
  if grep -q "Non-2xx" "$out/wrk.txt"; then
    echo "REST replies that are not 200:"; cat "$out/wrk.txt"; exit 1
  fi
  c2=$(cpu)
  rest=$(awk '/Requests\/sec/ {print $2}' "$out/wrk.txt")
  rest_requests=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
  ratio=$(awk -v a="$rest" -v b="$grpc" 'BEGIN {printf "%.2f", a / b}')
  grpc_us=$(per_request "$c0" "$c1" "$grpc_requests")
  rest_us=$(per_request "$c1" "$c2" "$rest_requests")
  cpu_ratio=$(awk -v a="$rest_us" -v b="$grpc_us" 'BEGIN {printf "%.2f", a / b}')
  ratios+=("$ratio")
  cpu_ratios+=("$cpu_ratio")
  echo "round $round: gRPC $grpc req/s ($grpc_us us daemon CPU/req), REST+binary $rest req/s" \
    "($rest_us us/req); REST/gRPC req/s $ratio, CPU/req $cpu_ratio"
done
printf '%s\n' "${cpu_ratios[@]}" | sort -n | awk '{a[NR]=$1} END {
  printf "REST/gRPC daemon CPU per request: min %s median %s max %s\n",
    a[1], (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2), a[NR]}'
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {
  printf "REST/gRPC at %s in flight: min %s median %s max %s (%d rounds)\n", "'"$conc"'",
    a[1], (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2), a[NR], NR}'
