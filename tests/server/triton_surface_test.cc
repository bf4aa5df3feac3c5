// The rest of Triton's gRPC surface through the real services in-process (InProcessServer):
// the model-repository RPCs, LogSettings over spdlog's level, TraceSetting, the generic service
// that answers unknown methods, requested-output parameters sparkled cannot honour, and
// ModelStatistics' fail counts. Every refusal is checked for its code and a non-empty message.
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "server/log_settings.h"
#include "spdlog/spdlog.h"
#include "tests/testing/conv_case.h"
#include "tests/testing/in_process_server.h"
#include "tests/testing/start_in_process.h"
#include "tests/testing/wait_for.h"

namespace sparkle {
namespace {

using ::sparkle::testing::ConvCase;
using ::sparkle::testing::ConvShape;
using ::sparkle::testing::InProcessServer;
using ::sparkle::testing::StartServer;
using ::sparkle::testing::PendingInfer;
using ::sparkle::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

constexpr absl::Duration kPatience = absl::Seconds(10);  // bound of every poll below

const ConvCase& Small() {
  static const auto* const kCase = new ConvCase(ConvShape(1, 4, 8, 8, 4, 3, 1, 1, 1, true), 77);
  return *kCase;
}

// Keeps spdlog's global level as the test found it.
class LevelRestorer {
 public:
  LevelRestorer() : level_(spdlog::get_level()) {}
  ~LevelRestorer() { spdlog::set_level(level_); }

 private:
  const spdlog::level::level_enum level_;
};

// A temporary token file: alice (infer) and ops (admin).
class TokenFile {
 public:
  TokenFile() {
    char dir_template[] = "/tmp/sparkle_triton_tokens_XXXXXX";
    EXPECT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = dir_ + "/tokens";
    std::ofstream(path_) << "infer-token-0123456789,alice,infer\n"
                            "admin-token-0123456789,ops,admin\n";
  }
  ~TokenFile() {
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

void WithToken(grpc::ClientContext& ctx, const char* token) {
  ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

inference::ModelStatistics Statistics(const InProcessServer& server) {
  grpc::ClientContext ctx;
  inference::ModelStatisticsRequest request;
  request.set_name("conv2d");
  inference::ModelStatisticsResponse response;
  const grpc::Status s = server.Inference()->ModelStatistics(&ctx, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return response.model_stats_size() == 1 ? response.model_stats(0) : inference::ModelStatistics{};
}

// --- Model repository -------------------------------------------------------------------------

TEST(TritonSurfaceTest, RepositoryIndexListsConv2dAndHonoursTheReadyFilter) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  auto index = [&](bool ready) {
    grpc::ClientContext ctx;
    inference::RepositoryIndexRequest request;
    request.set_ready(ready);
    inference::RepositoryIndexResponse response;
    const grpc::Status s = stub->RepositoryIndex(&ctx, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response;
  };
  for (bool ready : {false, true}) {
    const inference::RepositoryIndexResponse r = index(ready);
    ASSERT_EQ(r.models_size(), 1) << "ready=" << ready;
    EXPECT_EQ(r.models(0).name(), "conv2d");
    EXPECT_EQ(r.models(0).version(), "1");
    EXPECT_EQ(r.models(0).state(), "READY");
    EXPECT_EQ(r.models(0).reason(), "");
  }
  // Draining: the model is no longer ready; the ready filter leaves it out.
  {
    grpc::ClientContext ctx;
    sparkle::v1::DrainRequest request;
    request.set_timeout_seconds(5);
    sparkle::v1::DrainResponse response;
    ASSERT_TRUE(server->Control()->Drain(&ctx, request, &response).ok());
  }
  EXPECT_EQ(index(true).models_size(), 0);
  const inference::RepositoryIndexResponse all = index(false);
  ASSERT_EQ(all.models_size(), 1);
  EXPECT_EQ(all.models(0).state(), "UNAVAILABLE");
  EXPECT_EQ(all.models(0).reason(), "draining");
}

TEST(TritonSurfaceTest, LoadIsANoOpForConv2dAndUnloadIsRefused) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  auto load = [&](const std::string& name, bool with_parameter) {
    grpc::ClientContext ctx;
    inference::RepositoryModelLoadRequest request;
    request.set_model_name(name);
    if (with_parameter) (*request.mutable_parameters())["config"].set_string_param("{}");
    inference::RepositoryModelLoadResponse response;
    return stub->RepositoryModelLoad(&ctx, request, &response);
  };
  auto unload = [&](const std::string& name) {
    grpc::ClientContext ctx;
    inference::RepositoryModelUnloadRequest request;
    request.set_model_name(name);
    inference::RepositoryModelUnloadResponse response;
    return stub->RepositoryModelUnload(&ctx, request, &response);
  };
  grpc::Status s = load("conv2d", false);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = load("resnet50", false);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("unknown model 'resnet50'"));
  s = load("conv2d", true);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("parameter 'config'"));
  s = unload("conv2d");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("the built-in model cannot be unloaded"));
  s = unload("resnet50");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("unknown model 'resnet50'"));
  // Still serving after all of it.
  ModelInferResponse resp;
  ASSERT_TRUE(server->Infer(Small().Request(), &resp).ok());
  EXPECT_EQ(Small().Check(resp), "");
}

// --- LogSettings -------------------------------------------------------------------------------

TEST(LogSettingsTest, SwitchesAndLevelsMapBothWays) {
  using spdlog::level::level_enum;
  for (level_enum level : {spdlog::level::trace, spdlog::level::debug, spdlog::level::info,
                           spdlog::level::warn, spdlog::level::err, spdlog::level::off}) {
    auto back = LevelForSwitches(SwitchesForLevel(level));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, level);
  }
  // critical reads as every switch off, i.e. off.
  EXPECT_EQ(*LevelForSwitches(SwitchesForLevel(spdlog::level::critical)), spdlog::level::off);
  EXPECT_EQ(*LevelForSwitches({true, true, true, 7}), spdlog::level::trace);
  auto conflict = LevelForSwitches({false, true, true, 0});
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(conflict.status().message(), HasSubstr("log_warning cannot be on while log_error"));
  conflict = LevelForSwitches({true, true, false, 1});
  EXPECT_THAT(conflict.status().message(),
              HasSubstr("log_verbose_level cannot be on while log_info"));
}

