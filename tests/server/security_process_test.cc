// Transport security, bearer tokens with roles and admin isolation through the real sparkled
// binary over loopback (docs/operations.md, Security). Certificates are made by the test with the
// `openssl` CLI in a temporary directory: CA "one" signs the server and a client; CA "two" signs
// a client the daemon must refuse.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/cpu/conv2d_ref.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "sparkle/v1/control.grpc.pb.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/grpc_test_util.h"
#include "tests/testing/infer_check.h"
#include "tests/testing/process_util.h"
#include "tests/testing/shape_table.h"
#include "tests/testing/wait_for.h"

namespace sparkle {
namespace {

using inference::GRPCInferenceService;
using ::sparkle::testing::DaemonProcess;
using ::sparkle::testing::FreeLoopbackPort;
using ::sparkle::testing::HealthCheck;
using ::sparkle::testing::QuietShell;
using ::sparkle::testing::ReadFile;
using ::sparkle::testing::Shell;
using ::sparkle::testing::WaitFor;
using sparkle::v1::Control;
using ::testing::HasSubstr;

constexpr char kInferToken[] = "infer-token-4c1d9f0a";
constexpr char kAdminToken[] = "admin-token-77e2b5c3";

// Replaces a file the daemon watches, all at once.
void WriteAtomically(const std::string& path, const std::string& contents) {
  const absl::Status written = ::sparkle::testing::WriteFileAtomically(path, contents);
  ASSERT_TRUE(written.ok()) << written;
}

class SecurityProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (QuietShell("command -v openssl") != 0)
      GTEST_SKIP() << "openssl CLI missing (scripts/setup.sh)";
    char dir[] = "/tmp/sparkle_sec_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    // The daemons' private copies of the TLS files go here too (a SIGKILLed daemon leaves them).
    setenv("TMPDIR", dir, 1);
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::ofstream(dir_ + "/san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    for (const char* ca : {"ca1", "ca2"}) {
      ASSERT_EQ(QuietShell(absl::StrCat("cd ", dir_, " && openssl req -x509 ", ec, " -keyout ", ca,
                                        ".key -out ", ca, ".crt -days 2 -subj /CN=test-", ca)),
                0);
    }
    ASSERT_EQ(
        QuietShell(absl::StrCat("cd ", dir_, " && openssl req ", ec,
                                " -keyout server.key -out server.csr -subj /CN=sparkled-one")),
        0);
    SignServer("sparkled-one", "server.crt");
    for (auto [name, ca] : {std::pair{"client1", "ca1"}, std::pair{"client2", "ca2"}}) {
      ASSERT_EQ(QuietShell(absl::StrCat(
                    "cd ", dir_, " && openssl req ", ec, " -keyout ", name, ".key -out ", name,
                    ".csr -subj /CN=", name, " && openssl x509 -req -in ", name, ".csr -CA ", ca,
                    ".crt -CAkey ", ca, ".key -CAcreateserial -days 2 -out ", name, ".crt")),
                0);
    }
    WriteAtomically(dir_ + "/tokens.csv",
                    absl::StrCat("# test tokens\n", kInferToken, ",alice,infer\n", kAdminToken,
                                 ",root,admin\n"));
  }
  void TearDown() override {
    if (!dir_.empty()) Shell("rm -rf " + dir_);
  }

  // A certificate for the server key with common name `cn`, written to `out` (atomically).
  void SignServer(const std::string& cn, const std::string& out) {
    ASSERT_EQ(
        QuietShell(absl::StrCat("cd ", dir_, " && openssl req -new -key server.key -subj /CN=", cn,
                                " -out s.csr && openssl x509 -req -in s.csr -CA ca1.crt -CAkey "
                                "ca1.key -CAcreateserial -days 2 -extfile san.ext -out s.crt.new "
                                "&& mv s.crt.new ",
                                out)),
        0);
  }

