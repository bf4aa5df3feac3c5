// The engine with GPUs: routing, results, faults and the no-GPU fallback, on FakeGpuDevice
// (tests/testing/fake_gpu_device.h), so no GPU is needed.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "engine/cpu/conv2d_ref.h"
#include "engine/engine.h"
#include "engine/registry/registered_weight.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fake_gpu_device.h"
#include "tests/testing/gpu_test_env.h"
#include "tests/testing/shape_table.h"
#include "tests/testing/test_job.h"

namespace sparkle {
namespace {

using ::sparkle::testing::FakeGpuDevice;
using ::sparkle::testing::RandomFloats;
using ::sparkle::testing::RelativeL2Error;
using ::sparkle::testing::TestJob;
using ::testing::AnyOf;
using ::testing::HasSubstr;

Conv2dParams Tiny() {  // 1x4x8x8, K=4, 3x3: ~37 KFLOP
  Conv2dParams p;
  p.c = 4, p.h = 8, p.w = 8, p.k = 4, p.r = p.s = 3, p.SetPad(1, 1);
  return p;
}
Conv2dParams Big() {  // 1x64x32x32, K=64, 3x3, bias: 75 MFLOP
  Conv2dParams p;
  p.c = 64, p.h = 32, p.w = 32, p.k = 64, p.r = p.s = 3, p.SetPad(1, 1);
  p.has_bias = true;
  return p;
}

// An engine over `gpus` fake devices (none: the no-GPU case) with fixed start-up rates: a slow
// CPU (10 GFLOP/s) and a fast GPU (100 TFLOP/s, 100 GB/s) with a 300 µs launch cost, so that
// big jobs (>= 0.75 ms on this CPU at any real rate) route to the GPU and tiny ones (tens of
// µs) to the CPU, whatever the estimator learns from the CPU batches.
struct Rig {
  std::vector<FakeGpuDevice*> fakes;  // owned by the engine
  std::unique_ptr<Engine> engine;

  explicit Rig(int gpus, EngineOptions options = {}, FakeGpuDevice::Options fake = {}) {
    options.cpu.threads = 2;
    if (options.cpu_gflops == 0) options.cpu_gflops = 10;
    if (options.gpu_gflops == 0) options.gpu_gflops = 1e5;
    if (options.gpu_transfer_gbps == 0) options.gpu_transfer_gbps = 100;
    options.gpu_launch_overhead_s = 300e-6;
    fake.gflops = 1e5;
    fake.transfer_gbps = 100;
    options.open_gpus = [this, gpus, fake](const GpuOptions&) {
      GpuDevices out;
      out.platform = "emu";
      if (gpus == 0) out.no_gpu_reason = "test: no GPU here";
      for (int i = 0; i < gpus; ++i) {
        FakeGpuDevice::Options o = fake;
        o.name = "fake-gpu-" + std::to_string(i);
        auto device = std::make_unique<FakeGpuDevice>(o);
        fakes.push_back(device.get());
        out.devices.push_back(std::move(device));
      }
      return out;
    };
    auto created = Engine::Create(options);
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) engine = std::move(created).value();
  }

  absl::Status Submit(TestJob& j) {
    auto job = j.Make();
    return engine->Submit(&job);
  }
};

void ExpectCorrect(TestJob& j, int device) {
  j.done.WaitForNotification();
  ASSERT_TRUE(j.status.ok()) << j.status << " " << j.params.ToString();
  EXPECT_LT(j.Error(), 1e-5) << j.params.ToString();
  EXPECT_EQ(j.timestamps.device, device) << j.params.ToString();
}

TEST(EngineGpuTest, NoGpuIsACleanCpuOnlyEngine) {
  Rig rig(0);
  ASSERT_NE(rig.engine, nullptr);
  TestJob big(Big(), 1), tiny(Tiny(), 2);
  ASSERT_TRUE(rig.Submit(big).ok());
  ASSERT_TRUE(rig.Submit(tiny).ok());
  ExpectCorrect(big, -1);
  ExpectCorrect(tiny, -1);

  TestJob wants_gpu(Big(), 3, DeviceRequest::AnyGpu());
  absl::Status s = rig.Submit(wants_gpu);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("test: no GPU here"));
  TestJob wants_gpu0(Big(), 3, DeviceRequest::Gpu(0));
  EXPECT_EQ(rig.Submit(wants_gpu0).code(), absl::StatusCode::kFailedPrecondition);