TEST(TritonSurfaceTest, LogSettingsReadAndChangeSpdlogsLevel) {
  LevelRestorer restore;
  spdlog::set_level(spdlog::level::info);
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  using Request = inference::LogSettingsRequest;
  auto call = [&](const Request& request, inference::LogSettingsResponse* response) {
    grpc::ClientContext ctx;
    return stub->LogSettings(&ctx, request, response);
  };
  inference::LogSettingsResponse read;
  ASSERT_TRUE(call(Request{}, &read).ok());
  auto& keys = read.settings();
  ASSERT_EQ(keys.size(), 6u);
  EXPECT_TRUE(keys.at("log_info").bool_param());
  EXPECT_TRUE(keys.at("log_warning").bool_param());
  EXPECT_TRUE(keys.at("log_error").bool_param());
  EXPECT_EQ(keys.at("log_verbose_level").uint32_param(), 0u);
  EXPECT_EQ(keys.at("log_file").string_param(), "");
  EXPECT_FALSE(keys.at("log_format").string_param().empty());

  // Verbose on: debug; the reply shows the new state.
  Request verbose;
  (*verbose.mutable_settings())["log_verbose_level"].set_uint32_param(1);
  inference::LogSettingsResponse after;
  grpc::Status s = call(verbose, &after);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(spdlog::get_level(), spdlog::level::debug);
  EXPECT_EQ(after.settings().at("log_verbose_level").uint32_param(), 1u);

  // Info off (verbose off with it): warn. And back to info.
  Request quiet;
  (*quiet.mutable_settings())["log_verbose_level"].set_uint32_param(0);
  (*quiet.mutable_settings())["log_info"].set_bool_param(false);
  ASSERT_TRUE(call(quiet, &after).ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::warn);
  EXPECT_FALSE(after.settings().at("log_info").bool_param());
  Request back;
  (*back.mutable_settings())["log_info"].set_bool_param(true);
  ASSERT_TRUE(call(back, &after).ok());
  EXPECT_EQ(spdlog::get_level(), spdlog::level::info);

  // Refusals leave the level alone.
  struct Bad {
    const char* key;
    std::function<void(Request::SettingValue&)> set;
    grpc::StatusCode code;
    const char* message;
  };
  const Bad bad[] = {
      {"log_colour", [](auto& v) { v.set_bool_param(true); }, grpc::StatusCode::INVALID_ARGUMENT,
       "unknown log setting 'log_colour'"},
      {"log_info", [](auto& v) { v.set_string_param("yes"); },
       grpc::StatusCode::INVALID_ARGUMENT, "log_info must be a bool_param"},
      {"log_verbose_level", [](auto& v) { v.set_bool_param(true); },
       grpc::StatusCode::INVALID_ARGUMENT, "must be a uint32_param"},
      {"log_error", [](auto& v) { v.set_bool_param(false); }, grpc::StatusCode::INVALID_ARGUMENT,
       "cannot be on while log_error is off"},
      {"log_file", [](auto& v) { v.set_string_param("/tmp/sparkled.log"); },
       grpc::StatusCode::UNIMPLEMENTED, "log_file cannot be set"},
      {"log_format", [](auto& v) { v.set_string_param("default"); },
       grpc::StatusCode::UNIMPLEMENTED, "log_format cannot be changed"},
      {"log_format", [](auto& v) { v.set_string_param("xml"); },
       grpc::StatusCode::INVALID_ARGUMENT, "log_format must be"},
  };
  for (const Bad& b : bad) {
    Request request;
    (*request.mutable_settings())["log_verbose_level"].set_uint32_param(2);  // would be trace
    b.set((*request.mutable_settings())[b.key]);
    s = call(request, &after);
    EXPECT_EQ(s.error_code(), b.code) << b.key << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(b.message));
    EXPECT_EQ(spdlog::get_level(), spdlog::level::info) << b.key;
  }
  // The current log_file and log_format may be sent back unchanged (a read-modify-write client).
  Request echo;
  (*echo.mutable_settings())["log_file"].set_string_param("");
  (*echo.mutable_settings())["log_format"].set_string_param(keys.at("log_format").string_param());
  s = call(echo, &after);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(spdlog::get_level(), spdlog::level::info);
}

