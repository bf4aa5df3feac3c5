// sparklectl against two real daemons: a --target list spreads infer requests over both
// (round_robin, checked with each daemon's own counters), per-daemon commands print one entry
// per daemon, `status --json` parses back into GetStatusResponse, drain reports per daemon, and
// the exit codes scripts rely on (0 ok, 1 server error, 2 usage or unreachable).
#include <signal.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/infer_request.h"
#include "client/npy.h"
#include "client/sparkle_client.h"
#include "client/status_commands.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/process_util.h"

namespace sparkle::client {
namespace {

using ::sparkle::testing::CommandLine;
using ::sparkle::testing::CommandResult;
using ::sparkle::testing::DaemonProcess;
using ::sparkle::testing::RunCommand;
using ::testing::HasSubstr;

// Runs sparklectl with `args`; stdout only (stderr goes to the test log).
CommandResult Sparklectl(const std::vector<std::string>& args) {
  return RunCommand(CommandLine(SPARKLECTL_PATH, args));
}

class FleetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      auto d = DaemonProcess::Start(SPARKLED_PATH, {"--threads=1", "--metrics_address="});
      ASSERT_TRUE(d.ok()) << d.status();
      daemons_.push_back(*std::move(d));
    }
    list_ = absl::StrCat(daemons_[0]->address(), ",", daemons_[1]->address());
  }

  std::vector<std::unique_ptr<DaemonProcess>> daemons_;
  std::string list_;
};

TEST_F(FleetTest, AListSpreadsRequestsOverEveryDaemon) {
  SparkleClient::Options options;
  options.target = list_;
  options.timeout = absl::Seconds(30);
  absl::StatusOr<std::unique_ptr<SparkleClient>> client = SparkleClient::Connect(options);
  ASSERT_TRUE(client.ok()) << client.status();
  InferInputs inputs;
  inputs.input = RandomArray({1, 4, 8, 8}, 1);
  inputs.weight = RandomArray({4, 4, 3, 3}, 2);
  absl::StatusOr<inference::ModelInferRequest> request =
      BuildInferRequest(std::move(inputs), InferRequestOptions());
  ASSERT_TRUE(request.ok()) << request.status();
  constexpr int kRequests = 40;
  for (int i = 0; i < kRequests; ++i) {
    absl::StatusOr<inference::ModelInferResponse> response = (*client)->ModelInfer(*request);
    ASSERT_TRUE(response.ok()) << response.status();
  }

  absl::StatusOr<std::vector<DaemonStatus>> statuses = QueryEveryDaemon(options);
  ASSERT_TRUE(statuses.ok()) << statuses.status();
  ASSERT_EQ(statuses->size(), 2u);
  uint64_t total = 0;
  for (const DaemonStatus& d : *statuses) {
    ASSERT_TRUE(d.status.ok()) << d.target << ": " << d.status.status();
    // With pick_first (gRPC's default) one daemon would get all of them.
    EXPECT_GT(d.status->jobs_accepted(), 0u) << d.target;
    total += d.status->jobs_accepted();
  }
  EXPECT_EQ(total, static_cast<uint64_t>(kRequests));
}

TEST_F(FleetTest, StatusJsonParsesBackIntoTheProto) {
  CommandResult one =
      Sparklectl({absl::StrCat("--target=", daemons_[0]->address()), "status", "--json"});
  ASSERT_EQ(one.exit_code, 0) << one.output;
  sparkle::v1::GetStatusResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(one.output, &parsed).ok()) << one.output;
  EXPECT_THAT(parsed.listen_address(), ::testing::StartsWith("127.0.0.1:"));
  EXPECT_FALSE(parsed.version().empty());
  EXPECT_TRUE(parsed.ready());
  ASSERT_GE(parsed.devices_size(), 1);
  EXPECT_EQ(parsed.devices(0).name(), "cpu");

  // A list: one array element per daemon, each {"target", "status"}.
  CommandResult fleet = Sparklectl({absl::StrCat("--target=", list_), "status", "--json"});
  ASSERT_EQ(fleet.exit_code, 0) << fleet.output;
  google::protobuf::Value value;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(fleet.output, &value).ok())
      << fleet.output;
  ASSERT_EQ(value.list_value().values_size(), 2) << fleet.output;
  for (int i = 0; i < 2; ++i) {
    const auto& fields = value.list_value().values(i).struct_value().fields();
    EXPECT_EQ(fields.at("target").string_value(), daemons_[i]->address());
    EXPECT_TRUE(fields.at("status").struct_value().fields().at("ready").bool_value());
  }
}

TEST_F(FleetTest, PerDaemonTablesAndExitCodes) {
  CommandResult devices = Sparklectl({absl::StrCat("--target=", list_), "devices"});
  EXPECT_EQ(devices.exit_code, 0);
  EXPECT_THAT(devices.output, HasSubstr(daemons_[0]->address()));
  EXPECT_THAT(devices.output, HasSubstr(daemons_[1]->address()));

  // One daemon of three unreachable: the others still print, exit 2 (nothing served by it).
  CommandResult partial =
      Sparklectl({absl::StrCat("--target=", list_, ",127.0.0.1:1"), "queue"});
  EXPECT_EQ(partial.exit_code, 2);
  EXPECT_THAT(partial.output, HasSubstr(daemons_[1]->address()));
  EXPECT_THAT(partial.output, HasSubstr("UNAVAILABLE"));

  // Usage errors: exit 2 before any connection.
  EXPECT_EQ(Sparklectl({"--target=1.2.3.4:1,name:2", "status"}).exit_code, 2);
  EXPECT_EQ(Sparklectl({"--target=127.0.0.1:1", "devices", "--drain_timeout=1s"}).exit_code, 2);

  // drain: both drained (exit 0); afterwards infer is refused by the server (exit 1).
  CommandResult drain =
      Sparklectl({absl::StrCat("--target=", list_), "drain", "--drain_timeout=10s", "--json"});
  EXPECT_EQ(drain.exit_code, 0) << drain.output;
  google::protobuf::Value value;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(drain.output, &value).ok())
      << drain.output;
  ASSERT_EQ(value.list_value().values_size(), 2);
  for (const auto& entry : value.list_value().values()) {
    EXPECT_TRUE(entry.struct_value().fields().at("drain").struct_value().fields().at("drained")
                    .bool_value());
  }
  CommandResult refused = Sparklectl({absl::StrCat("--target=", daemons_[0]->address()), "infer",
                                      "--input_shape=1x4x8x8", "--weight_shape=4x4x3x3"});
  EXPECT_EQ(refused.exit_code, 1);
  for (auto& d : daemons_) EXPECT_EQ(d->Stop(SIGTERM).value_or(-1), 0);
}

}  // namespace
}  // namespace sparkle::client
