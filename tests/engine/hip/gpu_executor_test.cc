// GpuExecutor and OpenGpuDevices: results against Conv2dRef, back-pressure, ordering, resident
// weights, RESOURCE_EXHAUSTED, device faults, destruction with work in flight.
//
// In SPARKLE_GPU=emu builds everything runs in the HIP-on-CPU emulator, whose control API
// (hip_emu_control.h) sets the device count and memory, injects faults and launch delays and
// counts copies. In amd/nvidia builds the tests that need no emulator control run on GPU 0, or
// skip without a GPU (fail with SPARKLE_REQUIRE_GPU=1, tests/testing/gpu_test_env.h).
#include "engine/hip/gpu_executor.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "engine/cpu/conv2d_ref.h"
#include "engine/hip/gpu_device.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/gpu_test_env.h"
#include "tests/testing/shape_table.h"

#ifdef SPARKLE_GPU_EMU
#include "hip_emu_control.h"
#endif

namespace sparkle::hip {
namespace {

using ::sparkle::testing::RandomFloats;
using ::sparkle::testing::RelativeL2Error;
using ::testing::HasSubstr;

constexpr int64_t kMiB = int64_t{1} << 20;

// A batch of several jobs (parts) with its own host buffers and the expected outputs.
struct TestBatch {
  Conv2dParams params;  // params.n = the sum of the parts' n
  std::vector<int64_t> part_n;
  std::vector<std::vector<float>> inputs, outputs;
  std::vector<float> weight, bias;

  TestBatch(Conv2dParams p, std::vector<int64_t> parts, uint32_t seed) : params(p), part_n(parts) {
    params.n = 0;
    for (int64_t n : part_n) params.n += n;
    Conv2dParams one = params;
    one.n = 1;
    for (size_t i = 0; i < part_n.size(); ++i) {
      inputs.push_back(RandomFloats(part_n[i] * one.input_elements(), seed + 17 * i));
      outputs.emplace_back(static_cast<size_t>(part_n[i] * one.output_elements()), -7.0f);
    }
    weight = RandomFloats(params.weight_elements(), seed + 1000);
    if (params.has_bias) bias = RandomFloats(params.k, seed + 2000);
  }

  // key 0: no weight id; otherwise a content id made of the key.
  GpuWork Work(uint64_t key = 0) {
    return Work(key == 0 ? WeightId{} : WeightId::Content(0, key), /*pin=*/false);
  }
  GpuWork Work(const WeightId& id, bool pin) {
    GpuWork w;
    w.params = params;
    for (size_t i = 0; i < part_n.size(); ++i) {
      w.parts.push_back(GpuPart{inputs[i].data(), outputs[i].data(), part_n[i]});
    }
    w.weight = weight.data();
    w.bias = params.has_bias ? bias.data() : nullptr;
    w.weight_id = id;
    w.pin_weights = pin;
    return w;
  }

  // Largest relative L2 error of any part against Conv2dRef.
  double MaxError() const {
    double worst = 0;
    for (size_t i = 0; i < part_n.size(); ++i) {
      Conv2dParams p = params;
      p.n = part_n[i];
      std::vector<float> expected(static_cast<size_t>(p.output_elements()));
      Conv2dRef(p, inputs[i].data(), weight.data(), params.has_bias ? bias.data() : nullptr,
                expected.data());
      worst = std::max(worst, RelativeL2Error(outputs[i].data(), expected.data(),
                                              p.output_elements()));
    }
    return worst;
  }
};

Conv2dParams SmallConv(Layout layout = Layout::kNCHW, bool bias = true) {
  Conv2dParams p;
  p.c = 3;
  p.h = p.w = 8;
  p.k = 4;
  p.r = p.s = 3;
  p.SetPad(1, 1);
  p.has_bias = bias;
  p.layout = layout;
  return p;
}

// Records every done call; waits for a number of them.
struct DoneLog {
  std::mutex mu;
  std::vector<int> order;
  std::vector<absl::Status> statuses;
  std::vector<int> calls;  // per id

  explicit DoneLog(int ids) : statuses(static_cast<size_t>(ids)), calls(static_cast<size_t>(ids)) {}
  GpuDone Done(int id) {
    return [this, id](const absl::Status& st, const GpuTimings&) {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(id);
      statuses[static_cast<size_t>(id)] = st;
      ++calls[static_cast<size_t>(id)];
    };
  }
};

GpuOptions SmallOptions() {
  GpuOptions o;
  o.slots = 3;
  o.slot_bytes = 4 * kMiB;
  o.weight_cache_bytes = 16 * kMiB;
  return o;
}

// Emulator only: every kernel launch on device 0 sleeps this long first (fills the slots).
void SetLaunchDelay(std::chrono::milliseconds delay) {
#ifdef SPARKLE_GPU_EMU
  hipemu::SetLaunchDelay(0, delay);
#else
  (void)delay;  // a real kernel takes its own time
#endif
}

class GpuExecutorTest : public ::testing::Test {
 protected:
#ifdef SPARKLE_GPU_EMU
  void SetUp() override { Configure(1, 256 * kMiB); }
  void TearDown() override { hipemu::Configure(hipemu::Config{}); }  // back to 0 devices

