#!/usr/bin/env bash
# The test suite under the sanitizers (docs/operations.md#sanitizers); scripts/test.sh runs it
# after the main ctest, and it runs alone too (after scripts/setup.sh).
#   build-asan  SPARKLE_SANITIZE=address,undefined, SPARKLE_GPU=emu, benchmarks off: everything
#               the ctest suite needs; then the WHOLE ctest suite there (the process tests run
#               the sanitized sparkled and sparklectl). LeakSanitizer is on.
#   build-tsan  SPARKLE_SANITIZE=thread, SPARKLE_GPU=emu: only the engine, batcher, executor and
#               registry test binaries (TSAN_TESTS below), each run directly. Debian's abseil
#               and libgomp are uninstrumented: tests/sanitizers/tsan_{absl_mutex,gomp}.cc,
#               linked into every executable of that build, annotate absl::Mutex/CondVar/
#               Notification and OpenMP fork/join/barriers for TSan.
# Any report fails the test it happens in (halt_on_error; ASan/LSan/UBSan exit non-zero).
# Suppressions, each entry with the reason: tests/sanitizers/{lsan,tsan}.supp.
# The emulator's fibers are annotated for ASan and TSan (third_party/hip-on-cpu/src/block_runner.cc),
# so the GPU kernels and the executor are sanitized too.
# Ends with "N passed, M failed" (N, M: ctest tests of build-asan plus GoogleTest cases of
# build-tsan; a binary that dies counts as one failure); exit status 1 when M > 0.
# Environment: SPARKLE_ASAN_BUILD_DIR / SPARKLE_TSAN_BUILD_DIR (directory names),
# SPARKLE_SANITIZERS=asan|tsan|both (default both). Extra arguments go to the ASan ctest.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
asan_dir=${SPARKLE_ASAN_BUILD_DIR:-build-asan}
tsan_dir=${SPARKLE_TSAN_BUILD_DIR:-build-tsan}  # relative to the repository root
which=${SPARKLE_SANITIZERS:-both}
supp=$root/tests/sanitizers
# tsan_annotations_test first: the annotations (tests/sanitizers/tsan_*.cc) that every other
# binary here relies on.
TSAN_TESTS=(tsan_annotations_test engine_core_test shape_batcher_test engine_test
            engine_registered_weights_test
            weight_registry_test gpu_executor_test engine_gpu_test)

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_HIP_COMPILER_LAUNCHER=ccache)
fi
# -g1 (line tables): sanitizer reports stay symbolized with file:line, and the two builds
# compile and link faster than with full debug info (CI time).
configure() {  # DIR SANITIZERS
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARKLE_GPU=emu \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
    -DSPARKLE_SANITIZE="$2" -DSPARKLE_BUILD_TESTS=ON -DSPARKLE_BUILD_BENCH=OFF \
    "${launcher[@]}" >/dev/null
}
now() { date +%s; }

passed=0
failed=0

# UB stops the process with its stack (the build also has -fno-sanitize-recover=undefined).
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

if [ "$which" != tsan ]; then
  echo "== $asan_dir: SPARKLE_SANITIZE=address,undefined"
  t0=$(now)
  set -e
  configure "$asan_dir" "address,undefined"
  cmake --build "$asan_dir" -j "$(nproc)"
  set +e
  t1=$(now)
  # detect_leaks: LSan at every exit of every test process, sanitized daemons included.
  # check_initialization_order/strict_init_order: static init order fiasco across our TUs.
  export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:abort_on_error=0:halt_on_error=1"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  log=$(mktemp)
  # Not the deploy and scaleout labels: they test packaging and topology with the release
  # binaries (build/), and a sanitized binary in a container would need the sanitizer runtimes.
  (cd "$asan_dir" && SPARKLE_REQUIRE_PROMETHEUS=1 ctest --output-on-failure -j 2 --timeout 900 \
     -LE 'deploy|scaleout' "$@") 2>&1 | tee "$log"
  t2=$(now)
  summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  if [ -n "$summary" ]; then
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$summary")
    bad=$(sed -E 's/.* ([0-9]+) tests? failed.*/\1/' <<<"$summary")
    passed=$((passed + total - bad))
    failed=$((failed + bad))
  else
    echo "$asan_dir: ctest printed no summary"
    failed=$((failed + 1))
  fi
  rm -f "$log"
  unset ASAN_OPTIONS LSAN_OPTIONS
  echo "== $asan_dir: build $((t1 - t0)) s, ctest $((t2 - t1)) s"
fi

if [ "$which" != asan ]; then
  echo "== $tsan_dir: SPARKLE_SANITIZE=thread (${TSAN_TESTS[*]})"
  t0=$(now)
  set -e
  configure "$tsan_dir" "thread"
  cmake --build "$tsan_dir" -j "$(nproc)" --target "${TSAN_TESTS[@]}"
  set +e
  t1=$(now)
  # tsan.supp: what the annotations cannot cover, entry by entry; second_deadlock_stack: both
  # stacks of a lock inversion.
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp"
  log=$(mktemp)
  for t in "${TSAN_TESTS[@]}"; do
    bin=$root/$tsan_dir/tests/$t
    echo "-- $t"
    if [ "$t" = gpu_executor_test ]; then
      # One process per case: TSan counts the emulator's fibers as threads, and since tuning
      # runs on its own thread (issue 10) the whole binary passes TSan's limit of 8128 threads
      # in one process ("Thread limit exceeded. Dying"); without TSan it starts 240 threads.
      rc=0
      : >"$log"
      for c in $(cd "$tsan_dir/tests" && "$bin" --gtest_list_tests |
                 awk '/^[^ ]/ {suite = $1} /^  / {print suite $1}'); do
        (cd "$tsan_dir/tests" && "$bin" --gtest_brief=1 --gtest_filter="$c") >"$log.one" 2>&1 ||
          { rc=1; cat "$log.one" >>"$log"; }
        grep -E '^\[ *(PASSED|FAILED) *\] [0-9]+ test' "$log.one" >>"$log" || true
      done
      rm -f "$log.one"
      ok=$(grep -oE '^\[ *PASSED *\] [0-9]+ test' "$log" | awk '{s += $(NF - 1)} END {print s + 0}')
      bad=$(grep -oE '^\[ *FAILED *\] [0-9]+ test' "$log" | awk '{s += $(NF - 1)} END {print s + 0}')
      [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
      [ "$rc" -ne 0 ] && cat "$log"
      echo "[  PASSED  ] $ok tests (one process per case)"
      passed=$((passed + ok))
      failed=$((failed + bad))
      continue
    fi
    (cd "$tsan_dir/tests" && "$bin" --gtest_brief=1) >"$log" 2>&1
    rc=$?
    ok=$(grep -oE '^\[ *PASSED *\] [0-9]+ test' "$log" | grep -oE '[0-9]+' || echo 0)
    bad=$(grep -oE '^\[ *FAILED *\] [0-9]+ test' "$log" | grep -oE '[0-9]+' || echo 0)
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
      bad=1  # died (a TSan report stops the process) or no GoogleTest summary
    fi
    if [ "$rc" -ne 0 ]; then
      cat "$log"
    else
      grep -E '^\[ *(PASSED|SKIPPED) *\] [0-9]+ test' "$log"
    fi
    passed=$((passed + ok))
    failed=$((failed + bad))
  done
  rm -f "$log"
  unset TSAN_OPTIONS
  t2=$(now)
  echo "== $tsan_dir: build $((t1 - t0)) s, tests $((t2 - t1)) s"
fi

echo "sanitizers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
