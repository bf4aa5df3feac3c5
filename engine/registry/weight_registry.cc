#include "engine/registry/weight_registry.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/registry/weight_file.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

constexpr int64_t kMaxBudgetBytes = int64_t{1} << 50;

absl::Status ValidateOptions(const WeightRegistry::Options& o) {
  if (o.budget_bytes < 0 || o.budget_bytes > kMaxBudgetBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights budget_bytes must be in [0, 2^50]; was ", o.budget_bytes));
  }
  if (o.upload_idle_timeout < absl::Milliseconds(1) || o.upload_idle_timeout > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights upload_idle_timeout must be in [1ms, 1h]; was ",
                     absl::FormatDuration(o.upload_idle_timeout)));
  }
  return absl::OkStatus();
}

}  // namespace

WeightRegistry::WeightRegistry(const Options& options)
    : options_(options), budget_(std::make_shared<MemoryBudget>(options.budget_bytes)) {}

absl::StatusOr<std::unique_ptr<WeightRegistry>> WeightRegistry::Create(const Options& options) {
  SPARKLE_RETURN_IF_ERROR(ValidateOptions(options));
  auto registry = std::unique_ptr<WeightRegistry>(new WeightRegistry(options));
  if (!options.dir.empty()) SPARKLE_RETURN_IF_ERROR(registry->LoadDirectory());
  return registry;
}

absl::Status WeightRegistry::LoadDirectory() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create the weights directory ", options_.dir, ": ", ec.message()));
  }
  std::vector<fs::path> files;
  for (fs::directory_iterator it(options_.dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    if (path.extension() == ".tmp") {  // a write interrupted by a crash
      spdlog::warn("weights: removing the unfinished file {}", path.string());
      fs::remove(path, ec);
      ec.clear();
    } else if (path.extension() == kWeightFileSuffix) {
      files.push_back(path);
    }
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot list the weights directory ", options_.dir, ": ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  int loaded = 0;
  for (const fs::path& path : files) {
    const std::string expected = absl::StrCat("sha256:", path.stem().string());
    absl::StatusOr<LoadedWeightFile> file =
        ReadWeightFile(path.string(), budget_);
    absl::StatusOr<std::string> id =
        file.ok() ? file->upload->Digest() : absl::StatusOr<std::string>(file.status());
    if (id.ok() && *id != expected) {
      id = absl::DataLossError(
          absl::StrCat("weight file ", path.string(), ": its content hashes to ", *id));
    }
    absl::StatusOr<Registered> registered =
        id.ok() ? Commit(std::move(file->upload), *id, file->registered_at, /*persist=*/false)
                : absl::StatusOr<Registered>(id.status());
    if (!registered.ok()) {
      spdlog::error("weights: skipping {}: {}", path.string(), registered.status().ToString());
      continue;
    }
    loaded++;
  }
  spdlog::info("weights: loaded {} of {} registration(s) from {} ({} of {} budget bytes used)",
               loaded, files.size(), options_.dir, budget_->used(), budget_->limit());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WeightUpload>> WeightRegistry::BeginUpload(WeightHeader header) {
  return WeightUpload::Begin(std::move(header), budget_);
}

absl::StatusOr<WeightRegistry::Registered> WeightRegistry::Finish(
    std::unique_ptr<WeightUpload> upload) {
  SPARKLE_ASSIGN_OR_RETURN(std::string id, upload->Digest());
  return Commit(std::move(upload), id, absl::Now(), /*persist=*/!options_.dir.empty());
}

absl::StatusOr<WeightRegistry::Registered> WeightRegistry::Commit(
    std::unique_ptr<WeightUpload> upload, const std::string& id, absl::Time registered_at,
    bool persist) {
  absl::MutexLock file_lock(&file_mu_);
  uint64_t key = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = weights_.find(id);
    if (it != weights_.end()) return Registered{it->second, /*already_registered=*/true};
    key = next_key_;
    next_key_ += 2;
  }
  std::shared_ptr<RegisteredWeight> weight = upload->Build(key, registered_at);
  if (persist) {
    absl::Status status = WriteWeightFile(WeightFilePath(options_.dir, id), *weight);
    if (!status.ok()) {
      spdlog::error("weights: {} not registered: {}", id, status.ToString());
      return absl::Status(status.code(), absl::StrCat("cannot persist the weights: ",
                                                      status.message()));
    }
  }
  spdlog::info("weights: registered {} [{}x{}x{}x{}]{} label '{}'", id, weight->shape()[0],
               weight->shape()[1], weight->shape()[2], weight->shape()[3],
               weight->has_bias() ? " with bias" : "", weight->label());
  absl::MutexLock lock(&mu_);
  weights_.emplace(id, weight);
  return Registered{std::move(weight), /*already_registered=*/false};
}

absl::StatusOr<WeightRegistry::Registered> WeightRegistry::Register(
    WeightHeader header, absl::Span<const float> weight) {
  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<WeightUpload> upload, BeginUpload(std::move(header)));
  SPARKLE_RETURN_IF_ERROR(upload->Append(absl::string_view(
      reinterpret_cast<const char*>(weight.data()), weight.size() * sizeof(float))));
  return Finish(std::move(upload));
}

