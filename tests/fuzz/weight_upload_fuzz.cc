// libFuzzer target: one RegisterWeights stream through the registry's upload
// (WeightRegistry::BeginUpload / WeightUpload::Append / WeightRegistry::Finish), with a small
// budget, as server/weights_service.cc drives it.
//
// Input: [u16 little-endian n][n bytes: a serialized sparkle.v1.WeightsHeader], then chunks,
// each [u16 little-endian n][n bytes of weight data]; a last chunk that is cut short holds what
// is left. The stream ends (client half-close, then Finish) after the last chunk; the first
// failing call ends it, as the service does.
//
// Invariants: whatever happens, the budget is back to 0 once the upload and the registration are
// gone; a registration holds exactly the bytes that were sent, its id is "sha256:" + 64 lowercase
// hex digits, registering the same bytes again returns the same id (already_registered), and the
// registration written as a weight file reads back with the same id and label.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/core/data_type.h"
#include "engine/registry/weight_file.h"
#include "engine/registry/weight_registry.h"
#include "server/weights_header.h"
#include "sparkle/v1/control.pb.h"
#include "spdlog/spdlog.h"
#include "google/protobuf/stubs/logging.h"
#include "tests/fuzz/fuzz_util.h"

namespace sparkle::fuzz {
namespace {

constexpr int64_t kBudgetBytes = 4096;

// Takes [u16 n][n bytes] from the front of *in (fewer when cut short).
absl::string_view TakeRecord(absl::string_view* in) {
  if (in->size() < 2) {
    in->remove_prefix(in->size());
    return {};
  }
  const size_t n = static_cast<uint8_t>((*in)[0]) | (static_cast<uint8_t>((*in)[1]) << 8);
  in->remove_prefix(2);
  const absl::string_view record = in->substr(0, n);
  in->remove_prefix(record.size());
  return record;
}


bool IsContentId(const std::string& id) {
  if (id.size() != 7 + 64 || id.compare(0, 7, "sha256:") != 0) return false;
  for (size_t i = 7; i < id.size(); ++i) {
    const char c = id[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void CheckRegistration(WeightRegistry& registry, const RegisteredWeight& w,
                       const WeightHeader& header, const std::string& sent) {
  FUZZ_CHECK(IsContentId(w.id()), w.id());
  FUZZ_CHECK(DataTypeName(w.dtype()) == header.datatype, "datatype");
  const int64_t element = ElementSize(w.dtype());
  FUZZ_CHECK(static_cast<size_t>(w.weight_elements() * element) == sent.size(), "weight size");
  FUZZ_CHECK(std::memcmp(w.weight(), sent.data(), sent.size()) == 0, "weight bytes differ");
  FUZZ_CHECK(w.has_bias() == !header.bias.empty(), "has_bias");
  if (w.has_bias()) {
    // The bias is kept in the datatype: the header's values rounded to it.
    std::vector<char> rounded(header.bias.size() * static_cast<size_t>(element));
    NarrowFromFloat(w.dtype(), header.bias.data(), rounded.data(),
                    static_cast<int64_t>(header.bias.size()));
    FUZZ_CHECK(std::memcmp(w.bias(), rounded.data(), rounded.size()) == 0, "bias");
  }
  FUZZ_CHECK(w.label() == header.label, "label");

  // The same bytes again: the same id, nothing new.
  // (The upload reserves its bytes before the id is known, so a duplicate needs room for a
  // second copy for a moment: RESOURCE_EXHAUSTED is right when there is none.)
  using Registered = absl::StatusOr<WeightRegistry::Registered>;
  const Registered again = [&]() -> Registered {
    absl::StatusOr<std::unique_ptr<WeightUpload>> upload = registry.BeginUpload(header);
    if (!upload.ok()) return upload.status();
    absl::Status appended = (*upload)->Append(sent);
    if (!appended.ok()) return appended;
    return registry.Finish(*std::move(upload));
  }();
  if (absl::IsResourceExhausted(again.status())) {
    FUZZ_CHECK(2 * w.plain_bytes() > kBudgetBytes, again.status().ToString());
  } else {
    FUZZ_CHECK(again.ok(), again.status().ToString());
    FUZZ_CHECK(again->already_registered && again->weight->id() == w.id(), "not idempotent");
  }

  // Persisted and loaded back: the same id and label.
  const std::string path = absl::StrCat(ScratchDir(), "/upload.weights");
  absl::Status written = WriteWeightFile(path, w);
  FUZZ_CHECK(written.ok(), written.ToString());
  auto budget = std::make_shared<MemoryBudget>(kBudgetBytes);
  absl::StatusOr<LoadedWeightFile> loaded = ReadWeightFile(path, budget);
  FUZZ_CHECK(loaded.ok(), loaded.status().ToString());
  absl::StatusOr<std::string> id = loaded->upload->Digest();
  FUZZ_CHECK(id.ok() && *id == w.id(), "weight file round trip changed the id");
  FUZZ_CHECK(loaded->upload->header().label == w.label(), "weight file round trip: label");
}

}  // namespace
}  // namespace sparkle::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  // Protobuf logs every string field with invalid UTF-8 it parses: noise, and slow.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparkle;
  using namespace sparkle::fuzz;
  absl::string_view in(reinterpret_cast<const char*>(data), size);
  sparkle::v1::WeightsHeader proto;
  const absl::string_view header_bytes = TakeRecord(&in);
  if (!proto.ParseFromArray(header_bytes.data(), static_cast<int>(header_bytes.size()))) {
    return -1;
  }
  absl::StatusOr<WeightHeader> header = WeightHeaderFromProto(proto);
  if (!header.ok()) return 0;

  WeightRegistry::Options options;
  options.budget_bytes = kBudgetBytes;
  auto registry = WeightRegistry::Create(options);
  FUZZ_CHECK(registry.ok(), registry.status().ToString());
  {
    absl::StatusOr<std::unique_ptr<WeightUpload>> upload = (*registry)->BeginUpload(*header);
    if (upload.ok()) {
      std::string sent;
      bool ok = true;
      while (ok && !in.empty()) {
        const absl::string_view chunk = TakeRecord(&in);
        const int64_t before = (*upload)->received_bytes();
        ok = (*upload)->Append(chunk).ok();
        FUZZ_CHECK((*upload)->received_bytes() == before + (ok ? int64_t(chunk.size()) : 0),
                   "received_bytes");
        FUZZ_CHECK((*upload)->received_bytes() <= (*upload)->total_bytes(), "past the shape");
        if (ok) sent.append(chunk.data(), chunk.size());
      }
      if (ok) {
        const bool complete = (*upload)->received_bytes() == (*upload)->total_bytes();
        absl::StatusOr<WeightRegistry::Registered> registered =
            (*registry)->Finish(*std::move(upload));
        FUZZ_CHECK(registered.ok() == complete, registered.status().ToString());
        if (registered.ok()) {
          FUZZ_CHECK(!registered->already_registered, "fresh registry");
          CheckRegistration(**registry, *registered->weight, *header, sent);
          FUZZ_CHECK((*registry)->Unregister(registered->weight->id()).ok(), "unregister");
        }
      }
    } else {
      FUZZ_CHECK(absl::IsInvalidArgument(upload.status()) ||
                     absl::IsResourceExhausted(upload.status()),
                 upload.status().ToString());
    }
  }
  const int64_t left = (*registry)->snapshot().bytes;
  FUZZ_CHECK(left == 0, absl::StrCat(left, " budget bytes still held"));
  return 0;
}
