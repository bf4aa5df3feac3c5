// libFuzzer target: a GPU tuning-cache file (engine/hip/tuning_cache.h, plain C++) loaded by
// TuningCache for the device "Fuzz GPU 0" (the file's second line must name it).
//
// Invariants: a file that loads can take a new entry (Store rewrites the file) and the rewritten
// file loads again with every entry and the same implementations; a file that does not load
// leaves the cache empty and is replaced by the next Store.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/hip/tuning_cache.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_util.h"

namespace {
constexpr char kDevice[] = "Fuzz GPU 0";
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using sparkle::hip::TuningCache;
  using namespace sparkle::fuzz;
  const std::string dir = ScratchDir();
  const std::string path = absl::StrCat(dir, "/", TuningCache::FileName(kDevice));
  WriteFileOrDie(path, absl::string_view(reinterpret_cast<const char*>(data), size));
  TuningCache cache(kDevice, dir);
  FUZZ_CHECK(cache.path() == path, cache.path());
  if (!cache.load_status().ok()) {
    FUZZ_CHECK(cache.size() == 0, "a file that did not load left entries");
  }
  const size_t loaded = cache.size();
  // The keys it has, read back through the file: Store rewrites it.
  const bool had_key = cache.Lookup("fuzz_new_key").has_value();
  absl::Status stored = cache.Store("fuzz_new_key", "fuzz_impl", 12.5);
  FUZZ_CHECK(stored.ok(), stored.ToString());
  FUZZ_CHECK(cache.size() == loaded + (had_key ? 0 : 1), "size after Store");

  TuningCache reloaded(kDevice, dir);
  FUZZ_CHECK(reloaded.load_status().ok(), reloaded.load_status().ToString());
  FUZZ_CHECK(reloaded.size() == cache.size(),
             absl::StrCat(reloaded.size(), " entries reloaded, ", cache.size(), " stored"));
  FUZZ_CHECK(reloaded.Lookup("fuzz_new_key") == std::optional<std::string>("fuzz_impl"),
             "stored entry lost");
  return 0;
}
