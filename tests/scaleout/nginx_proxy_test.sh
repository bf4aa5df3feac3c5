#!/usr/bin/env bash
# Scale-out behind a real L7 proxy (what an ingress gives): three sparkled replicas, each its own
# host (network namespace, 198.18.2.11-13), a real nginx on a proxy host (198.18.2.10) with
# grpc_pass to an upstream of the three (tests/scaleout/nginx.conf.in), and a client host
# (198.18.2.100) that only knows the proxy: `sparklectl --target=198.18.2.10:8001` (one target:
# pick_first to nginx, retry on UNAVAILABLE: client/target.h) must
#   1. reach all three replicas through nginx (each replica's own jobs_accepted >= 10%);
#   2. lose nothing when one replica drains (SIGTERM with --drain_delay; nginx is not told):
#      0 failed requests at the client, the replica exits 0 with failed 0;
#   3. lose at most what a SIGKILLed replica held: failures <= the client's concurrency.
# When sparkled has --http_listen (KServe v2 REST), also GET /v2/health/ready, one JSON
# POST /v2/models/conv2d/infer checked for its value, and 20 more JSON infers through nginx
# (proxy_pass) that must spread over the three replicas (each one's own
# /v2/models/conv2d/stats success count grows by >= 4 of the 20, together by exactly 20); the
# drain and SIGKILL parts then run with nginx holding idle keep-alive REST connections to the
# replicas, as a real proxy does. Without --http_listen: a visible "NOT TESTED".
#
#   nginx_proxy_test.sh SOURCE_DIR SPARKLED SPARKLECTL
#
# Exit 77 (skipped, reason printed) when namespaces cannot be made or nginx is missing, unless
# SPARKLE_REQUIRE_NETNS=1 (scripts/test.sh sets it). Bounded: every wait has a deadline.
set -euo pipefail

src=${1:?usage: $0 SOURCE_DIR SPARKLED SPARKLECTL}
sparkled=${2:?usage: $0 SOURCE_DIR SPARKLED SPARKLECTL}
sparklectl=${3:?usage: $0 SOURCE_DIR SPARKLED SPARKLECTL}
# shellcheck source=tests/scaleout/netns_hosts.sh
source "$src/tests/scaleout/netns_hosts.sh"
# shellcheck source=tests/scaleout/replicas.sh
source "$src/tests/scaleout/replicas.sh"

so_require_netns
command -v nginx >/dev/null || so_skip "nginx is not installed (apt-get install nginx; scripts/setup.sh does)"

started=$SECONDS
concurrency=8
subnet=198.18.2

so_init px $subnet
so_add_host px 10
so_add_host cl 100
for i in 1 2 3; do so_add_host "r$i" "1$i"; done

# KServe v2 REST through nginx too when the daemon has it (--http_listen, port 8080).
rest=0
# (--helpfull exits 1 by abseil's convention, and grep -q may close the pipe early: with
# pipefail either would read as "no such flag", hence the `|| true` inside the group.)
if { "$sparkled" --helpfull 2>&1 || true; } | grep -q -- '--http_listen'; then
  rest=1
  command -v curl >/dev/null || so_skip "curl is not installed (scripts/setup.sh installs it)"
fi
[ $rest = 0 ] || replica_http_port=8080
for i in 1 2 3; do start_replica "$i" $subnet; done

# --- nginx ---------------------------------------------------------------------------------------
uncomment_rest=""
[ $rest = 0 ] || uncomment_rest='s|^#REST ||'
sed -e "s|@WORK@|$SO_WORK|g" -e "s|@PROXY@|$subnet.10|g" -e "s|@REPLICA1@|$subnet.11|g" \
  -e "s|@REPLICA2@|$subnet.12|g" -e "s|@REPLICA3@|$subnet.13|g" -e "$uncomment_rest" \
  "$src/tests/scaleout/nginx.conf.in" >"$SO_WORK/nginx.conf"
so_in px nginx -t -c "$SO_WORK/nginx.conf" -g 'daemon off;' >"$SO_WORK/nginx_t.log" 2>&1 ||
  so_fail "nginx -t rejected the configuration: $(cat "$SO_WORK/nginx_t.log")"
so_start px "$SO_WORK/nginx.log" nginx -c "$SO_WORK/nginx.conf" -g 'daemon off;'

