// System shared memory end to end, through the real services in-process
// (tests/testing/in_process_server.h): the Register/Status/Unregister RPCs, ModelInfer with its
// input and output in a region (docs/protocol.md "System shared memory"), the lifetime of a
// region unregistered while a job uses it, owner scoping by token, and `sparklectl infer --shm`
// through the commands library against the server's unix socket.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "client/commands.h"
#include "client/npy.h"
#include "client/shared_memory_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/shm_object.h"
#include "tests/testing/conv_case.h"
#include "tests/testing/in_process_server.h"
#include "tests/testing/start_in_process.h"
#include "tests/testing/wait_for.h"

namespace sparkle {
namespace {

using ::sparkle::testing::ConvCase;
using ::sparkle::testing::ConvShape;
using ::sparkle::testing::InProcessServer;
using ::sparkle::testing::PendingInfer;
using ::sparkle::testing::WaitFor;
using ::testing::HasSubstr;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

constexpr absl::Duration kPatience = absl::Seconds(10);

using ::sparkle::testing::MappingsOf;
using ::sparkle::testing::ShmObject;

// gRPC's in-process transport reports the peer as "unknown", which the locality check of
// --shared_memory=local refuses (it cannot tell where such a caller is): the tests that call
// through it use `any`. The sparklectl test goes through the server's unix socket with `local`.
InProcessServer::Options InProc() {
  InProcessServer::Options options;
  options.server.shared_memory = "any";
  return options;
}

std::unique_ptr<InProcessServer> StartShmServer(InProcessServer::Options options = InProc()) {
  return ::sparkle::testing::StartServer(std::move(options));
}

const ConvCase& Case() {
  static const auto* const kCase =
      new ConvCase(ConvShape(2, 8, 12, 12, 16, 3, 1, 1, 1, /*bias=*/true), 5);
  return *kCase;
}

void SetParam(google::protobuf::Map<std::string, inference::InferParameter>* params,
              const char* key, int64_t v) {
  (*params)[key].set_int64_param(v);
}

// Case().Request() with every input moved into `object` from `base` on (64-byte aligned, in
// order) and the output requested right after them. Returns the output's offset.
size_t PlaceInRegion(ModelInferRequest* request, const std::string& region, uint8_t* base,
                     uint64_t output_bytes) {
  size_t offset = 0;
  for (int i = 0; i < request->inputs_size(); ++i) {
    const std::string& raw = request->raw_input_contents(i);
    std::memcpy(base + offset, raw.data(), raw.size());
    auto* params = request->mutable_inputs(i)->mutable_parameters();
    (*params)["shared_memory_region"].set_string_param(region);
    SetParam(params, "shared_memory_byte_size", static_cast<int64_t>(raw.size()));
    if (offset != 0) SetParam(params, "shared_memory_offset", static_cast<int64_t>(offset));
    offset = (offset + raw.size() + 63) / 64 * 64;
  }
  request->clear_raw_input_contents();
  auto* out = request->add_outputs();
  out->set_name("output");
  (*out->mutable_parameters())["shared_memory_region"].set_string_param(region);
  // uint64 on purpose: Triton clients send either.
  (*out->mutable_parameters())["shared_memory_byte_size"].set_uint64_param(output_bytes);
  (*out->mutable_parameters())["shared_memory_offset"].set_uint64_param(offset);
  return offset;
}

std::vector<float> FloatsAt(const uint8_t* p, size_t n) {
  std::vector<float> v(n);
  std::memcpy(v.data(), p, n * sizeof(float));
  return v;
}

::testing::AssertionResult IsOk(const grpc::Status& s) {
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "code " << s.error_code() << ": " << s.error_message();
}

grpc::Status Register(inference::GRPCInferenceService::Stub* stub, const std::string& name,
                      const std::string& key, uint64_t offset, uint64_t bytes,
                      const char* token = nullptr) {
  grpc::ClientContext ctx;
  if (token != nullptr) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  inference::SystemSharedMemoryRegisterRequest request;
  request.set_name(name);
  request.set_key(key);
  request.set_offset(offset);
  request.set_byte_size(bytes);
  inference::SystemSharedMemoryRegisterResponse response;
  return stub->SystemSharedMemoryRegister(&ctx, request, &response);
}

grpc::Status Unregister(inference::GRPCInferenceService::Stub* stub, const std::string& name) {
  grpc::ClientContext ctx;
  inference::SystemSharedMemoryUnregisterRequest request;
  request.set_name(name);
  inference::SystemSharedMemoryUnregisterResponse response;
  return stub->SystemSharedMemoryUnregister(&ctx, request, &response);
}

absl::StatusOr<inference::SystemSharedMemoryStatusResponse> RegionStatus(
    inference::GRPCInferenceService::Stub* stub, const std::string& name) {
  grpc::ClientContext ctx;
  inference::SystemSharedMemoryStatusRequest request;
  request.set_name(name);
  inference::SystemSharedMemoryStatusResponse response;
  const grpc::Status s = stub->SystemSharedMemoryStatus(&ctx, request, &response);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return response;
}

TEST(SharedMemoryRpcTest, RegisterStatusUnregisterAndTheirErrors) {
  auto server = StartShmServer();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  ShmObject object(4096);
  ASSERT_TRUE(IsOk(Register(stub.get(), "r", object.key(), 64, 1024)));
  auto status = RegionStatus(stub.get(), "");
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_EQ(status->regions().size(), 1u);
  EXPECT_EQ(status->regions().at("r").key(), object.key());
  EXPECT_EQ(status->regions().at("r").offset(), 64u);
  EXPECT_EQ(status->regions().at("r").byte_size(), 1024u);

  grpc::Status s = Register(stub.get(), "r", object.key(), 0, 16);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(s.error_message(), "shared memory region 'r' is already registered");
  s = Register(stub.get(), "x", "../../etc/passwd", 0, 16);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("invalid shared memory key"));
  s = Register(stub.get(), "x", "/sparkle-shm-e2e-missing", 0, 16);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("unable to open shared memory object"));
  s = Register(stub.get(), "x", object.key(), 4000, 97);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("exceeds the size"));
  EXPECT_EQ(RegionStatus(stub.get(), "x").status().code(), absl::StatusCode::kNotFound);

  EXPECT_TRUE(Unregister(stub.get(), "never-registered").ok());
  EXPECT_TRUE(Unregister(stub.get(), "r").ok());
  EXPECT_TRUE(RegionStatus(stub.get(), "")->regions().empty());

  {
    grpc::ClientContext ctx;
    inference::CudaSharedMemoryRegisterRequest request;
    inference::CudaSharedMemoryRegisterResponse response;
    s = stub->CudaSharedMemoryRegister(&ctx, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED);
    EXPECT_THAT(s.error_message(), HasSubstr("not supported yet"));
  }
  {
    grpc::ClientContext ctx;
    inference::ServerMetadataResponse metadata;
    ASSERT_TRUE(stub->ServerMetadata(&ctx, {}, &metadata).ok());
    EXPECT_THAT(metadata.extensions(), ::testing::Contains("system_shared_memory"));
  }
}

