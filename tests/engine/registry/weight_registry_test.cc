#include "engine/registry/weight_registry.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

// The first n FP32 values of registered bytes.
std::vector<float> Floats(const void* data, size_t n) {
  const auto* values = static_cast<const float*>(data);
  return std::vector<float>(values, values + n);
}

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

std::vector<float> Ramp(int64_t n, float start = 0.5f) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = start + 0.25f * static_cast<float>(i);
  return v;
}

WeightHeader Header(std::vector<int64_t> shape, std::vector<float> bias = {},
                    std::string label = "") {
  WeightHeader h;
  h.shape = std::move(shape);
  h.bias = std::move(bias);
  h.label = std::move(label);
  return h;
}

std::unique_ptr<WeightRegistry> MakeRegistry(int64_t budget = int64_t{1} << 30,
                                             std::string dir = "") {
  WeightRegistry::Options o;
  o.budget_bytes = budget;
  o.dir = std::move(dir);
  auto r = WeightRegistry::Create(o);
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

absl::string_view AsBytes(const std::vector<float>& v) {
  return absl::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

TEST(WeightRegistryTest, SameBytesGiveSameIdAndRegisterOnce) {
  auto registry = MakeRegistry();
  const auto w = Ramp(2 * 3 * 3 * 3);
  auto a = registry->Register(Header({2, 3, 3, 3}, {}, "first"), w);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_FALSE(a->already_registered);
  EXPECT_THAT(a->weight->id(), MatchesRegex("sha256:[0-9a-f]{64}"));
  auto b = registry->Register(Header({2, 3, 3, 3}, {}, "another label"), w);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(b->already_registered);
  EXPECT_EQ(a->weight->id(), b->weight->id());
  EXPECT_EQ(b->weight->label(), "first");  // nothing changed
  EXPECT_EQ(registry->List().size(), 1u);
  EXPECT_EQ(registry->snapshot().weights, 1);
  EXPECT_EQ(registry->snapshot().bytes, 2 * 3 * 3 * 3 * 4);
}

TEST(WeightRegistryTest, IdIsTheSha256OfTheDocumentedLayout) {
  // Computed independently (Python hashlib) over: "sparkle.weights.v1\0", the four dims as
  // little-endian int64, a has-bias byte, the bias bytes, the weight bytes.
  auto registry = MakeRegistry();
  auto r = registry->Register(Header({2, 1, 1, 1}, {0.5f, -1.0f}), std::vector<float>{1.f, 2.f});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->weight->id(),
            "sha256:bbe41fba106181cb5d86890d3b773c455c4420eb7d29ce54956aabe79e00f51e");
}

TEST(WeightRegistryTest, IdCoversShapeBiasAndBytes) {
  auto registry = MakeRegistry();
  const auto w = Ramp(12);
  auto base = registry->Register(Header({2, 6, 1, 1}), w);
  auto reshaped = registry->Register(Header({6, 2, 1, 1}), w);
  auto with_bias = registry->Register(Header({2, 6, 1, 1}, {1.f, 2.f}), w);
  auto other_bias = registry->Register(Header({2, 6, 1, 1}, {1.f, 3.f}), w);
  auto other_bytes = registry->Register(Header({2, 6, 1, 1}), Ramp(12, 0.75f));
  for (const auto* r : {&base, &reshaped, &with_bias, &other_bias, &other_bytes}) {
    ASSERT_TRUE(r->ok()) << r->status();
    EXPECT_FALSE((*r)->already_registered);
  }
  std::set<std::string> ids;
  std::set<uint64_t> keys;
  for (const auto& e : registry->List()) {
    ids.insert(e->id());
    keys.insert(e->weight_key());
    EXPECT_NE(e->weight_key(), 0u);
    EXPECT_EQ(e->weight_key() % 2, 0u);  // even: never an inline-weights hash (odd)
  }
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(keys.size(), 5u);
  EXPECT_TRUE(with_bias->weight->has_bias());
  EXPECT_EQ(Floats(with_bias->weight->bias(), 2)[1], 2.f);
  EXPECT_EQ(base->weight->bias(), nullptr);
}

TEST(WeightRegistryTest, ChunkedUploadMatchesOneShotAndIsAligned) {
  auto registry = MakeRegistry();
  const auto w = Ramp(4 * 5 * 3 * 3);
  auto whole = registry->Register(Header({4, 5, 3, 3}), w);
  ASSERT_TRUE(whole.ok());
  auto second = MakeRegistry();
  auto upload = second->BeginUpload(Header({4, 5, 3, 3}));
  ASSERT_TRUE(upload.ok()) << upload.status();
  const absl::string_view bytes = AsBytes(w);
  for (size_t pos = 0, step = 1; pos < bytes.size(); pos += step, step = step * 2 + 1) {
    ASSERT_TRUE((*upload)->Append(bytes.substr(pos, step)).ok());
  }
  ASSERT_TRUE((*upload)->Append("").ok());
  auto chunked = second->Finish(*std::move(upload));
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  EXPECT_EQ((*whole).weight->id(), (*chunked).weight->id());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(chunked->weight->weight()) % 64, 0u);
  EXPECT_EQ(Floats(chunked->weight->weight(), w.size()), w);
}

