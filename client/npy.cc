#include "client/npy.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace sparkle::client {
namespace {

// The data bytes are handed to and from the wire unconverted; both are little-endian.
static_assert(std::endian::native == std::endian::little,
              "sparklectl assumes a little-endian host (the .npy data and the wire are '<f4')");

constexpr absl::string_view kMagic("\x93NUMPY", 6);
constexpr size_t kAlign = 64;  // numpy >= 1.14 aligns the data to 64 bytes; older used 16
constexpr absl::string_view kDescr = "<f4";

absl::Status Invalid(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
}

struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

// Recursive descent over the subset of Python literal syntax that numpy writes into the header:
// a dict with string keys whose values are a string, True/False, or a tuple of non-negative ints
// (optionally with Python 2's 'L' suffix, which old numpy wrote).
class HeaderParser {
 public:
  HeaderParser(absl::string_view text, absl::string_view name) : text_(text), name_(name) {}

  absl::StatusOr<Header> Parse() {
    Header header;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      SPARKLE_ASSIGN_OR_RETURN(std::string key, ParseString());
      SkipSpace();
      if (!Consume(':')) return Error(absl::StrCat("expected ':' after key '", key, "'"));
      SkipSpace();
      bool* seen = nullptr;
      if (key == "descr") {
        seen = &seen_descr;
        SPARKLE_ASSIGN_OR_RETURN(header.descr, ParseString());
      } else if (key == "fortran_order") {
        seen = &seen_order;
        SPARKLE_ASSIGN_OR_RETURN(header.fortran_order, ParseBool());
      } else if (key == "shape") {
        seen = &seen_shape;
        SPARKLE_ASSIGN_OR_RETURN(header.shape, ParseTuple());
      } else {
        return Error(absl::StrCat("unexpected key '", key,
                                  "' (numpy writes only descr, fortran_order and shape)"));
      }
      if (*seen) return Error(absl::StrCat("key '", key, "' appears twice"));
      *seen = true;
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume('}')) break;
      return Error("expected ',' or '}' after a value");
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the closing '}'");
    if (!seen_descr || !seen_order || !seen_shape) {
      return Error("the header must contain the keys descr, fortran_order and shape");
    }
    return header;
  }

 private:
  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool ConsumeWord(absl::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  absl::StatusOr<std::string> ParseString() {
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      return Error("expected a quoted string");
    }
    const char quote = text_[pos_++];
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;
      out.push_back(text_[pos_++]);
    }
    if (!Consume(quote)) return Error("unterminated string");
    return out;
  }

  absl::StatusOr<bool> ParseBool() {
    if (ConsumeWord("True")) return true;
    if (ConsumeWord("False")) return false;
    return Error("expected True or False");
  }

  absl::StatusOr<std::vector<int64_t>> ParseTuple() {
    if (!Consume('(')) return Error("expected '(' to start the shape tuple");
    std::vector<int64_t> dims;
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      if (pos_ < text_.size() && text_[pos_] == '-') {
        return Error("a shape dimension is negative");
      }
      int64_t dim = 0;
      const size_t start = pos_;
      while (pos_ < text_.size() && absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_]))) {
        const int digit = text_[pos_++] - '0';
        if (dim > (std::numeric_limits<int64_t>::max() - digit) / 10) {
          return Error("a shape dimension overflows int64");
        }
        dim = dim * 10 + digit;
      }
      if (pos_ == start) return Error("expected an integer in the shape tuple");
      Consume('L');
      dims.push_back(dim);
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume(')')) break;
      return Error("expected ',' or ')' in the shape tuple");
    }
    return dims;
  }

  absl::Status Error(absl::string_view what) const {
    constexpr size_t kShown = 160;
    std::string shown(text_.substr(0, kShown));
    if (text_.size() > kShown) shown += "...";
    return Invalid(name_, absl::StrCat("malformed .npy header: ", what, " at offset ", pos_,
                                       " in \"", absl::StripTrailingAsciiWhitespace(shown),
                                       "\""));
  }

  absl::string_view text_;
  absl::string_view name_;
  size_t pos_ = 0;
};

