// libFuzzer target: a .npy file through sparklectl's reader, ParseNpy (client/npy.h).
//
// Invariants: an error is INVALID_ARGUMENT naming the file; a parsed array has non-negative
// dimensions and exactly NumElements() * 4 data bytes, and SerializeNpy + ParseNpy gives it back
// unchanged.
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/npy.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sparkle::client;
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<NpyArray> array = ParseNpy(bytes, "fuzz.npy");
  if (!array.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(array.status()), array.status().ToString());
    FUZZ_CHECK(absl::StrContains(array.status().message(), "fuzz.npy"),
               array.status().ToString());
    return 0;
  }
  for (int64_t d : array->shape) FUZZ_CHECK(d >= 0, "negative dimension");
  FUZZ_CHECK(static_cast<int64_t>(array->data.size()) == array->NumElements() * 4,
             absl::StrCat(array->data.size(), " data bytes for ", array->NumElements(),
                          " elements"));
  absl::StatusOr<std::string> written = SerializeNpy(*array);
  FUZZ_CHECK(written.ok(), written.status().ToString());
  absl::StatusOr<NpyArray> again = ParseNpy(*written, "again.npy");
  FUZZ_CHECK(again.ok(), again.status().ToString());
  FUZZ_CHECK(again->shape == array->shape, "round trip changed the shape");
  FUZZ_CHECK(again->data == array->data, "round trip changed the data");
  return 0;
}