  const DevicesSnapshot d = rig.engine->Devices();
  ASSERT_EQ(d.devices.size(), 1u);
  EXPECT_EQ(d.devices[0].name, "cpu");
  EXPECT_EQ(d.devices[0].jobs_done, 2);
  EXPECT_EQ(d.router.decisions_cpu, 2);
  EXPECT_EQ(d.router.decisions_gpu, 0);
  EXPECT_EQ(d.router.crossover_mflop, 0);
  EXPECT_EQ(d.router.gpu_fallback_reason, "test: no GPU here");
  EXPECT_EQ(rig.engine->Stats().jobs_rejected, 2);
}

TEST(EngineGpuTest, GpuPolicyWithoutGpuRefusesToStart) {
  EngineOptions options;
  options.cpu.threads = 2;
  options.device_policy = DeviceRequest::AnyGpu();
  options.open_gpus = [](const GpuOptions&) {
    GpuDevices none;
    none.no_gpu_reason = "built with SPARKLE_GPU=off";
    return none;
  };
  auto engine = Engine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(engine.status().message(), HasSubstr("built with SPARKLE_GPU=off"));
}

TEST(EngineGpuTest, AutoRoutesTinyJobsToTheCpuAndBigOnesToTheGpu) {
  Rig rig(1);
  std::vector<std::unique_ptr<TestJob>> tiny, big;
  for (int i = 0; i < 6; ++i) {
    tiny.push_back(std::make_unique<TestJob>(Tiny(), 10 + i));
    big.push_back(std::make_unique<TestJob>(Big(), 20 + i));
    ASSERT_TRUE(rig.Submit(*tiny.back()).ok());
    ASSERT_TRUE(rig.Submit(*big.back()).ok());
  }
  for (auto& j : tiny) ExpectCorrect(*j, -1);
  for (auto& j : big) {
    ExpectCorrect(*j, 0);
    EXPECT_LE(j->timestamps.h2d_end, j->timestamps.compute_start);
    EXPECT_LE(j->timestamps.compute_end, j->timestamps.d2h_end);
    EXPECT_NE(j->timestamps.d2h_end, absl::InfinitePast());
  }
  const DevicesSnapshot d = rig.engine->Devices();
  ASSERT_EQ(d.devices.size(), 2u);
  EXPECT_EQ(d.devices[1].name, "gpu:0");
  EXPECT_TRUE(d.devices[1].healthy);
  EXPECT_EQ(d.devices[1].jobs_done, 6);
  EXPECT_EQ(d.devices[0].jobs_done, 6);
  EXPECT_GT(d.devices[1].gflop_done, 0);
  EXPECT_EQ(d.router.decisions_cpu + d.router.decisions_gpu, rig.engine->Stats().batches);
  EXPECT_GT(d.router.crossover_mflop, 0);
  EXPECT_LT(d.router.crossover_mflop, Big().flops() * 1e-6);  // the big class is past it
  EXPECT_EQ(d.devices[1].queued_batches, 0);
  EXPECT_EQ(rig.fakes[0]->parts_done(), 6);
}

