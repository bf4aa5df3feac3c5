// Authenticator (server/authenticator.h): header parsing, roles, reload of a changed file that
// keeps the previous table on a bad edit, and the constant-time comparison.
#include "server/authenticator.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Authenticator> Table() {
  return Authenticator::FromEntries(
      {{"tok-alice-0123456789", "alice", Role::kInfer}, {"tok-root-9876543210", "root", Role::kAdmin}});
}

TEST(AuthenticatorTest, KnownTokensMapToNameAndRole) {
  auto auth = Table();
  auto alice = auth->Authenticate("Bearer tok-alice-0123456789");
  ASSERT_TRUE(alice.ok()) << alice.status();
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->role, Role::kInfer);
  auto root = auth->Authenticate("bearer   tok-root-9876543210 ");  // scheme case-insensitive
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->name, "root");
  EXPECT_EQ(root->role, Role::kAdmin);
}

TEST(AuthenticatorTest, MissingMalformedOrUnknownIsUnauthenticated) {
  auto auth = Table();
  for (const char* header :
       {"", "Bearer", "Bearer ", "tok-alice-0123456789", "Basic tok-alice-0123456789",
        "Bearer tok-alice-012345678", "Bearer tok-alice-01234567890", "Bearer TOK-ALICE-0123456789",
        "Bearertok-alice-0123456789"}) {
    auto caller = auth->Authenticate(header);
    ASSERT_FALSE(caller.ok()) << header;
    EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated) << header;
    EXPECT_THAT(caller.status().message(), HasSubstr("bearer token is needed"));
    EXPECT_THAT(caller.status().message(), ::testing::Not(HasSubstr("tok-")));
  }
}

// A wrong token that shares a long prefix with a real one takes as long as one that shares
// nothing: the comparison is over digests, all of them, with no early exit. Timing tests are
// noisy (ctest runs another test beside this one), so this compares the fastest of many
// interleaved rounds, the estimate that other load inflates least (medians failed at 1.78 once
// in CI), with a generous bound; an early-exit comparison of raw 4 KiB tokens differs by more.
TEST(AuthenticatorTest, ComparisonTimeDoesNotDependOnMatchingPrefix) {
  const std::string secret(4096, 'k');
  std::vector<TokenEntry> entries;
  for (int i = 0; i < 64; ++i) entries.push_back({absl::StrCat(secret, i), absl::StrCat("n", i)});
  auto auth = Authenticator::FromEntries(entries);
  const std::string near = "Bearer " + secret + "x";                 // shares 4096 bytes
  const std::string far = "Bearer " + std::string(4097, 'z');        // shares none
  auto time_of = [&](const std::string& header) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 50; ++i) {
      if (auth->Authenticate(header).ok()) ADD_FAILURE() << "unexpected match";
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<double> near_t, far_t;
  for (int round = 0; round < 31; ++round) {
    near_t.push_back(time_of(near));
    far_t.push_back(time_of(far));
  }
  const double near_s = *std::min_element(near_t.begin(), near_t.end());
  const double far_s = *std::min_element(far_t.begin(), far_t.end());
  const double ratio = near_s / far_s;
  EXPECT_GT(ratio, 0.7) << "near " << near_s << " s, far " << far_s << " s";
  EXPECT_LT(ratio, 1.4) << "near " << near_s << " s, far " << far_s << " s";
  // And the match itself is found whatever its position in the table.
  EXPECT_EQ(auth->Authenticate("Bearer " + secret + "0")->name, "n0");
  EXPECT_EQ(auth->Authenticate("Bearer " + secret + "63")->name, "n63");
}

class AuthenticatorFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sparkle_auth_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/tokens.csv";
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  // Atomic replace, as an operator's editor or a Secret update does.
  void Write(const std::string& contents) {
    const std::string tmp = path_ + ".tmp";
    std::ofstream(tmp) << contents;
    ASSERT_EQ(std::rename(tmp.c_str(), path_.c_str()), 0);
  }
  std::string dir_, path_;
};

TEST_F(AuthenticatorFileTest, CreateRefusesBadFileWithLineNumber) {
  Write("good-token,alice,infer\nSECRETX,bob,superuser\n");
  auto auth = Authenticator::Create({path_, absl::ZeroDuration()});
  ASSERT_FALSE(auth.ok());
  EXPECT_EQ(auth.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(auth.status().message(), HasSubstr("line 2"));
  EXPECT_THAT(auth.status().message(), ::testing::Not(HasSubstr("SECRETX")));
  EXPECT_FALSE(Authenticator::Create({dir_ + "/missing.csv", absl::ZeroDuration()}).ok());
}

TEST_F(AuthenticatorFileTest, ReloadsChangedFileAndKeepsPreviousTableOnBadEdit) {
  Write("token-one,alice,infer\n");
  auto auth = Authenticator::Create({path_, absl::ZeroDuration()});
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->Authenticate("Bearer token-one").ok());
  EXPECT_TRUE((*auth)->ReloadIfChanged().ok());  // unchanged

  Write("token-two,bob,admin\n");
  ASSERT_TRUE((*auth)->ReloadIfChanged().ok());
  EXPECT_FALSE((*auth)->Authenticate("Bearer token-one").ok());
  auto bob = (*auth)->Authenticate("Bearer token-two");
  ASSERT_TRUE(bob.ok());
  EXPECT_EQ(bob->role, Role::kAdmin);

  Write("token-two,bob,admin\ntoken-three,carol,wizard\n");
  absl::Status bad = (*auth)->ReloadIfChanged();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("line 2"));
  EXPECT_TRUE((*auth)->Authenticate("Bearer token-two").ok());  // previous table kept
  EXPECT_FALSE((*auth)->Authenticate("Bearer token-three").ok());
  EXPECT_EQ((*auth)->size(), 1);
}

TEST_F(AuthenticatorFileTest, PollingPicksUpAChangeWithinAFewIntervals) {
  Write("token-one,alice,infer\n");
  auto auth = Authenticator::Create({path_, absl::Milliseconds(20)});
  ASSERT_TRUE(auth.ok()) << auth.status();
  Write("token-one,alice,infer\ntoken-new,dave,infer\n");
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (!(*auth)->Authenticate("Bearer token-new").ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_TRUE((*auth)->Authenticate("Bearer token-new").ok());
  EXPECT_EQ((*auth)->size(), 2);
}

}  // namespace
}  // namespace sparkle
