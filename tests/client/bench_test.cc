#include "client/bench.h"

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

ShapeClass Find(absl::string_view name) {
  absl::StatusOr<std::vector<ShapeClass>> classes = ResolveShapeClass(name);
  EXPECT_TRUE(classes.ok()) << classes.status();
  EXPECT_EQ(classes->size(), 1u);
  return classes->front();
}

TEST(ShapeClassTest, GeometryAndFlopOfTheBuiltinClasses) {
  const struct {
    const char* name;
    int64_t p, q;
    double flop;
  } cases[] = {
      {"tiny", 32, 32, 2.0 * 16 * 32 * 32 * 16 * 9},
      {"resnet_3x3_56", 56, 56, 2.0 * 64 * 56 * 56 * 64 * 9},
      {"resnet_1x1_56", 56, 56, 2.0 * 256 * 56 * 56 * 64},
      {"resnet_conv1", 112, 112, 2.0 * 64 * 112 * 112 * 3 * 49},
      {"resnet_3x3_7", 7, 7, 2.0 * 512 * 7 * 7 * 512 * 9},
      {"mid_3x3", 64, 64, 2.0 * 4 * 32 * 64 * 64 * 32 * 9},
      {"mobilenet_dw", 56, 56, 2.0 * 128 * 56 * 56 * 1 * 9},  // C/groups = 1
      {"vgg_3x3_224", 224, 224, 2.0 * 64 * 224 * 224 * 64 * 9},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const ShapeClass shape = Find(c.name);
    EXPECT_EQ(shape.OutputHeight(), c.p);
    EXPECT_EQ(shape.OutputWidth(), c.q);
    EXPECT_DOUBLE_EQ(shape.Flop(), c.flop);
  }
  EXPECT_EQ(Find("resnet_conv1").Describe(), "mb1_ic3oc64_ih224kh7sh2ph3_iw224kw7sw2pw3");
  EXPECT_EQ(Find("mobilenet_dw").Describe(), "mb1_g128ic128oc128_ih56kh3ph1_iw56kw3pw1");
}

TEST(ShapeClassTest, MixedIsARoundRobinOfThreeClassesAndUnknownNamesAreListed) {
  absl::StatusOr<std::vector<ShapeClass>> mixed = ResolveShapeClass("mixed");
  ASSERT_TRUE(mixed.ok());
  std::vector<std::string> names;
  for (const ShapeClass& c : *mixed) names.push_back(c.name);
  EXPECT_THAT(names, ElementsAre("tiny", "resnet_3x3_28", "mobilenet_dw"));
  absl::StatusOr<std::vector<ShapeClass>> unknown = ResolveShapeClass("resnet");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("tiny, small_3x3"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("mixed"));
}

TEST(PercentileTest, IsNearestRank) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(Percentile(v, 0.50), 50);
  EXPECT_EQ(Percentile(v, 0.90), 90);
  EXPECT_EQ(Percentile(v, 0.99), 99);
  EXPECT_EQ(Percentile(v, 1.0), 100);
  EXPECT_EQ(Percentile(v, 0.0), 1);
  EXPECT_EQ(Percentile({7}, 0.99), 7);
  EXPECT_EQ(Percentile({1, 2, 3}, 0.5), 2);
  EXPECT_EQ(Percentile({}, 0.5), 0);
}

