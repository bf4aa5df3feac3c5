#include "server/shared_memory_registry.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/shm_object.h"
#include "server/scheduling_client.h"
#include "server/shared_memory_rpcs.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

using ::sparkle::testing::MappingsOf;
using ::sparkle::testing::ShmObject;

std::unique_ptr<SharedMemoryRegistry> NewRegistry(SharedMemoryRegistry::Options options = {}) {
  auto registry = SharedMemoryRegistry::Create(options);
  EXPECT_TRUE(registry.ok()) << registry.status();
  return *std::move(registry);
}

TEST(SharedMemoryRegistryTest, CreateValidatesOptions) {
  EXPECT_TRUE(SharedMemoryRegistry::Create({}).ok());
  auto bad = [](int regions, int64_t bytes) {
    return SharedMemoryRegistry::Create({.max_regions = regions, .max_bytes = bytes}).status();
  };
  EXPECT_THAT(bad(0, 1 << 20).message(), HasSubstr("shm_max_regions"));
  EXPECT_EQ(bad(65537, 1 << 20).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(bad(65536, int64_t{1} << 50).ok());
  EXPECT_THAT(bad(1, (1 << 20) - 1).message(), HasSubstr("shm_max_bytes"));
  EXPECT_EQ(bad(1, (int64_t{1} << 50) + 1).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SharedMemoryRegistryTest, FindSeesTheClientsBytesBothWays) {
  ShmObject object(4096);
  auto registry = NewRegistry();
  // An offset that is not page-aligned.
  ASSERT_TRUE(registry->Register("alice", "r", object.key(), 100, 1000).ok());
  object.data()[100 + 7] = 42;
  absl::StatusOr<SharedMemorySpan> span = registry->Find("alice", "r", 7, 16);
  ASSERT_TRUE(span.ok()) << span.status();
  EXPECT_EQ(span->bytes, 16);
  EXPECT_EQ(span->data[0], 42);
  EXPECT_EQ(span->data, span->region->data() + 7);
  span->data[1] = 43;  // the daemon writes an output: the client sees it
  EXPECT_EQ(object.data()[100 + 8], 43);
  EXPECT_EQ(span->region->name(), "r");
  EXPECT_EQ(span->region->key(), object.key());
  EXPECT_EQ(span->region->owner(), "alice");
  EXPECT_EQ(span->region->offset(), 100u);
  EXPECT_EQ(span->region->byte_size(), 1000u);
}

TEST(SharedMemoryRegistryTest, KeyWithoutLeadingSlashNamesTheSameObject) {
  ShmObject object(64);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("o", "r", object.key().substr(1), 0, 64).ok());
  object.data()[3] = 9;
  EXPECT_EQ(registry->Find("o", "r", 0, 64)->data[3], 9);
}

TEST(SharedMemoryRegistryTest, RejectsBadNamesAndKeys) {
  ShmObject object(64);
  auto registry = NewRegistry();
  EXPECT_EQ(registry->Register("o", "", object.key(), 0, 64).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry->Register("o", std::string(257, 'n'), object.key(), 0, 64).code(),
            absl::StatusCode::kInvalidArgument);
  for (const std::string& key :
       {std::string(), std::string("/"), std::string("a/b"), std::string("/a/b"),
        std::string("/dev/shm/x"), std::string("."), std::string(".."), std::string("/.."),
        std::string("../etc/passwd"), std::string(256, 'k'), std::string("a\0b", 3)}) {
    const absl::Status s = registry->Register("o", "r", key, 0, 64);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_THAT(s.message(), HasSubstr("invalid shared memory key")) << key;
  }
  // 255 bytes is a valid key: no such object.
  EXPECT_EQ(registry->Register("o", "r", std::string(255, 'k'), 0, 64).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(registry->snapshot().regions, 0);
}

TEST(SharedMemoryRegistryTest, UnknownObjectIsNotFound) {
  auto registry = NewRegistry();
  const absl::Status s = registry->Register("o", "r", "/sparkle-shm-test-no-such-object", 0, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(),
              HasSubstr("unable to open shared memory object '/sparkle-shm-test-no-such-object'"));
}

TEST(SharedMemoryRegistryTest, ObjectTheDaemonMayNotOpenIsPermissionDenied) {
  ShmObject object(64, 0600);
  auto registry = NewRegistry();
  // Root opens anything: act as nobody for the call (this thread is the only one).
  const bool root = geteuid() == 0;
  if (root) {
    ASSERT_EQ(seteuid(65534), 0);
  } else {
    ASSERT_EQ(chmod(absl::StrCat("/dev/shm", object.key()).c_str(), 0), 0);
  }
  const absl::Status s = registry->Register("o", "r", object.key(), 0, 64);
  if (root) {
    ASSERT_EQ(seteuid(0), 0);
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("runs as uid"));
  EXPECT_THAT(s.message(), HasSubstr(object.key()));
}

TEST(SharedMemoryRegistryTest, RegionMustFitTheObject) {
  ShmObject object(4096);
  auto registry = NewRegistry();
  EXPECT_EQ(registry->Register("o", "r", object.key(), 0, 0).code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status s = registry->Register("o", "r", object.key(), 4000, 97);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("4097"));
  EXPECT_THAT(s.message(), HasSubstr("(4096 bytes)"));
  s = registry->Register("o", "r", object.key(), kMax, 2);  // wraps around
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("overflows"));
  s = registry->Register("o", "r", object.key(), 2, kMax - 1);  // sums to exactly 2^64
  EXPECT_THAT(s.message(), HasSubstr("overflows"));
  s = registry->Register("o", "r", object.key(), 0, kMax);  // beyond off_t
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry->Register("o", "r", object.key(), 4000, 96).ok());  // exactly the end
}

