#include "engine/registry/weight_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace sparkle {
namespace {

constexpr char kMagic[] = "sparkle-weights 1";
constexpr size_t kChunkBytes = size_t{1} << 20;

absl::Status OsError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return OsError("cannot write", path);
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return OsError("cannot open directory", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : OsError("cannot fsync directory", dir);
}

absl::Status DataLoss(const std::string& path, absl::string_view why) {
  return absl::DataLossError(absl::StrCat("weight file ", path, ": ", why));
}

}  // namespace

std::string WeightFilePath(const std::string& dir, const std::string& id) {
  absl::string_view hex = id;
  absl::ConsumePrefix(&hex, "sha256:");
  return absl::StrCat(dir, "/", hex, kWeightFileSuffix);
}

absl::Status WriteWeightFile(const std::string& path, const RegisteredWeight& weight) {
  const auto& s = weight.shape();
  const std::string header = absl::StrCat(
      kMagic, "\nlabel ", absl::CEscape(weight.label()), "\nshape ", s[0], " ", s[1], " ", s[2],
      " ", s[3], "\nbias ", weight.has_bias() ? 1 : 0,
      // FP32 files keep the format of earlier versions: the line is only written for others.
      weight.dtype() == DataType::kFp32 ? "" : absl::StrCat("\ndatatype ", DataTypeName(weight.dtype())),
      "\nregistered ",
      absl::StrFormat("%.6f", absl::ToDoubleSeconds(weight.registered_at() - absl::UnixEpoch())),
      "\n\n");
  const int64_t element = ElementSize(weight.dtype());
  const std::string temp = absl::StrCat(path, ".tmp");
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return OsError("cannot create", temp);
  absl::Status status = WriteAll(fd, header.data(), header.size(), temp);
  if (status.ok() && weight.has_bias()) {
    status = WriteAll(fd, weight.bias(), static_cast<size_t>(weight.k() * element), temp);
  }
  if (status.ok()) {
    status = WriteAll(fd, weight.weight(), static_cast<size_t>(weight.weight_elements() * element),
                      temp);
  }
  if (status.ok() && ::fsync(fd) != 0) status = OsError("cannot fsync", temp);
  ::close(fd);
  if (status.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    status = OsError("cannot rename into", path);
  }
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  const size_t slash = path.rfind('/');
  return SyncDirectory(slash == std::string::npos ? "." : path.substr(0, slash));
}

absl::StatusOr<LoadedWeightFile> ReadWeightFile(const std::string& path,
                                                std::shared_ptr<MemoryBudget> budget) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open weight file ", path));
  std::string line;
  if (!std::getline(in, line) || line != kMagic) return DataLoss(path, "bad magic line");
  WeightHeader header;
  bool has_bias = false, seen_shape = false, seen_bias = false, seen_time = false;
  double registered = 0;
  while (true) {
    if (!std::getline(in, line)) return DataLoss(path, "truncated header");
    if (line.empty()) break;
    const std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits(' ', 1));
    if (kv.first == "label") {
      std::string error;
      if (!absl::CUnescape(kv.second, &header.label, &error)) return DataLoss(path, error);
    } else if (kv.first == "shape") {
      for (absl::string_view d : absl::StrSplit(kv.second, ' ')) {
        int64_t v = 0;
        if (!absl::SimpleAtoi(d, &v)) return DataLoss(path, "bad shape");
        header.shape.push_back(v);
      }
      seen_shape = true;
    } else if (kv.first == "bias") {
      if (kv.second != "0" && kv.second != "1") return DataLoss(path, "bad bias flag");
      has_bias = kv.second == "1";
      seen_bias = true;
    } else if (kv.first == "datatype") {
      if (!ParseDataType(kv.second).has_value()) return DataLoss(path, "bad datatype");
      header.datatype = std::string(kv.second);
    } else if (kv.first == "registered") {
      if (!absl::SimpleAtod(kv.second, &registered)) return DataLoss(path, "bad time");
      seen_time = true;
    } else {
      return DataLoss(path, absl::StrCat("unknown header line '", absl::CHexEscape(line), "'"));
    }
  }
  if (!seen_shape || !seen_bias || !seen_time) return DataLoss(path, "incomplete header");
  if (has_bias) {
    if (header.shape.empty() || header.shape[0] < 1 || header.shape[0] > (int64_t{1} << 31)) {
      return DataLoss(path, "bad shape");
    }
    // The file must hold the bias it declares before anything is allocated for it: a header
    // line can claim 2^31 values (8 GiB) in a file of a few bytes.
    const std::streampos here = in.tellg();
    in.seekg(0, std::ios::end);
    const std::streamoff left = in.tellg() - here;
    in.seekg(here);
    const DataType type = *ParseDataType(header.datatype);
    const int64_t bias_bytes = header.shape[0] * ElementSize(type);
    if (here < 0 || left < bias_bytes) return DataLoss(path, "truncated bias");
    std::vector<char> bias(static_cast<size_t>(bias_bytes));
    if (!in.read(bias.data(), static_cast<std::streamsize>(bias_bytes))) {
      return DataLoss(path, "truncated bias");
    }
    header.bias.resize(static_cast<size_t>(header.shape[0]));
    WidenToFloat(type, bias.data(), header.bias.data(), header.shape[0]);
  }
  absl::StatusOr<std::unique_ptr<WeightUpload>> upload =
      WeightUpload::Begin(std::move(header), std::move(budget));
  if (absl::IsInvalidArgument(upload.status())) return DataLoss(path, upload.status().message());
  SPARKLE_RETURN_IF_ERROR(upload.status());
  std::vector<char> chunk(kChunkBytes);
  while ((*upload)->received_bytes() < (*upload)->total_bytes()) {
    const int64_t want =
        std::min<int64_t>(chunk.size(), (*upload)->total_bytes() - (*upload)->received_bytes());
    if (!in.read(chunk.data(), want)) return DataLoss(path, "truncated weights");
    SPARKLE_RETURN_IF_ERROR((*upload)->Append(absl::string_view(chunk.data(), want)));
  }
  if (in.peek() != std::char_traits<char>::eof()) return DataLoss(path, "trailing bytes");
  return LoadedWeightFile{std::move(*upload), absl::UnixEpoch() + absl::Seconds(registered)};
}

}  // namespace sparkle