uint32_t ReadLittleEndian(absl::string_view bytes) {
  uint32_t value = 0;
  for (size_t i = bytes.size(); i > 0; --i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[i - 1]);
  }
  return value;
}

void AppendLittleEndian(uint32_t value, int width, std::string* out) {
  for (int i = 0; i < width; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// Closes a FILE* on scope exit (errors on close are checked explicitly where they matter).
struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

absl::Status ErrnoStatus(int err, absl::string_view path, absl::string_view action) {
  const std::string message = absl::StrCat(path, ": cannot ", action, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace

int64_t NpyArray::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> NpyArray::ToFloats() const {
  std::vector<float> out(data.size() / sizeof(float));
  std::memcpy(out.data(), data.data(), out.size() * sizeof(float));
  return out;
}

absl::StatusOr<NpyArray> NpyArray::FromFloats(std::vector<int64_t> shape,
                                              absl::Span<const float> values) {
  NpyArray array;
  array.shape = std::move(shape);
  if (array.NumElements() != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(absl::StrCat("shape ", absl::StrJoin(array.shape, "x"),
                                                   " holds ", array.NumElements(),
                                                   " elements; got ", values.size(), " values"));
  }
  array.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return array;
}

absl::StatusOr<NpyArray> ParseNpy(absl::string_view bytes, absl::string_view name) {
  if (bytes.size() < kMagic.size() + 2 || bytes.substr(0, kMagic.size()) != kMagic) {
    return Invalid(name, "not a .npy file (missing the \\x93NUMPY magic string)");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  size_t len_width = 0;
  if (major == 1 && minor == 0) {
    len_width = 2;
  } else if ((major == 2 || major == 3) && minor == 0) {
    len_width = 4;  // 3.0 differs from 2.0 only in allowing UTF-8 in the header
  } else {
    return Invalid(name, absl::StrCat(".npy format version ", major, ".", minor,
                                      " is not supported (1.0, 2.0 and 3.0 are)"));
  }
  const size_t prefix = kMagic.size() + 2 + len_width;
  if (bytes.size() < prefix) return Invalid(name, "truncated inside the .npy preamble");
  const size_t header_len = ReadLittleEndian(bytes.substr(kMagic.size() + 2, len_width));
  if (bytes.size() - prefix < header_len) {
    return Invalid(name, absl::StrCat("truncated: the header claims ", header_len,
                                      " bytes but the file has only ", bytes.size() - prefix,
                                      " after the preamble"));
  }
  SPARKLE_ASSIGN_OR_RETURN(Header header,
                           HeaderParser(bytes.substr(prefix, header_len), name).Parse());
  if (header.descr != kDescr) {
    return Invalid(name, absl::StrCat("dtype '", header.descr,
                                      "' is not supported; sparklectl reads float32 "
                                      "little-endian ('<f4') only (in numpy: a.astype('<f4'))"));
  }
  if (header.fortran_order) {
    return Invalid(name, "fortran_order (column-major) arrays are not supported; save a "
                         "C-order array (in numpy: np.ascontiguousarray(a))");
  }
  uint64_t elements = 1;
  for (int64_t d : header.shape) {
    if (d != 0 && elements > std::numeric_limits<uint64_t>::max() / sizeof(float) / d) {
      return Invalid(name, absl::StrCat("shape (", absl::StrJoin(header.shape, ", "),
                                        ") is too large to address"));
    }
    elements *= static_cast<uint64_t>(d);
  }
  const uint64_t want = elements * sizeof(float);
  const uint64_t have = bytes.size() - prefix - header_len;
  if (have < want) {
    return Invalid(name, absl::StrCat("truncated: shape (", absl::StrJoin(header.shape, ", "),
                                      ") needs ", want, " data bytes but the file has ", have));
  }
  if (have > want) {
    return Invalid(name, absl::StrCat("has ", have - want, " unexpected bytes after the ", want,
                                      " data bytes of shape (",
                                      absl::StrJoin(header.shape, ", "), ")"));
  }
  NpyArray array;
  array.shape = std::move(header.shape);
  array.data = std::string(bytes.substr(prefix + header_len));
  return array;
}

absl::StatusOr<std::string> SerializeNpy(const NpyArray& array) {
  for (int64_t d : array.shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write shape (", absl::StrJoin(array.shape, ", "), "): negative"));
    }
  }
  if (array.data.size() != static_cast<uint64_t>(array.NumElements()) * sizeof(float)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot write shape (", absl::StrJoin(array.shape, ", "), "): it needs ",
        array.NumElements() * sizeof(float), " data bytes; have ", array.data.size()));
  }
  // Python's tuple repr: "()", "(3,)", "(2, 3)".
  std::string shape = absl::StrCat("(", absl::StrJoin(array.shape, ", "),
                                   array.shape.size() == 1 ? ",)" : ")");
  std::string header =
      absl::StrCat("{'descr': '", kDescr, "', 'fortran_order': False, 'shape': ", shape, ", }");
  int major = 1;
  size_t prefix = kMagic.size() + 2 + 2;
  // Padding so that prefix + header + '\n' is a multiple of kAlign (the data then starts
  // aligned, which lets numpy memory-map the file).
  size_t padded = header.size() + 1;
  padded += (kAlign - (prefix + padded) % kAlign) % kAlign;
  if (padded > std::numeric_limits<uint16_t>::max()) {
    major = 2;
    prefix = kMagic.size() + 2 + 4;
    padded = header.size() + 1;
    padded += (kAlign - (prefix + padded) % kAlign) % kAlign;
  }
  header.resize(padded - 1, ' ');
  header.push_back('\n');

  std::string out;
  out.reserve(prefix + header.size() + array.data.size());
  out.append(kMagic.data(), kMagic.size());
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  AppendLittleEndian(static_cast<uint32_t>(header.size()), major == 1 ? 2 : 4, &out);
  out.append(header);
  out.append(array.data);
  return out;
}

absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) return ErrnoStatus(errno, path, "open");
  // Read straight into a string sized from the file (tensors can be hundreds of MiB); the loop
  // still copes with files whose size is unknown or changes underneath (pipes, /proc).
  std::string bytes;
  size_t capacity = 1 << 16;
  if (std::fseek(file.get(), 0, SEEK_END) == 0) {
    const long size = std::ftell(file.get());
    if (size > 0) capacity = static_cast<size_t>(size) + 1;  // +1 detects growth in one pass
    std::rewind(file.get());
  }
  size_t used = 0;
  while (true) {
    bytes.resize(capacity);
    used += std::fread(bytes.data() + used, 1, capacity - used, file.get());
    if (used < capacity) break;
    capacity *= 2;
  }
  if (std::ferror(file.get())) return ErrnoStatus(errno, path, "read");
  bytes.resize(used);
  return ParseNpy(bytes, path);
}

absl::Status WriteNpyFile(const std::string& path, const NpyArray& array) {
  absl::StatusOr<std::string> bytes = SerializeNpy(array);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(), absl::StrCat(path, ": ", bytes.status().message()));
  }
  FilePtr file(std::fopen(path.c_str(), "wb"));
  if (file == nullptr) return ErrnoStatus(errno, path, "create");
  if (std::fwrite(bytes->data(), 1, bytes->size(), file.get()) != bytes->size()) {
    return ErrnoStatus(errno, path, "write");
  }
  // fclose flushes; a full disk is often reported only here.
  if (std::fclose(file.release()) != 0) return ErrnoStatus(errno, path, "write");
  return absl::OkStatus();
}

}  // namespace sparkle::client