TEST(EngineGpuTest, ExplicitDevicesAreHonouredAndNeverShareABatch) {
  EngineOptions options;
  options.batcher.max_queue_delay = absl::Milliseconds(50);  // room to batch, if it were wrong
  Rig rig(2, options);
  std::vector<std::unique_ptr<TestJob>> jobs;
  const DeviceRequest requests[] = {DeviceRequest::Cpu(), DeviceRequest::Gpu(1),
                                    DeviceRequest::AnyGpu(), DeviceRequest::Gpu(0)};
  const std::vector<float> weight = RandomFloats(Tiny().weight_elements(), 5);
  for (int i = 0; i < 16; ++i) {
    jobs.push_back(std::make_unique<TestJob>(Tiny(), 30 + i, requests[i % 4]));
    TestJob& j = *jobs.back();
    j.weight = weight;  // one shape key apart from the device
    Conv2dRef(j.params, j.input.data(), j.weight.data(), nullptr, j.expected.data());
    ASSERT_TRUE(rig.Submit(j).ok());
  }
  for (int i = 0; i < 16; ++i) {
    TestJob& j = *jobs[i];
    j.done.WaitForNotification();
    ASSERT_TRUE(j.status.ok()) << j.status;
    EXPECT_LT(j.Error(), 1e-5);
    switch (i % 4) {
      case 0: EXPECT_EQ(j.timestamps.device, -1); break;
      case 1: EXPECT_EQ(j.timestamps.device, 1); break;
      case 2: EXPECT_THAT(j.timestamps.device, AnyOf(0, 1)); break;
      case 3: EXPECT_EQ(j.timestamps.device, 0); break;
    }
  }
}

TEST(EngineGpuTest, ServerPolicyAppliesToAutoRequestsOnly) {
  EngineOptions options;
  options.device_policy = DeviceRequest::Gpu(0);
  Rig rig(1, options);
  TestJob tiny_auto(Tiny(), 40), tiny_cpu(Tiny(), 41, DeviceRequest::Cpu());
  ASSERT_TRUE(rig.Submit(tiny_auto).ok());
  ASSERT_TRUE(rig.Submit(tiny_cpu).ok());
  ExpectCorrect(tiny_auto, 0);  // the model would pick the cpu; the policy says gpu:0
  ExpectCorrect(tiny_cpu, -1);
  EXPECT_EQ(rig.engine->Devices().router.policy, "gpu:0");
}

TEST(EngineGpuTest, MixedStreamIsCorrectEverywhere) {
  Rig rig(2);
  Conv2dParams grouped = Big();
  grouped.groups = 4;
  Conv2dParams nhwc = Big();
  nhwc.layout = Layout::kNHWC;
  nhwc.stride_h = 2;
  Conv2dParams batched = Tiny();
  batched.n = 3;
  const Conv2dParams shapes[] = {Tiny(), Big(), grouped, nhwc, batched};
  const DeviceRequest requests[] = {DeviceRequest::Auto(), DeviceRequest::Auto(),
                                    DeviceRequest::Cpu(), DeviceRequest::AnyGpu()};
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < 40; ++i) {
    jobs.push_back(std::make_unique<TestJob>(shapes[i % 5], 100 + i, requests[i % 4]));
    ASSERT_TRUE(rig.Submit(*jobs.back()).ok());
  }
  for (auto& j : jobs) {
    j->done.WaitForNotification();
    ASSERT_TRUE(j->status.ok()) << j->status;
    EXPECT_LT(j->Error(), 1e-5) << j->params.ToString();
  }
  const DevicesSnapshot d = rig.engine->Devices();
  int64_t done = 0;
  for (const DeviceSnapshot& s : d.devices) done += s.jobs_done;
  EXPECT_EQ(done, 40);
  EXPECT_GT(d.router.decisions_gpu, 0);
  EXPECT_GT(d.router.decisions_cpu, 0);
}

