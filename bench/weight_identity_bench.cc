// Weight identity per request, before and after issue 10, on weights of WEIGHT_MIB (default 4):
//   before: absl::Hash of the bytes on the gRPC thread at Submit, a memcmp against the batch
//           head's weights, and the CPU backend's compare against its plain copy (SameBytes:
//           OpenMP on two threads above 1 MiB);
//   after:  WeightCache::Identify on a worker: XXH3-128 of the bytes, one memcmp against the
//           cached copy.
// Each is timed ROUNDS times (alternating), on the calling thread; prints min/median/max µs.
// Usage: weight_identity_bench [WEIGHT_MIB] [ROUNDS]
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "engine/core/weight_cache.h"

namespace {

double Micros(absl::Time a, absl::Time b) { return absl::ToDoubleMicroseconds(b - a); }

bool SameBytesParallel(const float* a, const float* b, int64_t elements) {
  constexpr int64_t kChunk = 64 << 10;
  const int64_t chunks = (elements + kChunk - 1) / kChunk;
  bool same = true;
#pragma omp parallel for if (chunks > 4) reduction(&& : same) schedule(static)
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t begin = i * kChunk, size = std::min(kChunk, elements - begin);
    same = same && std::memcmp(a + begin, b + begin, size * sizeof(float)) == 0;
  }
  return same;
}

void Print(const char* name, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::printf("%-44s min %8.1f  median %8.1f  max %8.1f us\n", name, v.front(), v[v.size() / 2],
              v.back());
}

}  // namespace

int main(int argc, char** argv) {
  const double mib = argc > 1 ? std::atof(argv[1]) : 4;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 21;
  const int64_t n = static_cast<int64_t>(mib * (1 << 20) / sizeof(float));
  std::vector<float> request(n), head(n), plain(n);
  for (int64_t i = 0; i < n; ++i) request[i] = head[i] = plain[i] = static_cast<float>(i % 977);
  sparkle::WeightCache::Options options;
  options.max_bytes = int64_t{1} << 30;
  auto cache = sparkle::WeightCache::Create(options);
  if (!cache.ok()) return 1;
  (*cache)->Identify(head, {});  // the cached copy exists: the steady state
  std::vector<double> before_hash, before_total, after;
  volatile uint64_t sink = 0;
  for (int r = 0; r < rounds; ++r) {
    absl::Time t0 = absl::Now();
    const size_t h = absl::Hash<absl::string_view>()(absl::string_view(
        reinterpret_cast<const char*>(request.data()), request.size() * sizeof(float)));
    absl::Time t1 = absl::Now();
    const bool same_head = std::memcmp(request.data(), head.data(), n * sizeof(float)) == 0;
    const bool same_plain = SameBytesParallel(plain.data(), request.data(), n);
    absl::Time t2 = absl::Now();
    sink = sink + h + same_head + same_plain;
    before_hash.push_back(Micros(t0, t1));
    before_total.push_back(Micros(t0, t2));
    t0 = absl::Now();
    const sparkle::WeightId id = (*cache)->Identify(request, {});
    t1 = absl::Now();
    sink = sink + id.lo;
    after.push_back(Micros(t0, t1));
  }
  std::printf("weights %.2f MiB, %d rounds, %d OpenMP threads\n", mib, rounds,
              omp_get_max_threads());
  Print("before: absl::Hash (gRPC thread)", before_hash);
  Print("before: hash + head memcmp + backend compare", before_total);
  Print("after:  Identify (XXH3-128 + one memcmp)", after);
  return 0;
}