TEST(SharedMemoryRpcTest, OffServerSaysSoAndDoesNotAdvertiseIt) {
  InProcessServer::Options options;
  options.server.shared_memory = "off";
  auto server = StartShmServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  ShmObject object(64);
  const grpc::Status s = Register(stub.get(), "r", object.key(), 0, 64);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("--shared_memory"));
  grpc::ClientContext ctx;
  inference::ServerMetadataResponse metadata;
  ASSERT_TRUE(stub->ServerMetadata(&ctx, {}, &metadata).ok());
  EXPECT_THAT(metadata.extensions(), ::testing::Not(::testing::Contains("system_shared_memory")));
}

TEST(SharedMemoryRpcTest, RegionsAreScopedToTheToken) {
  char dir_template[] = "/tmp/sparkle_shm_tokens_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string tokens = absl::StrCat(dir_template, "/tokens");
  std::ofstream(tokens) << "alice-token-0123456789,alice,infer\n"
                           "bob-token-0123456789,bob,infer\n";
  InProcessServer::Options options = InProc();
  options.server.auth_token_file = tokens;
  auto server = StartShmServer(std::move(options));
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  ShmObject object(1 << 20);
  EXPECT_EQ(Register(stub.get(), "r", object.key(), 0, 1 << 20).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(IsOk(Register(stub.get(), "r", object.key(), 0, 1 << 20, "alice-token-0123456789")));
  // bob may use the same name: his own namespace.
  ASSERT_TRUE(IsOk(Register(stub.get(), "r", object.key(), 0, 64, "bob-token-0123456789")));
  // bob's request naming "r" gets his 64-byte region, too small: alice's is invisible to him.
  const ConvCase& c = Case();
  ModelInferRequest request = c.Request();
  PlaceInRegion(&request, "r", object.data(), c.expected.size() * sizeof(float));
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer bob-token-0123456789");
  ModelInferResponse response;
  const grpc::Status s = stub->ModelInfer(&ctx, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("'r'"));
  unlink(tokens.c_str());
  rmdir(dir_template);
}

// Input and output through one region: the output equals the oracle's, and the response carries
// no tensor bytes.
TEST(SharedMemoryInferTest, InputAndOutputThroughARegion) {
  auto server = StartShmServer();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  ShmObject object(1 << 20);
  ASSERT_TRUE(IsOk(Register(stub.get(), "io", object.key(), 0, 1 << 20)));
  const ConvCase& c = Case();
  ModelInferRequest request = c.Request();
  const size_t out = PlaceInRegion(&request, "io", object.data(), c.expected.size() * 4);
  ModelInferResponse response;
  const grpc::Status s = server->Infer(request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.raw_output_contents_size(), 0);
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "output");
  EXPECT_EQ(response.outputs(0).datatype(), "FP32");
  EXPECT_THAT(response.outputs(0).shape(), ::testing::ElementsAre(2, 16, 12, 12));
  ModelInferResponse as_wire;
  const std::vector<float> got = FloatsAt(object.data() + out, c.expected.size());
  as_wire.add_raw_output_contents()->assign(reinterpret_cast<const char*>(got.data()),
                                            got.size() * 4);
  EXPECT_EQ(c.Check(as_wire), "");
}

