#include "engine/admission_control.h"

#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/cpu/cpu_backend.h"

namespace sparkle {
namespace {

constexpr char kQueueFullPayload[] = "type.sparkle/queue_full";

}  // namespace

void MarkQueueFull(absl::Status* status) {
  status->SetPayload(kQueueFullPayload, absl::Cord("1"));
}

bool IsQueueFull(const absl::Status& status) {
  return status.GetPayload(kQueueFullPayload).has_value();
}

Admission::Admission(Admission&& o) noexcept
    : owner_(std::exchange(o.owner_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

Admission& Admission::operator=(Admission&& o) noexcept {
  if (this != &o) {
    Admission old(std::move(*this));
    owner_ = std::exchange(o.owner_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

Admission::~Admission() {
  if (owner_ != nullptr) owner_->Release(bytes_);
}

absl::Status AdmissionControl::CheckCost(const Conv2dParams& p) const {
  SPARKLE_RETURN_IF_ERROR(p.Validate());
  const Options& o = options_;
  if (p.total_bytes() > o.max_job_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job needs ", p.total_bytes(), " bytes (input, weight, bias, residual and output, in "
        "their datatypes), above the ", o.max_job_bytes, "-byte limit max_job_bytes"));
  }
  if (p.flops() > o.max_job_gflop * 1e9) {
    return absl::ResourceExhaustedError(absl::StrCat("job needs ", p.flops() * 1e-9,
                                                     " GFLOP, above the ", o.max_job_gflop,
                                                     "-GFLOP limit per request max_job_gflop"));
  }
  const int64_t limit = o.max_job_scratch_bytes;
  // The padding alone (what a padded copy of the input adds to it): a few bytes of request
  // can ask for gigabytes of it.
  const int64_t padding_bytes = p.padded_input_bytes() - p.input_elements() * 4;
  if (padding_bytes > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job's padding adds ", padding_bytes, " bytes to its input (N*C*(H+pad_top+pad_bottom)*(W+pad_left+pad_right)"
        " - N*C*H*W floats), above the ", limit, "-byte scratch limit max_job_scratch_bytes"));
  }
  if (p.im2col_bytes() > limit / o.cpu_threads) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job's im2col scratch (C/groups)*R*S*P*Q is ", p.im2col_bytes(), " bytes per thread (",
        o.cpu_threads, " threads), above the ", limit, "-byte scratch limit max_job_scratch_bytes"));
  }
  if (CpuBackend::PrimitiveBytes(p) > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job's output width Q = ", p.q(), " needs about ", CpuBackend::PrimitiveBytes(p),
        " bytes of oneDNN primitive tables (~2 KiB per output column), above the ", limit,
        "-byte scratch limit max_job_scratch_bytes"));
  }
  if (p.total_bytes() > o.max_inflight_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "job needs ", p.total_bytes(), " bytes, more than the whole ", o.max_inflight_bytes,
        "-byte budget of jobs in flight max_inflight_bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Admission> AdmissionControl::Admit(const Conv2dParams& p) {
  SPARKLE_RETURN_IF_ERROR(CheckCost(p));
  const int64_t bytes = p.total_bytes();
  absl::MutexLock lock(&mu_);
  if (inflight_bytes_ + bytes > options_.max_inflight_bytes) {
    absl::Status status = absl::ResourceExhaustedError(absl::StrCat(
        "busy: ", inflight_bytes_, " bytes of admitted jobs in flight plus this job's ", bytes,
        " exceed the ", options_.max_inflight_bytes,
        "-byte budget max_inflight_bytes; retry later"));
    MarkQueueFull(&status);
    return status;
  }
  inflight_bytes_ += bytes;
  Admission admission;
  admission.owner_ = this;
  admission.bytes_ = bytes;
  return admission;
}

int64_t AdmissionControl::inflight_bytes() const {
  absl::MutexLock lock(&mu_);
  return inflight_bytes_;
}

void AdmissionControl::Release(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  inflight_bytes_ -= bytes;
}

}  // namespace sparkle
