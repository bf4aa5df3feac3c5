# SPARKLE_GPU: which platform the HIP code in engine/hip/*.hip is built for (docs/gpu.md).
#
#   off     no GPU code at all; OpenGpuDevices() returns no device ("built with SPARKLE_GPU=off").
#   amd     HIP for AMD GPUs with Debian's clang-15 (hipcc 5.2): gfx906;gfx908;gfx90a;gfx1030.
#   nvidia  the same .hip files compiled by nvcc as CUDA, through the project's HIP-on-CUDA
#           shim (third_party/hip-on-cuda), for sm_90 (H100). cuDNN is exposed as the optional
#           target sparkle::cudnn when its header and library are found.
#   emu     g++ compiles the .hip files as C++ and the HIP-on-CPU emulator
#           (third_party/hip-on-cpu) executes them: every GPU test runs on a machine without GPU.
#
# Everything outside .hip files is built by the host compiler in every mode. Use:
#   sparkle_add_hip_library(NAME SOURCES a.hip b.cc ... [LIBS ...])  a static library
#   sparkle_hip_sources(TARGET a.hip ...)   adds .hip sources to any target (tests, benches)
# Both define SPARKLE_GPU_PLATFORM="off|amd|nvidia|emu" (also set for sparkle_engine_gpu in off
# mode) and SPARKLE_GPU_AMD / SPARKLE_GPU_NVIDIA / SPARKLE_GPU_EMU = 1 for the active platform.
#
# Notes measured on Debian 12 / cmake 3.25 (shared/reference/hip-build.md):
#   - absl headers, engine/core/conv2d_params.h and engine/hip/gpu_device.h compile in .hip
#     files under nvcc 13 (-std=c++17 and c++20, no extra flag needed), clang-15 HIP and g++.
#     Device code may call constexpr host functions (e.g. std::min) only with nvcc's
#     --expt-relaxed-constexpr, which sparkle_hip_sources passes; other host functions
#     (Conv2dParams::p()) are not callable from kernels: pass plain values.
#   - Debian's HIP headers do not build with CUDA >= 12 (their nvidia_detail wrappers use
#     removed APIs); hence the shim, placed BEFORE every other include directory.

set(SPARKLE_GPU "off" CACHE STRING "GPU platform of the .hip code: off | amd | nvidia | emu")
set_property(CACHE SPARKLE_GPU PROPERTY STRINGS off amd nvidia emu)
set(_sparkle_gpu_modes off amd nvidia emu)
if(NOT SPARKLE_GPU IN_LIST _sparkle_gpu_modes)
  message(FATAL_ERROR "SPARKLE_GPU='${SPARKLE_GPU}': must be one of off, amd, nvidia, emu")
endif()
message(STATUS "SPARKLE_GPU=${SPARKLE_GPU}")

set(SPARKLE_HIP_ON_CPU_DIR ${PROJECT_SOURCE_DIR}/third_party/hip-on-cpu)
set(SPARKLE_HIP_ON_CUDA_DIR ${PROJECT_SOURCE_DIR}/third_party/hip-on-cuda)

if(SPARKLE_GPU STREQUAL "amd")
  # Debian workarounds for enable_language(HIP) in cmake 3.25 (hip-build.md section 4).
  set(_multiarch x86_64-linux-gnu)
  if(NOT EXISTS "/usr/lib/${_multiarch}/cmake/hip-lang/hip-lang-config.cmake")
    message(FATAL_ERROR "SPARKLE_GPU=amd needs: apt-get install --no-install-recommends "
                        "hipcc libamdhip64-dev (scripts/setup.sh)")
  endif()
  # cmake rejects hipcc; clang must be the one under llvm-15 so that hip-lang-config finds its
  # clang_rt.builtins next to it.
  if(NOT DEFINED CMAKE_HIP_COMPILER AND NOT DEFINED ENV{HIPCXX})
    set(CMAKE_HIP_COMPILER /usr/lib/llvm-15/bin/clang++)
  endif()
  # Never let cmake probe the GPU: rocm_agent_enumerator prints a traceback without /dev/kfd
  # and the build silently targets gfx803. gfx942 and gfx1100 are unknown to Debian's ROCm 5.2.
  if(NOT DEFINED CMAKE_HIP_ARCHITECTURES)
    set(CMAKE_HIP_ARCHITECTURES "gfx906;gfx908;gfx90a;gfx1030")
  endif()
  # 1. cmake 3.25 looks for <rocm root>/lib/cmake/hip-lang; Debian has it under the multiarch
  #    dir: a fake root whose lib/cmake links there.
  set(_rocm_root "${CMAKE_BINARY_DIR}/debian-rocm-root")
  file(MAKE_DIRECTORY "${_rocm_root}/lib")
  file(CREATE_LINK "/usr/lib/${_multiarch}/cmake" "${_rocm_root}/lib/cmake" SYMBOLIC)
  set(CMAKE_HIP_COMPILER_ROCM_ROOT "${_rocm_root}")
  # 2. find_dependency(amd_comgr) runs in try_compile projects, which inherit the environment.
  if(NOT "$ENV{CMAKE_PREFIX_PATH}" MATCHES "debian-rocm-root")
    set(ENV{CMAKE_PREFIX_PATH} "${_rocm_root}:$ENV{CMAKE_PREFIX_PATH}")
  endif()
  # 3. clang-15 finds neither the ROCm install nor the device bitcode by itself.
  set(_rocm_flags
      "--rocm-path=/usr --rocm-device-lib-path=/usr/lib/${_multiarch}/amdgcn/bitcode")
  if(NOT CMAKE_HIP_FLAGS MATCHES "rocm-device-lib-path")
    set(CMAKE_HIP_FLAGS "${_rocm_flags} ${CMAKE_HIP_FLAGS}")
  endif()
  enable_language(HIP)
  set(CMAKE_HIP_STANDARD 20)
  set(CMAKE_HIP_STANDARD_REQUIRED ON)
  set(CMAKE_HIP_EXTENSIONS OFF)