// With tokens: reading the index and the log settings needs any valid token; changing log
// settings, Load and Unload need role admin.
TEST(TritonSurfaceTest, ChangesNeedTheAdminRole) {
  LevelRestorer restore;
  spdlog::set_level(spdlog::level::info);
  TokenFile tokens;
  InProcessServer::Options options;
  options.server.auth_token_file = tokens.path();
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  inference::LogSettingsRequest update;
  (*update.mutable_settings())["log_verbose_level"].set_uint32_param(1);
  {
    grpc::ClientContext ctx;
    inference::RepositoryIndexResponse r;
    EXPECT_EQ(stub->RepositoryIndex(&ctx, {}, &r).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    WithToken(ctx, "infer-token-0123456789");
    inference::RepositoryIndexResponse r;
    EXPECT_TRUE(stub->RepositoryIndex(&ctx, {}, &r).ok());
    EXPECT_EQ(r.models_size(), 1);
  }
  {
    grpc::ClientContext ctx;
    WithToken(ctx, "infer-token-0123456789");
    inference::LogSettingsResponse r;
    EXPECT_TRUE(stub->LogSettings(&ctx, {}, &r).ok());
    EXPECT_EQ(r.settings_size(), 6);
  }
  {
    grpc::ClientContext ctx;
    WithToken(ctx, "infer-token-0123456789");
    inference::LogSettingsResponse r;
    const grpc::Status s = stub->LogSettings(&ctx, update, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("role admin"));
    EXPECT_EQ(spdlog::get_level(), spdlog::level::info);
  }
  for (const char* token : {"infer-token-0123456789", "admin-token-0123456789"}) {
    const bool admin = token[0] == 'a';
    grpc::ClientContext load_ctx, unload_ctx;
    WithToken(load_ctx, token);
    WithToken(unload_ctx, token);
    inference::RepositoryModelLoadRequest load;
    load.set_model_name("conv2d");
    inference::RepositoryModelLoadResponse load_response;
    inference::RepositoryModelUnloadRequest unload;
    unload.set_model_name("conv2d");
    inference::RepositoryModelUnloadResponse unload_response;
    const grpc::Status l = stub->RepositoryModelLoad(&load_ctx, load, &load_response);
    const grpc::Status u = stub->RepositoryModelUnload(&unload_ctx, unload, &unload_response);
    EXPECT_EQ(l.error_code(), admin ? grpc::StatusCode::OK : grpc::StatusCode::PERMISSION_DENIED)
        << l.error_message();
    EXPECT_EQ(u.error_code(), admin ? grpc::StatusCode::FAILED_PRECONDITION
                                    : grpc::StatusCode::PERMISSION_DENIED)
        << u.error_message();
  }
  {
    grpc::ClientContext ctx;
    WithToken(ctx, "admin-token-0123456789");
    inference::LogSettingsResponse r;
    const grpc::Status s = stub->LogSettings(&ctx, update, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(spdlog::get_level(), spdlog::level::debug);
  }
}

// --- Trace and unknown methods -----------------------------------------------------------------

TEST(TritonSurfaceTest, TraceSettingSaysThereIsNoTracing) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  grpc::ClientContext ctx;
  inference::TraceSettingResponse response;
  const grpc::Status s = server->Inference()->TraceSetting(&ctx, {}, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_THAT(s.error_message(), HasSubstr("sparkled has no request tracing"));
}

// A method no service has, called through gRPC's generic stub, gets UNIMPLEMENTED naming it;
// registered methods (inference, Control, health) still reach their services.
TEST(TritonSurfaceTest, UnknownMethodsGetUnimplementedNamingThem) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  grpc::GenericStub stub(server->channel());
  auto call = [&stub](const std::string& method, const std::string& bytes,
                      grpc::ByteBuffer* reply) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kPatience));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    absl::Notification done;
    grpc::Status result;
    stub.UnaryCall(&context, method, grpc::StubOptions(), &request, reply,
                   [&](grpc::Status s) {
                     result = std::move(s);
                     done.Notify();
                   });
    done.WaitForNotification();
    return result;
  };
  for (const std::string method :
       {"/inference.GRPCInferenceService/ModelWarmup", "/inference.GRPCInferenceService/ModelInfr",
        "/no.such.Service/Method"}) {
    grpc::ByteBuffer reply;
    const grpc::Status s = call(method, "", &reply);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << method;
    EXPECT_EQ(s.error_message(), absl::StrCat("sparkled does not implement ", method));
  }
  // Registered methods route as before: a raw ModelInfer through the same generic stub, the
  // typed ServerLive, and gRPC health.
  grpc::ByteBuffer reply;
  const grpc::Status infer = call("/inference.GRPCInferenceService/ModelInfer",
                                  Small().Request().SerializeAsString(), &reply);
  ASSERT_TRUE(infer.ok()) << infer.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  ModelInferResponse response;
  ASSERT_TRUE(response.ParseFromString(bytes));
  EXPECT_EQ(Small().Check(response), "");
  grpc::ClientContext ctx;
  inference::ServerLiveResponse live;
  EXPECT_TRUE(server->Inference()->ServerLive(&ctx, {}, &live).ok());
  EXPECT_TRUE(live.live());
  EXPECT_TRUE(server->Serving().value_or(false));
  EXPECT_TRUE(server->Serving("inference.GRPCInferenceService").value_or(false));
  EXPECT_TRUE(server->Status().ok());
}

