#include "engine/router/rate_estimator.h"

#include <cmath>

#include "gtest/gtest.h"

namespace sparkle {
namespace {

RateEstimator Make(double cpu_gflops, double gpu_gflops, int max_classes = 256) {
  RateEstimator::Options o;
  o.alpha = 0.2;
  o.max_classes = max_classes;
  return RateEstimator({{cpu_gflops, 0, 0}, {gpu_gflops, 5, 20e-6}}, o);
}

TEST(RateEstimator, StartsFromTheSeeds) {
  RateEstimator r = Make(80, 4000);
  EXPECT_EQ(r.DeviceGflops(0), 80);
  EXPECT_EQ(r.DeviceGflops(1), 4000);
  EXPECT_EQ(r.TransferGbps(1), 5);
  EXPECT_EQ(r.LaunchOverheadSeconds(1), 20e-6);
  EXPECT_FALSE(r.ClassGflops(1, 42).has_value());
}

TEST(RateEstimator, ConvergesToTheObservedRate) {
  RateEstimator r = Make(80, 4000);  // the seed is 4x off
  r.ObserveCompute(1, 7, 1e9, 1.0);  // a first, slow batch (1 GFLOP/s) only registers
  EXPECT_FALSE(r.ClassGflops(1, 7).has_value());
  EXPECT_EQ(r.DeviceGflops(1), 4000);
  for (int i = 0; i < 40; ++i) r.ObserveCompute(1, 7, 1e9, 1e-3);  // 1000 GFLOP/s
  EXPECT_NEAR(r.DeviceGflops(1), 1000, 1000 * 0.01);
  ASSERT_TRUE(r.ClassGflops(1, 7).has_value());
  EXPECT_NEAR(*r.ClassGflops(1, 7), 1000, 1000 * 0.01);
  EXPECT_EQ(r.Observations(1), 40);
  EXPECT_EQ(r.DeviceGflops(0), 80);  // other devices untouched

  for (int i = 0; i < 40; ++i) r.ObserveTransfer(1, 1e9, 0.1);  // 10 GB/s
  EXPECT_NEAR(r.TransferGbps(1), 10, 0.1);
}

TEST(RateEstimator, OneOutlierMovesAClassByAlphaOnly) {
  RateEstimator r = Make(100, 4000);
  r.ObserveCompute(0, 3, 1e8, 1e-3);  // registers
  r.ObserveCompute(0, 3, 1e8, 1.0);   // 0.1 GFLOP/s: a preempted run
  ASSERT_TRUE(r.ClassGflops(0, 3).has_value());
  EXPECT_NEAR(*r.ClassGflops(0, 3), 100 + 0.2 * (0.1 - 100), 1e-9);
}

TEST(RateEstimator, ClassesAreSeparate) {
  RateEstimator r = Make(80, 4000);
  for (int i = 0; i < 31; ++i) {
    r.ObserveCompute(0, 1, 1e8, 1e-3);  // 100 GFLOP/s
    r.ObserveCompute(0, 2, 1e7, 1e-3);  // 10 GFLOP/s
  }
  EXPECT_NEAR(*r.ClassGflops(0, 1), 100, 1);
  EXPECT_NEAR(*r.ClassGflops(0, 2), 10, 1);
}

TEST(RateEstimator, MemoryIsBounded) {
  RateEstimator r = Make(80, 4000, /*max_classes=*/8);
  auto observe = [&r](uint64_t c) {  // twice: the first only registers the class
    r.ObserveCompute(0, c, 1e6, 1e-4);
    r.ObserveCompute(0, c, 1e6, 1e-4);
  };
  for (uint64_t c = 0; c < 1000; ++c) observe(c);
  EXPECT_EQ(r.Classes(0), 8);
  EXPECT_TRUE(r.ClassGflops(0, 999).has_value());  // the most recent stay
  EXPECT_FALSE(r.ClassGflops(0, 0).has_value());   // the oldest went
  // Observing an old class again makes it the most recent.
  r.ObserveCompute(0, 992, 1e6, 1e-4);
  for (uint64_t c = 2000; c < 2007; ++c) observe(c);
  EXPECT_TRUE(r.ClassGflops(0, 992).has_value());
  EXPECT_FALSE(r.ClassGflops(0, 993).has_value());
}

TEST(RateEstimator, IgnoresMeaninglessSamples) {
  RateEstimator r = Make(80, 4000);
  r.ObserveCompute(1, 1, 1e9, 1e-3);  // registers the class
  r.ObserveCompute(1, 1, 1e9, 0);
  r.ObserveCompute(1, 1, 0, 1);
  r.ObserveCompute(1, 1, 1e9, -1);
  r.ObserveTransfer(1, 1e9, 0);
  EXPECT_EQ(r.DeviceGflops(1), 4000);
  EXPECT_EQ(r.TransferGbps(1), 5);
  EXPECT_EQ(r.Observations(1), 0);
  EXPECT_FALSE(r.ClassGflops(1, 1).has_value());
}

}  // namespace
}  // namespace sparkle
