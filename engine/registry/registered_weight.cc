#include "engine/registry/registered_weight.h"

#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sparkle {
namespace {
constexpr std::align_val_t kAlign{64};
}  // namespace

void AlignedFree::operator()(float* data) const { ::operator delete[](data, kAlign); }

AlignedFloats AllocateAligned(int64_t elements) {
  if (elements <= 0) return nullptr;
  return AlignedFloats(static_cast<float*>(
      ::operator new[](static_cast<size_t>(elements) * sizeof(float), kAlign)));
}

RegisteredWeight::RegisteredWeight(std::string id, std::string label,
                                   std::array<int64_t, 4> shape, DataType dtype,
                                   AlignedFloats weight, std::vector<char> bias,
                                   uint64_t weight_key,
                                   absl::Time registered_at, std::shared_ptr<MemoryBudget> budget,
                                   int64_t plain_bytes)
    : id_(std::move(id)),
      label_(std::move(label)),
      shape_(shape),
      dtype_(dtype),
      weight_(std::move(weight)),
      bias_(std::move(bias)),
      weight_key_(weight_key),
      registered_at_(registered_at),
      budget_(budget),
      plain_bytes_(plain_bytes),
      prepacked_(std::move(budget)) {}

RegisteredWeight::~RegisteredWeight() {
  if (budget_ != nullptr) budget_->Release(plain_bytes_);
}

absl::Status BindRegisteredWeight(Conv2dJob* job) {
  const RegisteredWeight& w = *job->registered_weight;
  const Conv2dParams& p = job->params;
  const std::array<int64_t, 4> expected = {p.k, p.groups > 0 ? p.c / p.groups : 0, p.r, p.s};
  if (w.shape() != expected || w.has_bias() != p.has_bias) {
    return absl::InvalidArgumentError(absl::StrCat(
        "registered weights ", w.id(), " are [", absl::StrJoin(w.shape(), ", "), "]",
        w.has_bias() ? " with bias" : " without bias", "; the job needs [",
        absl::StrJoin(expected, ", "), "]", p.has_bias ? " with bias" : " without bias"));
  }
  if (w.dtype() != p.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("registered weights ", w.id(), " are ",
                                                   DataTypeName(w.dtype()), "; the request's tensors are ",
                                                   DataTypeName(p.dtype)));
  }
  job->weight = w.weight();
  job->bias = w.bias();
  job->weight_key = w.weight_key();
  return absl::OkStatus();
}

}  // namespace sparkle
