#include "client/npy.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle::client {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// The preamble numpy writes for format 1.0: magic, version, little-endian uint16 header length.
std::string Preamble10(size_t header_len) {
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header_len & 0xff));
  out.push_back(static_cast<char>(header_len >> 8));
  return out;
}

std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

// What numpy 1.26 writes for np.save(f, np.arange(6, dtype='<f4').reshape(2, 3)): the dict,
// then spaces up to a multiple of 64 bytes (plus 21 spaces of room to grow the first axis
// in place, which numpy >= 1.23 reserves), then '\n'.
std::string NumpyWrittenFile() {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  header += std::string(21 - 1, ' ');  // GROWTH_AXIS_MAX_DIGITS - len(repr(2))
  const size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ');
  header += '\n';
  return Preamble10(header.size()) + header + FloatBytes({0, 1, 2, 3, 4, 5});
}

TEST(NpyTest, ReadsWhatNumpyWrites) {
  const std::string file = NumpyWrittenFile();
  ASSERT_EQ(file.size() % 64, 24u);  // 128-byte preamble + header, then 24 data bytes
  absl::StatusOr<NpyArray> array = ParseNpy(file, "a.npy");
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_THAT(array->shape, ElementsAre(2, 3));
  EXPECT_THAT(array->ToFloats(), ElementsAre(0, 1, 2, 3, 4, 5));
}

TEST(NpyTest, WriteThenReadRoundTrips) {
  struct Case {
    std::vector<int64_t> shape;
    std::vector<float> values;
  };
  const Case cases[] = {
      {{}, {42.5f}},                              // 0-d
      {{3}, {1, -2, 3.25f}},                      // 1-d: "(3,)"
      {{1, 2, 2, 1}, {0.5f, -0.0f, 1e-30f, 7}},   // 4-d
      {{0, 4}, {}},                               // empty
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::PrintToString(c.shape));
    absl::StatusOr<NpyArray> array = NpyArray::FromFloats(c.shape, c.values);
    ASSERT_TRUE(array.ok()) << array.status();
    absl::StatusOr<std::string> bytes = SerializeNpy(*array);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::StatusOr<NpyArray> back = ParseNpy(*bytes, "x");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->shape, c.shape);
    EXPECT_EQ(back->data, array->data);  // bit-exact, including -0.0
  }
}

TEST(NpyTest, HeaderIsPaddedTo64BytesAndEndsWithNewline) {
  // Ranks 0..8 with one- to three-digit dimensions walk the header length across several
  // 64-byte boundaries.
  for (int rank = 0; rank <= 8; ++rank) {
    for (int64_t dim : {1, 10, 100}) {
      NpyArray array;
      array.shape.assign(rank, 1);
      if (rank > 0) array.shape[0] = dim;
      array.data.resize(array.NumElements() * sizeof(float));
      absl::StatusOr<std::string> bytes = SerializeNpy(array);
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      ASSERT_EQ(bytes->substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
      const size_t header_len = static_cast<unsigned char>((*bytes)[8]) |
                                (static_cast<unsigned char>((*bytes)[9]) << 8);
      EXPECT_EQ((10 + header_len) % 64, 0u) << "rank " << rank << " dim " << dim;
      EXPECT_EQ((*bytes)[10 + header_len - 1], '\n');
      EXPECT_EQ(bytes->size(), 10 + header_len + array.data.size());
    }
  }
}

TEST(NpyTest, WritesNumpysHeaderText) {
  absl::StatusOr<NpyArray> array = NpyArray::FromFloats({2, 3}, std::vector<float>(6, 0));
  ASSERT_TRUE(array.ok());
  absl::StatusOr<std::string> bytes = SerializeNpy(*array);
  ASSERT_TRUE(bytes.ok());
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  // 10 + 59 + '\n' = 70 bytes: padded to 128, then 24 data bytes.
  ASSERT_EQ(bytes->size(), 128u + 24u);
  EXPECT_EQ(bytes->substr(10, 118), dict + std::string(128 - 10 - dict.size() - 1, ' ') + "\n");
  absl::StatusOr<NpyArray> one_d = NpyArray::FromFloats({3}, std::vector<float>(3, 0));
  ASSERT_TRUE(one_d.ok());
  EXPECT_THAT(*SerializeNpy(*one_d), HasSubstr("'shape': (3,), }"));
  absl::StatusOr<NpyArray> scalar = NpyArray::FromFloats({}, std::vector<float>(1, 0));
  ASSERT_TRUE(scalar.ok());
  EXPECT_THAT(*SerializeNpy(*scalar), HasSubstr("'shape': (), }"));
}

TEST(NpyTest, ReadsVersion2AndToleratesOldStyleHeaders) {
  // Format 2.0 (uint32 length), double quotes, no trailing comma, Python 2 'L' suffixes and
  // 16-byte alignment (numpy < 1.14): all still valid files.
  const std::string header =
      "{\"descr\": \"<f4\", \"shape\": (1L, 2L), \"fortran_order\": False}\n";
  std::string file("\x93NUMPY\x02\x00", 8);
  for (int i = 0; i < 4; ++i) file.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  file += header + FloatBytes({1.5f, 2.5f});
  absl::StatusOr<NpyArray> array = ParseNpy(file, "v2.npy");
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_THAT(array->shape, ElementsAre(1, 2));
  EXPECT_THAT(array->ToFloats(), ElementsAre(1.5f, 2.5f));
}

TEST(NpyTest, UsesFormat2WhenTheHeaderExceeds64KiB) {
  NpyArray array;
  array.shape.assign(30000, 1);  // "1, " × 30000 > 65535 bytes of header
  array.data.resize(sizeof(float));
  absl::StatusOr<std::string> bytes = SerializeNpy(array);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ((*bytes)[6], 2);
  absl::StatusOr<NpyArray> back = ParseNpy(*bytes, "big");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape.size(), 30000u);
}

