// sparklectl against the real sparkled with TLS, mTLS and bearer tokens (certificates made with
// the openssl CLI in a temp dir): status works with CA + client certificate + token and shows
// the security block; each missing piece gives its explanation and exit code (2: could not
// connect; 1: the server answered UNAUTHENTICATED / PERMISSION_DENIED, with a hint).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/process_util.h"

namespace sparkle::client {
namespace {

using ::sparkle::testing::CommandLine;
using ::sparkle::testing::CommandResult;
using ::sparkle::testing::DaemonProcess;
using ::sparkle::testing::RunCommand;
using ::sparkle::testing::Shell;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kInferToken[] = "infer-token-0123456789";

// Runs sparklectl with `args` and $SPARKLE_TOKEN unset unless `token_env` is given; output is
// stdout and stderr.
CommandResult Sparklectl(const std::vector<std::string>& args, const std::string& token_env = "") {
  const std::string env = token_env.empty() ? "env -u SPARKLE_TOKEN "
                                            : absl::StrCat("env SPARKLE_TOKEN='", token_env, "' ");
  return RunCommand(absl::StrCat(env, CommandLine(SPARKLECTL_PATH, args), " 2>&1"));
}

class TlsClientProcessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string((std::filesystem::path(::testing::TempDir()) /
                            absl::StrCat("tls_client_process_", ::getpid()))
                               .string());
    std::filesystem::create_directories(*dir_);
    const std::string script = absl::StrCat(
        "set -e; cd '", *dir_, "'\n",
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
        "-subj '/CN=test CA'\n",
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 "
        "-subj '/CN=other CA'\n",
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
        "-subj '/CN=sparkled.test'\n",
        "printf 'subjectAltName=DNS:sparkled.test,IP:127.0.0.1\\n' > san.ext\n",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile san.ext\n",
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
        "-subj '/CN=operator'\n",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 2\n",
        "printf '", kInferToken, ",ci,infer\\n' > tokens\n",
        "printf '", kInferToken, "\\n' > infer.token\n");
    std::ofstream(Path("make.sh")) << script;
    const int rc =
        Shell(absl::StrCat("sh '", Path("make.sh"), "' > '", Path("make.log"), "' 2>&1"));
    ASSERT_EQ(rc, 0) << "openssl failed; see " << Path("make.log");
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string Path(const std::string& name) { return absl::StrCat(*dir_, "/", name); }

  void SetUp() override {
    auto d = DaemonProcess::Start(
        SPARKLED_PATH,
        {"--threads=1", "--metrics_address=", absl::StrCat("--tls_cert_file=", Path("server.pem")),
         absl::StrCat("--tls_key_file=", Path("server.key")),
         absl::StrCat("--tls_client_ca_file=", Path("ca.pem")),
         absl::StrCat("--auth_token_file=", Path("tokens"))});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }

  std::vector<std::string> Args(std::vector<std::string> flags, const std::string& command) {
    flags.insert(flags.begin(), absl::StrCat("--target=", daemon_->address()));
    flags.push_back("--timeout=10s");
    flags.push_back(command);
    return flags;
  }

  std::string Ca() { return absl::StrCat("--tls_ca_file=", Path("ca.pem")); }
  std::string Cert() { return absl::StrCat("--tls_cert_file=", Path("client.pem")); }
  std::string Key() { return absl::StrCat("--tls_key_file=", Path("client.key")); }
  std::string TokenFile() { return absl::StrCat("--token_file=", Path("infer.token")); }

  static std::string* dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

std::string* TlsClientProcessTest::dir_ = nullptr;

TEST_F(TlsClientProcessTest, StatusWithCaCertKeyAndToken) {
  CommandResult r = Sparklectl(Args({Ca(), Cert(), Key(), TokenFile()}, "status"));
  EXPECT_EQ(r.exit_code, 0) << r.output << daemon_->Log();
  EXPECT_THAT(r.output, HasSubstr("security tls on  client certificates required  tokens "
                                  "required"));
  EXPECT_THAT(r.output, Not(HasSubstr(kInferToken)));
  // The same token from $SPARKLE_TOKEN, and JSON carries the security block.
  r = Sparklectl(Args({Ca(), Cert(), Key(), "--json"}, "status"), kInferToken);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("\"security\""));
  EXPECT_THAT(r.output, HasSubstr("\"mtls\": true"));
}

TEST_F(TlsClientProcessTest, MissingCaFileIsNotTrusted) {
  // Another CA than the one that signed the server's certificate.
  const CommandResult r = Sparklectl(Args(
      {absl::StrCat("--tls_ca_file=", Path("other.pem")), Cert(), Key(), TokenFile()},
      "status"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("server certificate not trusted by --tls_ca_file"));
  EXPECT_THAT(r.output, Not(HasSubstr("SSL_ERROR_SSL")));  // gRPC's own log stays quiet
  // No --tls_ca_file but TLS on (a client certificate): the system's roots do not know it.
  const CommandResult system_roots = Sparklectl(Args({Cert(), Key(), TokenFile()}, "status"));
  EXPECT_EQ(system_roots.exit_code, 2) << system_roots.output;
  EXPECT_THAT(system_roots.output, HasSubstr("pass --tls_ca_file"));
  // No --tls_* at all: plaintext against TLS.
  const CommandResult plaintext = Sparklectl(Args({TokenFile()}, "status"));
  EXPECT_EQ(plaintext.exit_code, 2) << plaintext.output;
  EXPECT_THAT(plaintext.output, HasSubstr("server speaks TLS: pass --tls_ca_file"));
}

TEST_F(TlsClientProcessTest, MissingClientCertificate) {
  const CommandResult r = Sparklectl(Args({Ca(), TokenFile()}, "status"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output,
              HasSubstr("server requires a client certificate (--tls_cert_file/--tls_key_file)"));
}

TEST_F(TlsClientProcessTest, MissingTokenIsUnauthenticatedWithAHint) {
  CommandResult r = Sparklectl(Args({Ca(), Cert(), Key()}, "status"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(r.output, HasSubstr("pass --token_file or set SPARKLE_TOKEN"));
  // An infer token for an admin call: PERMISSION_DENIED with its hint.
  r = Sparklectl(Args({Ca(), Cert(), Key(), TokenFile()}, "drain"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(r.output, HasSubstr("this call needs an admin token"));
}

}  // namespace
}  // namespace sparkle::client