// Every RPC of Triton's GRPCInferenceService (common:protobuf/grpc_service.proto) is in the
// proto, and every unary one answers a default request with OK or a non-empty message: none is
// left to gRPC's empty UNIMPLEMENTED (an RPC missing from InferenceService's mixin chain would
// be).
TEST(TritonSurfaceTest, EveryTritonRpcExistsAndNoneAnswersWithAnEmptyMessage) {
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          inference::GRPCInferenceService::service_full_name());
  ASSERT_NE(service, nullptr);
  for (const char* name :
       {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
        "ModelStreamInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex",
        "RepositoryModelLoad", "RepositoryModelUnload", "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister", "TraceSetting",
        "LogSettings"}) {
    EXPECT_NE(service->FindMethodByName(name), nullptr) << name;
  }
  LevelRestorer restore;  // LogSettings with an empty request only reads, but be safe
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  grpc::GenericStub stub(server->channel());
  int called = 0;
  for (int i = 0; i < service->method_count(); ++i) {
    const google::protobuf::MethodDescriptor* method = service->method(i);
    if (method->client_streaming() || method->server_streaming()) continue;
    const std::string path = absl::StrCat("/", service->full_name(), "/", method->name());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kPatience));
    grpc::Slice empty("");  // a default message: zero bytes (a ByteBuffer with no slice is none)
    grpc::ByteBuffer request(&empty, 1), reply;
    absl::Notification done;
    grpc::Status result;
    stub.UnaryCall(&context, path, grpc::StubOptions(), &request, &reply, [&](grpc::Status s) {
      result = std::move(s);
      done.Notify();
    });
    done.WaitForNotification();
    ++called;
    if (result.ok()) continue;
    EXPECT_FALSE(result.error_message().empty()) << path << " code " << result.error_code();
    EXPECT_THAT(result.error_message(), Not(HasSubstr("sparkled does not implement"))) << path;
  }
  EXPECT_GE(called, 19);
}

