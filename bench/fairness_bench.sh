#!/usr/bin/env bash
# Per-client fairness (issue 10 bar: a polite client's p50 at most 2x, its p99 at most 3x its
# latency alone, while a greedy client keeps 64 tiny requests in flight, same run).
# Starts sparkled with two infer tokens (greedy, polite), then RUNS times runs
#   sparklectl bench --shape_class=tiny --concurrency=64  as greedy, with
#   --second_token_file=polite --second_concurrency=1     (polite alone, then alongside)
# and prints each run's polite p50 / p99 ratios (alongside / alone), their min / median / max,
# and whether the median meets the bar. Run by hand, from the repository root:
#   bench/fairness_bench.sh                     # build/server/sparkled, build/client/sparklectl
#   CLASS (env, default tiny): the shape class (sparklectl bench --shape_class).
#   SPARKLED=build-x/server/sparkled SPARKLECTL=build-x/client/sparklectl RUNS=5 \
#     DURATION=10s DAEMON_FLAGS="--priority_aging=0" bench/fairness_bench.sh
set -euo pipefail
sparkled=${SPARKLED:-build/server/sparkled}
sparklectl=${SPARKLECTL:-build/client/sparklectl}
runs=${RUNS:-3}
class=${CLASS:-tiny}  # the shape class both clients send
duration=${DURATION:-5s}
port=${PORT:-18441}
target=127.0.0.1:$port
dir=$(mktemp -d)
greedy_token=$(openssl rand -hex 32)
polite_token=$(openssl rand -hex 32)
printf '%s,greedy,infer\n%s,polite,infer\n' "$greedy_token" "$polite_token" >"$dir/tokens.csv"
printf '%s\n' "$greedy_token" >"$dir/greedy.token"
printf '%s\n' "$polite_token" >"$dir/polite.token"
chmod 600 "$dir"/*
# shellcheck disable=SC2086  # DAEMON_FLAGS is a list of flags
"$sparkled" --listen="$target" --metrics_address= --log_level=warn \
  --auth_token_file="$dir/tokens.csv" ${DAEMON_FLAGS:-} &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  "$sparklectl" --target="$target" --timeout=1s health >/dev/null 2>&1 && break
  sleep 0.1
done
"$sparklectl" --target="$target" --timeout=1s health >/dev/null
echo "sparkled: $sparkled ${DAEMON_FLAGS:-}; $runs runs of $duration (+1s warm-up), class $class, greedy at 64, polite at 1"
p50s=()
p99s=()
for run in $(seq "$runs"); do
  out=$("$sparklectl" --target="$target" --token_file="$dir/greedy.token" bench \
    --shape_class="$class" --concurrency=64 --duration="$duration" --warmup=1s \
    --second_token_file="$dir/polite.token" --second_concurrency=1)
  line=$(grep '^fairness ' <<<"$out")
  main=$(grep "^$class " <<<"$out")
  echo "run $run: $line"
  echo "        greedy: $main"
  # "... p50 A -> B ms (xR50), p99 C -> D ms (xR99)"
  p50s+=("$(sed -E 's/.*p50 [^(]*\(x([0-9.]+)\).*/\1/' <<<"$line")")
  p99s+=("$(sed -E 's/.*p99 [^(]*\(x([0-9.]+)\).*/\1/' <<<"$line")")
done
summary() {  # min median max of the arguments
  printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {printf "%.2f %.2f %.2f", v[1], v[int((NR+1)/2)], v[NR]}'
}
read -r p50_min p50_med p50_max <<<"$(summary "${p50s[@]}")"
read -r p99_min p99_med p99_max <<<"$(summary "${p99s[@]}")"
echo "polite p50 ratio (alongside/alone): min $p50_min median $p50_med max $p50_max (bar <= 2)"
echo "polite p99 ratio (alongside/alone): min $p99_min median $p99_med max $p99_max (bar <= 3)"
if awk -v a="$p50_med" -v b="$p99_med" 'BEGIN {exit !(a <= 2 && b <= 3)}'; then
  echo "bar met (medians)"
else
  echo "bar NOT met (medians)"
fi
