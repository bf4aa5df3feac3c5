#!/usr/bin/env bash
# Scale-out behind real DNS (what a Kubernetes headless Service gives): three sparkled replicas,
# each its own host (network namespace, 198.18.1.11-13), one name with three A records served by
# a real dnsmasq (198.18.1.2), and a client host (198.18.1.100) whose /etc/resolv.conf names that
# dnsmasq (`ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf). An unmodified
# `sparklectl --target=dns:///sparkled.scaleout.test:8001` (gRPC 1.51, c-ares resolver,
# round_robin, client health checking, retry on UNAVAILABLE: client/target.h) must
#   1. resolve through that dnsmasq and spread load over all three replicas (each replica's own
#      jobs_accepted counter holds >= 10% of the total);
#   2. lose nothing when one replica drains (SIGTERM with --drain_delay): 0 failed requests at the
#      client, the replica exits 0 with failed 0;
#   3. lose at most what a SIGKILLed replica held: failures <= the client's concurrency.
#
#   dns_balancing_test.sh SOURCE_DIR SPARKLED SPARKLECTL
#
# Exit 77 (skipped, reason printed) when namespaces cannot be made or dnsmasq is missing, unless
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
command -v dnsmasq >/dev/null ||
  so_skip "dnsmasq is not installed (apt-get install dnsmasq-base; scripts/setup.sh does)"

started=$SECONDS
name=sparkled.scaleout.test
concurrency=8

so_init dns 198.18.1
so_add_host dns 2
so_add_host cl 100
for i in 1 2 3; do so_add_host "r$i" "1$i"; done

# --- DNS: three A records for one name, nothing else (no upstream, no /etc/hosts) -------------
so_start dns "$SO_WORK/dnsmasq.log" dnsmasq --keep-in-foreground --log-facility=- --log-queries \
  --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces --listen-address=198.18.1.2 \
  --pid-file="$SO_WORK/dnsmasq.pid" --local=/scaleout.test/ \
  --host-record=$name,198.18.1.11 --host-record=$name,198.18.1.12 --host-record=$name,198.18.1.13
mkdir -p "/etc/netns/$(so_ns cl)"
echo "nameserver 198.18.1.2" >"/etc/netns/$(so_ns cl)/resolv.conf"
so_wait 10 grep -q "started, version" "$SO_WORK/dnsmasq.log" || so_fail "dnsmasq did not start"

for i in 1 2 3; do start_replica "$i" 198.18.1; done
for i in 1 2 3; do wait_replica "$i"; done

target="dns:///$name:8001"
# Per-daemon commands resolve the name with getaddrinfo (glibc, the same resolv.conf): one entry
# per replica.
daemons=$(so_in cl "$sparklectl" --target="$target" status --json | grep -c '"listen_address"') ||
  so_fail "status over $target failed"
[ "$daemons" -eq 3 ] || so_fail "status over $target listed $daemons daemons, not 3"

# --- 1. balancing ------------------------------------------------------------------------------
run_bench p1 "$target" 2s
wait_bench p1 || so_fail "bench over $target failed"
check_no_errors p1
check_spread 198.18.1
so_wait 2 grep -q "query\[A\] $name from 198.18.1.100" "$SO_WORK/dnsmasq.log" ||
  so_fail "the client did not resolve $name through dnsmasq"
echo "dns: queries from the client: $(grep -o 'query\[[A-Z]*\] [^ ]* from 198.18.1.100' \
  "$SO_WORK/dnsmasq.log" | sed 's/ from.*//' | sort | uniq -c | tr -s ' \n' ' ')"

# --- 2. drain: SIGTERM with --drain_delay while the load runs ---------------------------------
drain_during_bench p2 "$target" 1 198.18.1
check_no_errors p2

# --- 3. SIGKILL: costs at most what the replica held ------------------------------------------
start_replica 1 198.18.1 r1b
wait_replica 1 r1b
kill_during_bench p3 "$target" 2 198.18.1

echo "PASS: dns_balancing in $((SECONDS - started)) s"