// --- Requested-output parameters ---------------------------------------------------------------

TEST(TritonSurfaceTest, OutputParametersThatCannotBeHonouredAreRefused) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto with_output_parameter = [](const char* key) {
    ModelInferRequest r = Small().Request();
    auto* out = r.add_outputs();
    out->set_name("output");
    auto& p = (*out->mutable_parameters())[key];
    if (absl::string_view(key) == "shared_memory_region") {
      p.set_string_param("nowhere");
      (*out->mutable_parameters())["shared_memory_byte_size"].set_int64_param(4096);
      (*out->mutable_parameters())["shared_memory_offset"].set_int64_param(0);
    } else {
      p.set_int64_param(3);
    }
    return r;
  };
  ModelInferResponse resp;
  grpc::Status s = server->Infer(with_output_parameter("classification"), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("'classification'"));
  for (const char* key : {"binary_data", "top_k"}) {
    s = server->Infer(with_output_parameter(key), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << key;
    EXPECT_THAT(s.error_message(),
                HasSubstr(absl::StrCat("unknown parameter '", key, "' on requested output")));
  }
  // The shared-memory keys are still taken: the region is looked up (and not found).
  s = server->Infer(with_output_parameter("shared_memory_region"), &resp);
  EXPECT_THAT(s.error_message(), Not(HasSubstr("unknown parameter")));
  EXPECT_THAT(s.error_message(), HasSubstr("nowhere"));
  // The output named with no parameter works.
  ModelInferRequest plain = Small().Request();
  plain.add_outputs()->set_name("output");
  ASSERT_TRUE(server->Infer(plain, &resp).ok());
  EXPECT_EQ(Small().Check(resp), "");
}

// The requested output's `datatype` parameter: FP32 (or the inputs' datatype) is honoured,
// anything else refused naming it.
TEST(TritonSurfaceTest, OutputDatatypeParameterIsHonouredOrRefused) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto with_datatype = [](const char* datatype) {
    ModelInferRequest r = Small().Request();
    auto* out = r.add_outputs();
    out->set_name("output");
    (*out->mutable_parameters())["datatype"].set_string_param(datatype);
    return r;
  };
  ModelInferResponse resp;
  ASSERT_TRUE(server->Infer(with_datatype("FP32"), &resp).ok());
  EXPECT_EQ(resp.outputs(0).datatype(), "FP32");
  EXPECT_EQ(Small().Check(resp), "");
  for (const char* bad : {"FP64", "BF16", "fp32"}) {
    const grpc::Status s = server->Infer(with_datatype(bad), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(),
                HasSubstr(absl::StrCat("requested output 'output' has datatype '", bad, "'")));
  }
}

