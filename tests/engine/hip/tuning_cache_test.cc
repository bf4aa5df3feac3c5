#include "engine/hip/tuning_cache.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace sparkle::hip {
namespace {

namespace fs = std::filesystem;

class TuningCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tuning_cache_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string ReadFile(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  void WriteFile(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }

  fs::path dir_;
};

TEST_F(TuningCacheTest, FileNameKeepsSafeCharactersOnly) {
  EXPECT_EQ(TuningCache::FileName("NVIDIA H100 80GB HBM3"),
            "conv-tuning-NVIDIA_H100_80GB_HBM3.txt");
  EXPECT_EQ(TuningCache::FileName("gfx90a:sramecc+/x"), "conv-tuning-gfx90a_sramecc__x.txt");
}

TEST_F(TuningCacheTest, MemoryOnlyWritesNothing) {
  TuningCache cache("dev", "");
  EXPECT_EQ(cache.path(), "");
  EXPECT_FALSE(cache.Lookup("shape").has_value());
  ASSERT_TRUE(cache.Store("shape", "impl_a", 12.5).ok());
  EXPECT_EQ(cache.Lookup("shape").value_or(""), "impl_a");
  EXPECT_FALSE(fs::exists(dir_));
}

TEST_F(TuningCacheTest, StoreWritesAFileThatANewCacheReloads) {
  {
    TuningCache cache("Device X", dir_.string());
    EXPECT_TRUE(cache.load_status().ok());  // absent file: nothing to load, no error
    ASSERT_TRUE(cache.Store("mb1_shapeB", "impl_b", 7.25).ok());
    ASSERT_TRUE(cache.Store("mb1_shapeA", "impl_a", 3).ok());
    ASSERT_TRUE(cache.Store("mb1_shapeB", "impl_c", 6).ok());  // replaces
  }
  const fs::path file = dir_ / "conv-tuning-Device_X.txt";
  EXPECT_EQ(ReadFile(file),
            "sparkle-conv-tuning 2\ndevice Device X\n"
            "impl_a\t3\tmb1_shapeA\nimpl_c\t6\tmb1_shapeB\n");
  // Nothing but the file itself is left in the directory (the temporary was renamed).
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 1);

  TuningCache reloaded("Device X", dir_.string());
  EXPECT_TRUE(reloaded.load_status().ok()) << reloaded.load_status();
  EXPECT_EQ(reloaded.size(), 2u);
  EXPECT_EQ(reloaded.Lookup("mb1_shapeA").value_or(""), "impl_a");
  EXPECT_EQ(reloaded.Lookup("mb1_shapeB").value_or(""), "impl_c");
}

TEST_F(TuningCacheTest, CorruptFilesAreIgnoredAndReplaced) {
  const fs::path file = dir_ / "conv-tuning-dev.txt";
  const std::string bad_files[] = {
      "",                                                     // empty
      "garbage\n",                                            // wrong header
      "sparkle-conv-tuning 3\ndevice dev\n",                  // other version
      "sparkle-conv-tuning 2\n",                              // no device line
      "sparkle-conv-tuning 2\ndevice dev\nimpl\t1\n",         // two fields
      "sparkle-conv-tuning 2\ndevice dev\nimpl\tfast\tkey\n",  // not a number
      "sparkle-conv-tuning 2\ndevice dev\nimpl\t-1\tkey\n",   // negative
      "sparkle-conv-tuning 2\ndevice dev\nimpl\tnan\tkey\n",  // not finite
      "sparkle-conv-tuning 2\ndevice dev\n\t1\tkey\n",        // empty name
      std::string("sparkle-conv-tuning 2\ndevice dev\nimpl\t1\tk") + '\0' + "ey\n",  // binary
  };
  for (const std::string& text : bad_files) {
    SCOPED_TRACE(text);
    WriteFile(file, text);
    TuningCache cache("dev", dir_.string());
    if (text.empty()) {
      EXPECT_EQ(cache.load_status().code(), absl::StatusCode::kDataLoss);
    } else {
      EXPECT_FALSE(cache.load_status().ok());
    }
    EXPECT_EQ(cache.size(), 0u);
    ASSERT_TRUE(cache.Store("key", "impl", 1).ok());
    TuningCache reloaded("dev", dir_.string());
    EXPECT_TRUE(reloaded.load_status().ok()) << reloaded.load_status();
    EXPECT_EQ(reloaded.Lookup("key").value_or(""), "impl");
  }
}

