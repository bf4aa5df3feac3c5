#include "tests/testing/fake_gpu_device.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/cpu/conv2d_ref.h"

namespace sparkle::testing {

FakeGpuDevice::FakeGpuDevice(Options options)
    : options_(std::move(options)), thread_([this] { Loop(); }) {}

FakeGpuDevice::~FakeGpuDevice() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    paused_ = false;
  }
  thread_.join();
}

GpuDeviceInfo FakeGpuDevice::Info() const {
  GpuDeviceInfo info;
  info.name = options_.name;
  info.platform = "emu";
  info.memory_bytes = int64_t{16} << 30;
  info.compute_units = 4;
  return info;
}

absl::Status FakeGpuDevice::Supports(const Conv2dParams& p) const {
  if (options_.unsupported && options_.unsupported(p)) {
    return absl::UnimplementedError(absl::StrCat(options_.name, " has no kernel for ",
                                                 p.ShapeClass()));
  }
  return absl::OkStatus();
}

absl::Status FakeGpuDevice::Submit(GpuWork&& work, GpuDone&& done) {
  if (absl::Status s = Supports(work.params); !s.ok()) return s;
  if (work.pin_weights && work.weight_id.kind != WeightId::Kind::kRegistered) {
    return absl::InvalidArgumentError("pin_weights needs a registered weight_id");
  }
  Conv2dParams one = work.params;
  one.n = 1;
  const int64_t io = (one.input_elements() + one.output_elements()) * 4;
  if (io > options_.slot_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "one image needs ", io, " staging bytes, a slot has ", options_.slot_bytes));
  }
  absl::MutexLock lock(&mu_);
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !healthy_ || in_flight_ < options_.slots;
  };
  mu_.Await(absl::Condition(&room));
  if (!healthy_) return absl::UnavailableError(absl::StrCat(options_.name, ": ", reason_));
  in_flight_++;
  max_in_flight_ = std::max(max_in_flight_, in_flight_);
  bool upload = true;
  const WeightId id = work.weight_id;
  if (!id.empty()) {
    const bool pinned = std::find(pinned_.begin(), pinned_.end(), id) != pinned_.end();
    upload = !pinned;
    auto it = std::find(lru_.begin(), lru_.end(), id);
    if (it != lru_.end()) {
      upload = false;
      lru_.erase(it);
    }
    if (work.pin_weights && !pinned) {
      pinned_.push_back(id);
    } else if (!work.pin_weights && !pinned) {
      lru_.push_front(id);
      while (static_cast<int>(lru_.size()) > options_.weight_cache_entries) lru_.pop_back();
    }
  }
  if (upload) weight_uploads_++;
  queue_.push_back(Pending{std::move(work), std::move(done), accepted_++, upload});
  return absl::OkStatus();
}

bool FakeGpuDevice::WeightsResident(const WeightId& id) const {
  absl::MutexLock lock(&mu_);
  return !id.empty() && (std::find(pinned_.begin(), pinned_.end(), id) != pinned_.end() ||
                         std::find(lru_.begin(), lru_.end(), id) != lru_.end());
}

void FakeGpuDevice::ReleaseWeights(const WeightId& id) {
  absl::MutexLock lock(&mu_);
  pinned_.erase(std::remove(pinned_.begin(), pinned_.end(), id), pinned_.end());
}

void FakeGpuDevice::Loop() {
  for (;;) {
    Pending p;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return (!queue_.empty() && !paused_) || (stopping_ && queue_.empty());
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;
      p = std::move(queue_.front());
      queue_.pop_front();
    }
    Run(p);
  }
}

void FakeGpuDevice::Run(Pending& p) {
  const Conv2dParams& params = p.work.params;
  bool fail;
  {
    absl::MutexLock lock(&mu_);
    if (healthy_ && p.number == fail_at_) {
      healthy_ = false;
      reason_ = absl::StrCat("injected fault at work ", p.number, " (hipErrorIllegalAddress)");
    }
    fail = !healthy_;
  }
  GpuTimings t;
  if (!fail) {
    const absl::Time start = absl::Now();
    const double elem = static_cast<double>(ElementSize(params.dtype));
    const double weight_bytes =
        p.upload_weights ? (params.weight_elements() + params.bias_elements()) * elem : 0.0;
    const double gbps = options_.transfer_gbps * 1e9;
    const double h2d = options_.launch_overhead_s +
                       ((params.input_elements() + params.residual_elements()) * elem +
                        weight_bytes) / gbps;
    const double compute = params.flops() / (options_.gflops * 1e9);
    const double d2h = params.output_elements() *
                       static_cast<double>(ElementSize(params.output_dtype)) / gbps;
    if (options_.compute) {
      // Each part is computed on its own: the parts are separate buffers of the same geometry.
      for (const GpuPart& part : p.work.parts) {
        Conv2dParams one = params;
        one.n = part.n;
        Conv2dRef(one, part.input, p.work.weight, p.work.bias, part.output, part.residual);
      }
    }
    absl::Time begin = start;
    if (options_.sleep) {
      // The device's own timeline: a work begins when the previous one ends (in the model),
      // so a late wake-up on a loaded machine delays one delivery, not every later work.
      begin = std::max(start, timeline_);
      timeline_ = begin + absl::Seconds(h2d + compute + d2h);
      absl::SleepFor(timeline_ - absl::Now());
    }
    t.h2d_end = begin + absl::Seconds(h2d);
    t.compute_start = t.h2d_end;
    t.compute_end = t.compute_start + absl::Seconds(compute);
    t.d2h_end = t.compute_end + absl::Seconds(d2h);
  }
  absl::Status status =
      fail ? absl::InternalError(absl::StrCat(options_.name, ": ", unhealthy_reason()))
           : absl::OkStatus();
  {
    // Counted before done, so that whoever sees done also sees the count.
    absl::MutexLock lock(&mu_);
    if (fail) {
      works_failed_++;
    } else {
      works_done_++;
      parts_done_ += static_cast<int64_t>(p.work.parts.size());
    }
  }
  std::move(p.done)(status, t);
  absl::MutexLock lock(&mu_);
  in_flight_--;
}

void FakeGpuDevice::Flush() {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; };
  mu_.Await(absl::Condition(&idle));
}

bool FakeGpuDevice::healthy() const {
  absl::MutexLock lock(&mu_);
  return healthy_;
}

std::string FakeGpuDevice::unhealthy_reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

void FakeGpuDevice::FailWork(int64_t k) {
  absl::MutexLock lock(&mu_);
  fail_at_ = k;
}

void FakeGpuDevice::Pause() {
  absl::MutexLock lock(&mu_);
  paused_ = true;
}

void FakeGpuDevice::Resume() {
  absl::MutexLock lock(&mu_);
  paused_ = false;
}

int64_t FakeGpuDevice::works_done() const {
  absl::MutexLock lock(&mu_);
  return works_done_;
}
int64_t FakeGpuDevice::works_failed() const {
  absl::MutexLock lock(&mu_);
  return works_failed_;
}
int64_t FakeGpuDevice::parts_done() const {
  absl::MutexLock lock(&mu_);
  return parts_done_;
}
int64_t FakeGpuDevice::weight_uploads() const {
  absl::MutexLock lock(&mu_);
  return weight_uploads_;
}
int FakeGpuDevice::max_in_flight() const {
  absl::MutexLock lock(&mu_);
  return max_in_flight_;
}

}  // namespace sparkle::testing
