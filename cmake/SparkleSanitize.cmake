# SPARKLE_SANITIZE: builds everything (libraries, daemon, CLI, tests, the HIP-on-CPU emulator)
# with g++'s sanitizers; scripts/test_sanitizers.sh uses it (docs/operations.md#sanitizers).
#
#   ""                   no sanitizer (default)
#   address,undefined    AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer; any UB
#                        aborts the process (-fno-sanitize-recover=undefined)
#   thread               ThreadSanitizer
#
# Flags go to every compile and link step below the top-level CMakeLists.txt, so include this
# before add_subdirectory(). Prebuilt Debian libraries (gRPC, protobuf, oneDNN, libgomp, abseil)
# stay uninstrumented: tests/sanitizers/*.supp suppress what that causes, entry by entry.
# The emulator annotates its fiber switches for ASan and TSan (third_party/hip-on-cpu/src/
# block_runner.cc), keyed on __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__, which these flags set.
set(SPARKLE_SANITIZE "" CACHE STRING
    "Sanitizers for every target: \"\" | \"address,undefined\" | \"thread\"")
set_property(CACHE SPARKLE_SANITIZE PROPERTY STRINGS "" "address,undefined" "thread")

if(SPARKLE_SANITIZE STREQUAL "")
  return()
elseif(SPARKLE_SANITIZE STREQUAL "address,undefined")
  set(_sparkle_san_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined)
elseif(SPARKLE_SANITIZE STREQUAL "thread")
  set(_sparkle_san_flags -fsanitize=thread)
else()
  message(FATAL_ERROR
          "SPARKLE_SANITIZE='${SPARKLE_SANITIZE}': must be empty, address,undefined or thread")
endif()
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  message(WARNING "SPARKLE_SANITIZE is tested with g++ 12 only (${CMAKE_CXX_COMPILER_ID})")
endif()
message(STATUS "SPARKLE_SANITIZE=${SPARKLE_SANITIZE}")
# Frame pointers: usable stacks in reports from the fast unwinder. C++ only: the amd/nvidia
# device compilers get none (sanitize the emu build).
list(APPEND _sparkle_san_flags -fno-omit-frame-pointer)
add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_sparkle_san_flags}>")
add_link_options("$<$<LINK_LANGUAGE:CXX>:${_sparkle_san_flags}>")

# thread: Debian's abseil and libgomp are not built with TSan, so absl::Mutex lock/unlock and
# the fork/join of OpenMP regions are invisible to it and what they order looks like a race.
# tests/sanitizers/tsan_{absl_mutex,gomp}.cc interpose absl::Mutex, CondVar, Notification and
# GOMP_parallel/GOMP_barrier/GOMP_loop_end with annotated definitions; they go into every
# executable (the daemon, the CLI, every test), added once all directories are configured (a
# deferred call: executables are created after this file is included).
function(_sparkle_tsan_link_executables dir)
  get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE")
      target_sources(${target} PRIVATE $<TARGET_OBJECTS:sparkle_tsan_annotations>)
    endif()
  endforeach()
  get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(subdir IN LISTS subdirs)
    _sparkle_tsan_link_executables("${subdir}")
  endforeach()
endfunction()
function(_sparkle_tsan_interpose_absl)
  if(SPARKLE_BUILD_TESTS)
    sparkle_tsan_add_tests()
  endif()
  _sparkle_tsan_link_executables("${PROJECT_SOURCE_DIR}")
endfunction()
if(SPARKLE_SANITIZE STREQUAL "thread")
  add_subdirectory("${PROJECT_SOURCE_DIR}/tests/sanitizers"
                   "${PROJECT_BINARY_DIR}/tests/sanitizers")
  cmake_language(DEFER CALL _sparkle_tsan_interpose_absl)
endif()
