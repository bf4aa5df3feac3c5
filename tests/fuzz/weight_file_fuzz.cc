// libFuzzer target: a persisted weight file (engine/registry/weight_file.h) through
// ReadWeightFile, with a small budget. The input is written to a file in a scratch directory
// (the loader reads a path).
//
// Invariants: an error is DATA_LOSS (malformed) or RESOURCE_EXHAUSTED (budget), with a message;
// a loaded file is a complete upload whose reservation is back in the budget once it is dropped;
// written again (WriteWeightFile) and read back, it has the same id, label, shape and bias.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/registry/weight_file.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_util.h"

namespace {
constexpr int64_t kBudgetBytes = 1 << 16;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparkle;
  using namespace sparkle::fuzz;
  const std::string path = absl::StrCat(ScratchDir(), "/input.weights");
  WriteFileOrDie(path, absl::string_view(reinterpret_cast<const char*>(data), size));
  auto budget = std::make_shared<MemoryBudget>(kBudgetBytes);
  {
    absl::StatusOr<LoadedWeightFile> loaded = ReadWeightFile(path, budget);
    if (!loaded.ok()) {
      FUZZ_CHECK(absl::IsDataLoss(loaded.status()) || absl::IsResourceExhausted(loaded.status()),
                 loaded.status().ToString());
      FUZZ_CHECK(!loaded.status().message().empty(), "error without a message");
      FUZZ_CHECK(budget->used() == 0, "failed load kept a reservation");
      return 0;
    }
    WeightUpload& upload = *loaded->upload;
    FUZZ_CHECK(upload.received_bytes() == upload.total_bytes(), "incomplete upload");
    FUZZ_CHECK(budget->used() > 0 && budget->used() <= kBudgetBytes, "reservation");
    absl::StatusOr<std::string> id = upload.Digest();
    FUZZ_CHECK(id.ok(), id.status().ToString());
    const WeightHeader header = upload.header();
    std::shared_ptr<RegisteredWeight> weight = upload.Build(2, loaded->registered_at);
    FUZZ_CHECK(weight != nullptr && weight->id() == *id, "Build");

    const std::string again_path = absl::StrCat(ScratchDir(), "/again.weights");
    absl::Status written = WriteWeightFile(again_path, *weight);
    FUZZ_CHECK(written.ok(), written.ToString());
    absl::StatusOr<LoadedWeightFile> again = ReadWeightFile(again_path, nullptr);
    FUZZ_CHECK(again.ok(), again.status().ToString());
    absl::StatusOr<std::string> again_id = again->upload->Digest();
    FUZZ_CHECK(again_id.ok() && *again_id == *id, "round trip changed the id");
    FUZZ_CHECK(again->upload->header().label == header.label, "round trip changed the label");
    FUZZ_CHECK(again->upload->header().shape == header.shape, "round trip changed the shape");
    FUZZ_CHECK(again->upload->header().bias.size() == header.bias.size(), "round trip: bias");
  }
  FUZZ_CHECK(budget->used() == 0, absl::StrCat(budget->used(), " bytes still reserved"));
  return 0;
}