// Counts a tensor in use for as long as a job holds the pointer Acquire returned.
struct WeightRegistry::Lease {
  explicit Lease(std::shared_ptr<RegisteredWeight> w) : weight(std::move(w)) {
    weight->in_use_.fetch_add(1, std::memory_order_relaxed);
    weight->uses_.fetch_add(1, std::memory_order_relaxed);
  }
  ~Lease() { weight->in_use_.fetch_sub(1, std::memory_order_relaxed); }
  std::shared_ptr<RegisteredWeight> weight;
};

absl::StatusOr<std::shared_ptr<const RegisteredWeight>> WeightRegistry::Acquire(
    absl::string_view id) {
  std::shared_ptr<RegisteredWeight> weight;
  {
    absl::MutexLock lock(&mu_);
    auto it = weights_.find(id);
    if (it == weights_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "no registered weights with weight_id '", id,
          "' (register them with `sparklectl weights register`; list with `sparklectl weights "
          "list`)"));
    }
    weight = it->second;
  }
  auto lease = std::make_shared<Lease>(std::move(weight));
  // Aliasing: points at the tensor, owns the lease (whose destructor ends the use).
  return std::shared_ptr<const RegisteredWeight>(lease, lease->weight.get());
}

std::vector<std::shared_ptr<const RegisteredWeight>> WeightRegistry::List() const {
  std::vector<std::shared_ptr<const RegisteredWeight>> list;
  {
    absl::MutexLock lock(&mu_);
    list.reserve(weights_.size());
    for (const auto& [id, weight] : weights_) list.push_back(weight);
  }
  std::sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
    // Reloaded registrations keep their time; keys grow with registration in this process.
    return std::pair(a->registered_at(), a->weight_key()) <
           std::pair(b->registered_at(), b->weight_key());
  });
  return list;
}

absl::Status WeightRegistry::Unregister(absl::string_view id) {
  absl::MutexLock file_lock(&file_mu_);
  std::shared_ptr<RegisteredWeight> weight;
  {
    absl::MutexLock lock(&mu_);
    auto it = weights_.find(id);
    if (it == weights_.end()) {
      return absl::NotFoundError(absl::StrCat("no registered weights with weight_id '", id, "'"));
    }
    weight = std::move(it->second);
    weights_.erase(it);
  }
  spdlog::info("weights: unregistered {} ({} job(s) still use it)", weight->id(),
               weight->in_use());
  if (!options_.dir.empty()) {
    const std::string path = WeightFilePath(options_.dir, weight->id());
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("unregistered, but cannot remove ", path, ": ",
                                              ec.message(), " (it will be loaded at restart)"));
    }
  }
  return absl::OkStatus();
}

WeightRegistry::Snapshot WeightRegistry::snapshot() const {
  Snapshot s;
  {
    absl::MutexLock lock(&mu_);
    s.weights = static_cast<int64_t>(weights_.size());
  }
  s.bytes = budget_->used();
  s.budget_bytes = budget_->limit();
  return s;
}

}  // namespace sparkle