TEST(EngineGpuTest, UnsupportedGeometryRunsOnTheCpuUnlessTheGpuWasNamed) {
  FakeGpuDevice::Options fake;
  fake.unsupported = [](const Conv2dParams& p) { return p.groups > 1; };
  Rig rig(1, {}, fake);
  Conv2dParams grouped = Big();
  grouped.groups = 2;
  TestJob auto_job(grouped, 50), named(grouped, 51, DeviceRequest::Gpu(0));
  ASSERT_TRUE(rig.Submit(auto_job).ok());
  ASSERT_TRUE(rig.Submit(named).ok());
  ExpectCorrect(auto_job, -1);
  named.done.WaitForNotification();
  EXPECT_EQ(named.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(named.status.message(), HasSubstr("no kernel"));
}

TEST(EngineGpuTest, BackPressureNeverBlocksTheCpuWorkers) {
  FakeGpuDevice::Options fake;
  fake.slots = 1;
  Rig rig(1, {}, fake);
  rig.fakes[0]->Pause();
  std::vector<std::unique_ptr<TestJob>> gpu_jobs;
  for (int i = 0; i < 6; ++i) {  // different weights: six batches for a one-slot device
    gpu_jobs.push_back(std::make_unique<TestJob>(Tiny(), 60 + i, DeviceRequest::Gpu(0)));
    ASSERT_TRUE(rig.Submit(*gpu_jobs.back()).ok());
  }
  TestJob cpu_job(Big(), 70, DeviceRequest::Cpu());
  ASSERT_TRUE(rig.Submit(cpu_job).ok());
  ExpectCorrect(cpu_job, -1);  // while the GPU holds everything else
  EXPECT_FALSE(gpu_jobs.back()->done.HasBeenNotified());
  EXPECT_GT(rig.engine->Devices().devices[1].queued_batches, 0);
  rig.fakes[0]->Resume();
  for (auto& j : gpu_jobs) ExpectCorrect(*j, 0);
  EXPECT_EQ(rig.fakes[0]->max_in_flight(), 1);
}

// Big auto jobs with distinct weights, routed to a paused GPU whose first work faults.
std::vector<std::unique_ptr<TestJob>> FaultScenario(Rig& rig, int count) {
  rig.fakes[0]->FailWork(0);
  rig.fakes[0]->Pause();
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < count; ++i) {
    jobs.push_back(std::make_unique<TestJob>(Big(), 80 + i));
    EXPECT_TRUE(rig.Submit(*jobs.back()).ok());
  }
  // Every job reaches the GPU side (device slots or dispatcher queue) before the fault.
  while (rig.engine->Devices().devices[1].queued_batches < count) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  rig.fakes[0]->Resume();
  return jobs;
}

TEST(EngineGpuTest, FaultReroutesQueuedWorkToTheCpu) {
  Rig rig(1);
  std::vector<std::unique_ptr<TestJob>> jobs = FaultScenario(rig, 6);
  for (auto& j : jobs) ExpectCorrect(*j, -1);  // recomputed on the CPU, correct
  DevicesSnapshot d = rig.engine->Devices();
  EXPECT_FALSE(d.devices[1].healthy);
  EXPECT_THAT(d.devices[1].unhealthy_reason, HasSubstr("injected fault"));
  EXPECT_EQ(d.devices[1].queued_batches, 0);

  // Later: auto work goes to the CPU; a job naming the GPU is refused at admission.
  TestJob after(Big(), 90);
  ASSERT_TRUE(rig.Submit(after).ok());
  ExpectCorrect(after, -1);
  TestJob named(Big(), 91, DeviceRequest::Gpu(0));
  absl::Status s = rig.Submit(named);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("injected fault"));
}

