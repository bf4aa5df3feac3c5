// sparklectl stats: the table printed from a known ModelStatisticsResponse.
#include "client/stats_command.h"

#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle::client {
namespace {

using ::testing::HasSubstr;

void Set(inference::StatisticDuration* d, uint64_t count, uint64_t ns) {
  d->set_count(count);
  d->set_ns(ns);
}

TEST(StatsCommandTest, PrintsCountsMeansAndBatchSizes) {
  inference::ModelStatisticsResponse response;
  inference::ModelStatistics* m = response.add_model_stats();
  m->set_name("conv2d");
  m->set_version("1");
  m->set_inference_count(12);
  m->set_execution_count(4);
  m->set_last_inference(1700000000123);
  inference::InferStatistics* s = m->mutable_inference_stats();
  Set(s->mutable_success(), 10, 10 * 250000);         // mean 250 us
  Set(s->mutable_fail(), 2, 2 * 3000000000ull);       // mean 3 s
  Set(s->mutable_queue(), 10, 10 * 1500);             // mean 1.5 us
  Set(s->mutable_compute_infer(), 10, 10 * 2500000);  // mean 2.5 ms
  inference::InferBatchStatistics* b = m->add_batch_stats();
  b->set_batch_size(3);
  Set(b->mutable_compute_infer(), 4, 4 * 7000);

  std::ostringstream out;
  PrintStats(response, out);
  const std::string text = out.str();
  EXPECT_THAT(text, HasSubstr("model conv2d version 1: 10 ok (12 samples), 2 failed, "
                              "4 executions (mean batch 3.00)"));
  EXPECT_THAT(text, HasSubstr("last request 2023-11-14T22:13:20.123Z"));
  EXPECT_THAT(text, HasSubstr("success (end to end)  10     250.0us  0.003s"));
  EXPECT_THAT(text, HasSubstr("fail (end to end)     2      3.00s    6.000s"));
  EXPECT_THAT(text, HasSubstr("queue                 10     1.5us"));
  EXPECT_THAT(text, HasSubstr("compute_infer         10     2.50ms"));
  EXPECT_THAT(text, HasSubstr("compute_output        0      -"));
  EXPECT_THAT(text, HasSubstr("BATCH SIZE  EXECUTIONS  INPUT  INFER  OUTPUT"));
  EXPECT_THAT(text, HasSubstr("3           4           -      7.0us  -"));
}

TEST(StatsCommandTest, NoBatchTableBeforeAnyExecution) {
  inference::ModelStatisticsResponse response;
  inference::ModelStatistics* m = response.add_model_stats();
  m->set_name("conv2d");
  m->set_version("1");
  std::ostringstream out;
  PrintStats(response, out);
  EXPECT_THAT(out.str(), HasSubstr("0 ok (0 samples), 0 failed, 0 executions\n"));
  EXPECT_THAT(out.str(), ::testing::Not(HasSubstr("BATCH SIZE")));
  EXPECT_THAT(out.str(), ::testing::Not(HasSubstr("last request")));
}

}  // namespace
}  // namespace sparkle::client