elseif(SPARKLE_GPU STREQUAL "nvidia")
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)  # H100; "native" fails on a machine without GPU
  endif()
  enable_language(CUDA)
  # cmake 3.25 does not know that nvcc >= 12 does C++20 ("requires the language dialect CUDA20
  # ... does not know the flags"): tell it.
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_EXTENSIONS OFF)
  find_package(CUDAToolkit REQUIRED)
  # cuDNN 9 (optional): header and library next to the toolkit.
  find_path(SPARKLE_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(SPARKLE_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(SPARKLE_CUDNN_INCLUDE AND SPARKLE_CUDNN_LIBRARY)
    add_library(sparkle::cudnn UNKNOWN IMPORTED)
    set_target_properties(sparkle::cudnn PROPERTIES IMPORTED_LOCATION ${SPARKLE_CUDNN_LIBRARY}
                          INTERFACE_INCLUDE_DIRECTORIES ${SPARKLE_CUDNN_INCLUDE})
    message(STATUS "cuDNN: ${SPARKLE_CUDNN_LIBRARY} (target sparkle::cudnn)")
  else()
    message(STATUS "cuDNN: not found (sparkle::cudnn not defined)")
  endif()
elseif(SPARKLE_GPU STREQUAL "emu")
  add_subdirectory(${SPARKLE_HIP_ON_CPU_DIR} ${CMAKE_BINARY_DIR}/third_party/hip-on-cpu)
endif()

# Platform definitions for any target that holds or uses GPU code.
function(sparkle_gpu_definitions target scope)
  string(TOUPPER "${SPARKLE_GPU}" _upper)
  target_compile_definitions(${target} ${scope} SPARKLE_GPU_PLATFORM="${SPARKLE_GPU}"
                             SPARKLE_GPU_${_upper}=1)
endfunction()

# sparkle_hip_sources(TARGET source...): adds sources to TARGET; the .hip ones are compiled for
# SPARKLE_GPU (HIP / CUDA / C++ with the emulator) and TARGET links the platform runtime.
# Other sources are added unchanged. Not for SPARKLE_GPU=off (there is no HIP then).
function(sparkle_hip_sources target)
  if(SPARKLE_GPU STREQUAL "off")
    message(FATAL_ERROR "sparkle_hip_sources(${target}): SPARKLE_GPU=off has no HIP")
  endif()
  set(_hip "")
  foreach(_src IN LISTS ARGN)
    get_filename_component(_abs ${_src} ABSOLUTE)
    if(_src MATCHES "\\.hip$")
      list(APPEND _hip ${_abs})
    endif()
    target_sources(${target} PRIVATE ${_abs})
  endforeach()
  sparkle_gpu_definitions(${target} PUBLIC)
  if(SPARKLE_GPU STREQUAL "amd")
    # A target with HIP objects (or a static library holding them) is linked by clang++, which
    # adds libamdhip64 and clang_rt.builtins itself.
    set_source_files_properties(${_hip} TARGET_DIRECTORY ${target} PROPERTIES LANGUAGE HIP)
  elseif(SPARKLE_GPU STREQUAL "nvidia")
    set_source_files_properties(${_hip} TARGET_DIRECTORY ${target} PROPERTIES LANGUAGE CUDA)
    # The shim must shadow Debian's /usr/include/hip (which does not build with CUDA >= 12).
    target_include_directories(${target} BEFORE PUBLIC ${SPARKLE_HIP_ON_CUDA_DIR})
    target_compile_options(${target} PRIVATE
                           $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>)
    target_link_libraries(${target} PUBLIC CUDA::cudart_static)
  elseif(SPARKLE_GPU STREQUAL "emu")
    # LANGUAGE CXX on a .hip file makes cmake pass -x c++ (policy CMP0119).
    # g++ does not know HIP's #pragma unroll.
    set_source_files_properties(${_hip} TARGET_DIRECTORY ${target} PROPERTIES LANGUAGE CXX
                                COMPILE_OPTIONS -Wno-unknown-pragmas)
    target_link_libraries(${target} PUBLIC sparkle_hip_emu)  # include dir comes BEFORE below
    target_include_directories(${target} BEFORE PUBLIC ${SPARKLE_HIP_ON_CPU_DIR})
  endif()
endfunction()

# sparkle_add_hip_library(NAME SOURCES source... [LIBS lib...]): a static library whose .hip
# sources are built for SPARKLE_GPU (see sparkle_hip_sources); LIBS are linked PUBLIC.
function(sparkle_add_hip_library name)
  cmake_parse_arguments(L "" "" "SOURCES;LIBS" ${ARGN})
  add_library(${name} STATIC)
  sparkle_hip_sources(${name} ${L_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${L_LIBS})
endfunction()