TEST(EngineGpuTest, FaultPolicyFailCompletesQueuedWorkWithAnError) {
  EngineOptions options;
  options.on_gpu_fault = GpuFaultPolicy::kFail;
  Rig rig(1, options);
  std::vector<std::unique_ptr<TestJob>> jobs = FaultScenario(rig, 6);
  for (auto& j : jobs) {
    j->done.WaitForNotification();
    EXPECT_THAT(j->status.code(),
                AnyOf(absl::StatusCode::kInternal, absl::StatusCode::kUnavailable));
  }
  EXPECT_EQ(jobs.front()->status.code(), absl::StatusCode::kInternal);  // the failing work
  TestJob after(Big(), 92);  // the engine keeps serving on the CPU
  ASSERT_TRUE(rig.Submit(after).ok());
  ExpectCorrect(after, -1);
  EXPECT_EQ(rig.engine->Devices().router.gpu_fault_policy, "fail");
}

TEST(EngineGpuTest, JobsNamingAFaultedGpuNeverFallBack) {
  Rig rig(1);
  rig.fakes[0]->FailWork(0);
  TestJob named(Big(), 93, DeviceRequest::Gpu(0));
  ASSERT_TRUE(rig.Submit(named).ok());
  named.done.WaitForNotification();
  EXPECT_EQ(named.status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(named.timestamps.device, -1);  // never ran anywhere
}

// Registered weights stay pinned on the GPU while the registration lives: one upload for any
// number of jobs, untouched by the LRU pressure of many inline weights, counted in the
// registry's budget, and released on the device when the registration goes.
TEST(EngineGpuTest, RegisteredWeightsStayPinnedUntilUnregistered) {
  FakeGpuDevice::Options fake;
  fake.weight_cache_entries = 2;
  Rig rig(1, {}, fake);
  ASSERT_NE(rig.engine, nullptr);
  const Conv2dParams p = Big();
  TestJob reference(p, 3);
  WeightHeader header;
  header.shape = {p.k, p.c / p.groups, p.r, p.s};
  if (p.has_bias) header.bias = reference.bias;
  auto registered = rig.engine->registry().Register(header, reference.weight);
  ASSERT_TRUE(registered.ok()) << registered.status();
  const std::string id = registered->weight->id();
  const int64_t plain_bytes = rig.engine->registry().snapshot().bytes;
  const WeightId pinned = WeightId::Registered(registered->weight->weight_key());
  auto run_registered = [&](uint32_t seed) {
    TestJob j(p, seed, &reference.weight, DeviceRequest::Gpu(0));
    if (p.has_bias) {
      j.bias = reference.bias;
      Conv2dRef(p, j.input.data(), j.weight.data(), j.bias.data(), j.expected.data());
    }
    auto job = j.Make();
    auto acquired = rig.engine->registry().Acquire(id);
    ASSERT_TRUE(acquired.ok());
    job->registered_weight = *acquired;
    ASSERT_TRUE(rig.engine->Submit(&job).ok());
    ExpectCorrect(j, 0);
  };
  run_registered(10);
  EXPECT_TRUE(rig.fakes[0]->WeightsResident(pinned));
  // The pinned copy is a prepacked copy of the registration: counted in the registry's budget.
  EXPECT_GT(rig.engine->registry().snapshot().bytes, plain_bytes);
  for (uint32_t seed = 20; seed < 24; ++seed) {  // inline weights: more than the LRU holds
    TestJob j(p, seed, DeviceRequest::Gpu(0));
    ASSERT_TRUE(rig.Submit(j).ok());
    ExpectCorrect(j, 0);
  }
  const int64_t uploads = rig.fakes[0]->weight_uploads();
  run_registered(30);
  EXPECT_EQ(rig.fakes[0]->weight_uploads(), uploads);  // still on the device
  ASSERT_TRUE(rig.engine->registry().Unregister(id).ok());
  registered->weight.reset();  // the last holder: the registration is gone
  EXPECT_FALSE(rig.fakes[0]->WeightsResident(pinned));
}

TEST(EngineGpuTest, RatesAreRefinedOnlineFromCompletedBatches) {
  EngineOptions options;
  options.cpu.threads = 2;
  options.cpu_gflops = 10;
  options.gpu_gflops = 500;  // the seed is 4x below the device's (modelled) 2000
  options.gpu_transfer_gbps = 50;
  options.open_gpus = [](const GpuOptions&) {
    FakeGpuDevice::Options o;
    o.gflops = 2000;
    o.transfer_gbps = 8;
    GpuDevices out;
    out.devices.push_back(std::make_unique<FakeGpuDevice>(o));
    return out;
  };
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->Devices().devices[1].measured_gflops, 500);
  Conv2dParams p;  // 4.7 MFLOP: 2.4 µs at 2000 GFLOP/s, far above the clock's resolution
  p.c = p.k = 16, p.h = p.w = 32, p.r = p.s = 3, p.SetPad(1, 1);
  std::vector<std::unique_ptr<TestJob>> jobs;
  for (int i = 0; i < 30; ++i) {
    jobs.push_back(std::make_unique<TestJob>(p, 200 + i, DeviceRequest::Gpu(0)));
    auto job = jobs.back()->Make();
    ASSERT_TRUE((*engine)->Submit(&job).ok());
  }
  for (auto& j : jobs) ExpectCorrect(*j, 0);
  const DevicesSnapshot d = (*engine)->Devices();
  // 29 observations (the first of a class is not used) with weight 0.2: within 1 %.
  EXPECT_NEAR(d.devices[1].measured_gflops, 2000, 20);
  // Learnt only from works submitted to an idle device (at least the first one here).
  EXPECT_LT(d.devices[1].measured_transfer_gbps, 50);  // moved towards the real 8
}