TEST(SharedMemoryRegistryTest, SameNameTwiceIsAlreadyExistsPerOwner) {
  ShmObject object(64);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("alice", "r", object.key(), 0, 64).ok());
  const absl::Status s = registry->Register("alice", "r", object.key(), 0, 32);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(), "shared memory region 'r' is already registered");
  // Another owner has its own namespace.
  EXPECT_TRUE(registry->Register("bob", "r", object.key(), 0, 32).ok());
  EXPECT_EQ(registry->snapshot().regions, 2);
  EXPECT_EQ(registry->snapshot().bytes, 96);
}

TEST(SharedMemoryRegistryTest, OwnersAreIsolated) {
  ShmObject object(64);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("alice", "r", object.key(), 0, 64).ok());
  EXPECT_EQ(registry->Find("bob", "r", 0, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry->Status("bob", "r").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry->Status("bob", "")->empty());
  EXPECT_TRUE(registry->Unregister("bob", "r").ok());  // unknown to bob: OK, and no effect
  EXPECT_TRUE(registry->Unregister("bob", "").ok());
  EXPECT_TRUE(registry->Find("alice", "r", 0, 1).ok());
  EXPECT_EQ(registry->snapshot().regions, 1);
}

TEST(SharedMemoryRegistryTest, StatusListsOneOrAllSortedByName) {
  ShmObject object(64);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("o", "b", object.key(), 8, 16).ok());
  ASSERT_TRUE(registry->Register("o", "a", object.key(), 0, 64).ok());
  absl::StatusOr<std::vector<SharedMemoryRegistry::RegionInfo>> all = registry->Status("o", "");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "a");
  EXPECT_EQ((*all)[1].name, "b");
  EXPECT_EQ((*all)[1].key, object.key());
  EXPECT_EQ((*all)[1].offset, 8u);
  EXPECT_EQ((*all)[1].byte_size, 16u);
  EXPECT_EQ(registry->Status("o", "b")->size(), 1u);
  const absl::Status s = registry->Status("o", "zz").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'zz'"));
}

