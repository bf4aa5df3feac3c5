// The cuDNN implementation: cudnnConvolutionForward with FP32 data and FMA math (no TF32
// tensor cores: the results stay comparable with the CPU oracle), the algorithm chosen by
// cuDNN's heuristics per shape, bias added by cudnnAddTensor. Built only when SPARKLE_GPU=nvidia
// and cuDNN is found (SPARKLE_HAVE_CUDNN); ConvKernels times it against the hand-written
// kernels like any other implementation. (MIOpen, its AMD counterpart, is not in Debian 12.)
#include <cudnn.h>
#include <hip/hip_runtime.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "engine/hip/conv_impl.h"

namespace sparkle::hip {
namespace {

// One set of descriptors and the chosen algorithm per shape (Conv2dParams::ToString).
struct CudnnPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  size_t workspace_bytes = 0;
  bool ok = false;

  ~CudnnPlan() {
    if (x != nullptr) cudnnDestroyTensorDescriptor(x);
    if (y != nullptr) cudnnDestroyTensorDescriptor(y);
    if (bias != nullptr) cudnnDestroyTensorDescriptor(bias);
    if (w != nullptr) cudnnDestroyFilterDescriptor(w);
    if (conv != nullptr) cudnnDestroyConvolutionDescriptor(conv);
  }
};

// Strides of an [n, c, h, w] tensor stored in `layout`.
void SetTensor(cudnnTensorDescriptor_t d, Layout layout, int n, int c, int h, int w,
               cudnnStatus_t* st) {
  if (*st != CUDNN_STATUS_SUCCESS) return;
  if (layout == Layout::kNHWC) {
    *st = cudnnSetTensor4dDescriptorEx(d, CUDNN_DATA_FLOAT, n, c, h, w, h * w * c, 1, w * c, c);
  } else {
    *st = cudnnSetTensor4dDescriptorEx(d, CUDNN_DATA_FLOAT, n, c, h, w, c * h * w, h * w, w, 1);
  }
}

class CudnnImpl final : public ConvImpl {
 public:
  CudnnImpl() = default;

  ~CudnnImpl() override {
    plans_.clear();
    if (workspace_ != nullptr) (void)hipFree(workspace_);
    if (handle_ != nullptr) cudnnDestroy(handle_);
  }

  const std::string& name() const override { return name_; }

  std::string Supports(const Conv2dParams& p) const override {
    // cuDNN's legacy API takes int dimensions and strides.
    std::string reason = Int32IndexingReason(p);
    if (!reason.empty()) return reason;
    // The legacy descriptor takes one pad per axis: asymmetric padding is the kernels' job.
    if (p.pad_top != p.pad_bottom || p.pad_left != p.pad_right) {
      return "asymmetric padding (cuDNN pads both sides alike)";
    }
    // This plan is FP32 in and out with bias only; the fused epilogue and the narrow
    // datatypes are the hand-written kernels' job.
    if (p.has_epilogue()) return "fused residual/activation epilogue";
    if (p.dtype != DataType::kFp32 || p.output_dtype != DataType::kFp32) {
      return "datatypes other than FP32";
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_) return "cuDNN unavailable: " + broken_reason_;
    // Known after the first launch of the shape (the tuner then skips this implementation).
    auto it = plans_.find(p.ToString());
    if (it != plans_.end() && !it->second->ok) return "cuDNN has no FMA-math plan for the shape";
    return "";
  }

  hipError_t Launch(const Conv2dParams& p, const DevConvArgs& a, hipStream_t stream) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (handle_ == nullptr) {
      // Created at first use, on the launching thread with the device current.
      const cudnnStatus_t st = cudnnCreate(&handle_);
      if (st != CUDNN_STATUS_SUCCESS) {
        handle_ = nullptr;
        broken_ = true;
        broken_reason_ = cudnnGetErrorString(st);
        return hipErrorInvalidValue;
      }
    }
    CudnnPlan* plan = PlanFor(p);
    if (plan == nullptr) return hipErrorInvalidValue;
    if (plan->workspace_bytes > workspace_bytes_) {
      if (workspace_ != nullptr) (void)hipFree(workspace_);
      workspace_ = nullptr;
      workspace_bytes_ = 0;
      const hipError_t e = hipMalloc(&workspace_, plan->workspace_bytes);
      if (e != hipSuccess) return e;
      workspace_bytes_ = plan->workspace_bytes;
    }
    if (cudnnSetStream(handle_, stream) != CUDNN_STATUS_SUCCESS) return hipErrorInvalidValue;
    const float one = 1.0f, zero = 0.0f;
    cudnnStatus_t st = cudnnConvolutionForward(handle_, &one, plan->x, a.input, plan->w, a.weight,
                                               plan->conv, plan->algo, workspace_,
                                               plan->workspace_bytes, &zero, plan->y, a.output);
    if (st == CUDNN_STATUS_SUCCESS && a.bias != nullptr) {
      st = cudnnAddTensor(handle_, &one, plan->bias, a.bias, &one, plan->y, a.output);
    }
    if (st != CUDNN_STATUS_SUCCESS) return hipErrorInvalidValue;
    return hipGetLastError();
  }