TEST(EngineGpuTest, RatesAreMeasuredAtStart) {
  EngineOptions options;
  options.cpu.threads = 2;
  FakeGpuDevice* fake = nullptr;
  options.open_gpus = [&fake](const GpuOptions&) {
    FakeGpuDevice::Options o;
    o.gflops = 2000;
    o.transfer_gbps = 8;
    GpuDevices out;
    auto device = std::make_unique<FakeGpuDevice>(o);
    fake = device.get();
    out.devices.push_back(std::move(device));
    return out;
  };
  auto engine = Engine::Create(options);  // every rate measured (none given)
  ASSERT_TRUE(engine.ok()) << engine.status();
  DevicesSnapshot d = (*engine)->Devices();
  // The compute probe is a slope over two sizes, so the modelled launch cost cancels out.
  EXPECT_NEAR(d.devices[1].measured_gflops, 2000, 2000 * 0.02);
  EXPECT_GT(d.devices[1].measured_transfer_gbps, 0);
  EXPECT_GT(d.devices[0].measured_gflops, 0);
  EXPECT_EQ(fake->works_done(), 4);  // the probe's works
}

// The real OpenGpuDevices of this build: the executor on a GPU, or in the HIP-on-CPU emulator
// (SPARKLE_GPU=emu, one emulated device). Skips (or fails with SPARKLE_REQUIRE_GPU=1) without.
TEST(EngineGpuTest, RealDevicesOfThisBuildComputeCorrectResults) {
  EngineOptions options;
  options.cpu.threads = 2;
  options.gpu.emulated_devices = 1;  // emu builds only; ignored by the others
  options.gpu_gflops = 1000;         // no start-up probe (slow in the emulator)
  options.gpu_transfer_gbps = 10;
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const DevicesSnapshot d = (*engine)->Devices();
  if (d.devices.size() < 2) SPARKLE_SKIP_OR_FAIL_WITHOUT_GPU(d.router.gpu_fallback_reason);
  Conv2dParams bias = Tiny();
  bias.has_bias = true;
  bias.n = 2;
  std::vector<std::unique_ptr<TestJob>> jobs;
  jobs.push_back(std::make_unique<TestJob>(Tiny(), 300, DeviceRequest::Gpu(0)));
  jobs.push_back(std::make_unique<TestJob>(bias, 301, DeviceRequest::Gpu(0)));
  jobs.push_back(std::make_unique<TestJob>(Tiny(), 302, DeviceRequest::AnyGpu()));
  for (auto& j : jobs) {
    auto job = j->Make();
    ASSERT_TRUE((*engine)->Submit(&job).ok());
  }
  for (auto& j : jobs) {
    j->done.WaitForNotification();
    ASSERT_TRUE(j->status.ok()) << j->status;
    EXPECT_LT(j->Error(), 1e-5) << j->params.ToString();
    EXPECT_EQ(j->timestamps.device, 0);
    EXPECT_LE(j->timestamps.compute_start, j->timestamps.compute_end);
  }
  EXPECT_EQ((*engine)->Devices().devices[1].jobs_done, 3);
}