TEST(SharedMemoryRegistryTest, UnregisterOneOrAllOfTheOwner) {
  ShmObject object(64);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("o", "a", object.key(), 0, 64).ok());
  ASSERT_TRUE(registry->Register("o", "b", object.key(), 0, 64).ok());
  ASSERT_TRUE(registry->Register("p", "a", object.key(), 0, 64).ok());
  EXPECT_TRUE(registry->Unregister("o", "nope").ok());
  EXPECT_TRUE(registry->Unregister("o", "a").ok());
  EXPECT_EQ(registry->Find("o", "a", 0, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry->Find("o", "b", 0, 1).ok());
  EXPECT_TRUE(registry->Unregister("o", "").ok());
  EXPECT_EQ(registry->Find("o", "b", 0, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(registry->Find("p", "a", 0, 1).ok());
  EXPECT_EQ(registry->snapshot().regions, 1);
  EXPECT_EQ(registry->snapshot().bytes, 64);
  // The name is free again.
  EXPECT_TRUE(registry->Register("o", "a", object.key(), 0, 64).ok());
}

TEST(SharedMemoryRegistryTest, FindChecksTheRangeWithoutOverflow) {
  ShmObject object(4096);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("o", "r", object.key(), 96, 1000).ok());
  EXPECT_TRUE(registry->Find("o", "r", 0, 1000).ok());
  EXPECT_TRUE(registry->Find("o", "r", 1000, 0).ok());  // empty, at the end
  EXPECT_TRUE(registry->Find("o", "r", 999, 1).ok());
  for (auto [offset, bytes] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 1001}, {1, 1000}, {1001, 0}, {kMax, 2}, {2, kMax}, {kMax, kMax}}) {
    const absl::Status s = registry->Find("o", "r", offset, bytes).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << offset << " " << bytes;
    EXPECT_THAT(s.message(), HasSubstr("'r'"));
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("offset ", offset)));
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("byte size ", bytes)));
    EXPECT_THAT(s.message(), HasSubstr("has 1000 bytes"));
  }
  const absl::Status s = registry->Find("o", "unknown", 0, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'unknown'"));
}

TEST(SharedMemoryRegistryTest, ShrunkObjectIsAnErrorNotACrash) {
  ShmObject object(8192);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("o", "r", object.key(), 0, 8192).ok());
  object.Truncate(4096);
  const absl::Status s = registry->Find("o", "r", 0, 16).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("shrank to 4096 bytes"));
  object.Truncate(8192);
  EXPECT_TRUE(registry->Find("o", "r", 0, 16).ok());
}

TEST(SharedMemoryRegistryTest, LimitsOnRegionsAndBytes) {
  ShmObject object(2 << 20);
  auto registry = NewRegistry({.max_regions = 2, .max_bytes = 1 << 20});
  ASSERT_TRUE(registry->Register("o", "a", object.key(), 0, 1 << 19).ok());
  absl::Status s = registry->Register("p", "b", object.key(), 0, (1 << 19) + 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("shm_max_bytes"));
  ASSERT_TRUE(registry->Register("p", "b", object.key(), 0, 1 << 19).ok());  // exactly full
  s = registry->Register("q", "c", object.key(), 0, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("shm_max_regions"));
  EXPECT_EQ(registry->snapshot().regions, 2);
  EXPECT_EQ(registry->snapshot().bytes, 1 << 20);
  ASSERT_TRUE(registry->Unregister("o", "").ok());
  EXPECT_TRUE(registry->Register("q", "c", object.key(), 0, 1 << 19).ok());
  // A huge byte_size is refused by the limit, before the object is opened.
  s = registry->Register("q", "d", "/sparkle-shm-test-no-such-object", 0, uint64_t{1} << 62);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
}

TEST(SharedMemoryRegistryTest, SpanKeepsAnUnregisteredRegionMapped) {
  auto object = std::make_unique<ShmObject>(4096);
  const std::string key = object->key();
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("o", "r", key, 0, 4096).ok());
  const int client_mappings = MappingsOf(key);  // the test's own mapping
  EXPECT_EQ(client_mappings, 2);                // the test's and the registry's
  absl::StatusOr<SharedMemorySpan> span = registry->Find("o", "r", 0, 4096);
  ASSERT_TRUE(span.ok());
  ASSERT_TRUE(registry->Unregister("o", "r").ok());
  EXPECT_EQ(registry->snapshot().regions, 0);
  // The client goes away entirely (unmaps and unlinks): the job's span still works.
  object.reset();
  EXPECT_EQ(MappingsOf(key), 1);
  span->data[4095] = 7;
  EXPECT_EQ(span->data[4095], 7);
  span->region.reset();  // the job finished: the last reference unmaps
  EXPECT_EQ(MappingsOf(key), 0);
}

