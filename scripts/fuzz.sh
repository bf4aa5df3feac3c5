#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, a separate clang build in build-fuzz) and, for each:
#   1. runs its committed corpus (tests/fuzz/corpus/<target>/, crash-* regressions included) once;
#   2. fuzzes it for FUZZ_SECONDS (default 20) from a copy of that corpus in build-fuzz, so the
#      committed one is never modified.
# Any crash, leak, UB report or invariant failure fails the target; the input that did it is
# saved under build-fuzz/fuzz/<target>/artifacts/ and its path printed. Ends with the line
# "N passed, M failed" (targets). Installs nothing: scripts/setup.sh installs clang-15 and
# libfuzzer-15-dev. docs/operations.md#fuzzing.
#
# Usage: scripts/fuzz.sh [target ...]      (default: every target)
#        scripts/fuzz.sh --seeds           (rewrites the generated seeds in tests/fuzz/corpus)
# Environment: FUZZ_SECONDS (per target, default 20), FUZZ_BUILD_DIR (default build-fuzz),
#              FUZZ_BUILD_JOBS (default 2).
set -uo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(request_parser_fuzz weight_upload_fuzz weight_file_fuzz tuning_cache_fuzz npy_fuzz
             token_file_fuzz rest_request_fuzz)
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
BUILD="${FUZZ_BUILD_DIR:-build-fuzz}"
JOBS="${FUZZ_BUILD_JOBS:-2}"

seeds=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --seeds) seeds=1 ;;
    -*) echo "fuzz.sh: unknown option $arg" >&2; exit 2 ;;
    *) targets+=("$arg") ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${ALL_TARGETS[@]}")

for tool in clang-15 clang++-15; do
  command -v "$tool" >/dev/null || { echo "fuzz.sh: $tool missing (run scripts/setup.sh)" >&2; exit 1; }
done
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "fuzz.sh: configuring and building $BUILD"
if ! CC=clang-15 CXX=clang++-15 cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
       -DSPARKLE_FUZZ=ON "${launcher[@]}" >"$BUILD.configure.log" 2>&1; then
  cat "$BUILD.configure.log" >&2
  echo "0 passed, ${#targets[@]} failed"
  exit 1
fi
rm -f "$BUILD.configure.log"

if [ $seeds -eq 1 ]; then
  cmake --build "$BUILD" -j "$JOBS" --target fuzz_make_seeds || exit 1
  exec "$BUILD/tests/fuzz/fuzz_make_seeds" tests/fuzz/corpus
fi

# A target that does not build is reported failed below (no binary), the others still run.
for t in "${targets[@]}"; do
  cmake --build "$BUILD" -j "$JOBS" --target "$t" >"$BUILD/build-$t.log" 2>&1 ||
    { tail -30 "$BUILD/build-$t.log" >&2; echo "fuzz.sh: $t did not build" >&2; }
done

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# The targets that read files write them under $TMPDIR (tests/fuzz/fuzz_util.h): memory when
# /dev/shm is there, removed at exit.
scratch=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/sparkle-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch"
passed=0
failed=0
summary=()
for t in "${targets[@]}"; do
  bin="$BUILD/tests/fuzz/$t"
  corpus="tests/fuzz/corpus/$t"
  dict="tests/fuzz/$t.dict"
  work="$BUILD/fuzz/$t"
  if [ ! -x "$bin" ]; then
    summary+=("$t: FAILED (not built)")
    failed=$((failed + 1))
    continue
  fi
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  flags=(-artifact_prefix="$work/artifacts/" -timeout=10 -rss_limit_mb=2048)
  [ -f "$dict" ] && flags+=(-dict="$dict")

  # 1. The committed corpus, each input once. A failure here is reported, and fuzzing still
  # runs (from the corpus without its crash-* inputs, which would stop it at once).
  inputs=$(ls "$corpus" 2>/dev/null | wc -l)
  regression=""
  # (Given files, libFuzzer runs each once and prints "Running: <file>" first.)
  if [ "$inputs" -gt 0 ] &&
     ! timeout 600 "$bin" "${flags[@]}" "$corpus"/* >"$work/regression.log" 2>&1; then
    tail -40 "$work/regression.log"
    failing=$(grep -o "Running: .*" "$work/regression.log" | tail -1)
    [ -z "$failing" ] && failing=$(grep -B1 -m1 -E "ERROR|invariant failed|runtime error" \
                                   "$work/regression.log" | head -2 | tr '\n' ' ')
    regression="FAILED on the committed corpus ($work/regression.log): $failing"
    rm -f "$work"/artifacts/*
  fi
  for f in "$corpus"/*; do
    case "$(basename "$f")" in crash-*) ;; *) [ -f "$f" ] && cp "$f" "$work/corpus/" ;; esac
  done

  # 2. Fuzzing from a writable copy of the corpus.
  timeout $((SECONDS_PER_TARGET + 300)) "$bin" "${flags[@]}" -max_total_time="$SECONDS_PER_TARGET" \
    -print_final_stats=1 "$work/corpus" >"$work/fuzz.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/fuzz.log" | grep -o '[0-9]*$')
  last=$(grep -E '^#[0-9]+' "$work/fuzz.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*$')
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*$')
  crashes=$(find "$work/artifacts" -type f | wc -l)
  line="$t: execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} crashes=$crashes seconds=$SECONDS_PER_TARGET corpus=$inputs"
  if [ -n "$regression" ] || [ $rc -ne 0 ] || [ "$crashes" -ne 0 ]; then
    [ $rc -ne 0 ] || [ "$crashes" -ne 0 ] && tail -40 "$work/fuzz.log"
    summary+=("$line FAILED (fuzzing exit $rc; log $work/fuzz.log)")
    [ -n "$regression" ] && summary+=("  $regression")
    for f in "$work"/artifacts/*; do [ -e "$f" ] && summary+=("  crash input: $f"); done
    failed=$((failed + 1))
  else
    summary+=("$line ok")
    passed=$((passed + 1))
  fi
done

printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
