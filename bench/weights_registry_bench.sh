#!/usr/bin/env bash
# The weights-registry bar: resnet_3x3_7 (N=1, C=K=512, 7x7, 3x3 pad 1, with bias; 9.4 MB of
# weights, 100 KB of input) at concurrency 1, sending the weights in every request vs naming
# them with weight_id, in the same daemon, alternating REPS times so that both see the same
# machine noise. Prints requests/s per run, min/median/max of each, of the per-run ratio, and
# the ratio of medians.
# Usage: bench/weights_registry_bench.sh [REPS] [BUILD_DIR] [DURATION]
set -euo pipefail
reps=${1:-5}
build=${2:-build}
duration=${3:-5s}
ctl="$build/client/sparklectl"
port=$((20000 + RANDOM % 20000))
work=$(mktemp -d)
"$build/server/sparkled" --listen=127.0.0.1:$port --metrics_address= --threads=2 \
  --log_level=warn &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do "$ctl" --target=127.0.0.1:$port health > /dev/null 2>&1 && break; sleep 0.2; done
ctl="$ctl --target=127.0.0.1:$port"
# Tensors of the shape class (bench sends its own random ones inline; the values do not matter
# for speed), registered once.
$ctl infer --input_shape=1x512x7x7 --weight_shape=512x512x3x3 --bias_shape=512 --pad=1 \
  --save_inputs="$work" > /dev/null
id=$($ctl weights register "$work/weight.npy" --bias="$work/bias.npy" --label=resnet_3x3_7 --json |
  sed -n 's/.*"weight_id": "\(sha256:[0-9a-f]*\)".*/\1/p')
echo "registered $id"
run() {  # $1: inline|by_id → requests/s
  local extra=""
  [ "$1" = by_id ] && extra="--weight_id=$id"
  $ctl bench --shape_class=resnet_3x3_7 --concurrency=1 --channels=1 --warmup=1s \
    --duration="$duration" --csv="$work/$1.csv" $extra > /dev/null
  tail -1 "$work/$1.csv" | cut -d, -f2
}
inline=() by_id=() ratio=()
for r in $(seq "$reps"); do
  inline+=("$(run inline)")
  by_id+=("$(run by_id)")
  ratio+=("$(awk -v a="${by_id[-1]}" -v b="${inline[-1]}" 'BEGIN{printf "%.2f", a/b}')")
  echo "run $r: inline ${inline[-1]} req/s, weight_id ${by_id[-1]} req/s, ratio ${ratio[-1]}x"
done
stats() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.1f %.1f %.1f\n", v[1], m, v[NR]}'; }
read -r imin imed imax <<< "$(stats "${inline[@]}")"
read -r bmin bmed bmax <<< "$(stats "${by_id[@]}")"
echo "inline     req/s min/median/max: $imin / $imed / $imax"
echo "weight_id  req/s min/median/max: $bmin / $bmed / $bmax"
read -r rmin rmed rmax <<< "$(stats "${ratio[@]}")"
echo "per-run ratio weight_id/inline min/median/max: ${rmin}x / ${rmed}x / ${rmax}x"
awk -v a="$bmed" -v b="$imed" 'BEGIN{printf "ratio of medians: %.1fx\n", a/b}'