 private:
  // The plan for p, built at its first use; null when cuDNN refuses the shape.
  CudnnPlan* PlanFor(const Conv2dParams& p) {
    const std::string key = p.ToString();
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second->ok ? it->second.get() : nullptr;
    auto plan = std::make_unique<CudnnPlan>();
    const int n = static_cast<int>(p.n), c = static_cast<int>(p.c), h = static_cast<int>(p.h),
              w = static_cast<int>(p.w), k = static_cast<int>(p.k), r = static_cast<int>(p.r),
              s = static_cast<int>(p.s), op = static_cast<int>(p.p()),
              oq = static_cast<int>(p.q());
    cudnnStatus_t st = cudnnCreateTensorDescriptor(&plan->x);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnCreateTensorDescriptor(&plan->y);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnCreateTensorDescriptor(&plan->bias);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnCreateFilterDescriptor(&plan->w);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnCreateConvolutionDescriptor(&plan->conv);
    SetTensor(plan->x, p.layout, n, c, h, w, &st);
    SetTensor(plan->y, p.layout, n, k, op, oq, &st);
    SetTensor(plan->bias, Layout::kNCHW, 1, k, 1, 1, &st);
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnSetFilter4dDescriptor(plan->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k,
                                      static_cast<int>(p.c / p.groups), r, s);
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnSetConvolution2dDescriptor(
          plan->conv, static_cast<int>(p.pad_top), static_cast<int>(p.pad_left),
          static_cast<int>(p.stride_h), static_cast<int>(p.stride_w),
          static_cast<int>(p.dilation_h), static_cast<int>(p.dilation_w),
          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT);
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnSetConvolutionGroupCount(plan->conv, static_cast<int>(p.groups));
    }
    // FMA math: FP32 arithmetic, never TF32 tensor cores.
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetConvolutionMathType(plan->conv, CUDNN_FMA_MATH);
    if (st == CUDNN_STATUS_SUCCESS) {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int returned = 0;
      st = cudnnGetConvolutionForwardAlgorithm_v7(handle_, plan->x, plan->w, plan->conv, plan->y,
                                                  CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned,
                                                  perf);
      bool found = false;
      for (int i = 0; st == CUDNN_STATUS_SUCCESS && i < returned && !found; ++i) {
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].mathType == CUDNN_FMA_MATH) {
          plan->algo = perf[i].algo;
          found = true;
        }
      }
      if (st == CUDNN_STATUS_SUCCESS && !found) st = CUDNN_STATUS_NOT_SUPPORTED;
    }
    if (st == CUDNN_STATUS_SUCCESS) {
      st = cudnnGetConvolutionForwardWorkspaceSize(handle_, plan->x, plan->w, plan->conv, plan->y,
                                                   plan->algo, &plan->workspace_bytes);
    }
    plan->ok = st == CUDNN_STATUS_SUCCESS;
    CudnnPlan* result = plan->ok ? plan.get() : nullptr;
    plans_.emplace(key, std::move(plan));
    return result;
  }

  const std::string name_ = "cudnn_fp32";
  mutable std::mutex mu_;
  cudnnHandle_t handle_ = nullptr;   // guarded by mu_
  bool broken_ = false;              // guarded by mu_: cudnnCreate failed
  std::string broken_reason_;        // guarded by mu_
  void* workspace_ = nullptr;        // guarded by mu_
  size_t workspace_bytes_ = 0;       // guarded by mu_
  std::map<std::string, std::unique_ptr<CudnnPlan>> plans_;  // guarded by mu_
};

}  // namespace

void AppendCudnnImpl(ConvImplList* list) {
  list->push_back(std::make_unique<CudnnImpl>());
}

}  // namespace sparkle::hip
