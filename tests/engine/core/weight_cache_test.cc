#include "engine/core/weight_cache.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace sparkle {
namespace {

std::unique_ptr<WeightCache> Make(WeightCache::Options options = {}) {
  auto cache = WeightCache::Create(options);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return std::move(cache).value();
}

TEST(WeightCacheTest, SameBytesSameIdOtherBytesOtherId) {
  auto cache = Make();
  std::vector<float> a(1000, 0.5f), a_copy = a, b = a, bias = {1, 2, 3};
  b.back() = 0.25f;  // differs in the last value only
  const WeightId id_a = cache->Identify(a, {});
  EXPECT_EQ(id_a.kind, WeightId::Kind::kContent);
  EXPECT_EQ(cache->Identify(a_copy, {}), id_a);  // another buffer, same bytes
  const WeightId id_b = cache->Identify(b, {});
  EXPECT_FALSE(id_b.empty());
  EXPECT_NE(id_b, id_a);
  const WeightId id_a_bias = cache->Identify(a, bias);  // bias is part of the identity
  EXPECT_NE(id_a_bias, id_a);
  EXPECT_EQ(cache->Identify(a, bias), id_a_bias);
  const WeightCache::Stats s = cache->stats();
  EXPECT_EQ(s.inserts, 3);
  EXPECT_EQ(s.hits, 2);
  EXPECT_EQ(s.entries, 3);
  EXPECT_EQ(s.bytes, (1000 + 1000 + 1003) * 4);
}

// A client who crafts weights with the same hash as another's gets no identity at all (its job
// runs alone and uncached), never the other's: every hash collides here.
TEST(WeightCacheTest, ACollisionNeverSharesAnIdentity) {
  WeightCache::Options options;
  options.hash_for_testing = [](absl::Span<const char>, absl::Span<const char>) {
    return std::pair<uint64_t, uint64_t>(7, 7);
  };
  auto cache = Make(options);
  std::vector<float> victim(64, 1.0f), attacker(64, 2.0f), shorter(32, 1.0f);
  const WeightId id = cache->Identify(victim, {});
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(cache->Identify(attacker, {}).empty());
  EXPECT_TRUE(cache->Identify(shorter, {}).empty());  // a prefix of the victim's bytes
  EXPECT_TRUE(cache->Identify(victim, {1.0f}).empty());  // same weights, other bias
  EXPECT_EQ(cache->Identify(victim, {}), id);  // the victim keeps its identity
  EXPECT_EQ(cache->stats().collisions, 3);
}

// Ids are never reused: once an entry is evicted, the same bytes get a new id, so a cache
// downstream keyed by the old id cannot serve them (or anything else) again.
TEST(WeightCacheTest, EvictedIdsAreNeverReused) {
  auto cache = Make({.max_bytes = 1000 * 4});
  std::vector<float> a(1000, 1.0f), b(1000, 2.0f);
  const WeightId first = cache->Identify(a, {});
  const WeightId other = cache->Identify(b, {});  // evicts a
  EXPECT_EQ(cache->stats().entries, 1);
  const WeightId again = cache->Identify(a, {});
  EXPECT_FALSE(again.empty());
  EXPECT_NE(again, first);
  EXPECT_NE(again, other);
}

TEST(WeightCacheTest, TooLargeOrDisabledGivesNoIdentity) {
  auto small = Make({.max_bytes = 100});
  std::vector<float> w(26, 1.0f);  // 104 bytes
  EXPECT_TRUE(small->Identify(w, {}).empty());
  EXPECT_EQ(small->stats().no_room, 1);
  auto off = Make({.max_bytes = 0});
  EXPECT_TRUE(off->Identify(std::vector<float>{1.0f}, {}).empty());
  EXPECT_EQ(WeightCache::Create({.max_bytes = -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WeightCacheTest, ConcurrentIdentifyAgreesOnOneId) {
  auto cache = Make();
  std::vector<float> w(4096, 3.0f);
  const WeightId reference = cache->Identify(w, {});
  std::vector<std::thread> threads;
  std::vector<WeightId> seen(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) seen[t] = cache->Identify(w, {});
    });
  }
  for (auto& t : threads) t.join();
  for (const WeightId& id : seen) EXPECT_EQ(id, reference);
}

}  // namespace
}  // namespace sparkle
