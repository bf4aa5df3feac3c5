#include "engine/core/prepacked_weights.h"

#include <utility>

namespace sparkle {

PrepackedWeights::PrepackedWeights(std::shared_ptr<MemoryBudget> budget)
    : budget_(std::move(budget)) {}

PrepackedWeights::~PrepackedWeights() {
  if (budget_ != nullptr) budget_->Release(bytes_);
}

std::shared_ptr<const PrepackedWeights::Copy> PrepackedWeights::Find(Match match) const {
  absl::MutexLock lock(&mu_);
  for (const auto& copy : copies_) {
    if (match(*copy)) return copy;
  }
  return nullptr;
}

std::shared_ptr<const PrepackedWeights::Copy> PrepackedWeights::Add(
    Match match, std::shared_ptr<const Copy> copy, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  for (const auto& existing : copies_) {
    if (match(*existing)) return existing;
  }
  if (budget_ != nullptr && !budget_->TryReserve(bytes)) {
    refused_++;
    return nullptr;
  }
  bytes_ += bytes;
  copies_.push_back(copy);
  return copy;
}

int64_t PrepackedWeights::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

int64_t PrepackedWeights::refused() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}

}  // namespace sparkle
