#!/usr/bin/env bash
# A real Prometheus server scrapes sparkled under load; PromQL through Prometheus's HTTP API.
#
#   prometheus_scrape_test.sh SPARKLED SPARKLECTL
#
# Starts sparkled (gRPC and /metrics on free loopback ports) and our own prometheus (Debian
# package `prometheus`; TSDB in a temporary directory, a free port, scrape interval 1 s), sends a
# known number of requests with `sparklectl bench`, then asserts through /api/v1/query that
#   - the request count Prometheus scraped equals what the load sent (bench's requests plus its
#     one probe request), and
#   - histogram_quantile(0.99, ...) over the end-to-end latency histogram is finite and > 0.
# Exit 77 (ctest: skipped, with the reason printed) when prometheus or curl is missing, unless
# SPARKLE_REQUIRE_PROMETHEUS is set (CI sets it: scripts/setup.sh installs both).
set -euo pipefail

sparkled=${1:?usage: $0 SPARKLED SPARKLECTL}
sparklectl=${2:?usage: $0 SPARKLED SPARKLECTL}
requests=10000

for tool in prometheus curl; do
  if ! command -v "$tool" >/dev/null; then
    if [ -n "${SPARKLE_REQUIRE_PROMETHEUS:-}" ]; then
      echo "FAIL: $tool is not installed and SPARKLE_REQUIRE_PROMETHEUS is set (scripts/setup.sh installs it)"
      exit 1
    fi
    echo "SKIP: $tool is not installed (apt-get install prometheus curl; scripts/setup.sh does)"
    exit 77
  fi
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  for log in "$work"/*.log; do echo "---- $log"; tail -n 30 "$log"; done
  exit 1
}

# Waits up to $1 seconds for the command "$2..." to succeed.
wait_for() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# --- sparkled -------------------------------------------------------------------------------
"$sparkled" --listen=127.0.0.1:0 --metrics_address=127.0.0.1:0 --threads=2 --log_level=info \
  >"$work/sparkled.log" 2>&1 &
pids+=($!)
wait_for 30 grep -q "listening on" "$work/sparkled.log" || fail "sparkled did not start"
grpc_address=$(grep -o 'listening on [0-9.]*:[0-9]*' "$work/sparkled.log" | head -1 | cut -d' ' -f3)
metrics_address=$(grep -o 'metrics on http://[0-9.]*:[0-9]*' "$work/sparkled.log" | head -1 |
  sed 's|metrics on http://||')
[ -n "$metrics_address" ] || fail "sparkled did not log its metrics address"
echo "sparkled: gRPC $grpc_address, metrics $metrics_address"

# --- prometheus -----------------------------------------------------------------------------
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sparkled
    static_configs:
      - targets: ['$metrics_address']
YAML

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
prom_port=""
for attempt in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 20000))
  port_in_use "$port" && continue
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
  pid=$!
  if wait_for 60 curl -sf "http://127.0.0.1:$port/-/ready" -o /dev/null; then
    pids+=("$pid")
    prom_port=$port
    break
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
[ -n "$prom_port" ] || fail "prometheus did not become ready"
prom="http://127.0.0.1:$prom_port"
echo "prometheus: $prom ($(prometheus --version 2>&1 | head -1))"

# The value of an instant query's first sample ("" when the result is empty).
query() {
  curl -sf "$prom/api/v1/query" --data-urlencode "query=$1" |
    { grep -o '"value":\[[^]]*\]' || true; } | head -1 | sed 's/.*,"\([^"]*\)"\]/\1/'
}
scraped() { [ "$(query 'up{job="sparkled"}')" = "1" ]; }
wait_for 30 scraped || fail "prometheus never scraped sparkled"

# --- load -----------------------------------------------------------------------------------
# One request in flight so that the count sent is exact: the probe request of the shape class,
# then exactly $requests (the window ends at --max_requests, long before --duration).
"$sparklectl" --target="$grpc_address" bench --shape_class=tiny --concurrency=1 --channels=1 \
  --warmup=0s --duration=120s --max_requests=$requests --csv="$work/bench.csv" \
  >"$work/bench.log" 2>&1 || fail "sparklectl bench failed"
cat "$work/bench.log"
# The CSV's Requests and Errors columns (perf_analyzer layout plus sparkle's extras).
column() {
  awk -F, -v name="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i }
                        NR == 2 { print $c }' "$work/bench.csv"
}
[ "$(column Requests)" = "$requests" ] && [ "$(column Errors)" = "0" ] ||
  fail "bench should report $requests OK requests and no error: $(cat "$work/bench.csv")"
sent=$((requests + 1))

counted() { [ "$(query 'sum(sparkle_requests_total{status="OK"})')" = "$sent" ]; }
wait_for 30 counted ||
  fail "Prometheus counts $(query 'sum(sparkle_requests_total{status="OK"})') OK requests; the load sent $sent"
echo "Prometheus: sum(sparkle_requests_total{status=\"OK\"}) = $sent, as sent"

rejected=$(query 'sum(sparkle_rejected_requests_total)')
[ "$rejected" = "0" ] || fail "unexpected rejections: $rejected"

p99_query='histogram_quantile(0.99, sum(rate(sparkle_request_duration_seconds_bucket[30s])) by (le))'
has_p99() { [ -n "$(query "$p99_query")" ]; }
wait_for 30 has_p99 || fail "no result for $p99_query"
p99=$(query "$p99_query")
echo "Prometheus: $p99_query = $p99 s"
awk -v v="$p99" 'BEGIN { exit !(v + 0 > 0 && v + 0 < 1e9 && v != "NaN" && v !~ /Inf/) }' ||
  fail "p99 is not a finite positive number: '$p99'"

compute_query='histogram_quantile(0.5, sum(rate(sparkle_stage_duration_seconds_bucket{stage="compute"}[30s])) by (le))'
compute=$(query "$compute_query")
echo "Prometheus: $compute_query = $compute s"
awk -v v="$compute" -v p="$p99" 'BEGIN { exit !(v + 0 > 0 && v + 0 <= p + 0) }' ||
  fail "median compute ($compute s) should be positive and at most the end-to-end p99 ($p99 s)"

echo "PASS"