TEST_F(TuningCacheTest, AFileOfAnotherDeviceIsIgnored) {
  // Same file name (the sanitised names collide), different device.
  WriteFile(dir_ / "conv-tuning-dev_1.txt",
            "sparkle-conv-tuning 2\ndevice dev/1\nimpl\t1\tkey\n");
  TuningCache cache("dev 1", dir_.string());
  EXPECT_EQ(cache.load_status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(cache.load_status().message().find("dev/1"), std::string::npos);
  EXPECT_FALSE(cache.Lookup("key").has_value());
}

TEST_F(TuningCacheTest, RejectsEntriesThatWouldCorruptTheFile) {
  TuningCache cache("dev", dir_.string());
  EXPECT_FALSE(cache.Store("key with space", "impl", 1).ok());
  EXPECT_FALSE(cache.Store("key", "im\tpl", 1).ok());
  EXPECT_FALSE(cache.Store("key", "impl", -1).ok());
  EXPECT_EQ(cache.size(), 0u);
}

TEST_F(TuningCacheTest, AnUnwritableDirectoryKeepsTheMemoryEntry) {
  WriteFile(dir_ / "not_a_dir", "x");
  TuningCache cache("dev", (dir_ / "not_a_dir").string());
  EXPECT_FALSE(cache.Store("key", "impl", 1).ok());
  EXPECT_EQ(cache.Lookup("key").value_or(""), "impl");
}

TEST_F(TuningCacheTest, EraseForgetsAnEntry) {
  TuningCache cache("dev", "");
  ASSERT_TRUE(cache.Store("key", "impl", 1).ok());
  cache.Erase("key");
  EXPECT_FALSE(cache.Lookup("key").has_value());
}

// Keys by N bucket: the next power of two of the batch size, the rest of the shape unchanged.
TEST_F(TuningCacheTest, ShapeKeysAreByNBucket) {
  EXPECT_EQ(TuningCache::NBucket(1), 1);
  EXPECT_EQ(TuningCache::NBucket(2), 2);
  EXPECT_EQ(TuningCache::NBucket(3), 4);
  EXPECT_EQ(TuningCache::NBucket(4), 4);
  EXPECT_EQ(TuningCache::NBucket(5), 8);
  EXPECT_EQ(TuningCache::NBucket(1000), 1024);
  EXPECT_EQ(TuningCache::NBucket(1025), 2048);
  Conv2dParams p{.n = 5, .c = 16, .h = 12, .w = 12, .k = 16, .r = 3, .s = 3};
  Conv2dParams eight = p;
  eight.n = 8;
  EXPECT_EQ(TuningCache::ShapeKey(p), eight.ToString());
  EXPECT_EQ(TuningCache::ShapeKey(p).rfind("mb8_", 0), 0u) << TuningCache::ShapeKey(p);
  Conv2dParams six = p;
  six.n = 6;
  EXPECT_EQ(TuningCache::ShapeKey(six), TuningCache::ShapeKey(p));
  Conv2dParams four = p;
  four.n = 4;
  EXPECT_NE(TuningCache::ShapeKey(four), TuningCache::ShapeKey(p));
  Conv2dParams other = p;
  other.k = 32;
  EXPECT_NE(TuningCache::ShapeKey(other), TuningCache::ShapeKey(p));
}

// A file of format 1 (keys by exact N) is not read: ignored, its shapes tuned again, and
// replaced by format 2 at the next Store.
TEST_F(TuningCacheTest, AFormat1FileIsIgnoredAndReplaced) {
  const fs::path file = dir_ / TuningCache::FileName("dev");
  WriteFile(file, "sparkle-conv-tuning 1\ndevice dev\nimpl\t1\tmb3_shape\n");
  TuningCache cache("dev", dir_.string());
  EXPECT_EQ(cache.load_status().code(), absl::StatusCode::kFailedPrecondition)
      << cache.load_status();
  EXPECT_NE(cache.load_status().message().find("format 1"), std::string::npos);
  EXPECT_EQ(cache.size(), 0u);
  ASSERT_TRUE(cache.Store("mb4_shape", "impl", 2).ok());
  EXPECT_EQ(ReadFile(file), "sparkle-conv-tuning 2\ndevice dev\nimpl\t2\tmb4_shape\n");
}

}  // namespace
}  // namespace sparkle::hip
