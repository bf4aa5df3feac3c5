#include "client/arg_parse.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

TEST(ParseShapeTest, AcceptsXAndCommaSeparators) {
  EXPECT_THAT(*ParseShape("1x16x32x32"), ElementsAre(1, 16, 32, 32));
  EXPECT_THAT(*ParseShape("16,16,3,3"), ElementsAre(16, 16, 3, 3));
  EXPECT_THAT(*ParseShape(" 16 "), ElementsAre(16));
}

TEST(ParseShapeTest, RejectsBadShapesQuotingThem) {
  const struct {
    const char* text;
    const char* message;
  } cases[] = {
      {"", "empty"},
      {"1x0x3", "dimension 1 must be >= 1; was 0"},
      {"1x-2", "dimension 1 must be >= 1"},
      {"1xax3", "dimension 1 (\"a\") is not an integer"},
      {"1xx3", "is not an integer"},
      {"4294967296x4294967296", "overflows int64"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    absl::StatusOr<std::vector<int64_t>> shape = ParseShape(c.text);
    ASSERT_FALSE(shape.ok());
    EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(shape.status().message(), HasSubstr(c.message));
  }
}

TEST(FormatShapeTest, IsTheInverseOfParseShape) {
  EXPECT_EQ(FormatShape(*ParseShape("1x16x32x32")), "1x16x32x32");
  EXPECT_EQ(FormatShape({}), "scalar");
}

TEST(ParseIntListTest, ParsesAndBoundsEachValue) {
  EXPECT_THAT(*ParseIntList("1,4,16,64", 1, 4096), ElementsAre(1, 4, 16, 64));
  EXPECT_THAT(*ParseIntList(" 2 , 2 ", 1, 10), ElementsAre(2, 2));
  EXPECT_THAT(ParseIntList("0,4", 1, 10).status().message(), HasSubstr("0 is outside [1, 10]"));
  EXPECT_THAT(ParseIntList("1,,4", 1, 10).status().message(), HasSubstr("is not an integer"));
  EXPECT_FALSE(ParseIntList("", 1, 10).ok());
}

TEST(ParseInt64ParamTest, SplitsAtTheFirstEquals) {
  EXPECT_THAT(*ParseInt64Param("priority=1"), Pair("priority", 1));
  EXPECT_THAT(*ParseInt64Param("timeout=-5"), Pair("timeout", -5));
  EXPECT_THAT(ParseInt64Param("=1").status().message(), HasSubstr("key=value"));
  EXPECT_THAT(ParseInt64Param("priority").status().message(), HasSubstr("key=value"));
  EXPECT_THAT(ParseInt64Param("a=b").status().message(), HasSubstr("not an int64"));
  EXPECT_THAT(ParseInt64Param("a=1=2").status().message(), HasSubstr("not an int64"));
}

}  // namespace
}  // namespace sparkle::client