  static void Configure(int devices, int64_t memory) {
    hipemu::Config c;
    c.device_count = devices;
    c.memory_bytes = memory;
    hipemu::Configure(c);
  }
#else
  void SetUp() override {
    GpuOptions o;
    o.max_devices = 1;
    GpuDevices d = OpenGpuDevices(o);
    if (d.devices.empty()) SPARKLE_SKIP_OR_FAIL_WITHOUT_GPU(d.no_gpu_reason);
  }
#endif
  static std::unique_ptr<GpuExecutor> Open(const GpuOptions& o = SmallOptions()) {
    absl::StatusOr<std::unique_ptr<GpuExecutor>> ex = GpuExecutor::Create(0, o);
    EXPECT_TRUE(ex.ok()) << ex.status();
    return ex.ok() ? *std::move(ex) : nullptr;
  }
};

TEST_F(GpuExecutorTest, BatchesOfSeveralPartsMatchReference) {
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  int id = 0;
  for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    for (bool bias : {true, false}) {
      for (uint64_t key : {uint64_t{0}, uint64_t{7} + id}) {
        TestBatch b(SmallConv(layout, bias), {1, 2, 1}, 10 + id);
        absl::Status result = absl::UnknownError("done not called");
        GpuTimings timings;
        ASSERT_TRUE(ex->Submit(b.Work(key),
                               [&](const absl::Status& st, const GpuTimings& t) {
                                 result = st;
                                 timings = t;
                               })
                        .ok());
        ex->Flush();
        ASSERT_TRUE(result.ok()) << result;
        EXPECT_LT(b.MaxError(), 1e-5) << b.params.ToString() << " key " << key;
        // The fixed points were all passed, in pipeline order.
        EXPECT_NE(timings.d2h_end, absl::InfinitePast());
        EXPECT_LE(timings.h2d_end, timings.compute_start);
        EXPECT_LE(timings.compute_start, timings.compute_end);
        EXPECT_LE(timings.compute_end, timings.d2h_end);
        ++id;
      }
    }
  }
  EXPECT_TRUE(ex->healthy());
  EXPECT_GT(ex->Info().memory_used_bytes, 0);
  EXPECT_EQ(ex->Info().platform, SPARKLE_GPU_PLATFORM);
}

// Megabytes per batch: the staging copies are split into chunks across the copy threads.
TEST_F(GpuExecutorTest, LargeBatchCopiedInChunksMatchesReference) {
  GpuOptions o = SmallOptions();
  o.copy_threads = 3;
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  Conv2dParams p;
  p.c = 64;
  p.h = p.w = 32;  // 256 KiB of input per image
  p.stride_h = p.stride_w = 4;  // few output pixels: the emulator computes slowly
  p.k = 1;
  p.has_bias = true;
  for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    p.layout = layout;
    TestBatch b(p, {3, 1, 5}, 77);  // 2.25 MiB of input in three parts
    absl::Status result = absl::UnknownError("done not called");
    ASSERT_TRUE(ex->Submit(b.Work(), [&](const absl::Status& st, const GpuTimings&) {
                    result = st;
                  }).ok());
    ex->Flush();
    ASSERT_TRUE(result.ok()) << result;
    EXPECT_LT(b.MaxError(), 1e-5) << b.params.ToString();
  }
}