TEST(LevelResultTest, RatesAndCsv) {
  LevelResult r;
  r.shape_class = "tiny";
  r.concurrency = 4;
  r.window_seconds = 2;
  r.ok = 1000;
  r.flop = 4e9;
  r.payload_bytes = 3e6;
  r.errors[absl::StatusCode::kResourceExhausted] = 3;
  r.errors[absl::StatusCode::kDeadlineExceeded] = 1;
  r.p50_us = 1000.4;
  r.p90_us = 1500;
  r.p95_us = 1600;
  r.p99_us = 2000;
  r.mean_us = 1100;
  r.max_us = 2500;
  EXPECT_DOUBLE_EQ(r.RequestsPerSecond(), 500);
  EXPECT_DOUBLE_EQ(r.GflopPerSecond(), 2);
  EXPECT_DOUBLE_EQ(r.MegabytesPerSecond(), 1.5);
  EXPECT_EQ(r.ErrorCount(), 4);
  EXPECT_EQ(r.ErrorSummary(), "DEADLINE_EXCEEDED:1 RESOURCE_EXHAUSTED:3");

  const std::vector<std::string> header = absl::StrSplit(CsvHeader(), ',');
  const std::vector<std::string> row = absl::StrSplit(CsvRow(r), ',');
  ASSERT_EQ(header.size(), row.size());
  // perf_analyzer's names and units (µs) for the columns it has.
  EXPECT_EQ(header[0], "Concurrency");
  EXPECT_EQ(header[1], "Inferences/Second");
  EXPECT_EQ(header[2], "p50 latency");
  EXPECT_EQ(row[0], "4");
  EXPECT_EQ(row[1], "500.000");
  EXPECT_EQ(row[2], "1000");
  EXPECT_EQ(row[8], "tiny");
  EXPECT_EQ(header.back(), "Identity");
  EXPECT_EQ(row.back(), "main");

  LevelResult empty;
  EXPECT_EQ(empty.RequestsPerSecond(), 0);
  EXPECT_EQ(empty.ErrorSummary(), "-");
}

TEST(BenchOptionsTest, ValidationNamesTheField) {
  EXPECT_TRUE(ValidateBenchOptions(BenchOptions()).ok());
  BenchOptions o;
  o.concurrency = {};
  EXPECT_THAT(ValidateBenchOptions(o).message(), HasSubstr("concurrency"));
  o = BenchOptions();
  o.concurrency = {5000};
  EXPECT_THAT(ValidateBenchOptions(o).message(), HasSubstr("[1, 4096]"));
  o = BenchOptions();
  o.shape_classes = {"tiny", "nope"};
  EXPECT_THAT(ValidateBenchOptions(o).message(), HasSubstr("\"nope\""));
  o = BenchOptions();
  o.duration = absl::ZeroDuration();
  EXPECT_THAT(ValidateBenchOptions(o).message(), HasSubstr("duration"));
  o = BenchOptions();
  o.warmup = absl::Seconds(-1);
  EXPECT_THAT(ValidateBenchOptions(o).message(), HasSubstr("warmup"));
  o = BenchOptions();
  o.max_requests = -1;
  EXPECT_THAT(ValidateBenchOptions(o).message(), HasSubstr("max_requests"));
  o = BenchOptions();
  o.second_concurrency = 0;  // unchecked without a second identity
  EXPECT_TRUE(ValidateBenchOptions(o).ok());
  o.second_connection = SparkleClient::Options();
  EXPECT_THAT(ValidateBenchOptions(o).message(),
              HasSubstr("second_concurrency must be in [1, 4096]; was 0"));
  o.second_concurrency = 4096;
  EXPECT_TRUE(ValidateBenchOptions(o).ok());
}

TEST(FairnessResultTest, RatiosAndSummary) {
  FairnessResult f;
  f.alone.shape_class = f.alongside.shape_class = "tiny";
  f.alone.concurrency = f.alongside.concurrency = 1;
  f.alone.ok = 100;
  f.alone.p50_us = 200;
  f.alone.p99_us = 400;
  f.alongside.ok = 50;
  f.alongside.p50_us = 300;
  f.alongside.p99_us = 1000;
  EXPECT_DOUBLE_EQ(f.P50Ratio(), 1.5);
  EXPECT_DOUBLE_EQ(f.P99Ratio(), 2.5);
  EXPECT_EQ(f.Summary(64),
            "fairness tiny conc 64 / second 1: p50 0.200 -> 0.300 ms (x1.50), p99 0.400 -> "
            "1.000 ms (x2.50)");
  f.alongside.errors[absl::StatusCode::kDeadlineExceeded] = 2;
  EXPECT_THAT(f.Summary(64), HasSubstr("; second errors alone -, alongside DEADLINE_EXCEEDED:2"));

  // No OK request on either side: no ratio rather than a division by zero.
  f.alongside.ok = 0;
  EXPECT_EQ(f.P50Ratio(), 0);
  FairnessResult empty;
  EXPECT_EQ(empty.P99Ratio(), 0);
}

}  // namespace
}  // namespace sparkle::client