TEST(WeightRegistryTest, BadHeadersAreInvalidArgument) {
  auto registry = MakeRegistry();
  auto expect_invalid = [&](WeightHeader h, absl::string_view what) {
    auto upload = registry->BeginUpload(std::move(h));
    EXPECT_EQ(upload.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_THAT(upload.status().message(), HasSubstr(what));
  };
  expect_invalid(Header({2, 3, 3}), "rank 4");
  expect_invalid(Header({2, 0, 3, 3}), "outside [1, 2^31 - 1]");
  expect_invalid(Header({2, -1, 3, 3}), "outside [1, 2^31 - 1]");
  expect_invalid(Header({2, 3, 3, 3}, {1.f}), "bias has 1 values");
  WeightHeader int8 = Header({1, 1, 1, 1});
  int8.datatype = "INT8";
  expect_invalid(int8, "FP32, BF16 or FP16");
  expect_invalid(Header({1, 1, 1, 1}, {}, std::string(2000, 'x')), "label");
  EXPECT_EQ(registry->snapshot().bytes, 0);
}

TEST(WeightRegistryTest, TooManyOrTooFewBytesAreInvalidArgumentAndRegisterNothing) {
  auto registry = MakeRegistry();
  const auto w = Ramp(8);
  {
    auto upload = registry->BeginUpload(Header({2, 4, 1, 1}));
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(AsBytes(w).substr(0, 20)).ok());
    absl::Status s = (*upload)->Append(AsBytes(w));  // 20 + 32 > 32
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("longer"));
  }
  {
    auto upload = registry->BeginUpload(Header({2, 4, 1, 1}));
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(AsBytes(w).substr(0, 31)).ok());
    auto finished = registry->Finish(*std::move(upload));
    EXPECT_EQ(finished.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(finished.status().message(), HasSubstr("shorter"));
  }
  {
    // Abandoned mid-stream (a client that cancels): nothing registered, nothing reserved.
    auto upload = registry->BeginUpload(Header({2, 4, 1, 1}));
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(AsBytes(w).substr(0, 16)).ok());
    EXPECT_EQ(registry->snapshot().bytes, 16);  // what arrived, reserved while it uploads
  }
  EXPECT_TRUE(registry->List().empty());
  EXPECT_EQ(registry->snapshot().bytes, 0);
}

