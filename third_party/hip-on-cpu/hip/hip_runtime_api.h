// hip-on-cpu: the host-side HIP runtime API, emulated on the CPU (sparkle_hip_emu).
//
// Part of sparkle's HIP-on-CPU emulator: g++ compiles unchanged .hip files as C++ and the
// runtime below executes them. Only the subset of HIP that sparkle uses is declared; a name
// that is missing here is a compile error, never a silent difference. Semantics follow HIP/CUDA:
//   - every hipStream_t is a worker thread that runs its operations (copies, memsets, kernel
//     launches, event records, waits, callbacks) in order, asynchronously to the caller;
//   - the null stream (0) is the legacy default stream: it waits for the device's blocking
//     streams and they wait for it (hipStreamNonBlocking streams do not);
//   - a device fault (see hip_emu_control.h) is sticky: every later call on that device
//     returns it, as on real GPUs;
//   - all memory is host memory, but device pointers are checked against live allocations of
//     the device in every copy/memset (out-of-range copies fail with hipErrorInvalidValue).
// Devices are configured by the test-control API (hip_emu_control.h) or, when it was not
// called, by HIPEMU_DEVICES / HIPEMU_MEMORY_MB in the environment. Default: 0 devices.
#pragma once

#include <cstddef>
#include <cstdint>

#define __HIP_PLATFORM_HIPEMU__ 1

// HIP error codes, with the numbers HIP uses (compare by name, not number).
enum hipError_t {
  hipSuccess = 0,
  hipErrorInvalidValue = 1,
  hipErrorOutOfMemory = 2,
  hipErrorMemoryAllocation = 2,
  hipErrorNotInitialized = 3,
  hipErrorInvalidConfiguration = 9,
  hipErrorInvalidDevicePointer = 17,
  hipErrorInvalidMemcpyDirection = 21,
  hipErrorNoDevice = 100,
  hipErrorInvalidDevice = 101,
  hipErrorInvalidHandle = 400,
  hipErrorInvalidResourceHandle = 400,
  hipErrorNotReady = 600,
  hipErrorIllegalAddress = 700,
  hipErrorLaunchOutOfResources = 701,
  hipErrorLaunchFailure = 719,
  hipErrorNotSupported = 801,
  hipErrorUnknown = 999,
};

enum hipMemcpyKind {
  hipMemcpyHostToHost = 0,
  hipMemcpyHostToDevice = 1,
  hipMemcpyDeviceToHost = 2,
  hipMemcpyDeviceToDevice = 3,
  hipMemcpyDefault = 4,
};

struct ihipStream_t;
struct ihipEvent_t;
typedef ihipStream_t* hipStream_t;
typedef ihipEvent_t* hipEvent_t;

#define hipStreamDefault 0x0u
#define hipStreamNonBlocking 0x1u
#define hipEventDefault 0x0u
#define hipEventBlockingSync 0x1u
#define hipEventDisableTiming 0x2u
#define hipHostMallocDefault 0x0u

struct dim3 {
  uint32_t x, y, z;
  constexpr dim3(uint32_t vx = 1, uint32_t vy = 1, uint32_t vz = 1) : x(vx), y(vy), z(vz) {}
};

// Only the fields common to AMD and NVIDIA (hip-build.md: portable code uses only these).
struct hipDeviceProp_t {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int multiProcessorCount;
  int major;
  int minor;
};

typedef void (*hipStreamCallback_t)(hipStream_t stream, hipError_t status, void* user_data);
typedef void (*hipHostFn_t)(void* user_data);

// Errors and device management.
const char* hipGetErrorName(hipError_t error);
const char* hipGetErrorString(hipError_t error);
hipError_t hipGetLastError();
hipError_t hipPeekAtLastError();
hipError_t hipInit(unsigned int flags);
hipError_t hipRuntimeGetVersion(int* version);
hipError_t hipGetDeviceCount(int* count);
hipError_t hipSetDevice(int device);
hipError_t hipGetDevice(int* device);
hipError_t hipGetDeviceProperties(hipDeviceProp_t* prop, int device);
hipError_t hipDeviceSynchronize();
hipError_t hipMemGetInfo(size_t* free_bytes, size_t* total_bytes);

// Memory.
hipError_t hipMalloc(void** ptr, size_t bytes);
hipError_t hipFree(void* ptr);
hipError_t hipHostMalloc(void** ptr, size_t bytes, unsigned int flags = hipHostMallocDefault);
hipError_t hipHostFree(void* ptr);
hipError_t hipMemcpy(void* dst, const void* src, size_t bytes, hipMemcpyKind kind);
hipError_t hipMemcpyAsync(void* dst, const void* src, size_t bytes, hipMemcpyKind kind,
                          hipStream_t stream = nullptr);
hipError_t hipMemset(void* dst, int value, size_t bytes);
hipError_t hipMemsetAsync(void* dst, int value, size_t bytes, hipStream_t stream = nullptr);

template <typename T>
inline hipError_t hipMalloc(T** ptr, size_t bytes) {
  return hipMalloc(reinterpret_cast<void**>(ptr), bytes);
}
template <typename T>
inline hipError_t hipHostMalloc(T** ptr, size_t bytes, unsigned int flags = hipHostMallocDefault) {
  return hipHostMalloc(reinterpret_cast<void**>(ptr), bytes, flags);
}

// Streams.
hipError_t hipStreamCreate(hipStream_t* stream);
hipError_t hipStreamCreateWithFlags(hipStream_t* stream, unsigned int flags);
hipError_t hipStreamDestroy(hipStream_t stream);
hipError_t hipStreamSynchronize(hipStream_t stream);
hipError_t hipStreamQuery(hipStream_t stream);
hipError_t hipStreamWaitEvent(hipStream_t stream, hipEvent_t event, unsigned int flags);
// `callback` runs on the stream's thread once every earlier operation has finished, with the
// device's sticky error (or hipSuccess) as `status`. It must not call HIP functions.
hipError_t hipStreamAddCallback(hipStream_t stream, hipStreamCallback_t callback,
                                void* user_data, unsigned int flags);
// `fn` runs on the stream's thread once every earlier operation has finished, also after a
// device fault (a real GPU may not run it then: check errors with a stream/event query).
hipError_t hipLaunchHostFunc(hipStream_t stream, hipHostFn_t fn, void* user_data);

// Events.
hipError_t hipEventCreate(hipEvent_t* event);
hipError_t hipEventCreateWithFlags(hipEvent_t* event, unsigned int flags);
hipError_t hipEventDestroy(hipEvent_t event);
hipError_t hipEventRecord(hipEvent_t event, hipStream_t stream = nullptr);
hipError_t hipEventSynchronize(hipEvent_t event);
hipError_t hipEventQuery(hipEvent_t event);
hipError_t hipEventElapsedTime(float* ms, hipEvent_t start, hipEvent_t stop);
