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
