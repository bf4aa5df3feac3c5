#include "engine/router/router.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sparkle {
namespace {

std::string DeviceName(const DeviceView& d) {
  return d.gpu < 0 ? std::string("cpu") : absl::StrCat("gpu:", d.gpu);
}

absl::Status NoGpu(const DeviceRequest& request, const std::string& no_gpu_reason) {
  return absl::FailedPreconditionError(absl::StrCat(
      "device '", request.ToString(), "' was requested but this daemon has no GPU (",
      no_gpu_reason.empty() ? "none found" : no_gpu_reason, "); use device=auto or cpu"));
}

// The GPUs the request names (all of them for kAnyGpu), or FAILED_PRECONDITION if none exists.
absl::StatusOr<std::vector<size_t>> NamedGpus(const DeviceRequest& request,
                                              const std::vector<DeviceView>& devices,
                                              const std::string& no_gpu_reason) {
  std::vector<size_t> named;
  std::vector<std::string> present;
  for (size_t i = 0; i < devices.size(); ++i) {
    if (devices[i].gpu < 0) continue;
    present.push_back(DeviceName(devices[i]));
    if (request.kind == DeviceRequest::Kind::kAnyGpu || devices[i].gpu == request.gpu) {
      named.push_back(i);
    }
  }
  if (present.empty()) return NoGpu(request, no_gpu_reason);
  if (named.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device '", request.ToString(), "' does not exist; this daemon has ",
                     absl::StrJoin(present, ", "), " (or use device=auto, cpu or gpu)"));
  }
  return named;
}

// Drops the unhealthy devices from `named`; UNAVAILABLE if that leaves none.
absl::Status KeepHealthy(const DeviceRequest& request, const std::vector<DeviceView>& devices,
                         std::vector<size_t>* named) {
  std::vector<size_t> healthy;
  std::vector<std::string> reasons;
  for (size_t i : *named) {
    if (devices[i].healthy) {
      healthy.push_back(i);
    } else {
      reasons.push_back(absl::StrCat(DeviceName(devices[i]), ": ", devices[i].unhealthy_reason));
    }
  }
  if (healthy.empty()) {
    return absl::UnavailableError(absl::StrCat("device '", request.ToString(),
                                               "' is unhealthy (", absl::StrJoin(reasons, "; "),
                                               "); use device=auto or cpu"));
  }
  *named = std::move(healthy);
  return absl::OkStatus();
}

}  // namespace

double PredictSeconds(const BatchCost& cost, const DeviceView& d) {
  double seconds = d.queue_ahead_s + cost.flops / (d.compute_gflops * 1e9);
  if (d.gpu >= 0) {
    const double h2d = static_cast<double>(cost.input_bytes) +
                       (d.weights_resident ? 0.0 : static_cast<double>(cost.weight_bytes));
    seconds += d.launch_overhead_s + h2d / (d.h2d_gbps * 1e9) +
               static_cast<double>(cost.output_bytes) / (d.d2h_gbps * 1e9);
  }
  return seconds;
}

absl::Status CheckDeviceAvailable(const DeviceRequest& request,
                                  const std::vector<DeviceView>& devices,
                                  const std::string& no_gpu_reason) {
  if (!request.wants_gpu()) return absl::OkStatus();
  absl::StatusOr<std::vector<size_t>> named = NamedGpus(request, devices, no_gpu_reason);
  if (!named.ok()) return named.status();
  return KeepHealthy(request, devices, &*named);
}

absl::StatusOr<RouteDecision> Route(const BatchCost& cost, const DeviceRequest& request,
                                    const std::vector<DeviceView>& devices,
                                    const std::string& no_gpu_reason) {
  std::vector<size_t> candidates;
  if (request.wants_gpu()) {
    absl::StatusOr<std::vector<size_t>> named = NamedGpus(request, devices, no_gpu_reason);
    if (!named.ok()) return named.status();
    if (absl::Status s = KeepHealthy(request, devices, &*named); !s.ok()) return s;
    std::vector<std::string> reasons;
    for (size_t i : *named) {
      if (devices[i].usable) {
        candidates.push_back(i);
      } else {
        reasons.push_back(absl::StrCat(DeviceName(devices[i]), ": ", devices[i].unusable_reason));
      }
    }
    if (candidates.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("device '", request.ToString(),
                                                        "' cannot run this batch (",
                                                        absl::StrJoin(reasons, "; "), ")"));
    }
  } else {
    for (size_t i = 0; i < devices.size(); ++i) {
      const DeviceView& d = devices[i];
      if (d.gpu < 0 || (request.is_auto() && d.healthy && d.usable)) candidates.push_back(i);
    }
    bool has_cpu = false;
    for (size_t i : candidates) has_cpu |= devices[i].gpu < 0;
    if (!has_cpu) return absl::InternalError("router: no CPU entry among the devices");
  }
  RouteDecision best;
  best.predicted_s = std::numeric_limits<double>::infinity();
  for (size_t i : candidates) {
    const double t = PredictSeconds(cost, devices[i]);
    if (t < best.predicted_s) best = RouteDecision{i, t};
  }
  if (best.predicted_s == std::numeric_limits<double>::infinity()) best.choice = candidates[0];
  return best;
}

double CrossoverFlops(const DeviceView& cpu, const DeviceView& gpu, double in_per_flop,
                      double out_per_flop, double fixed_bytes) {
  const double fixed = gpu.launch_overhead_s + fixed_bytes / (gpu.h2d_gbps * 1e9);
  const double gain = 1.0 / (cpu.compute_gflops * 1e9) - 1.0 / (gpu.compute_gflops * 1e9) -
                      in_per_flop / (gpu.h2d_gbps * 1e9) - out_per_flop / (gpu.d2h_gbps * 1e9);
  if (!(gain > 0)) return std::numeric_limits<double>::infinity();
  return fixed / gain;
}

}  // namespace sparkle
