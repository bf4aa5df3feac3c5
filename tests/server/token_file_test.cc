// ParseTokenFile: the --auth_token_file format (server/token_file.h).
#include "server/token_file.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TokenFileTest, ParsesEntriesCommentsBlankLinesAndSpaces) {
  auto entries = ParseTokenFile(
      "# operators\n"
      "\n"
      "  s3cret-a , alice , infer  \r\n"
      "   # indented comment\n"
      "s3cret-b,bob,admin\n"
      "s3cret-c,carol,infer");  // no final newline
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].token, "s3cret-a");
  EXPECT_EQ((*entries)[0].name, "alice");
  EXPECT_EQ((*entries)[0].role, Role::kInfer);
  EXPECT_EQ((*entries)[1].token, "s3cret-b");
  EXPECT_EQ((*entries)[1].name, "bob");
  EXPECT_EQ((*entries)[1].role, Role::kAdmin);
  EXPECT_EQ((*entries)[2].name, "carol");
}

TEST(TokenFileTest, EmptyFileIsAnEmptyTable) {
  auto entries = ParseTokenFile("# nobody yet\n\n");
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_TRUE(entries->empty());
}

TEST(TokenFileTest, RoleNames) {
  EXPECT_STREQ(RoleName(Role::kInfer), "infer");
  EXPECT_STREQ(RoleName(Role::kAdmin), "admin");
}

struct BadCase {
  const char* contents;
  const char* expected;  // in the message
};

TEST(TokenFileTest, BadLinesNameTheLineAndNeverTheToken) {
  const BadCase cases[] = {
      {"# c\nTOPSECRET1,alice,root\n", "line 2: unknown role"},
      {"TOPSECRET1,alice,infer\nTOPSECRET1,bob,admin\n", "line 2: duplicate token"},
      {"\n\n\nTOPSECRET1,alice\n", "line 4: expected 3 comma-separated fields"},
      {"TOPSECRET1,alice,infer,extra\n", "line 1: expected 3"},
      {"TOPSECRET1\n", "line 1: expected 3"},
      {" ,alice,infer\n", "line 1: empty token"},
      {"TOPSECRET1, ,admin\n", "line 1: empty name"},
      {"TOPSECRET1,alice,\n", "line 1: unknown role"},
      {"TOPSECRET1,alice,Admin\n", "line 1: unknown role"},  // roles are case-sensitive
      {"alice,admin,TOPSECRET1\n", "line 1: unknown role"},  // columns swapped: not echoed
  };
  for (const BadCase& c : cases) {
    auto entries = ParseTokenFile(c.contents);
    ASSERT_FALSE(entries.ok()) << c.contents;
    EXPECT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument) << c.contents;
    EXPECT_THAT(entries.status().message(), HasSubstr(c.expected)) << c.contents;
    EXPECT_THAT(entries.status().message(), Not(HasSubstr("TOPSECRET"))) << c.contents;
  }
}

}  // namespace
}  // namespace sparkle