TEST_F(GpuExecutorTest, InvalidWorkIsRefusedAndDoneNotCalled) {
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  TestBatch b(SmallConv(), {1, 2}, 1);
  GpuWork w = b.Work();
  w.params.n = 5;  // parts hold 3
  bool called = false;
  absl::Status st = ex->Submit(std::move(w), [&](const absl::Status&, const GpuTimings&) {
    called = true;
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  ex->Flush();
  EXPECT_FALSE(called);
}

// Submit blocks while every slot is busy: with the first done held, the fourth Submit cannot
// return until it is released.
TEST_F(GpuExecutorTest, SubmitBlocksWhileAllSlotsAreBusy) {
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  std::vector<std::unique_ptr<TestBatch>> batches;
  for (int i = 0; i < 4; ++i) {
    batches.push_back(std::make_unique<TestBatch>(SmallConv(), std::vector<int64_t>{1}, i));
  }
  absl::Notification release;
  std::atomic<int> done_calls{0};
  std::atomic<int> submitted{0};
  std::thread submitter([&] {
    for (int i = 0; i < 4; ++i) {
      absl::Status st = ex->Submit(batches[i]->Work(), [&, i](const absl::Status& s,
                                                             const GpuTimings&) {
        EXPECT_TRUE(s.ok()) << s;
        if (i == 0) release.WaitForNotification();
        ++done_calls;
      });
      EXPECT_TRUE(st.ok()) << st;
      ++submitted;
    }
  });
  // Wait (no time limit: the test's own timeout catches a hang) until three slots are busy.
  while (ex->Stats().busy_slots < 3 || submitted.load() < 3) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Every slot is taken and work 0's done cannot return: the fourth Submit is still blocked.
  EXPECT_EQ(submitted.load(), 3);
  EXPECT_EQ(done_calls.load(), 0);
  EXPECT_EQ(ex->Stats().busy_slots, 3);
  release.Notify();
  submitter.join();
  ex->Flush();
  EXPECT_EQ(done_calls.load(), 4);
  EXPECT_EQ(ex->Stats().max_busy_slots, 3);
  EXPECT_EQ(ex->Stats().busy_slots, 0);
  for (auto& b : batches) EXPECT_LT(b->MaxError(), 1e-5);
}

// Many more works than slots from two threads, with a launch delay so that the slots fill: never
// more than `slots` busy or accepted-and-not-done, every done called once, results right, and
// results delivered in submission order.
TEST_F(GpuExecutorTest, SlotReuseUnderBackPressureKeepsOrder) {
  SetLaunchDelay(std::chrono::milliseconds(3));
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  constexpr int kWorks = 24;
  std::vector<std::unique_ptr<TestBatch>> batches;
  for (int i = 0; i < kWorks; ++i) {
    // Different sizes (so copies take different times), all one geometry.
    batches.push_back(std::make_unique<TestBatch>(
        SmallConv(), std::vector<int64_t>{1 + i % 3, 1}, 100 + i));
  }
  std::mutex mu;
  std::vector<int> accepted_order;  // ids in the order their Submit returned OK (one submitter)
  std::vector<int> done_order;
  std::vector<int> calls(kWorks, 0);
  int outstanding = 0, max_outstanding = 0;
  std::thread t1([&] {
    for (int i = 0; i < kWorks; ++i) {
      absl::Status st = ex->Submit(batches[i]->Work(), [&, i](const absl::Status& s,
                                                             const GpuTimings&) {
        std::lock_guard<std::mutex> l(mu);
        EXPECT_TRUE(s.ok()) << s;
        done_order.push_back(i);
        ++calls[i];
        --outstanding;
      });
      ASSERT_TRUE(st.ok()) << st;
      std::lock_guard<std::mutex> l(mu);
      accepted_order.push_back(i);
      max_outstanding = std::max(max_outstanding, ++outstanding);
    }
  });
  t1.join();
  ex->Flush();
  EXPECT_EQ(done_order, accepted_order);
  for (int i = 0; i < kWorks; ++i) EXPECT_EQ(calls[i], 1) << i;
  // done runs before its slot is freed, so accepted-but-not-done never exceeds the slots (the
  // counter goes up after Submit returns, so it never reads higher than the true count).
  EXPECT_LE(max_outstanding, 3);
  const GpuExecutorStats stats = ex->Stats();
  EXPECT_LE(stats.max_busy_slots, 3);
  EXPECT_EQ(stats.accepted, kWorks);
  EXPECT_EQ(stats.completed, kWorks);
  for (auto& b : batches) EXPECT_LT(b->MaxError(), 1e-5);
}

// Works submitted concurrently from several threads: each is delivered once, in the order the
// executor accepted them (Stats().accepted at acceptance time is not observable, so the check
// is that per-thread order is kept and nothing is lost).
TEST_F(GpuExecutorTest, ConcurrentSubmittersEachCompleteOnceInTheirOrder) {
  SetLaunchDelay(std::chrono::milliseconds(1));
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  constexpr int kThreads = 3, kPerThread = 8;
  std::vector<std::unique_ptr<TestBatch>> batches;
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    batches.push_back(std::make_unique<TestBatch>(SmallConv(), std::vector<int64_t>{1}, i));
  }
  DoneLog log(kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int j = 0; j < kPerThread; ++j) {
        const int id = t * kPerThread + j;
        EXPECT_TRUE(ex->Submit(batches[id]->Work(), log.Done(id)).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  ex->Flush();
  for (int id = 0; id < kThreads * kPerThread; ++id) {
    EXPECT_EQ(log.calls[id], 1) << id;
    EXPECT_TRUE(log.statuses[id].ok()) << log.statuses[id];
  }
  for (int t = 0; t < kThreads; ++t) {
    int last = -1;
    for (int id : log.order) {
      if (id / kPerThread != t) continue;
      EXPECT_GT(id, last);
      last = id;
    }
  }
  EXPECT_LE(ex->Stats().max_busy_slots, 3);
}

TEST_F(GpuExecutorTest, ResidentWeightsAreUploadedOncePerKey) {
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  Conv2dParams p = SmallConv();
  p.c = 16;  // input 16*8*8*4 = 4096 bytes per image: a multiple of the slot alignment
  p.k = 8;
  constexpr int kBatches = 6;
  TestBatch warm(p, {1}, 5);
  ASSERT_TRUE(ex->Submit(warm.Work(), [](const absl::Status&, const GpuTimings&) {}).ok());
  ex->Flush();  // the first use of the shape tunes the kernels; not counted below
  ex->WaitForTuning();
#ifdef SPARKLE_GPU_EMU
  const hipemu::Counters before = hipemu::GetCounters(0);
#endif
  std::vector<std::unique_ptr<TestBatch>> batches;
  DoneLog log(kBatches);
  for (int i = 0; i < kBatches; ++i) {
    batches.push_back(std::make_unique<TestBatch>(p, std::vector<int64_t>{1}, 5));
    batches.back()->inputs[0] = RandomFloats(p.c * p.h * p.w, 300 + i);
    ASSERT_TRUE(ex->Submit(batches.back()->Work(/*weight_key=*/99), log.Done(i)).ok());
  }
  ex->Flush();
  [[maybe_unused]] const int64_t input_bytes = p.c * p.h * p.w * 4;
  [[maybe_unused]] const int64_t weight_bytes = p.weight_elements() * 4 + p.k * 4;
#ifdef SPARKLE_GPU_EMU
  // The device saw the weights once and every batch's input.
  const hipemu::Counters after = hipemu::GetCounters(0);
  EXPECT_EQ(after.bytes_host_to_device - before.bytes_host_to_device,
            kBatches * input_bytes + weight_bytes);
#endif
  const GpuExecutorStats stats = ex->Stats();
  EXPECT_EQ(stats.weight_uploads, 1);
  EXPECT_EQ(stats.weight_hits, kBatches - 1);
  EXPECT_GT(stats.resident_weight_bytes, 0);
  for (int i = 0; i < kBatches; ++i) {
    EXPECT_TRUE(log.statuses[i].ok()) << log.statuses[i];
    EXPECT_LT(batches[i]->MaxError(), 1e-5);
  }
  // weight_key 0: the weights travel with every batch.
#ifdef SPARKLE_GPU_EMU
  const hipemu::Counters before0 = hipemu::GetCounters(0);
#endif
  TestBatch b0(p, {1}, 5);
  ASSERT_TRUE(ex->Submit(b0.Work(0), [](const absl::Status&, const GpuTimings&) {}).ok());
  ex->Flush();
#ifdef SPARKLE_GPU_EMU
  EXPECT_GE(hipemu::GetCounters(0).bytes_host_to_device - before0.bytes_host_to_device,
            input_bytes + weight_bytes);
#endif
  EXPECT_EQ(ex->Stats().weights_in_slot, 2);  // the warm-up and this one
  EXPECT_LT(b0.MaxError(), 1e-5);
}

TEST_F(GpuExecutorTest, ResidentWeightsAreEvictedLeastRecentlyUsedFirst) {
  Conv2dParams p = SmallConv();
  GpuOptions o = SmallOptions();
  const int64_t entry = ((p.weight_elements() * 4 + 255) / 256) * 256 + p.k * 4;
  o.weight_cache_bytes = 2 * entry;  // room for two keys
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  // Different weights per key: a mix-up of resident entries shows in the results.
  std::vector<std::unique_ptr<TestBatch>> per_key;
  for (uint32_t key = 0; key <= 3; ++key) {
    per_key.push_back(std::make_unique<TestBatch>(p, std::vector<int64_t>{1}, 40 + 7 * key));
  }
  auto run = [&](uint64_t key) {
    TestBatch& b = *per_key[key];
    std::fill(b.outputs[0].begin(), b.outputs[0].end(), -7.0f);
    ASSERT_TRUE(ex->Submit(b.Work(key), [](const absl::Status&, const GpuTimings&) {}).ok());
    ex->Flush();
    EXPECT_LT(b.MaxError(), 1e-5) << "key " << key;
  };
  run(1);
  run(2);
  run(1);  // hit; 2 is now the least recently used
  run(3);  // evicts 2
  run(1);  // still resident
  GpuExecutorStats s = ex->Stats();
  EXPECT_EQ(s.weight_uploads, 3);
  EXPECT_EQ(s.weight_hits, 2);
  EXPECT_EQ(s.weight_evictions, 1);
  EXPECT_EQ(s.resident_weight_bytes, 2 * entry);
  run(2);  // uploaded again
  EXPECT_EQ(ex->Stats().weight_uploads, 4);
}

TEST_F(GpuExecutorTest, WeightsLargerThanTheCacheTravelInTheSlot) {
  GpuOptions o = SmallOptions();
  o.weight_cache_bytes = 0;
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  TestBatch b(SmallConv(), {2}, 4);
  ASSERT_TRUE(ex->Submit(b.Work(5), [](const absl::Status&, const GpuTimings&) {}).ok());
  ex->Flush();
  EXPECT_LT(b.MaxError(), 1e-5);
  EXPECT_EQ(ex->Stats().weight_uploads, 0);
  EXPECT_EQ(ex->Stats().weights_in_slot, 1);
}

// One image larger than a slot can never run: RESOURCE_EXHAUSTED, done not run and still the
// caller's, the work untouched (it can be submitted elsewhere), the device keeps serving.
TEST_F(GpuExecutorTest, ImageLargerThanASlotIsResourceExhaustedAndStaysWithTheCaller) {
  GpuOptions o = SmallOptions();
  o.slot_bytes = 1 * kMiB;
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  Conv2dParams p = SmallConv();
  p.c = 16;
  p.h = p.w = 128;  // 1 MiB of input per image
  TestBatch b(p, {2, 1}, 1);
  GpuWork work = b.Work(/*key=*/3);
  bool called = false;
  GpuDone done = [&](const absl::Status&, const GpuTimings&) { called = true; };
  absl::Status st = ex->Submit(std::move(work), std::move(done));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_THAT(st.message(), HasSubstr("one image"));
  EXPECT_THAT(st.message(), HasSubstr("slot_bytes"));
  ex->Flush();
  EXPECT_FALSE(called);
  // Both are still the caller's (not moved from).
  ASSERT_EQ(work.parts.size(), 2u);
  EXPECT_EQ(work.parts[0].input, b.inputs[0].data());
  EXPECT_EQ(work.weight_id, WeightId::Content(0, 3));
  ASSERT_TRUE(static_cast<bool>(done));
  std::move(done)(absl::OkStatus(), GpuTimings{});
  EXPECT_TRUE(called);
  EXPECT_TRUE(ex->healthy());
  EXPECT_EQ(ex->Stats().accepted, 0);
  // The device keeps serving.
  TestBatch small(SmallConv(), {1}, 2);
  absl::Status result = absl::UnknownError("not called");
  ASSERT_TRUE(ex->Submit(small.Work(), [&](const absl::Status& s, const GpuTimings&) {
                  result = s;
                }).ok());
  ex->Flush();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(ex->Stats().busy_slots, 0);
}

// Refused for other reasons (invalid, unsupported, pinning an unregistered id): same ownership.
TEST_F(GpuExecutorTest, RefusedWorkKeepsItsDoneCallable) {
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  TestBatch b(SmallConv(), {1, 2}, 1);
  int calls = 0;
  GpuDone done = [&](const absl::Status&, const GpuTimings&) { ++calls; };
  GpuWork invalid = b.Work();
  invalid.params.n = 5;  // parts hold 3
  EXPECT_EQ(ex->Submit(std::move(invalid), std::move(done)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invalid.parts.size(), 2u);
  GpuWork pin_content = b.Work(WeightId::Content(1, 2), /*pin=*/true);
  const absl::Status st = ex->Submit(std::move(pin_content), std::move(done));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(st.message(), HasSubstr("pin_weights"));
  EXPECT_EQ(pin_content.parts.size(), 2u);
  ex->Flush();
  EXPECT_EQ(calls, 0);
  ASSERT_TRUE(static_cast<bool>(done));
  // Submitted for real afterwards, with the same work and done.
  ASSERT_TRUE(ex->Submit(b.Work(), std::move(done)).ok());
  ex->Flush();
  EXPECT_EQ(calls, 1);
  EXPECT_LT(b.MaxError(), 1e-5);
}

// A work larger than one slot runs in pieces along N (cutting through parts), with one done,
// right results against Conv2dRef, with weights in the slot and resident.
TEST_F(GpuExecutorTest, WorkLargerThanASlotIsSplitAlongN) {
  GpuOptions o = SmallOptions();
  o.slot_bytes = 1 * kMiB;
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  Conv2dParams p = SmallConv();
  p.c = 16;
  p.h = p.w = 64;  // 256 KiB of input per image: three images per slot
  p.stride_h = p.stride_w = 4;  // few output pixels: the emulator computes slowly
  p.k = 2;
  int id = 0;
  for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
    for (bool resident : {false, true}) {
      p.layout = layout;
      const uint64_t key = resident ? 21 + id : 0;  // equal ids must be equal weights
      TestBatch b(p, {2, 5, 1, 3}, 50 + id++);  // 11 images, 2.75 MiB of input
      const GpuExecutorStats before = ex->Stats();
      int calls = 0;
      absl::Status result = absl::UnknownError("done not called");
      GpuTimings timings;
      ASSERT_TRUE(ex->Submit(b.Work(key), [&](const absl::Status& st, const GpuTimings& t) {
                      ++calls;
                      result = st;
                      timings = t;
                    }).ok());
      ex->Flush();
      EXPECT_EQ(calls, 1);
      ASSERT_TRUE(result.ok()) << result;
      EXPECT_LT(b.MaxError(), 1e-5) << p.ToString() << " key " << key;
      const GpuExecutorStats after = ex->Stats();
      EXPECT_EQ(after.accepted - before.accepted, 1);
      EXPECT_GE(after.pieces - before.pieces, 4);  // ceil(11 / 3)
      EXPECT_LE(timings.h2d_end, timings.compute_start);
      EXPECT_LE(timings.compute_start, timings.compute_end);
      EXPECT_LE(timings.compute_end, timings.d2h_end);
    }
  }
  EXPECT_EQ(ex->Stats().weight_uploads, 2);  // each resident key once, by its first piece
  EXPECT_EQ(ex->Stats().busy_slots, 0);
}

// A batch in the job's datatypes with a residual per part (bytes of p.dtype; outputs of
// p.output_dtype), and its check against Conv2dRef on the same rounded values.
struct TypedBatch {
  Conv2dParams params;
  std::vector<int64_t> part_n;
  std::vector<std::vector<char>> inputs, residuals, outputs;
  std::vector<char> weight, bias;

  static std::vector<char> Random(DataType t, int64_t count, uint32_t seed) {
    const std::vector<float> f = RandomFloats(count, seed);
    std::vector<char> bytes(static_cast<size_t>(std::max<int64_t>(1, count * ElementSize(t))));
    NarrowFromFloat(t, f.data(), bytes.data(), count);
    return bytes;
  }

  TypedBatch(Conv2dParams p, std::vector<int64_t> parts, uint32_t seed) : params(p), part_n(parts) {
    params.n = 0;
    for (int64_t n : part_n) params.n += n;
    Conv2dParams one = params;
    one.n = 1;
    for (size_t i = 0; i < part_n.size(); ++i) {
      inputs.push_back(Random(p.dtype, part_n[i] * one.input_elements(), seed + 17 * i));
      residuals.push_back(Random(p.dtype, part_n[i] * one.residual_elements(), seed + 31 * i));
      outputs.emplace_back(static_cast<size_t>(part_n[i] * one.output_image_bytes()), '\x55');
    }
    weight = Random(p.dtype, params.weight_elements(), seed + 1000);
    bias = Random(p.dtype, params.bias_elements(), seed + 2000);
  }

  GpuWork Work(uint64_t key) {
    GpuWork w;
    w.params = params;
    for (size_t i = 0; i < part_n.size(); ++i) {
      w.parts.push_back(GpuPart{inputs[i].data(), outputs[i].data(), part_n[i],
                                params.has_residual ? residuals[i].data() : nullptr});
    }
    w.weight = weight.data();
    w.bias = params.has_bias ? bias.data() : nullptr;
    if (key != 0) w.weight_id = WeightId::Content(0, key);
    return w;
  }

  double MaxError() const {
    double worst = 0;
    for (size_t i = 0; i < part_n.size(); ++i) {
      Conv2dParams p = params;
      p.n = part_n[i];
      const int64_t count = p.output_elements();
      std::vector<char> expected(outputs[i].size());
      Conv2dRef(p, inputs[i].data(), weight.data(), p.has_bias ? bias.data() : nullptr,
                expected.data(), p.has_residual ? residuals[i].data() : nullptr);
      std::vector<float> a(static_cast<size_t>(count)), x(static_cast<size_t>(count));
      WidenToFloat(p.output_dtype, outputs[i].data(), a.data(), count);
      WidenToFloat(p.output_dtype, expected.data(), x.data(), count);
      worst = std::max(worst, RelativeL2Error(a.data(), x.data(), count));
    }
    return worst;
  }
};

// Residual + activation + BF16/FP16 (and asymmetric padding) through the whole pipeline, in a
// batch larger than a slot: the pieces cut through parts, so the residual regions are sliced
// like the inputs; weights in the slot and resident (widened once at upload).
TEST_F(GpuExecutorTest, EpilogueAndDatatypesSplitAlongNMatchReference) {
  GpuOptions o = SmallOptions();
  o.slot_bytes = 1 * kMiB;
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  Conv2dParams base = SmallConv();
  base.c = 16;
  base.h = base.w = 64;  // 256 KiB (FP32) or 128 KiB + 256 KiB of FP32 scratch per image
  base.stride_h = base.stride_w = 4;
  base.k = 2;
  base.has_residual = true;
  struct Case {
    DataType dtype, out;
    Activation act;
    Layout layout;
    bool asym;
    double tolerance;
  };
  const Case cases[] = {
      {DataType::kFp32, DataType::kFp32, Activation::kRelu, Layout::kNCHW, false, 1e-5},
      {DataType::kBf16, DataType::kBf16, Activation::kRelu, Layout::kNHWC, false, 1e-3},
      {DataType::kFp16, DataType::kFp32, Activation::kGeluTanh, Layout::kNCHW, true, 1e-5},
      {DataType::kFp16, DataType::kFp16, Activation::kSilu, Layout::kNHWC, true, 2e-4},
  };
  int id = 0;
  int64_t uploads = 0;
  for (const Case& c : cases) {
    for (bool resident : {false, true}) {
      Conv2dParams p = base;
      p.dtype = c.dtype;
      p.output_dtype = c.out;
      p.activation = c.act;
      p.layout = c.layout;
      if (c.asym) p.pad_top = 0, p.pad_right = 2;
      ASSERT_TRUE(p.Validate().ok()) << p.Validate();
      TypedBatch b(p, {2, 5, 1, 3}, 70 + id);
      const uint64_t key = resident ? 101 + id : 0;
      ++id;
      uploads += resident ? 1 : 0;
      const GpuExecutorStats before = ex->Stats();
      absl::Status result = absl::UnknownError("done not called");
      ASSERT_TRUE(ex->Submit(b.Work(key), [&](const absl::Status& st, const GpuTimings&) {
                      result = st;
                    }).ok());
      ex->Flush();
      ASSERT_TRUE(result.ok()) << result;
      EXPECT_LT(b.MaxError(), c.tolerance) << p.ToString() << " key " << key;
      EXPECT_GE(ex->Stats().pieces - before.pieces, c.dtype == DataType::kFp32 ? 4 : 6)
          << p.ToString();
    }
  }
  EXPECT_EQ(ex->Stats().weight_uploads, uploads);
}

// A BF16 image whose FP32 scratch does not fit a slot is refused with the sizes, scratch included.
TEST_F(GpuExecutorTest, Bf16ScratchCountsInTheSlot) {
  GpuOptions o = SmallOptions();
  o.slot_bytes = 1 * kMiB;
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  Conv2dParams p = SmallConv();
  p.c = 64;
  p.h = p.w = 64;  // 512 KiB of BF16 input per image: fits alone, not with its 1 MiB scratch
  p.stride_h = p.stride_w = 8;
  p.k = 1;
  p.dtype = p.output_dtype = DataType::kBf16;
  TypedBatch b(p, {1}, 5);
  GpuWork w = b.Work(0);
  const absl::Status st = ex->Submit(std::move(w), [](const absl::Status&, const GpuTimings&) {});
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_THAT(st.message(), HasSubstr("FP32 scratch"));
  // Without the scratch the same bytes fit: FP32 with half the channels (512 KiB of input).
  p.dtype = p.output_dtype = DataType::kFp32;
  p.c = 32;
  TypedBatch f(p, {1}, 6);
  absl::Status result = absl::UnknownError("done not called");
  ASSERT_TRUE(ex->Submit(f.Work(0), [&](const absl::Status& s, const GpuTimings&) {
                  result = s;
                }).ok());
  ex->Flush();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_LT(f.MaxError(), 1e-5);
}

// WeightsResident answers from the executor's own map: after acceptance, until eviction.
TEST_F(GpuExecutorTest, WeightsResidentFollowsTheResidentMap) {
  Conv2dParams p = SmallConv();
  GpuOptions o = SmallOptions();
  const int64_t entry = ((p.weight_elements() * 4 + 255) / 256) * 256 + p.k * 4;
  o.weight_cache_bytes = entry;  // room for one id
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  const WeightId a = WeightId::Content(0, 1), b = WeightId::Content(0, 2);
  EXPECT_FALSE(ex->WeightsResident(a));
  EXPECT_FALSE(ex->WeightsResident(WeightId{}));
  TestBatch ba(p, {1}, 3), bb(p, {1}, 4);
  ASSERT_TRUE(ex->Submit(ba.Work(a, false), [](const absl::Status&, const GpuTimings&) {}).ok());
  EXPECT_TRUE(ex->WeightsResident(a));  // accepted: no later work uploads it
  ex->Flush();
  EXPECT_TRUE(ex->WeightsResident(a));
  ASSERT_TRUE(ex->Submit(bb.Work(b, false), [](const absl::Status&, const GpuTimings&) {}).ok());
  ex->Flush();
  EXPECT_TRUE(ex->WeightsResident(b));
  EXPECT_FALSE(ex->WeightsResident(a));  // evicted for b
  EXPECT_EQ(ex->Stats().weight_evictions, 1);
  EXPECT_LT(ba.MaxError(), 1e-5);
  EXPECT_LT(bb.MaxError(), 1e-5);
  ex->ReleaseWeights(b);  // not pinned: a no-op
  EXPECT_TRUE(ex->WeightsResident(b));
}

// Pinned weights stay out of the LRU: never evicted under pressure, not counted in its budget,
// until ReleaseWeights frees them.
TEST_F(GpuExecutorTest, PinnedWeightsSurviveLruPressureUntilReleased) {
  Conv2dParams p = SmallConv();
  GpuOptions o = SmallOptions();
  const int64_t entry = ((p.weight_elements() * 4 + 255) / 256) * 256 + p.k * 4;
  o.weight_cache_bytes = entry;  // room for one unpinned id
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  const WeightId reg = WeightId::Registered(42);
  TestBatch pinned(p, {2}, 7);
  auto run = [&](TestBatch& b, const WeightId& id, bool pin) {
    std::fill(b.outputs[0].begin(), b.outputs[0].end(), -7.0f);
    absl::Status result = absl::UnknownError("not called");
    ASSERT_TRUE(ex->Submit(b.Work(id, pin), [&](const absl::Status& s, const GpuTimings&) {
                    result = s;
                  }).ok());
    ex->Flush();
    EXPECT_TRUE(result.ok()) << result;
    EXPECT_LT(b.MaxError(), 1e-5) << id.ToString();
  };
  run(pinned, reg, true);
  EXPECT_EQ(ex->Stats().pinned_weight_bytes, entry);
  EXPECT_EQ(ex->Stats().resident_weight_bytes, 0);
  std::vector<std::unique_ptr<TestBatch>> others;
  for (uint64_t k = 1; k <= 4; ++k) {
    others.push_back(std::make_unique<TestBatch>(p, std::vector<int64_t>{1}, 60 + k));
    run(*others.back(), WeightId::Content(0, k), false);
    EXPECT_TRUE(ex->WeightsResident(reg)) << k;
  }
  GpuExecutorStats s = ex->Stats();
  EXPECT_EQ(s.weight_evictions, 3);  // the unpinned ids pushed each other out
  EXPECT_EQ(s.resident_weight_bytes, entry);
  EXPECT_EQ(s.pinned_weight_bytes, entry);
  // Used again (unpinned use of a pinned id): still resident, no upload.
  const int64_t uploads = s.weight_uploads;
  run(pinned, reg, false);
  EXPECT_EQ(ex->Stats().weight_uploads, uploads);
  const int64_t used = ex->Info().memory_used_bytes;
  ex->ReleaseWeights(reg);
  EXPECT_FALSE(ex->WeightsResident(reg));
  s = ex->Stats();
  EXPECT_EQ(s.pinned_weight_bytes, 0);
  EXPECT_EQ(s.pinned_releases, 1);
  EXPECT_EQ(ex->Info().memory_used_bytes, used - entry);
  ex->ReleaseWeights(reg);  // twice: a no-op
  EXPECT_EQ(ex->Stats().pinned_releases, 1);
  run(pinned, reg, true);  // pinned again: uploaded again
  EXPECT_EQ(ex->Stats().weight_uploads, uploads + 1);
}

// ReleaseWeights while accepted work still uses the entry: freed only after that work's done,
// and the work computes with the right weights.
TEST_F(GpuExecutorTest, ReleaseWhileInUseFreesAfterTheLastWork) {
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  Conv2dParams p = SmallConv();
  const WeightId reg = WeightId::Registered(8);
  TestBatch warm(p, {1}, 1);
  ASSERT_TRUE(ex->Submit(warm.Work(), [](const absl::Status&, const GpuTimings&) {}).ok());
  ex->Flush();
  ex->WaitForTuning();
  absl::Notification release;
  std::vector<std::unique_ptr<TestBatch>> batches;
  DoneLog log(2);
  for (int i = 0; i < 2; ++i) {
    batches.push_back(std::make_unique<TestBatch>(p, std::vector<int64_t>{1 + i}, 30 + i));
  }
  batches[1]->weight = batches[0]->weight;  // one id, one set of weights
  batches[1]->bias = batches[0]->bias;
  // The first done waits: the second work stays accepted (and using the entry) meanwhile.
  ASSERT_TRUE(ex->Submit(batches[0]->Work(reg, true),
                         [&](const absl::Status& st, const GpuTimings&) {
                           release.WaitForNotification();
                           EXPECT_TRUE(st.ok()) << st;
                         })
                  .ok());
  ASSERT_TRUE(ex->Submit(batches[1]->Work(reg, true), log.Done(1)).ok());
  ex->ReleaseWeights(reg);
  EXPECT_FALSE(ex->WeightsResident(reg));  // going away: new work would upload it again
  EXPECT_EQ(ex->Stats().pinned_releases, 0);  // in use: not freed yet
  EXPECT_EQ(ex->Stats().pinned_weight_bytes, 0);
  release.Notify();
  ex->Flush();
  EXPECT_EQ(ex->Stats().pinned_releases, 1);
  EXPECT_TRUE(log.statuses[1].ok()) << log.statuses[1];
  EXPECT_LT(batches[0]->MaxError(), 1e-5);
  EXPECT_LT(batches[1]->MaxError(), 1e-5);
}

// Tuning is keyed by N bucket and runs off the staging thread: the first batch of a bucket runs
// at once (default kernel, right result), a second N in the same bucket does not tune again.
TEST_F(GpuExecutorTest, TuningIsPerNBucketAndOffTheStagingThread) {
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  Conv2dParams p = SmallConv();
  auto run = [&](int64_t n, uint32_t seed) {
    TestBatch b(p, {n}, seed);
    absl::Status result = absl::UnknownError("not called");
    ASSERT_TRUE(ex->Submit(b.Work(), [&](const absl::Status& s, const GpuTimings&) {
                    result = s;
                  }).ok());
    ex->Flush();
    EXPECT_TRUE(result.ok()) << result;
    EXPECT_LT(b.MaxError(), 1e-5) << "n " << n;
  };
  EXPECT_EQ(ex->Stats().tunings, 0);
  run(3, 1);  // bucket 4
  ex->WaitForTuning();
  EXPECT_EQ(ex->Stats().tunings, 1);
  run(4, 2);  // bucket 4 again
  run(3, 3);
  ex->WaitForTuning();
  EXPECT_EQ(ex->Stats().tunings, 1);
  run(5, 4);  // bucket 8
  ex->WaitForTuning();
  EXPECT_EQ(ex->Stats().tunings, 2);
  run(8, 5);
  ex->WaitForTuning();
  EXPECT_EQ(ex->Stats().tunings, 2);
}

#ifdef SPARKLE_GPU_EMU  // needs a tiny device and fault injection
TEST_F(GpuExecutorTest, DeviceOutOfMemoryIsResourceExhausted) {
  Configure(1, 2 * kMiB);  // a tiny device
  GpuOptions o = SmallOptions();
  o.slot_bytes = 16 * kMiB;
  std::unique_ptr<GpuExecutor> ex = Open(o);
  ASSERT_NE(ex, nullptr);
  Conv2dParams p = SmallConv();
  p.c = 16;
  p.h = p.w = 64;
  TestBatch big(p, {12}, 1);  // 3 MiB of input: fits a 16 MiB slot, not the 2 MiB device
  absl::Status st = ex->Submit(big.Work(), [](const absl::Status&, const GpuTimings&) {});
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_THAT(st.message(), HasSubstr("out of device memory"));
  EXPECT_TRUE(ex->healthy());
  EXPECT_EQ(ex->Stats().busy_slots, 0);  // the slot claimed for it was given back
  EXPECT_EQ(ex->Stats().accepted, 0);
  TestBatch small(SmallConv(), {1}, 2);
  absl::Status result = absl::UnknownError("not called");
  ASSERT_TRUE(ex->Submit(small.Work(), [&](const absl::Status& s, const GpuTimings&) {
                  result = s;
                }).ok());
  ex->Flush();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_LT(small.MaxError(), 1e-5);
}

// A kernel fault latches the device: the failing work and the work queued behind it complete
// with INTERNAL naming the device and the error, later Submits are UNAVAILABLE, no hang.
TEST_F(GpuExecutorTest, DeviceFaultFailsQueuedWorkAndLatchesUnhealthy) {
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  std::vector<std::unique_ptr<TestBatch>> batches;
  for (int i = 0; i < 4; ++i) {
    batches.push_back(std::make_unique<TestBatch>(SmallConv(), std::vector<int64_t>{1}, i));
  }
  // Warm up: the first use of the shape tunes (several launches on the tuning thread);
  // afterwards one launch per work.
  ASSERT_TRUE(ex->Submit(batches[0]->Work(), [](const absl::Status&, const GpuTimings&) {}).ok());
  ex->Flush();
  ex->WaitForTuning();
  ASSERT_TRUE(ex->healthy());
  hipemu::SetLaunchDelay(0, std::chrono::milliseconds(50));
  hipemu::InjectLaunchFault(0, 1, hipErrorIllegalAddress);
  DoneLog log(3);
  std::vector<bool> accepted(3, false);
  for (int i = 0; i < 3; ++i) {
    absl::Status st = ex->Submit(batches[i + 1]->Work(), log.Done(i));
    accepted[i] = st.ok();
    if (!st.ok()) {
      EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
    }
  }
  ASSERT_TRUE(accepted[0]);  // the device was healthy when the first was submitted
  ex->Flush();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(log.calls[i], accepted[i] ? 1 : 0) << i;
    if (!accepted[i]) continue;
    EXPECT_EQ(log.statuses[i].code(), absl::StatusCode::kInternal) << log.statuses[i];
    EXPECT_THAT(log.statuses[i].message(), HasSubstr("GPU 0"));
    EXPECT_THAT(log.statuses[i].message(), HasSubstr("hipErrorIllegalAddress"));
  }
  EXPECT_FALSE(ex->healthy());
  EXPECT_THAT(ex->unhealthy_reason(), HasSubstr("hipErrorIllegalAddress"));
  EXPECT_THAT(ex->unhealthy_reason(), HasSubstr("GPU 0"));
  bool called = false;
  absl::Status later = ex->Submit(batches[0]->Work(), [&](const absl::Status&, const GpuTimings&) {
    called = true;
  });
  EXPECT_EQ(later.code(), absl::StatusCode::kUnavailable) << later;
  ex->Flush();
  EXPECT_FALSE(called);
  EXPECT_FALSE(ex->healthy());  // never healthy again
}

#endif  // SPARKLE_GPU_EMU

// Destroying the executor with work in flight completes (or fails) every accepted work once.
TEST_F(GpuExecutorTest, DestroyWithWorkInFlightCompletesEveryWorkOnce) {
  SetLaunchDelay(std::chrono::milliseconds(5));
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  constexpr int kWorks = 6;
  std::vector<std::unique_ptr<TestBatch>> batches;
  for (int i = 0; i < kWorks; ++i) {
    batches.push_back(std::make_unique<TestBatch>(SmallConv(), std::vector<int64_t>{1}, i));
  }
  DoneLog log(kWorks);
  for (int i = 0; i < kWorks; ++i) ASSERT_TRUE(ex->Submit(batches[i]->Work(), log.Done(i)).ok());
  ex.reset();  // work still in flight
  for (int i = 0; i < kWorks; ++i) {
    EXPECT_EQ(log.calls[i], 1) << i;
    EXPECT_TRUE(log.statuses[i].ok()) << log.statuses[i];
  }
}

#ifdef SPARKLE_GPU_EMU
TEST_F(GpuExecutorTest, DestroyAfterFaultWithQueuedWorkFailsEveryWorkOnce) {
  hipemu::InjectLaunchFault(0, 2, hipErrorLaunchFailure);
  hipemu::SetLaunchDelay(0, std::chrono::milliseconds(5));
  std::unique_ptr<GpuExecutor> ex = Open();
  ASSERT_NE(ex, nullptr);
  constexpr int kWorks = 5;
  std::vector<std::unique_ptr<TestBatch>> batches;
  for (int i = 0; i < kWorks; ++i) {
    batches.push_back(std::make_unique<TestBatch>(SmallConv(), std::vector<int64_t>{1}, i));
  }
  DoneLog log(kWorks);
  int accepted = 0;
  for (int i = 0; i < kWorks; ++i) accepted += ex->Submit(batches[i]->Work(), log.Done(i)).ok();
  ex.reset();
  int calls = 0;
  for (int i = 0; i < kWorks; ++i) {
    EXPECT_LE(log.calls[i], 1) << i;
    calls += log.calls[i];
  }
  EXPECT_EQ(calls, accepted);
}

#endif  // SPARKLE_GPU_EMU

TEST_F(GpuExecutorTest, OptionsOutOfRangeAreInvalidArgument) {
  GpuOptions o = SmallOptions();
  o.slots = 0;
  EXPECT_EQ(GpuExecutor::Create(0, o).status().code(), absl::StatusCode::kInvalidArgument);
  o = SmallOptions();
  o.slot_bytes = 1000;
  EXPECT_EQ(GpuExecutor::Create(0, o).status().code(), absl::StatusCode::kInvalidArgument);
}

#ifdef SPARKLE_GPU_EMU  // the emulator sets the device count
TEST_F(GpuExecutorTest, OpenGpuDevicesWithNoEmulatedDeviceFindsNoneWithAReason) {
  GpuOptions o = SmallOptions();
  o.emulated_devices = 0;
  GpuDevices d = OpenGpuDevices(o);
  EXPECT_TRUE(d.devices.empty());
  EXPECT_EQ(d.platform, "emu");
  EXPECT_EQ(d.no_gpu_reason, "hipGetDeviceCount: hipErrorNoDevice");
}

TEST_F(GpuExecutorTest, OpenGpuDevicesOpensEveryEmulatedDeviceUpToMax) {
  GpuOptions o = SmallOptions();
  o.emulated_devices = 3;
  o.emulated_memory_bytes = 64 * kMiB;
  GpuDevices d = OpenGpuDevices(o);
  ASSERT_EQ(d.devices.size(), 3u) << d.no_gpu_reason;
  EXPECT_TRUE(d.no_gpu_reason.empty());
  for (size_t i = 0; i < d.devices.size(); ++i) {
    EXPECT_EQ(d.devices[i]->Info().index, static_cast<int>(i));
    EXPECT_EQ(d.devices[i]->Info().memory_bytes, 64 * kMiB);
    EXPECT_TRUE(d.devices[i]->healthy());
  }
  // Each device computes.
  TestBatch b(SmallConv(), {2}, 9);
  absl::Status result = absl::UnknownError("not called");
  ASSERT_TRUE(d.devices[2]->Submit(b.Work(), [&](const absl::Status& s, const GpuTimings&) {
                result = s;
              }).ok());
  d.devices[2]->Flush();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_LT(b.MaxError(), 1e-5);
  d.devices.clear();
  o.max_devices = 1;
  EXPECT_EQ(OpenGpuDevices(o).devices.size(), 1u);
}

#endif  // SPARKLE_GPU_EMU

}  // namespace
}  // namespace sparkle::hip