// A BF16 job with a residual and relu, two images, end to end through the Engine on the real
// devices of this build (the emulator in emu builds) against the oracle on the same BF16 values.
TEST(EngineGpuTest, Bf16ResidualReluJobOnTheRealDeviceMatchesTheOracle) {
  EngineOptions options;
  options.cpu.threads = 2;
  options.gpu.emulated_devices = 1;  // emu builds only; ignored by the others
  options.gpu_gflops = 1000;         // no start-up probe (slow in the emulator)
  options.gpu_transfer_gbps = 10;
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  if ((*engine)->Devices().devices.size() < 2) {
    SPARKLE_SKIP_OR_FAIL_WITHOUT_GPU((*engine)->Devices().router.gpu_fallback_reason);
  }
  Conv2dParams p = Tiny();
  p.n = 2;
  p.has_bias = true;
  p.pad_bottom = 0;  // asymmetric: 7 output rows
  p.has_residual = true;
  p.activation = Activation::kRelu;
  p.dtype = p.output_dtype = DataType::kBf16;
  ASSERT_TRUE(p.Validate().ok()) << p.Validate();
  auto bf16 = [](int64_t count, uint32_t seed) {
    const std::vector<float> f = RandomFloats(count, seed);
    std::vector<uint16_t> bits(static_cast<size_t>(count));
    NarrowFromFloat(DataType::kBf16, f.data(), bits.data(), count);
    return bits;
  };
  const std::vector<uint16_t> input = bf16(p.input_elements(), 400),
                              weight = bf16(p.weight_elements(), 401), bias = bf16(p.k, 402),
                              residual = bf16(p.output_elements(), 403);
  std::vector<uint16_t> output(static_cast<size_t>(p.output_elements()), 0x7fc0),  // NaN
      expected(output.size());
  Conv2dRef(p, input.data(), weight.data(), bias.data(), expected.data(), residual.data());

  absl::Notification done;
  absl::Status status;
  ExecTimestamps timestamps;
  auto job = std::make_unique<Conv2dJob>();
  job->params = p;
  job->device = DeviceRequest::Gpu(0);
  job->input = input.data();
  job->weight = weight.data();
  job->bias = bias.data();
  job->residual = residual.data();
  job->output = output.data();
  job->done = [&](const absl::Status& s, const ExecTimestamps& t) {
    status = s;
    timestamps = t;
    done.Notify();
  };
  ASSERT_TRUE((*engine)->Submit(&job).ok());
  done.WaitForNotification();
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(timestamps.device, 0);
  std::vector<float> actual_f(output.size()), expected_f(output.size());
  WidenToFloat(DataType::kBf16, output.data(), actual_f.data(), p.output_elements());
  WidenToFloat(DataType::kBf16, expected.data(), expected_f.data(), p.output_elements());
  // The BF16-output bound of tests/engine/hip/conv_kernels_test.cc.
  EXPECT_LT(RelativeL2Error(actual_f.data(), expected_f.data(), p.output_elements()), 1e-3);
  int negative = 0;
  for (float v : actual_f) negative += v < 0 ? 1 : 0;
  EXPECT_EQ(negative, 0);  // relu ran
}

}  // namespace
}  // namespace sparkle