TEST(WeightRegistryTest, BudgetIsEnforcedAndNamesTheFlag) {
  auto registry = MakeRegistry(/*budget=*/100);
  ASSERT_TRUE(registry->Register(Header({4, 4, 1, 1}), Ramp(16)).ok());  // 64 bytes
  auto full = registry->Register(Header({4, 4, 1, 1}), Ramp(16, 9.f));
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.status().message(), HasSubstr("budget_bytes"));
  EXPECT_EQ(registry->snapshot().bytes, 64);
  EXPECT_EQ(registry->snapshot().budget_bytes, 100);

  // Prepacked copies draw from the same budget; one that does not fit is refused.
  auto w = registry->Acquire(registry->List()[0]->id());
  ASSERT_TRUE(w.ok());
  struct FakeCopy : PrepackedWeights::Copy {};
  auto any = [](const PrepackedWeights::Copy&) { return true; };
  auto none = [](const PrepackedWeights::Copy&) { return false; };
  EXPECT_EQ((*w)->prepacked().Add(none, std::make_shared<FakeCopy>(), 64), nullptr);
  EXPECT_EQ((*w)->prepacked().refused(), 1);
  auto kept = (*w)->prepacked().Add(none, std::make_shared<FakeCopy>(), 30);
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ((*w)->prepacked().Add(any, std::make_shared<FakeCopy>(), 30), kept);  // first wins
  EXPECT_EQ((*w)->prepacked().Find(any), kept);
  EXPECT_EQ((*w)->bytes(), 94);
  EXPECT_EQ(registry->snapshot().bytes, 94);

  ASSERT_TRUE(registry->Unregister((*w)->id()).ok());
  w = absl::NotFoundError("dropped");  // the last holder: tensor and copy go
  EXPECT_EQ(registry->snapshot().bytes, 0);
  EXPECT_TRUE(registry->Register(Header({4, 4, 1, 1}), Ramp(16, 9.f)).ok());
}

// Bytes are reserved as they arrive: a header alone holds only its bias, so a stalled upload
// that declared almost the whole budget cannot lock other registrations out.
TEST(WeightRegistryTest, UploadsReserveBytesAsTheyArrive) {
  auto registry = MakeRegistry(/*budget=*/1000);
  auto stalled = registry->BeginUpload(Header({240, 1, 1, 1}, Ramp(240)));  // 960 + 960 > 1000
  EXPECT_EQ(stalled.status().code(), absl::StatusCode::kResourceExhausted);  // cannot ever fit
  auto held = registry->BeginUpload(Header({240, 1, 1, 1}));  // declares 960 bytes
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(registry->snapshot().bytes, 0);
  EXPECT_EQ((*held)->reserved_bytes(), 0);
  // Another registration fits meanwhile.
  ASSERT_TRUE(registry->Register(Header({4, 4, 1, 1}, {1.f, 2.f, 3.f, 4.f}), Ramp(16)).ok());
  EXPECT_EQ(registry->snapshot().bytes, 80);
  // The held upload reserves what it receives, and is refused what no longer fits.
  const std::vector<float> part = Ramp(200);
  ASSERT_TRUE((*held)->Append(AsBytes(part)).ok());
  EXPECT_EQ(registry->snapshot().bytes, 880);
  EXPECT_EQ((*held)->reserved_bytes(), 800);
  const std::vector<float> rest = Ramp(40);
  absl::Status no_room = (*held)->Append(AsBytes(rest));  // 880 + 160 > 1000
  EXPECT_EQ(no_room.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(no_room.message(), HasSubstr("budget_bytes"));
  EXPECT_EQ((*held)->received_bytes(), 800);  // unchanged by the refusal
  EXPECT_TRUE((*held)->Append(absl::string_view()).ok());  // empty: a no-op
  // Dropping it returns what it held.
  held = absl::CancelledError("dropped");
  EXPECT_EQ(registry->snapshot().bytes, 80);
}

// No bias at all (an empty vector, whose data() may be null) registers like any other tensor.
TEST(WeightRegistryTest, UploadWithoutBiasRegisters) {
  auto registry = MakeRegistry();
  auto upload = registry->BeginUpload(Header({2, 3, 1, 1}));
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Append(AsBytes(Ramp(6))).ok());
  auto r = registry->Finish(*std::move(upload));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->weight->has_bias());
  EXPECT_EQ(r->weight->bias(), nullptr);
  EXPECT_EQ(registry->snapshot().bytes, 24);
}

TEST(WeightRegistryTest, UploadIdleTimeoutOutOfRangeIsRejected) {
  WeightRegistry::Options o;
  o.upload_idle_timeout = absl::ZeroDuration();
  auto r = WeightRegistry::Create(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("upload_idle_timeout"));
}

