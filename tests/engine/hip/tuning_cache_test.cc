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
            "sparkle-conv-tuning 1\ndevice Device X\n"
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
      "sparkle-conv-tuning 2\ndevice dev\n",                  // other version
      "sparkle-conv-tuning 1\n",                              // no device line
      "sparkle-conv-tuning 1\ndevice dev\nimpl\t1\n",         // two fields
      "sparkle-conv-tuning 1\ndevice dev\nimpl\tfast\tkey\n",  // not a number
      "sparkle-conv-tuning 1\ndevice dev\nimpl\t-1\tkey\n",   // negative
      "sparkle-conv-tuning 1\ndevice dev\nimpl\tnan\tkey\n",  // not finite
      "sparkle-conv-tuning 1\ndevice dev\n\t1\tkey\n",        // empty name
      std::string("sparkle-conv-tuning 1\ndevice dev\nimpl\t1\tk") + '\0' + "ey\n",  // binary
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
            "sparkle-conv-tuning 1\ndevice dev/1\nimpl\t1\tkey\n");
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

}  // namespace
}  // namespace sparkle::hip