TEST(SharedMemoryRegistryTest, UnregisterUnmapsWhenNoSpanHoldsTheRegion) {
  ShmObject object(4096);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("o", "r", object.key(), 0, 4096).ok());
  EXPECT_EQ(MappingsOf(object.key()), 2);
  ASSERT_TRUE(registry->Unregister("o", "r").ok());
  EXPECT_EQ(MappingsOf(object.key()), 1);
  registry.reset();
}

TEST(SharedMemoryRegistryTest, ConcurrentFindRegisterUnregister) {
  ShmObject object(4096);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("o", "stable", object.key(), 0, 4096).ok());
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  std::atomic<int64_t> found{0};
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        if (registry->Find("o", "stable", 0, 4096).ok()) found.fetch_add(1);
        auto flapping = registry->Find("o", "flap", 0, 64);
        if (flapping.ok()) flapping->data[0] = 1;  // mapped while the span lives
      }
    });
  }
  // At least 200 flaps, and on until the readers have run a while (threads may start late on a
  // loaded machine), bounded by 10 s.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0; i < 200 || (found.load() < 1000 && std::chrono::steady_clock::now() < give_up);
       ++i) {
    ASSERT_TRUE(registry->Register("o", "flap", object.key(), 0, 64).ok());
    ASSERT_TRUE(registry->Unregister("o", "flap").ok());
  }
  stop.store(true);
  for (auto& t : readers) t.join();
  EXPECT_GT(found.load(), 0);
  EXPECT_EQ(registry->snapshot().regions, 1);
}

// The cost of Find (mutex + map lookup + fstat), and of the fstat alone. Run by hand:
//   shared_memory_registry_test --gtest_also_run_disabled_tests --gtest_filter='*FindCost*'
TEST(SharedMemoryRegistryTest, DISABLED_FindCost) {
  ShmObject object(1 << 20);
  auto registry = NewRegistry();
  ASSERT_TRUE(registry->Register("some-client", "region", object.key(), 0, 1 << 20).ok());
  constexpr int kIterations = 200000;
  for (int round = 0; round < 5; ++round) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kIterations; ++i) {
      auto span = registry->Find("some-client", "region", 4096, 65536);
      if (!span.ok()) FAIL();
    }
    const double find_ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start)
            .count() /
        kIterations;
    auto region = registry->Find("some-client", "region", 0, 1)->region;
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < kIterations; ++i) {
      if (!region->CheckObjectSize().ok()) FAIL();
    }
    const double fstat_ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start)
            .count() /
        kIterations;
    std::printf("round %d: Find %.0f ns, of which CheckObjectSize (fstat) %.0f ns\n", round,
                find_ns, fstat_ns);
  }
}

// ---- The RPC bodies (server/shared_memory_rpcs.h) --------------------------------------------

TEST(SharedMemoryRpcsTest, LocalPeers) {
  for (const char* peer : {"ipv4:127.0.0.1:5000", "ipv4:127.1.2.3:1", "ipv6:[::1]:8001",
                           "ipv6:%5B::1%5D:8001", "ipv6:[::ffff:127.0.0.1]:80", "unix:",
                           "unix:/run/sparkled.sock", "unix-abstract:x"}) {
    EXPECT_TRUE(IsLocalPeer(peer)) << peer;
  }
  for (const char* peer : {"ipv4:10.0.0.1:5000", "ipv4:128.0.0.1:1", "ipv6:[fe80::1]:8001",
                           "ipv6:[::2]:1", "ipv6:[::ffff:10.0.0.1]:80", "", "ipv4:",
                           "ipv6:::1", "dns:127.0.0.1", "unknown"}) {
    EXPECT_FALSE(IsLocalPeer(peer)) << peer;
  }
}