for i in 1 2 3; do wait_replica "$i"; done
target="$subnet.10:8001"
so_wait 20 so_in cl "$sparklectl" --target="$target" --timeout=2s health >/dev/null ||
  so_fail "sparklectl health through nginx ($target) never succeeded"

# --- REST: health and one JSON infer through nginx (proxy_pass) ----------------------------------
if [ $rest = 1 ]; then
  # Each replica's REST listener first (nginx would mark a replica that is still starting as
  # failed for fail_timeout), then through nginx.
  for i in 1 2 3; do
    so_wait 20 so_in cl curl -sf --max-time 2 -o /dev/null "http://$subnet.1$i:8080/v2/health/ready" ||
      so_fail "replica $i: GET /v2/health/ready on :8080 never succeeded"
  done
  so_in cl curl -sf --max-time 5 -o /dev/null "http://$subnet.10:8080/v2/health/ready" ||
    so_fail "GET /v2/health/ready through nginx failed"
  # All-ones 1x1x3x3 input and 3x3 weight, no padding: the one output element is 9.
  ones='[1,1,1,1,1,1,1,1,1]'
  body='{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,3,3],"data":'$ones'},'
  body+='{"name":"weight","datatype":"FP32","shape":[1,1,3,3],"data":'$ones'}]}'
  answer=$(so_in cl curl -sf --max-time 10 -H 'Content-Type: application/json' \
    --data "$body" "http://$subnet.10:8080/v2/models/conv2d/infer") ||
    so_fail "POST /v2/models/conv2d/infer through nginx failed"
  echo "$answer" | tr -d ' \n' | grep -Eq '"data":\[9(\.0*)?\]' ||
    so_fail "REST infer through nginx answered $answer (expected the output [9])"
  echo "rest: GET /v2/health/ready and POST /v2/models/conv2d/infer through nginx: OK"
  # 20 JSON infers through nginx: each replica's own count (REST stats, on the replica itself).
  rest_successes() {
    so_in cl curl -sf --max-time 5 "http://$subnet.1$1:8080/v2/models/conv2d/stats" |
      grep -o '"success":{"count":[0-9]*' | grep -o '[0-9]*$'
  }
  declare -a rest_before=()
  for i in 1 2 3; do
    rest_before[i]=$(rest_successes "$i") || so_fail "replica $i: GET /v2/models/conv2d/stats failed"
  done
  for _ in $(seq 1 20); do
    so_in cl curl -sf --max-time 10 -o /dev/null -H 'Content-Type: application/json' \
      --data "$body" "http://$subnet.10:8080/v2/models/conv2d/infer" ||
      so_fail "one of 20 REST infers through nginx failed"
  done
  rest_total=0
  rest_counts=()
  for i in 1 2 3; do
    n=$(rest_successes "$i") || so_fail "replica $i: GET /v2/models/conv2d/stats failed"
    rest_counts+=($((n - rest_before[i])))
    rest_total=$((rest_total + n - rest_before[i]))
  done
  echo "rest: 20 JSON infers through nginx, per replica ${rest_counts[*]} (total $rest_total)"
  [ "$rest_total" = 20 ] || so_fail "the replicas counted $rest_total REST infers, not 20"
  for i in 0 1 2; do
    [ "${rest_counts[i]}" -ge 4 ] ||
      so_fail "replica $((i + 1)) served ${rest_counts[i]} of 20 REST infers (< 4): not spread"
  done
else
  # TODO(scaleout): REST through nginx is tested once sparkled has --http_listen (the lead's
  # REST endpoint); until then this part does not run.
  echo "rest: NOT TESTED: this sparkled has no --http_listen (REST through nginx is a TODO)"
fi

# --- 1. balancing through the proxy --------------------------------------------------------------
run_bench p1 "$target" 2s
wait_bench p1 || so_fail "bench through nginx failed"
check_no_errors p1
check_spread $subnet

# --- 2. drain: SIGTERM with --drain_delay while the load runs ------------------------------------
drain_during_bench p2 "$target" 1 $subnet
check_no_errors p2

# --- 3. SIGKILL: costs at most what the replica held ---------------------------------------------
start_replica 1 $subnet r1b
wait_replica 1 r1b
kill_during_bench p3 "$target" 2 $subnet

echo "nginx: answers by upstream: $(awk '{print $1, $2, $3}' "$SO_WORK/nginx_access.log" |
  sort | uniq -c | sort -rn | head -n 8 | tr -s ' \n' ' ')"
echo "PASS: nginx_proxy in $((SECONDS - started)) s"