// Each broken file is rejected with INVALID_ARGUMENT, the file name, and what is wrong.
TEST(NpyTest, RejectsBrokenFilesNamingTheFileAndTheProblem) {
  const std::string good = NumpyWrittenFile();
  auto with_header = [](const std::string& dict, const std::string& data) {
    std::string header = dict + "\n";
    return Preamble10(header.size()) + header + data;
  };
  const std::string six = FloatBytes({0, 1, 2, 3, 4, 5});
  struct Case {
    const char* what;
    std::string bytes;
    const char* message;
  };
  const Case cases[] = {
      {"empty", "", "missing the \\x93NUMPY magic"},
      {"bad magic", "\x93NUMPZ\x01\x00" + good.substr(8), "magic"},
      {"version 4", std::string("\x93NUMPY\x04\x00", 8) + good.substr(8), "version 4.0"},
      {"preamble cut", good.substr(0, 9), "truncated"},
      {"header cut", good.substr(0, 50), "truncated"},
      {"data cut", good.substr(0, good.size() - 1), "truncated: shape (2, 3) needs 24 data bytes"},
      {"trailing bytes", good + "xx", "2 unexpected bytes"},
      {"float64",
       with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", six + six),
       "dtype '<f8' is not supported"},
      {"big-endian",
       with_header("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", six),
       "dtype '>f4'"},
      {"fortran",
       with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", six),
       "fortran_order"},
      {"missing key", with_header("{'descr': '<f4', 'shape': (2, 3), }", six),
       "must contain the keys"},
      {"extra key",
       with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", six),
       "unexpected key 'x'"},
      {"negative dim",
       with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", six),
       "negative"},
      {"not a dict", with_header("[1, 2]", six), "expected '{'"},
      {"garbage after dict",
       with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} junk", six),
       "after the closing"},
      {"huge shape",
       with_header("{'descr': '<f4', 'fortran_order': False, "
                   "'shape': (4611686018427387904, 8), }", six),
       "too large"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<NpyArray> array = ParseNpy(c.bytes, "dir/t.npy");
    ASSERT_FALSE(array.ok());
    EXPECT_EQ(array.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(array.status().message(), HasSubstr("dir/t.npy: "));
    EXPECT_THAT(array.status().message(), HasSubstr(c.message));
  }
}

TEST(NpyTest, SerializeRejectsInconsistentArrays) {
  NpyArray array;
  array.shape = {2, 2};
  array.data.resize(3 * sizeof(float));
  EXPECT_EQ(SerializeNpy(array).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(NpyArray::FromFloats({2, 2}, std::vector<float>(3)).ok());
}

TEST(NpyTest, FilesRoundTripAndMissingFilesAreNotFound) {
  const std::filesystem::path dir = testing::TempDir();
  const std::string path = (dir / "npy_test_round_trip.npy").string();
  absl::StatusOr<NpyArray> array = NpyArray::FromFloats({2, 1, 2}, {1, 2, 3, 4});
  ASSERT_TRUE(array.ok());
  ASSERT_TRUE(WriteNpyFile(path, *array).ok());
  absl::StatusOr<NpyArray> back = ReadNpyFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(back->shape, ElementsAre(2, 1, 2));
  EXPECT_THAT(back->ToFloats(), ElementsAreArray({1.0f, 2.0f, 3.0f, 4.0f}));
  std::remove(path.c_str());

  absl::StatusOr<NpyArray> missing = ReadNpyFile(path);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(path));
  const absl::Status unwritable = WriteNpyFile((dir / "no/such/dir/x.npy").string(), *array);
  EXPECT_FALSE(unwritable.ok());
  EXPECT_THAT(unwritable.message(), HasSubstr("no/such/dir/x.npy"));
}

}  // namespace
}  // namespace sparkle::client
