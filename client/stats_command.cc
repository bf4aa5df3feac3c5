#include "client/stats_command.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/json_output.h"
#include "client/table.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_predict_v2.grpc.pb.h"

namespace sparkle::client {
namespace {

// Mean of a duration statistic in human units ("-" when nothing was counted).
std::string Mean(const inference::StatisticDuration& d) {
  if (d.count() == 0) return "-";
  const double us = static_cast<double>(d.ns()) / static_cast<double>(d.count()) / 1e3;
  if (us < 1000) return absl::StrFormat("%.1fus", us);
  if (us < 1e6) return absl::StrFormat("%.2fms", us / 1e3);
  return absl::StrFormat("%.2fs", us / 1e6);
}

std::string Total(const inference::StatisticDuration& d) {
  return absl::StrFormat("%.3fs", static_cast<double>(d.ns()) / 1e9);
}

}  // namespace

void PrintStats(const inference::ModelStatisticsResponse& response, std::ostream& out) {
  for (const inference::ModelStatistics& m : response.model_stats()) {
    const inference::InferStatistics& s = m.inference_stats();
    out << "model " << m.name() << " version " << m.version() << ": " << s.success().count()
        << " ok (" << m.inference_count() << " samples), " << s.fail().count() << " failed, "
        << m.execution_count() << " executions";
    if (m.execution_count() > 0) {
      out << absl::StrFormat(" (mean batch %.2f)", static_cast<double>(m.inference_count()) /
                                                       static_cast<double>(m.execution_count()));
    }
    out << "\n";
    if (m.last_inference() > 0) {
      out << "last request "
          << absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                              absl::FromUnixMillis(static_cast<int64_t>(m.last_inference())),
                              absl::UTCTimeZone())
          << "\n";
    }
    out << "\n";
    TextTable stages({"STAGE", "COUNT", "MEAN", "TOTAL"});
    const std::pair<const char*, const inference::StatisticDuration*> rows[] = {
        {"success (end to end)", &s.success()},
        {"fail (end to end)", &s.fail()},
        {"queue", &s.queue()},
        {"compute_input", &s.compute_input()},
        {"compute_infer", &s.compute_infer()},
        {"compute_output", &s.compute_output()}};
    for (const auto& [name, d] : rows) {
      stages.AddRow({name, absl::StrCat(d->count()), Mean(*d), Total(*d)});
    }
    stages.Print(out);
    if (m.batch_stats_size() > 0) {
      out << "\n";
      TextTable batches({"BATCH SIZE", "EXECUTIONS", "INPUT", "INFER", "OUTPUT"});
      for (const inference::InferBatchStatistics& b : m.batch_stats()) {
        batches.AddRow({absl::StrCat(b.batch_size()), absl::StrCat(b.compute_infer().count()),
                        Mean(b.compute_input()), Mean(b.compute_infer()),
                        Mean(b.compute_output())});
      }
      batches.Print(out);
    }
  }
}

absl::Status RunStats(const SparkleClient::Options& connection, bool json, std::ostream& out) {
  SPARKLE_ASSIGN_OR_RETURN(std::unique_ptr<SparkleClient> client,
                           SparkleClient::Connect(connection));
  auto stub = inference::GRPCInferenceService::NewStub(client->channels().front());
  grpc::ClientContext context;
  client->PrepareContext(&context);  // deadline and bearer token
  inference::ModelStatisticsRequest request;
  request.set_name("conv2d");
  inference::ModelStatisticsResponse response;
  const grpc::Status status = stub->ModelStatistics(&context, request, &response);
  if (!status.ok()) return client->CallStatus(status);
  if (json) return PrintJson(response, out);
  PrintStats(response, out);
  return absl::OkStatus();
}

}  // namespace sparkle::client