TEST(SharedMemoryRpcsTest, RegisterStatusUnregisterScopedToTheCaller) {
  ShmObject object(256);
  auto registry = NewRegistry();
  const CallIdentity alice{"alice", /*authenticated=*/true, Role::kInfer};
  const CallIdentity bob{"bob", true, Role::kInfer};
  inference::SystemSharedMemoryRegisterRequest reg;
  reg.set_name("in");
  reg.set_key(object.key());
  reg.set_offset(16);
  reg.set_byte_size(128);
  ASSERT_TRUE(
      SystemSharedMemoryRegister(registry.get(), alice, "ipv4:127.0.0.1:1", false, reg).ok());
  inference::SystemSharedMemoryStatusResponse status;
  ASSERT_TRUE(SystemSharedMemoryStatus(registry.get(), alice, {}, &status).ok());
  ASSERT_EQ(status.regions().size(), 1u);
  const auto& in = status.regions().at("in");
  EXPECT_EQ(in.name(), "in");
  EXPECT_EQ(in.key(), object.key());
  EXPECT_EQ(in.offset(), 16u);
  EXPECT_EQ(in.byte_size(), 128u);
  inference::SystemSharedMemoryStatusResponse bobs;
  ASSERT_TRUE(SystemSharedMemoryStatus(registry.get(), bob, {}, &bobs).ok());
  EXPECT_TRUE(bobs.regions().empty());
  inference::SystemSharedMemoryStatusRequest one;
  one.set_name("in");
  EXPECT_EQ(SystemSharedMemoryStatus(registry.get(), bob, one, &bobs).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(SystemSharedMemoryUnregister(registry.get(), bob, {}).ok());
  EXPECT_EQ(registry->snapshot().regions, 1);
  ASSERT_TRUE(SystemSharedMemoryUnregister(registry.get(), alice, {}).ok());
  EXPECT_EQ(registry->snapshot().regions, 0);
  // Tokens off: the caller is its peer address; two connections of one host are one owner.
  const CallIdentity conn1{"ipv4:127.0.0.1:40000", false, Role::kAdmin};
  const CallIdentity conn2{"ipv4:127.0.0.1:40001", false, Role::kAdmin};
  ASSERT_TRUE(
      SystemSharedMemoryRegister(registry.get(), conn1, conn1.name, false, reg).ok());
  EXPECT_TRUE(registry->Find(SchedulingClient(conn2), "in", 0, 1).ok());
}

TEST(SharedMemoryRpcsTest, RemotePeerNeedsAllowRemote) {
  ShmObject object(64);
  auto registry = NewRegistry();
  const CallIdentity caller{"ipv4:10.1.2.3:5000", false, Role::kAdmin};
  inference::SystemSharedMemoryRegisterRequest reg;
  reg.set_name("r");
  reg.set_key(object.key());
  reg.set_byte_size(64);
  const absl::Status s =
      SystemSharedMemoryRegister(registry.get(), caller, caller.name, false, reg);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("daemon's host"));
  EXPECT_THAT(s.message(), HasSubstr("ipv4:10.1.2.3:5000"));
  EXPECT_TRUE(SystemSharedMemoryRegister(registry.get(), caller, caller.name, true, reg).ok());
}

TEST(SharedMemoryRpcsTest, OffAndCudaSayWhy) {
  const CallIdentity caller{"x", true, Role::kInfer};
  inference::SystemSharedMemoryRegisterRequest reg;
  absl::Status s = SystemSharedMemoryRegister(nullptr, caller, "unix:", false, reg);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("--shared_memory"));
  inference::SystemSharedMemoryStatusResponse status;
  EXPECT_EQ(SystemSharedMemoryStatus(nullptr, caller, {}, &status).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SystemSharedMemoryUnregister(nullptr, caller, {}).code(),
            absl::StatusCode::kFailedPrecondition);
  s = CudaSharedMemoryUnsupported("CudaSharedMemoryRegister");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("not supported yet"));
  EXPECT_THAT(s.message(), HasSubstr("system shared memory is"));
}

}  // namespace
}  // namespace sparkle
