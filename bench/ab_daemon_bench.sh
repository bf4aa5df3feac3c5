#!/usr/bin/env bash
# A/B of two sparkled binaries on one shape class, in alternating rounds on this machine (its
# load drifts: only side-by-side ratios mean anything). Each round starts A then B with default
# flags (free loopback port, metrics off), warms up, then measures with `sparklectl bench`
# (the same client for both): requests/s (OK responses) at CONCURRENCY in flight, p50 latency,
# and the daemon's CPU time per request (utime + stime from /proc/PID/stat over the measured
# window, divided by the OK responses). Prints per round, then min/median/max of the B/A ratios.
#
# Usage: bench/ab_daemon_bench.sh A_SPARKLED B_SPARKLED [CLASS] [CONCURRENCY] [ROUNDS] [DURATION]
#   CLASS default tiny, CONCURRENCY 64, ROUNDS 5, DURATION 8s. SPARKLECTL (env): the client,
#   default build/client/sparklectl. CHANNELS (env, default 4): connections the client uses.
set -euo pipefail
a=$1
b=$2
class=${3:-tiny}
conc=${4:-64}
rounds=${5:-5}
duration=${6:-8s}
ctl=${SPARKLECTL:-build/client/sparklectl}
channels=${CHANNELS:-4}
out=$(mktemp -d /tmp/ab_bench.XXXXXX)
ticks=$(getconf CLK_TCK)

cpu_seconds() {  # utime + stime of PID, seconds
  awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$1/stat"
}

# run_one BINARY TAG: prints "REQ_S P50_US CPU_US_PER_REQ"
run_one() {
  local bin=$1 tag=$2 port=$((20000 + RANDOM % 20000))
  "$bin" --listen=127.0.0.1:$port --metrics_address= --log_level=warn > "$out/$tag.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    "$ctl" --target=127.0.0.1:$port health > /dev/null 2>&1 && break
    sleep 0.1
  done
  "$ctl" --target=127.0.0.1:$port bench --shape_class="$class" --concurrency="$conc" \
    --channels="$channels" --warmup=0s --duration=2s > /dev/null 2>&1 || true
  local c0 c1
  c0=$(cpu_seconds $pid)
  "$ctl" --target=127.0.0.1:$port bench --shape_class="$class" --concurrency="$conc" \
    --channels="$channels" --warmup=0s --duration="$duration" --csv="$out/$tag.csv" \
    > "$out/$tag.txt" 2>&1 || true
  c1=$(cpu_seconds $pid)
  kill -TERM $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  # CSV (client/bench.h CsvHeader): perf_analyzer's column names, latencies in µs.
  python3 - "$out/$tag.csv" "$c0" "$c1" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
r = rows[-1]
rps = float(r["Inferences/Second"])
p50 = float(r["p50 latency"])
n = float(r["Requests"])  # OK responses in the measured window
cpu = (float(sys.argv[3]) - float(sys.argv[2])) * 1e6 / max(n, 1)
print(f"{rps:.1f} {p50:.0f} {cpu:.1f}")
PY
}

ratios_rps=()
ratios_cpu=()
for ((r = 1; r <= rounds; ++r)); do
  read -r ra pa ca <<< "$(run_one "$a" a$r)"
  read -r rb pb cb <<< "$(run_one "$b" b$r)"
  echo "round $r: A $ra req/s p50 ${pa}us cpu ${ca}us/req | B $rb req/s p50 ${pb}us cpu ${cb}us/req"
  ratios_rps+=("$(awk -v x="$rb" -v y="$ra" 'BEGIN {printf "%.3f", x / y}')")
  ratios_cpu+=("$(awk -v x="$cb" -v y="$ca" 'BEGIN {printf "%.3f", x / y}')")
done
summary() {
  printf '%s\n' "${@:2}" | sort -n |
    awk -v w="$1" '{v[NR] = $1} END {printf "%s B/A min %s median %s max %s\n", w, v[1], v[int((NR + 1) / 2)], v[NR]}'
}
summary "req/s" "${ratios_rps[@]}"
summary "cpu/req" "${ratios_cpu[@]}"
echo "logs: $out"
