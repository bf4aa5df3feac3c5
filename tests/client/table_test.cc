#include "client/table.h"

#include <sstream>

#include "gtest/gtest.h"

namespace sparkle::client {
namespace {

TEST(TextTableTest, AlignsColumnsToTheWidestCellWithoutTrailingBlanks) {
  TextTable table({"NAME", "N"});
  table.AddRow({"cpu", "12345"});
  table.AddRow({"gpu:0"});  // short row: padded
  std::ostringstream out;
  table.Print(out, "  ");
  EXPECT_EQ(out.str(),
            "  NAME   N\n"
            "  cpu    12345\n"
            "  gpu:0\n");
}

}  // namespace
}  // namespace sparkle::client