  std::vector<std::string> TlsArgs(bool mtls = true) const {
    std::vector<std::string> args = {"--tls_cert_file=" + dir_ + "/server.crt",
                                     "--tls_key_file=" + dir_ + "/server.key",
                                     "--tls_reload_interval=1s",
                                     "--auth_token_file=" + dir_ + "/tokens.csv",
                                     "--log_level=debug"};
    if (mtls) args.push_back("--tls_client_ca_file=" + dir_ + "/ca1.crt");
    return args;
  }

  // A channel on a connection of its own (no subchannel sharing), TLS with `client` ("" = no
  // client certificate) or plaintext when `tls` is false.
  std::shared_ptr<grpc::Channel> Connect(const std::string& address, bool tls = true,
                                         const std::string& client = "client1") const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetSslTargetNameOverride("localhost");
    if (!tls) return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(dir_ + "/ca1.crt");
    if (!client.empty()) {
      ssl.pem_private_key = ReadFile(dir_ + "/" + client + ".key");
      ssl.pem_cert_chain = ReadFile(dir_ + "/" + client + ".crt");
    }
    return grpc::CreateCustomChannel(address, grpc::SslCredentials(ssl), args);
  }

  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token = "") {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    return ctx;
  }

  static grpc::Status Live(grpc::Channel* channel, const std::string& token = "",
                           std::string* peer_cn = nullptr) {
    auto stub = GRPCInferenceService::NewStub(std::shared_ptr<grpc::Channel>(
        channel, [](grpc::Channel*) {}));
    auto ctx = Ctx(token);
    inference::ServerLiveResponse resp;
    grpc::Status s = stub->ServerLive(ctx.get(), {}, &resp);
    if (s.ok() && peer_cn != nullptr) {
      auto values = ctx->auth_context()->FindPropertyValues("x509_common_name");
      *peer_cn = values.empty() ? "" : std::string(values[0].data(), values[0].size());
    }
    return s;
  }

  static grpc::Status Drain(Control::Stub& stub, const std::string& token) {
    auto ctx = Ctx(token);
    sparkle::v1::DrainRequest req;
    req.set_timeout_seconds(5);
    sparkle::v1::DrainResponse resp;
    return stub.Drain(ctx.get(), req, &resp);
  }
  static grpc::Status Unregister(Control::Stub& stub, const std::string& token) {
    auto ctx = Ctx(token);
    sparkle::v1::UnregisterWeightsRequest req;
    req.set_weight_id("no-such-weight");
    sparkle::v1::UnregisterWeightsResponse resp;
    return stub.UnregisterWeights(ctx.get(), req, &resp);
  }
  static grpc::Status Register(Control::Stub& stub, const std::string& token) {
    auto ctx = Ctx(token);
    sparkle::v1::RegisterWeightsResponse resp;
    auto writer = stub.RegisterWeights(ctx.get(), &resp);
    sparkle::v1::RegisterWeightsRequest m;
    m.mutable_header()->set_label("sec");
    m.mutable_header()->set_datatype("FP32");
    for (int64_t d : {2, 2, 1, 1}) m.mutable_header()->add_shape(d);
    const std::vector<float> w = {1, 2, 3, 4};
    m.set_data(std::string(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float)));
    writer->Write(m);  // may fail: a refused call finishes at once
    writer->WritesDone();
    return writer->Finish();
  }

  // Admin calls refused on the public listener (naming --admin_listen), allowed with an admin
  // token on the admin listener.
  void CheckAdminListener(std::shared_ptr<grpc::Channel> admin_channel,
                          std::shared_ptr<grpc::Channel> public_channel) {
    auto pub = Control::NewStub(public_channel);
    auto admin = Control::NewStub(admin_channel);
    for (const grpc::Status& s : {Drain(*pub, kAdminToken), Register(*pub, kAdminToken),
                                  Unregister(*pub, kAdminToken)}) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
      EXPECT_THAT(s.error_message(), HasSubstr("--admin_listen"));
    }
    {
      auto ctx = Ctx(kInferToken);
      sparkle::v1::GetStatusResponse status;
      ASSERT_TRUE(pub->GetStatus(ctx.get(), {}, &status).ok());
      EXPECT_TRUE(status.security().admin_listener());
    }
    EXPECT_EQ(Unregister(*admin, kInferToken).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(Unregister(*admin, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(Unregister(*admin, kAdminToken).error_code(), grpc::StatusCode::NOT_FOUND);
    grpc::Status registered = Register(*admin, kAdminToken);
    EXPECT_TRUE(registered.ok()) << registered.error_message();
    grpc::Status drained = Drain(*admin, kAdminToken);
    EXPECT_TRUE(drained.ok()) << drained.error_message();
  }

  std::string dir_;
};

TEST_F(SecurityProcessTest, MtlsTokensAndRoles) {
  auto daemon = DaemonProcess::Start(SPARKLED_PATH, TlsArgs());
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto channel = Connect((*daemon)->address());
  auto infer = GRPCInferenceService::NewStub(channel);
  auto control = Control::NewStub(channel);

  // An infer token gets correct results.
  Conv2dParams p;
  p.n = 1, p.c = 3, p.h = p.w = 8, p.k = 4, p.r = p.s = 3, p.SetPad(1, 1);
  const auto input = sparkle::testing::RandomFloats(p.input_elements(), 1);
  const auto weight = sparkle::testing::RandomFloats(p.weight_elements(), 2);
  std::vector<float> expected(p.output_elements());
  Conv2dRef(p, input.data(), weight.data(), nullptr, expected.data());
  inference::ModelInferRequest req;
  req.set_model_name("conv2d");
  (*req.mutable_parameters())["pad"].set_int64_param(1);
  auto add = [&req](const char* name, std::vector<int64_t> shape, const std::vector<float>& d) {
    auto* t = req.add_inputs();
    t->set_name(name);
    t->set_datatype("FP32");
    for (int64_t x : shape) t->add_shape(x);
    req.add_raw_input_contents()->assign(reinterpret_cast<const char*>(d.data()),
                                         d.size() * sizeof(float));
  };
  add("input", {p.n, p.c, p.h, p.w}, input);
  add("weight", {p.k, p.c, p.r, p.s}, weight);
  {
    auto ctx = Ctx(kInferToken);
    inference::ModelInferResponse resp;
    grpc::Status s = infer->ModelInfer(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(sparkle::testing::CheckRawOutput(resp, expected), "");
  }
  // No token, an unknown token, a malformed header: UNAUTHENTICATED saying what is needed.
  for (const std::string& token :
       std::vector<std::string>{"", "not-a-token", kInferToken + std::string("x")}) {
    auto ctx = Ctx(token);
    inference::ModelInferResponse resp;
    grpc::Status s = infer->ModelInfer(ctx.get(), req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << token;
    EXPECT_THAT(s.error_message(), HasSubstr("bearer token is needed"));
    auto ctx2 = Ctx(token);
    sparkle::v1::GetStatusResponse status;
    EXPECT_EQ(control->GetStatus(ctx2.get(), {}, &status).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Health, ServerLive and ServerReady need no token.
  EXPECT_TRUE(HealthCheck(channel, "").ok());
  EXPECT_TRUE(Live(channel.get()).ok());
  {
    auto ctx = Ctx();
    inference::ServerReadyResponse resp;
    EXPECT_TRUE(infer->ServerReady(ctx.get(), {}, &resp).ok());
    EXPECT_TRUE(resp.ready());
  }
  // GetStatus.security, as seen by an infer caller.
  {
    auto ctx = Ctx(kInferToken);
    sparkle::v1::GetStatusResponse status;
    ASSERT_TRUE(control->GetStatus(ctx.get(), {}, &status).ok());
    const auto& sec = status.security();
    EXPECT_TRUE(sec.tls());
    EXPECT_TRUE(sec.mtls());
    EXPECT_TRUE(sec.auth_tokens());
    EXPECT_FALSE(sec.admin_listener());
    EXPECT_EQ(sec.caller(), "alice");
    EXPECT_EQ(sec.caller_role(), "infer");
    EXPECT_EQ(sec.certificate_subject(), "CN=sparkled-one");
    EXPECT_GT(sec.certificate_not_after_unix_seconds(), absl::ToUnixSeconds(absl::Now()));
    EXPECT_TRUE(sec.warnings().empty()) << sec.warnings(0);  // everything on loopback
  }
  // Admin calls: PERMISSION_DENIED for an infer token, allowed with an admin token.
  EXPECT_EQ(Unregister(*control, kInferToken).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Register(*control, kInferToken).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::Status denied = Drain(*control, kInferToken);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(), HasSubstr("role admin"));
  EXPECT_EQ(Register(*control, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Unregister(*control, kAdminToken).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::Status registered = Register(*control, kAdminToken);
  EXPECT_TRUE(registered.ok()) << registered.error_message();
  {
    auto ctx = Ctx(kInferToken);
    sparkle::v1::ListWeightsResponse list;
    ASSERT_TRUE(control->ListWeights(ctx.get(), {}, &list).ok());
    EXPECT_EQ(list.weights_size(), 1);
  }
  grpc::Status drained = Drain(*control, kAdminToken);
  EXPECT_TRUE(drained.ok()) << drained.error_message();
  // The refusal's debug line names the caller, never a token.
  const std::string log = (*daemon)->Log();
  EXPECT_THAT(log, HasSubstr("refused Control.Drain from 'alice'"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr(kInferToken)));
  EXPECT_THAT(log, ::testing::Not(HasSubstr(kAdminToken)));
}

TEST_F(SecurityProcessTest, RefusesPlaintextMissingAndForeignClientCertificates) {
  auto daemon = DaemonProcess::Start(SPARKLED_PATH, TlsArgs());
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string address = (*daemon)->address();
  EXPECT_TRUE(Live(Connect(address).get()).ok());
  EXPECT_FALSE(Live(Connect(address, /*tls=*/false).get()).ok());
  EXPECT_FALSE(Live(Connect(address, true, /*client=*/"").get()).ok());
  EXPECT_FALSE(Live(Connect(address, true, /*client=*/"client2").get()).ok());
  // Without --tls_client_ca_file no client certificate is asked for.
  ASSERT_TRUE((*daemon)->Stop(SIGTERM).ok());
  auto tls_only = DaemonProcess::Start(SPARKLED_PATH, TlsArgs(/*mtls=*/false));
  ASSERT_TRUE(tls_only.ok()) << tls_only.status();
  EXPECT_TRUE(Live(Connect((*tls_only)->address(), true, "").get()).ok());
  EXPECT_FALSE(Live(Connect((*tls_only)->address(), /*tls=*/false).get()).ok());
}

TEST_F(SecurityProcessTest, RotatedCertificateReachesNewConnectionsWithoutRestart) {
  auto daemon = DaemonProcess::Start(SPARKLED_PATH, TlsArgs());
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string address = (*daemon)->address();
  auto old_channel = Connect(address);
  std::string cn;
  ASSERT_TRUE(Live(old_channel.get(), "", &cn).ok());
  EXPECT_EQ(cn, "sparkled-one");

  SignServer("sparkled-two", "server.crt");
  const absl::Time rotated = absl::Now();
  std::string new_cn;
  grpc::Status live;  // every new connection must work, before and after the change
  WaitFor(
      [&] {
        live = Live(Connect(address).get(), "", &new_cn);
        return !live.ok() || new_cn == "sparkled-two";
      },
      absl::Seconds(10), absl::Milliseconds(200));
  ASSERT_TRUE(live.ok()) << live.error_message();
  EXPECT_EQ(new_cn, "sparkled-two") << "not served within 10 s";
  // The old connection still works, with its certificate.
  ASSERT_TRUE(Live(old_channel.get(), "", &cn).ok());
  EXPECT_EQ(cn, "sparkled-one");
  EXPECT_EQ(old_channel->GetState(false), GRPC_CHANNEL_READY);
  // GetStatus and the log report the new certificate.
  grpc::Status status_ok;
  WaitFor(
      [&] {
        auto ctx = Ctx(kInferToken);
        sparkle::v1::GetStatusResponse status;
        status_ok = Control::NewStub(old_channel)->GetStatus(ctx.get(), {}, &status);
        return !status_ok.ok() || status.security().certificate_subject() == "CN=sparkled-two";
      },
      rotated + absl::Seconds(10) - absl::Now(), absl::Milliseconds(200));
  ASSERT_TRUE(status_ok.ok()) << status_ok.error_message();
  EXPECT_THAT((*daemon)->Log(), HasSubstr("subject CN=sparkled-two"));
  // A broken certificate keeps the previous one, and says why.
  WriteAtomically(dir_ + "/server.crt", "not a certificate\n");
  WaitFor([&] { return absl::StrContains((*daemon)->Log(), "do not load"); }, absl::Seconds(10),
          absl::Milliseconds(100));
  EXPECT_THAT((*daemon)->Log(), HasSubstr("do not load, the previous ones stay"));
  ASSERT_TRUE(Live(Connect(address).get(), "", &new_cn).ok());
  EXPECT_EQ(new_cn, "sparkled-two");
}

// KServe v2 REST with the same certificate, client CA and tokens as gRPC, checked with curl:
// mTLS and a token are needed (health excepted), plaintext and a missing or foreign client
// certificate are refused at the handshake, and a rotated certificate reaches new connections.
TEST_F(SecurityProcessTest, RestUsesTheSameTlsClientCaTokensAndRotation) {
  if (QuietShell("command -v curl") != 0) GTEST_SKIP() << "curl missing (scripts/setup.sh)";
  std::vector<std::string> args = TlsArgs();
  args.push_back("--http_listen=127.0.0.1:0");
  auto daemon = DaemonProcess::Start(SPARKLED_PATH, args);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  const std::string log = (*daemon)->Log();
  const std::string marker = "KServe v2 REST on https://127.0.0.1:";
  const size_t at = log.find(marker);
  ASSERT_NE(at, std::string::npos) << log;
  const size_t start = at + marker.size();
  const std::string port = log.substr(start, log.find('\n', start) - start);
  // curl, its status code on stdout: "000" when the handshake failed.
  auto curl = [&](const std::string& path, const std::string& client, const std::string& token,
                  const std::string& scheme = "https") {
    std::string cmd = absl::StrCat("curl -s -o /dev/null -w '%{http_code}' --max-time 10 ",
                                   "--resolve localhost:", port, ":127.0.0.1 --cacert ", dir_,
                                   "/ca1.crt ");
    if (!client.empty()) {
      absl::StrAppend(&cmd, "--cert ", dir_, "/", client, ".crt --key ", dir_, "/", client,
                      ".key ");
    }
    if (!token.empty()) absl::StrAppend(&cmd, "-H 'Authorization: Bearer ", token, "' ");
    absl::StrAppend(&cmd, scheme, "://localhost:", port, path);
    return ::sparkle::testing::RunCommand(cmd).output;
  };
  EXPECT_EQ(curl("/v2/health/ready", "client1", ""), "200");
  EXPECT_EQ(curl("/v2", "client1", ""), "401");
  EXPECT_EQ(curl("/v2", "client1", kInferToken), "200");
  EXPECT_EQ(curl("/v2", "", kInferToken), "000");         // no client certificate
  EXPECT_EQ(curl("/v2", "client2", kInferToken), "000");  // signed by another CA
  EXPECT_EQ(curl("/v2", "client1", kInferToken, "http"), "000");  // plaintext
  // The served certificate's subject, on a new connection.
  auto subject = [&] {
    return ::sparkle::testing::RunCommand(absl::StrCat(
               "openssl s_client -connect 127.0.0.1:", port, " -cert ", dir_,
               "/client1.crt -key ", dir_, "/client1.key </dev/null 2>/dev/null | ",
               "openssl x509 -noout -subject"))
        .output;
  };
  EXPECT_THAT(subject(), HasSubstr("sparkled-one"));
  SignServer("sparkled-two", "server.crt");
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(subject(), "sparkled-two"); },
                      absl::Seconds(10), absl::Milliseconds(200)))
      << subject();
  EXPECT_EQ(curl("/v2", "client1", kInferToken), "200");
}

TEST_F(SecurityProcessTest, EditedTokenFileTakesEffectWithoutRestart) {
  auto daemon = DaemonProcess::Start(SPARKLED_PATH, TlsArgs());
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto control = Control::NewStub(Connect((*daemon)->address()));
  auto status_with = [&](const std::string& token) {
    auto ctx = Ctx(token);
    sparkle::v1::GetStatusResponse status;
    return control->GetStatus(ctx.get(), {}, &status);
  };
  ASSERT_TRUE(status_with(kInferToken).ok());
  WriteAtomically(dir_ + "/tokens.csv", "fresh-token-0000,eve,infer\n");
  const absl::Time edited = absl::Now();
  WaitFor([&] { return status_with("fresh-token-0000").ok(); }, absl::Seconds(5),
          absl::Milliseconds(100));
  EXPECT_TRUE(status_with("fresh-token-0000").ok()) << "new token not accepted within 5 s";
  EXPECT_EQ(status_with(kInferToken).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // A file that does not parse keeps the table.
  WriteAtomically(dir_ + "/tokens.csv", "fresh-token-0000,eve,emperor\n");
  WaitFor([&] { return absl::StrContains((*daemon)->Log(), "keeping the previous token table"); },
          edited + absl::Seconds(10) - absl::Now(), absl::Milliseconds(100));
  EXPECT_THAT((*daemon)->Log(), HasSubstr("line 1: unknown role"));
  EXPECT_TRUE(status_with("fresh-token-0000").ok());
  EXPECT_THAT((*daemon)->Log(), ::testing::Not(HasSubstr("fresh-token-0000")));
}

TEST_F(SecurityProcessTest, AdminCallsOnlyOnUnixAdminListener) {
  std::vector<std::string> args = TlsArgs();
  const std::string socket = "unix:" + dir_ + "/admin.sock";
  args.push_back("--admin_listen=" + socket);
  auto daemon = DaemonProcess::Start(SPARKLED_PATH, args);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  // A UNIX socket is local: plaintext there, tokens still apply.
  CheckAdminListener(Connect(socket, /*tls=*/false), Connect((*daemon)->address()));
}

TEST_F(SecurityProcessTest, AdminCallsOnlyOnTcpAdminListenerWithTls) {
  std::vector<std::string> args = TlsArgs();
  const std::string admin = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
  args.push_back("--admin_listen=" + admin);
  auto daemon = DaemonProcess::Start(SPARKLED_PATH, args);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_FALSE(Live(Connect(admin, /*tls=*/false).get()).ok());  // TLS on the admin listener too
  CheckAdminListener(Connect(admin), Connect((*daemon)->address()));
}

TEST_F(SecurityProcessTest, RefusesToStartWithBadTlsOrTokenFiles) {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  const std::string d = dir_;
  ASSERT_EQ(QuietShell("cd " + d +
                       " && openssl genpkey -algorithm ec -pkeyopt "
                       "ec_paramgen_curve:prime256v1 -out other.key"),
            0);
  std::ofstream(d + "/bad_tokens.csv") << "t1,a,infer\nt2,b,root\n";
  const Case cases[] = {
      {{"--tls_cert_file=" + d + "/server.crt", "--tls_key_file=" + d + "/other.key"},
       "does not match the certificate"},
      {{"--tls_cert_file=" + d + "/server.crt"}, "must be given together"},
      {{"--tls_cert_file=" + d + "/server.crt", "--tls_key_file=" + d + "/server.key",
        "--tls_client_ca_file=" + d + "/tokens.csv"},
       "holds no PEM certificate"},
      {{"--tls_cert_file=" + d + "/missing.crt", "--tls_key_file=" + d + "/server.key"},
       "cannot open TLS certificate"},
      {{"--auth_token_file=" + d + "/bad_tokens.csv"}, "line 2: unknown role"},
  };
  for (const Case& c : cases) {
    auto daemon = DaemonProcess::Start(SPARKLED_PATH, c.args);
    ASSERT_FALSE(daemon.ok()) << c.message;
    EXPECT_THAT(daemon.status().message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace sparkle