// ModelMetadata and ModelConfig name the optional `residual` input (the fused epilogue's skip
// connection); the datatype they state stays FP32 (docs/protocol.md).
TEST(TritonSurfaceTest, MetadataAndConfigListTheOptionalResidual) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest request;
    request.set_name("conv2d");
    inference::ModelMetadataResponse response;
    ASSERT_TRUE(stub->ModelMetadata(&ctx, request, &response).ok());
    std::vector<std::string> names;
    for (const auto& t : response.inputs()) {
      names.push_back(t.name());
      EXPECT_EQ(t.datatype(), "FP32") << t.name();
    }
    EXPECT_THAT(names, ::testing::ElementsAre("input", "weight", "bias", "residual"));
    EXPECT_THAT(response.inputs(3).shape(), ::testing::ElementsAre(-1, -1, -1, -1));
  }
  {
    grpc::ClientContext ctx;
    inference::ModelConfigRequest request;
    request.set_name("conv2d");
    inference::ModelConfigResponse response;
    ASSERT_TRUE(stub->ModelConfig(&ctx, request, &response).ok());
    const inference::ModelConfig& c = response.config();
    ASSERT_EQ(c.input_size(), 4);
    EXPECT_EQ(c.input(3).name(), "residual");
    EXPECT_TRUE(c.input(3).optional());
    EXPECT_FALSE(c.input(0).optional());
    EXPECT_EQ(c.input(3).data_type(), inference::TYPE_FP32);
    EXPECT_THAT(c.input(3).dims(), ::testing::ElementsAre(-1, -1, -1, -1));
    EXPECT_EQ(c.parameters().at("datatypes").string_value(), "FP32,BF16,FP16");
    EXPECT_THAT(c.parameters().at("activations").string_value(), HasSubstr("relu6"));
    EXPECT_THAT(c.parameters().at("auto_pad").string_value(), HasSubstr("SAME_UPPER"));
  }
}

// --- ModelStatistics fail counts ---------------------------------------------------------------

// A request that expires in the queue (the engine completes it with DEADLINE_EXCEEDED) counts in
// fail, not in success; the request ahead of it (held by max_queue_delay) succeeds.
TEST(TritonSurfaceTest, AFailureInTheEngineCountsInFail) {
  InProcessServer::Options options;
  options.server.engine.batcher.max_queue_delay = absl::Seconds(1);
  auto server = StartServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  PendingInfer backlog(stub.get(), Small().Request());
  ASSERT_TRUE(WaitFor([&] { return server->Status()->in_flight_jobs() == 1; }, kPatience));
  ModelInferRequest timed = Small().Request();
  (*timed.mutable_parameters())["timeout"].set_int64_param(100'000);
  PendingInfer expiring(stub.get(), timed);
  EXPECT_EQ(expiring.Wait().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(backlog.Wait().ok());
  // One of each: the expired request is a failure, never a success.
  const inference::ModelStatistics stats = Statistics(*server);
  EXPECT_EQ(stats.inference_stats().fail().count(), 1u);
  EXPECT_GE(stats.inference_stats().fail().ns(), 100'000'000u);  // it waited its 100 ms
  EXPECT_EQ(stats.inference_stats().success().count(), 1u);
  EXPECT_EQ(stats.inference_count(), 1u);
}

// A request for conv2d refused before the engine took it (invalid input) counts in fail too;
// one for another model does not (it is not this model's).
TEST(TritonSurfaceTest, ARefusedRequestForTheModelCountsInFail) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  ModelInferResponse resp;
  ModelInferRequest wrong_model = Small().Request();
  wrong_model.set_model_name("resnet");
  EXPECT_EQ(server->Infer(wrong_model, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Statistics(*server).inference_stats().fail().count(), 0u);
  ModelInferRequest invalid = Small().Request();
  invalid.mutable_inputs(0)->set_datatype("FP16");
  EXPECT_EQ(server->Infer(invalid, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  inference::ModelStatistics stats = Statistics(*server);
  EXPECT_EQ(stats.inference_stats().fail().count(), 1u);
  EXPECT_EQ(stats.inference_stats().success().count(), 0u);
  EXPECT_EQ(stats.inference_count(), 0u);
  ASSERT_TRUE(server->Infer(Small().Request(), &resp).ok());
  stats = Statistics(*server);
  EXPECT_EQ(stats.inference_stats().fail().count(), 1u);
  EXPECT_EQ(stats.inference_stats().success().count(), 1u);
}

}  // namespace
}  // namespace sparkle
