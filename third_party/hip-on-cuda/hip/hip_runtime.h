// hip-on-cuda: sparkle's HIP-on-CUDA shim, for SPARKLE_GPU=nvidia (docs/gpu.md).
//
// nvcc compiles the project's .hip files as CUDA with this directory first on the include path
// (cmake/SparkleGpu.cmake adds it BEFORE), so it shadows Debian's /usr/include/hip, whose
// nvidia_detail headers wrap CUDA APIs that CUDA 12 and 13 removed and do not compile
// (shared/reference/hip-build.md, section 3).
//
// Every HIP name the project uses maps to its CUDA equivalent: types by typedef, functions and
// constants by #define so that CUDA's own overloads (cudaMalloc(T**)) still apply. A HIP name that
// is not listed here is an undeclared identifier: add it here (and to the emulator,
// third_party/hip-on-cpu) rather than working around it. Differences to keep in mind:
//   - hipGetErrorName() returns CUDA's names ("cudaErrorIllegalAddress"): compare error
//     values, never strings.
//   - warpSize is 32 on NVIDIA (64 on AMD gfx9 and, by default, in the emulator).
//   - without a driver, hipGetDeviceCount fails with cudaErrorInsufficientDriver (35) or
//     cudaErrorNoDevice and leaves the count untouched: set it to 0 first.
#pragma once

#include <cuda_runtime.h>

#ifndef __HIP_PLATFORM_NVIDIA__
#define __HIP_PLATFORM_NVIDIA__ 1
#endif
#define __HIP_PLATFORM_HIP_ON_CUDA__ 1

// Types.
typedef cudaError_t hipError_t;
typedef cudaStream_t hipStream_t;
typedef cudaEvent_t hipEvent_t;
typedef cudaDeviceProp hipDeviceProp_t;
typedef cudaMemcpyKind hipMemcpyKind;
typedef cudaStreamCallback_t hipStreamCallback_t;
typedef cudaHostFn_t hipHostFn_t;

// Error codes.
#define hipSuccess cudaSuccess
#define hipErrorInvalidValue cudaErrorInvalidValue
#define hipErrorOutOfMemory cudaErrorMemoryAllocation
#define hipErrorMemoryAllocation cudaErrorMemoryAllocation
#define hipErrorNotInitialized cudaErrorInitializationError
#define hipErrorInvalidConfiguration cudaErrorInvalidConfiguration
#define hipErrorInvalidDevicePointer cudaErrorInvalidDevicePointer
#define hipErrorInvalidMemcpyDirection cudaErrorInvalidMemcpyDirection
#define hipErrorNoDevice cudaErrorNoDevice
#define hipErrorInvalidDevice cudaErrorInvalidDevice
#define hipErrorInvalidHandle cudaErrorInvalidResourceHandle
#define hipErrorInvalidResourceHandle cudaErrorInvalidResourceHandle
#define hipErrorNotReady cudaErrorNotReady
#define hipErrorIllegalAddress cudaErrorIllegalAddress
#define hipErrorLaunchOutOfResources cudaErrorLaunchOutOfResources
#define hipErrorLaunchFailure cudaErrorLaunchFailure
#define hipErrorNotSupported cudaErrorNotSupported
#define hipErrorUnknown cudaErrorUnknown

// Copy kinds and flags.
#define hipMemcpyHostToHost cudaMemcpyHostToHost
#define hipMemcpyHostToDevice cudaMemcpyHostToDevice
#define hipMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define hipMemcpyDeviceToDevice cudaMemcpyDeviceToDevice
#define hipMemcpyDefault cudaMemcpyDefault
#define hipStreamDefault cudaStreamDefault
#define hipStreamNonBlocking cudaStreamNonBlocking
#define hipEventDefault cudaEventDefault
#define hipEventBlockingSync cudaEventBlockingSync
#define hipEventDisableTiming cudaEventDisableTiming
#define hipHostMallocDefault cudaHostAllocDefault

// Errors and devices.
#define hipGetErrorName cudaGetErrorName
#define hipGetErrorString cudaGetErrorString
#define hipGetLastError cudaGetLastError
#define hipPeekAtLastError cudaPeekAtLastError
#define hipRuntimeGetVersion cudaRuntimeGetVersion
#define hipGetDeviceCount cudaGetDeviceCount
#define hipSetDevice cudaSetDevice
#define hipGetDevice cudaGetDevice
#define hipGetDeviceProperties cudaGetDeviceProperties
#define hipDeviceSynchronize cudaDeviceSynchronize
#define hipMemGetInfo cudaMemGetInfo
// HIP's explicit initialisation; CUDA initialises on the first call, which cudaFree(0) is.
inline hipError_t hipInit(unsigned int flags) {
  return flags != 0 ? cudaErrorInvalidValue : cudaFree(nullptr);
}

// Memory.
#define hipMalloc cudaMalloc
#define hipFree cudaFree
// HIP's flags argument is optional; cudaHostAlloc's is not.
template <typename T>
inline hipError_t hipHostMalloc(T** ptr, size_t bytes, unsigned int flags = cudaHostAllocDefault) {
  return cudaHostAlloc(reinterpret_cast<void**>(ptr), bytes, flags);
}
#define hipHostFree cudaFreeHost
#define hipMemcpy cudaMemcpy
#define hipMemcpyAsync cudaMemcpyAsync
#define hipMemset cudaMemset
#define hipMemsetAsync cudaMemsetAsync

// Streams and events.
#define hipStreamCreate cudaStreamCreate
#define hipStreamCreateWithFlags cudaStreamCreateWithFlags
#define hipStreamDestroy cudaStreamDestroy
#define hipStreamSynchronize cudaStreamSynchronize
#define hipStreamQuery cudaStreamQuery
#define hipStreamWaitEvent cudaStreamWaitEvent
#define hipStreamAddCallback cudaStreamAddCallback
#define hipLaunchHostFunc cudaLaunchHostFunc
#define hipEventCreate cudaEventCreate
#define hipEventCreateWithFlags cudaEventCreateWithFlags
#define hipEventDestroy cudaEventDestroy
#define hipEventRecord cudaEventRecord
#define hipEventSynchronize cudaEventSynchronize
#define hipEventQuery cudaEventQuery
#define hipEventElapsedTime cudaEventElapsedTime

// Kernels. Template kernels with commas go in parentheses: hipLaunchKernelGGL((k<a, b>), ...).
#define hipLaunchKernelGGL(kernel, grid, block, shared_bytes, stream, ...) \
  kernel<<<(grid), (block), (shared_bytes), (stream)>>>(__VA_ARGS__)

// Dynamic shared memory. One byte array for every kernel of a translation unit (CUDA rejects
// `extern __shared__` arrays of different types under one name), viewed as `type`.
#define HIP_DYNAMIC_SHARED(type, var)                                    \
  extern __shared__ __align__(16) unsigned char sparkle_hip_dynamic_shared[]; \
  type* var = reinterpret_cast<type*>(sparkle_hip_dynamic_shared)