// A region that starts inside the object (offset at registration, not page-aligned) and an
// input at an offset inside the region.
TEST(SharedMemoryInferTest, RegisteredOffsetAndTensorOffsetAdd) {
  auto server = StartShmServer();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  ShmObject object(1 << 20);
  constexpr size_t kRegionOffset = 4160;  // 4096 + 64
  ASSERT_TRUE(IsOk(Register(stub.get(), "r", object.key(), kRegionOffset, (1 << 20) - kRegionOffset)));
  const ConvCase& c = Case();
  ModelInferRequest request = c.Request();
  const size_t out =
      PlaceInRegion(&request, "r", object.data() + kRegionOffset, c.expected.size() * 4);
  ModelInferResponse response;
  const grpc::Status s = server->Infer(request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::vector<float> got = FloatsAt(object.data() + kRegionOffset + out, c.expected.size());
  ModelInferResponse as_wire;
  as_wire.add_raw_output_contents()->assign(reinterpret_cast<const char*>(got.data()),
                                            got.size() * 4);
  EXPECT_EQ(c.Check(as_wire), "");
}

TEST(SharedMemoryInferTest, BadRegionReferencesAreRefusedWithTheirCode) {
  auto server = StartShmServer();
  ASSERT_NE(server, nullptr);
  auto stub = server->Inference();
  ShmObject object(1 << 20);
  ASSERT_TRUE(IsOk(Register(stub.get(), "io", object.key(), 0, 1 << 20)));
  const ConvCase& c = Case();
  auto request_with = [&](const std::function<void(ModelInferRequest&)>& mutate) {
    ModelInferRequest r = c.Request();
    PlaceInRegion(&r, "io", object.data(), c.expected.size() * 4);
    mutate(r);
    ModelInferResponse response;
    return server->Infer(r, &response);
  };
  // An input offset that puts it past the region's end.
  grpc::Status s = request_with([](ModelInferRequest& r) {
    SetParam(r.mutable_inputs(0)->mutable_parameters(), "shared_memory_offset", (1 << 20) - 8);
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("'io'"));
  // An offset so large that offset + size wraps around.
  s = request_with([](ModelInferRequest& r) {
    (*r.mutable_outputs(0)->mutable_parameters())["shared_memory_offset"].set_uint64_param(
        ~uint64_t{0} - 3);
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  // An unknown region.
  s = request_with([](ModelInferRequest& r) {
    (*r.mutable_inputs(1)->mutable_parameters())["shared_memory_region"].set_string_param("nope");
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("'nope'"));
  // The next good request is served.
  s = request_with([](ModelInferRequest&) {});
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// Unregistering a region while a job holds it keeps the mapping until the job is done: the job
// still reads its input and writes its output there.
TEST(SharedMemoryInferTest, UnregisterWhileAJobRunsKeepsTheMappingUntilTheReply) {
  InProcessServer::Options options = InProc();
  options.fake_gpus = 1;
  options.server.engine.device_policy = DeviceRequest::AnyGpu();
  auto server = StartShmServer(std::move(options));
  ASSERT_NE(server, nullptr);
  server->gpu(0).Pause();
  auto stub = server->Inference();
  ShmObject object(1 << 20);
  ASSERT_TRUE(IsOk(Register(stub.get(), "held", object.key(), 0, 1 << 20)));
  EXPECT_EQ(MappingsOf(object.key()), 2);  // the test's and the server's
  const ConvCase& c = Case();
  ModelInferRequest request = c.Request();
  const size_t out = PlaceInRegion(&request, "held", object.data(), c.expected.size() * 4);
  PendingInfer call(stub.get(), request);
  ASSERT_TRUE(WaitFor([&] { return server->Status()->in_flight_jobs() == 1; }, kPatience));
  ASSERT_TRUE(Unregister(stub.get(), "held").ok());
  EXPECT_TRUE(RegionStatus(stub.get(), "")->regions().empty());
  EXPECT_EQ(MappingsOf(object.key()), 2);  // still mapped for the job
  server->gpu(0).Resume();
  ASSERT_TRUE(call.Wait().ok()) << call.Wait().error_message();
  EXPECT_EQ(call.response().raw_output_contents_size(), 0);
  const std::vector<float> got = FloatsAt(object.data() + out, c.expected.size());
  ModelInferResponse as_wire;
  as_wire.add_raw_output_contents()->assign(reinterpret_cast<const char*>(got.data()),
                                            got.size() * 4);
  EXPECT_EQ(c.Check(as_wire), "");
  EXPECT_TRUE(WaitFor([&] { return MappingsOf(object.key()) == 1; }, kPatience));
}

// `sparklectl infer --shm` prints the same and writes the same output as without it.
TEST(SharedMemoryInferTest, SparklectlInferShmMatchesTheWirePath) {
  auto server = StartShmServer(InProcessServer::Options{});  // --shared_memory=local
  ASSERT_NE(server, nullptr);
  char dir_template[] = "/tmp/sparkle_shm_cli_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  client::SparkleClient::Options connection;
  connection.target = server->server().address();
  std::string printed[2];
  for (int shm = 0; shm < 2; ++shm) {
    client::InferCommandOptions options;
    options.input_shape = {1, 8, 16, 16};
    options.weight_shape = {16, 8, 3, 3};
    options.bias_shape = {16};
    options.request.geometry.pad_h = options.request.geometry.pad_w = 1;
    options.request.geometry.stride_h = 2;
    options.output_path = absl::StrCat(dir, "/out", shm, ".npy");
    options.shared_memory = shm == 1;
    std::ostringstream out;
    const absl::Status s = client::RunInfer(connection, options, out);
    ASSERT_TRUE(s.ok()) << s;
    printed[shm] = out.str();
  }
  // The lines other than the round-trip time are equal.
  auto without_time = [](const std::string& text) {
    std::string kept;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (!absl::StartsWith(line, "time")) absl::StrAppend(&kept, line, "\n");
    }
    return kept;
  };
  EXPECT_EQ(without_time(printed[0]),
            absl::StrReplaceAll(without_time(printed[1]), {{"out1.npy", "out0.npy"}}));
  EXPECT_THAT(printed[1], HasSubstr("1x16x8x16"));
  auto wire = client::ReadNpyFile(absl::StrCat(dir, "/out0.npy"));
  auto shm = client::ReadNpyFile(absl::StrCat(dir, "/out1.npy"));
  ASSERT_TRUE(wire.ok() && shm.ok());
  EXPECT_EQ(wire->shape, shm->shape);
  EXPECT_EQ(wire->data, shm->data);
  // The client unregistered its region (asked as the same caller: a unix-socket peer) and
  // unlinked its object.
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(server->server().address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  inference::SystemSharedMemoryStatusResponse status;
  ASSERT_TRUE(stub->SystemSharedMemoryStatus(&ctx, {}, &status).ok());
  EXPECT_TRUE(status.regions().empty());
  struct stat st;
  EXPECT_NE(stat(absl::StrCat("/dev/shm/sparklectl.", getpid(), ".0").c_str(), &st), 0);
  unlink(absl::StrCat(dir, "/out0.npy").c_str());
  unlink(absl::StrCat(dir, "/out1.npy").c_str());
  rmdir(dir.c_str());
}

// The client side (client/shared_memory_client.h) against the server's unix socket: placement,
// the checks on the response, and cleanup.
TEST(ClientSharedMemoryTest, PlacesTensorsChecksTheResponseAndCleansUp) {
  auto server = StartShmServer(InProcessServer::Options{});
  ASSERT_NE(server, nullptr);
  client::SparkleClient::Options connection;
  connection.target = server->server().address();
  auto sc = client::SparkleClient::Connect(connection);
  ASSERT_TRUE(sc.ok()) << sc.status();
  const ConvCase& c = Case();

  ModelInferRequest bad = c.Request();
  bad.mutable_raw_input_contents()->RemoveLast();
  EXPECT_EQ(client::MoveTensorsToSharedMemory(**sc, "x", 64, &bad).status().code(),
            absl::StatusCode::kInvalidArgument);

  ModelInferRequest request = c.Request();
  auto placed = client::MoveTensorsToSharedMemory(**sc, "placed", c.expected.size() * 4,
                                                  &request);
  ASSERT_TRUE(placed.ok()) << placed.status();
  const std::string key = placed->region->key();
  EXPECT_EQ(request.raw_input_contents_size(), 0);
  EXPECT_EQ(placed->output_offset % 64, 0u);
  for (const auto& t : request.inputs()) {
    EXPECT_EQ(t.parameters().at("shared_memory_region").string_param(), "placed");
  }
  // Inputs land at 64-byte aligned offsets, in order: "weight" follows "input".
  const int64_t input_bytes = static_cast<int64_t>(c.input.size() * 4);
  EXPECT_EQ(request.inputs(1).parameters().at("shared_memory_offset").int64_param(),
            (input_bytes + 63) / 64 * 64);
  EXPECT_EQ(std::memcmp(placed->region->data(), c.input.data(), input_bytes), 0);

  // Through the same connection (the region's owner is the unix-socket caller).
  auto answered = (*sc)->ModelInfer(request);
  ASSERT_TRUE(answered.ok()) << answered.status();
  ModelInferResponse response = *answered;
  ModelInferResponse with_raw = response;
  with_raw.add_raw_output_contents("x");
  EXPECT_EQ(client::ReadSharedMemoryOutput(*placed, &with_raw).code(),
            absl::StatusCode::kInvalidArgument);
  ModelInferResponse too_big = response;
  too_big.mutable_outputs(0)->set_shape(0, 1000);
  EXPECT_EQ(client::ReadSharedMemoryOutput(*placed, &too_big).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(client::ReadSharedMemoryOutput(*placed, &response).ok());
  EXPECT_EQ(c.Check(response), "");

  // Destruction unregisters the region and unlinks the object.
  auto stub = inference::GRPCInferenceService::NewStub((*sc)->channels()[0]);
  auto regions = [&] {
    grpc::ClientContext ctx;
    inference::SystemSharedMemoryStatusResponse status;
    EXPECT_TRUE(stub->SystemSharedMemoryStatus(&ctx, {}, &status).ok());
    return status.regions().size();
  };
  EXPECT_EQ(regions(), 1u);
  placed->region.reset();
  EXPECT_EQ(regions(), 0u);
  struct stat st;
  EXPECT_NE(stat(absl::StrCat("/dev/shm", key).c_str(), &st), 0);
}

}  // namespace
}  // namespace sparkle
