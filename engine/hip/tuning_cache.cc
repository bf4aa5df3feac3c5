#include "engine/hip/tuning_cache.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "spdlog/spdlog.h"

namespace sparkle::hip {
namespace {

constexpr char kHeader[] = "sparkle-conv-tuning 2";
constexpr char kHeaderV1[] = "sparkle-conv-tuning 1";  // keys by exact N: not read
constexpr char kDevicePrefix[] = "device ";

// Implementation names and shape keys: printable ASCII without spaces.
bool ValidToken(const std::string& s) {
  if (s.empty()) return false;
  for (char ch : s) {
    if (ch <= ' ' || ch > '~') return false;
  }
  return true;
}

}  // namespace

int64_t TuningCache::NBucket(int64_t n) {
  int64_t b = 1;
  while (b < n && b < (int64_t{1} << 62)) b <<= 1;
  return b;
}

std::string TuningCache::ShapeKey(const Conv2dParams& p) {
  Conv2dParams bucket = p;
  bucket.n = NBucket(p.n);
  return bucket.ToString();
}

std::string TuningCache::FileName(const std::string& device_name) {
  std::string safe;
  for (char ch : device_name) {
    const bool keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    safe.push_back(keep ? ch : '_');
  }
  return absl::StrCat("conv-tuning-", safe, ".txt");
}

TuningCache::TuningCache(std::string device_name, std::string dir)
    : device_name_(std::move(device_name)),
      path_(dir.empty() ? std::string()
                        : (std::filesystem::path(dir) / FileName(device_name_)).string()) {
  if (path_.empty()) return;
  load_status_ = Load();
  if (!load_status_.ok()) {
    spdlog::warn("conv tuning cache {} ignored: {}", path_, load_status_.ToString());
  }
}

absl::Status TuningCache::Load() {
  std::ifstream in(path_);
  if (!in) return absl::OkStatus();  // absent: nothing tuned yet
  std::string line;
  if (std::getline(in, line) && line == kHeaderV1) {
    return absl::FailedPreconditionError(
        "format 1 (keys by exact batch size); shapes are tuned again per N bucket");
  }
  if (!in || line != kHeader) {
    return absl::DataLossError(absl::StrCat("first line is not \"", kHeader, "\""));
  }
  if (!std::getline(in, line) || line.rfind(kDevicePrefix, 0) != 0) {
    return absl::DataLossError("second line is not \"device <name>\"");
  }
  const std::string device = line.substr(sizeof(kDevicePrefix) - 1);
  if (device != device_name_) {
    return absl::FailedPreconditionError(
        absl::StrCat("written for device \"", device, "\", this is \"", device_name_, "\""));
  }
  std::map<std::string, Entry> loaded;
  int line_no = 2;
  while (std::getline(in, line)) {
    ++line_no;
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    Entry entry;
    if (fields.size() != 3 || !ValidToken(fields[0]) || !ValidToken(fields[2]) ||
        !absl::SimpleAtod(fields[1], &entry.microseconds) ||
        !std::isfinite(entry.microseconds) || entry.microseconds < 0) {
      return absl::DataLossError(
          absl::StrCat("line ", line_no, " is not \"<implementation>\\t<us>\\t<shape>\""));
    }
    entry.implementation = std::move(fields[0]);
    loaded[std::move(fields[2])] = std::move(entry);
  }
  if (in.bad()) return absl::DataLossError("read error");
  std::lock_guard<std::mutex> lock(mu_);
  entries_ = std::move(loaded);
  return absl::OkStatus();
}

std::optional<std::string> TuningCache::Lookup(const std::string& shape_key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(shape_key);
  if (it == entries_.end()) return std::nullopt;
  return it->second.implementation;
}

size_t TuningCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

void TuningCache::Erase(const std::string& shape_key) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(shape_key);
}

absl::Status TuningCache::Store(const std::string& shape_key, const std::string& implementation,
                                double microseconds) {
  if (!ValidToken(shape_key) || !ValidToken(implementation) || !std::isfinite(microseconds) ||
      microseconds < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad tuning entry: ", implementation, " ", microseconds, " ", shape_key));
  }
  std::lock_guard<std::mutex> lock(mu_);
  entries_[shape_key] = Entry{implementation, microseconds};
  if (path_.empty()) return absl::OkStatus();
  absl::Status status = WriteLocked();
  if (!status.ok()) spdlog::warn("conv tuning cache not saved: {}", status.ToString());
  return status;
}

absl::Status TuningCache::WriteLocked() const {
  if (device_name_.find_first_of("\n\r") != std::string::npos) {
    return absl::InvalidArgumentError("device name contains a line break");
  }
  std::ostringstream text;
  text << kHeader << '\n' << kDevicePrefix << device_name_ << '\n';
  for (const auto& [key, entry] : entries_) {
    text << entry.implementation << '\t' << entry.microseconds << '\t' << key << '\n';
  }
  const std::filesystem::path path(path_);
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", path.parent_path().string(), ": ", ec.message()));
  }
  const std::string tmp = absl::StrCat(path_, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text.str();
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace sparkle::hip