TEST(WeightRegistryTest, UnregisterIsDeferredWhileJobsHoldTheWeights) {
  auto registry = MakeRegistry();
  auto reg = registry->Register(Header({2, 2, 1, 1}), Ramp(4));
  ASSERT_TRUE(reg.ok());
  const std::string id = reg->weight->id();
  reg->weight.reset();

  auto job_a = registry->Acquire(id);
  auto job_b = registry->Acquire(id);
  ASSERT_TRUE(job_a.ok() && job_b.ok());
  EXPECT_EQ(registry->List()[0]->in_use(), 2);
  EXPECT_EQ(registry->List()[0]->uses(), 2);
  job_b = absl::CancelledError("done");
  EXPECT_EQ(registry->List()[0]->in_use(), 1);
  EXPECT_EQ(registry->List()[0]->uses(), 2);

  ASSERT_TRUE(registry->Unregister(id).ok());
  EXPECT_TRUE(registry->List().empty());
  EXPECT_EQ(registry->snapshot().weights, 0);
  EXPECT_EQ(registry->Acquire(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry->Unregister(id).code(), absl::StatusCode::kNotFound);
  // The job in flight still reads its weights; their bytes stay charged until it ends.
  EXPECT_EQ(Floats((*job_a)->weight(), 4)[3], 0.5f + 0.75f);
  EXPECT_EQ(registry->snapshot().bytes, 16);
  job_a = absl::CancelledError("done");
  EXPECT_EQ(registry->snapshot().bytes, 0);
}

TEST(WeightRegistryTest, UnknownIdIsNotFound) {
  auto registry = MakeRegistry();
  auto w = registry->Acquire("sha256:00");
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(w.status().message(), HasSubstr("sha256:00"));
}

TEST(WeightRegistryTest, OptionsOutOfRangeAreRejected) {
  WeightRegistry::Options o;
  o.budget_bytes = -1;
  EXPECT_EQ(WeightRegistry::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

class WeightRegistryDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/weights_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(WeightRegistryDirTest, RegistrationsSurviveARestart) {
  std::string id_a, id_b;
  absl::Time time_a;
  {
    auto registry = MakeRegistry(int64_t{1} << 30, dir_);
    auto a = registry->Register(Header({3, 2, 3, 3}, {1.f, 2.f, 3.f}, "layer\n\"a\""),
                                Ramp(54));
    auto b = registry->Register(Header({1, 1, 1, 1}), Ramp(1));
    auto c = registry->Register(Header({1, 1, 1, 2}), Ramp(2));
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    id_a = a->weight->id();
    id_b = b->weight->id();
    time_a = a->weight->registered_at();
    ASSERT_TRUE(registry->Unregister(c->weight->id()).ok());
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}), 2);
  }
  auto registry = MakeRegistry(int64_t{1} << 30, dir_);
  ASSERT_EQ(registry->List().size(), 2u);
  auto a = registry->Acquire(id_a);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->label(), "layer\n\"a\"");
  EXPECT_EQ((*a)->shape(), (std::array<int64_t, 4>{3, 2, 3, 3}));
  EXPECT_EQ(Floats((*a)->bias(), 3), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(Floats((*a)->weight(), 54), Ramp(54));
  EXPECT_LT(absl::AbsDuration((*a)->registered_at() - time_a), absl::Milliseconds(1));
  EXPECT_TRUE(registry->Acquire(id_b).ok());
  // Registering again after the restart is idempotent.
  auto again = registry->Register(Header({1, 1, 1, 1}), Ramp(1));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->already_registered);
}

// BF16 registrations hold 2-byte elements (the bias rounded to BF16), have ids of their own
// (the same bits as FP32 would be other weights), survive a restart with their datatype, and
// bind only to jobs of their datatype.
TEST_F(WeightRegistryDirTest, Bf16WeightsKeepTheirDatatype) {
  std::vector<uint16_t> bits(18);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = FloatToBf16(0.25f * static_cast<float>(i));
  const absl::string_view bytes(reinterpret_cast<const char*>(bits.data()), bits.size() * 2);
  std::string id;
  {
    auto registry = MakeRegistry(int64_t{1} << 30, dir_);
    WeightHeader h = Header({2, 1, 3, 3}, {1.0f, 1.00390625f});  // the second rounds to 1.0
    h.datatype = "BF16";
    auto upload = registry->BeginUpload(h);
    ASSERT_TRUE(upload.ok()) << upload.status();
    EXPECT_EQ((*upload)->total_bytes(), 36);
    ASSERT_TRUE((*upload)->Append(bytes).ok());
    auto registered = registry->Finish(*std::move(upload));
    ASSERT_TRUE(registered.ok()) << registered.status();
    id = registered->weight->id();
    EXPECT_EQ(registered->weight->dtype(), DataType::kBf16);
    EXPECT_EQ(registry->snapshot().bytes, 36 + 4);
    // The same bytes declared FP16 are other weights.
    h.datatype = "FP16";
    auto fp16 = registry->BeginUpload(h);
    ASSERT_TRUE(fp16.ok());
    ASSERT_TRUE((*fp16)->Append(bytes).ok());
    auto other = registry->Finish(*std::move(fp16));
    ASSERT_TRUE(other.ok());
    EXPECT_NE(other->weight->id(), id);
  }
  auto registry = MakeRegistry(int64_t{1} << 30, dir_);
  auto w = registry->Acquire(id);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->dtype(), DataType::kBf16);
  const auto* bias = static_cast<const uint16_t*>((*w)->bias());
  EXPECT_EQ(Bf16ToFloat(bias[0]), 1.0f);
  EXPECT_EQ(Bf16ToFloat(bias[1]), 1.0f);
  EXPECT_EQ(std::memcmp((*w)->weight(), bits.data(), 36), 0);

  Conv2dJob job;
  job.params.c = 1, job.params.h = job.params.w = 3, job.params.k = 2;
  job.params.r = job.params.s = 3, job.params.has_bias = true;
  job.registered_weight = *w;
  const absl::Status fp32 = BindRegisteredWeight(&job);
  EXPECT_EQ(fp32.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fp32.message(), HasSubstr("are BF16; the request's tensors are FP32"));
  job.params.dtype = DataType::kBf16;
  EXPECT_TRUE(BindRegisteredWeight(&job).ok());
  EXPECT_EQ(job.weight, (*w)->weight());
}

TEST_F(WeightRegistryDirTest, CorruptFilesAreSkipped) {
  std::string good, bad, truncated;
  {
    auto registry = MakeRegistry(int64_t{1} << 30, dir_);
    good = (*registry->Register(Header({2, 2, 1, 1}), Ramp(4))).weight->id();
    bad = (*registry->Register(Header({2, 2, 1, 1}), Ramp(4, 7.f))).weight->id();
    truncated = (*registry->Register(Header({2, 2, 1, 1}), Ramp(4, 9.f))).weight->id();
  }
  auto path = [&](const std::string& id) { return absl::StrCat(dir_, "/", id.substr(7), ".weights"); };
  {
    // Flip one byte of the weights: the content no longer hashes to the file name.
    std::fstream f(path(bad), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('\x7f');
  }
  std::filesystem::resize_file(path(truncated), std::filesystem::file_size(path(truncated)) - 3);
  std::ofstream(absl::StrCat(dir_, "/", std::string(64, 'a'), ".weights")) << "not a weight file";
  std::ofstream(absl::StrCat(dir_, "/left_by_a_crash.weights.tmp")) << "partial";

  auto registry = MakeRegistry(int64_t{1} << 30, dir_);
  ASSERT_EQ(registry->List().size(), 1u);
  EXPECT_EQ(registry->List()[0]->id(), good);
  EXPECT_FALSE(std::filesystem::exists(absl::StrCat(dir_, "/left_by_a_crash.weights.tmp")));
}

TEST_F(WeightRegistryDirTest, FilesBeyondTheBudgetAreSkipped) {
  {
    auto registry = MakeRegistry(int64_t{1} << 30, dir_);
    ASSERT_TRUE(registry->Register(Header({4, 4, 1, 1}), Ramp(16)).ok());
    ASSERT_TRUE(registry->Register(Header({4, 4, 1, 1}), Ramp(16, 3.f)).ok());
  }
  auto registry = MakeRegistry(/*budget=*/100, dir_);
  EXPECT_EQ(registry->List().size(), 1u);
  EXPECT_EQ(registry->snapshot().bytes, 64);
}

}  // namespace
}  // namespace sparkle
