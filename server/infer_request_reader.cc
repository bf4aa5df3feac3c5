#include "server/infer_request_reader.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace sparkle {
namespace {

constexpr int kRawInputContents = 7;

// A cursor over the slices.
class SliceReader {
 public:
  explicit SliceReader(absl::Span<const absl::string_view> slices) : slices_(slices) {
    SkipEmpty();
  }

  bool done() const { return index_ == slices_.size(); }
  int64_t position() const { return position_; }

  // A varint of at most 10 bytes.
  bool ReadVarint(uint64_t* value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (done()) return false;
      const uint8_t byte = static_cast<uint8_t>(slices_[index_][offset_]);
      Advance(1);
      if (shift == 63 && byte > 1) return false;
      result |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *value = result;
        return true;
      }
    }
    return false;
  }

  // The next `size` bytes as pieces of the slices; false when fewer remain.
  bool Take(uint64_t size, TensorBytes* out) {
    out->size = static_cast<int64_t>(size);
    while (size > 0) {
      if (done()) return false;
      const absl::string_view rest = slices_[index_].substr(offset_);
      const size_t n = static_cast<size_t>(std::min<uint64_t>(size, rest.size()));
      out->pieces.push_back(rest.substr(0, n));
      Advance(n);
      size -= n;
    }
    return true;
  }

  // Appends the next `size` bytes to `out`; false when fewer remain.
  bool CopyTo(uint64_t size, std::string* out) {
    while (size > 0) {
      if (done()) return false;
      const absl::string_view rest = slices_[index_].substr(offset_);
      const size_t n = static_cast<size_t>(std::min<uint64_t>(size, rest.size()));
      out->append(rest.data(), n);
      Advance(n);
      size -= n;
    }
    return true;
  }

 private:
  void Advance(size_t n) {
    offset_ += n;
    position_ += static_cast<int64_t>(n);
    if (offset_ == slices_[index_].size()) {
      ++index_;
      offset_ = 0;
      SkipEmpty();
    }
  }
  void SkipEmpty() {
    while (index_ < slices_.size() && slices_[index_].empty()) ++index_;
  }

  absl::Span<const absl::string_view> slices_;
  size_t index_ = 0;
  size_t offset_ = 0;
  int64_t position_ = 0;
};

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

absl::Status Malformed(int64_t position, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "the request is not a valid ModelInferRequest: ", what, " at byte ", position));
}

}  // namespace

absl::Status ReadInferRequest(absl::Span<const absl::string_view> slices,
                              InferRequestView* view) {
  view->raw_inputs.clear();
  view->serialized_bytes = 0;
  for (absl::string_view s : slices) view->serialized_bytes += static_cast<int64_t>(s.size());
  std::string header;
  SliceReader reader(slices);
  while (!reader.done()) {
    const int64_t start = reader.position();
    uint64_t tag = 0;
    if (!reader.ReadVarint(&tag)) return Malformed(start, "truncated field tag");
    const uint64_t field = tag >> 3;
    const int wire_type = static_cast<int>(tag & 7);
    if (field == 0 || field > 536870911) return Malformed(start, "invalid field number");
    if (field == kRawInputContents) {
      uint64_t size = 0;
      if (wire_type != 2) return Malformed(start, "raw_input_contents is not length-delimited");
      if (!reader.ReadVarint(&size)) return Malformed(start, "truncated length");
      TensorBytes bytes;
      if (!reader.Take(size, &bytes)) return Malformed(start, "truncated raw_input_contents");
      view->raw_inputs.push_back(std::move(bytes));
      continue;
    }
    AppendVarint(tag, &header);
    switch (wire_type) {
      case 0: {  // varint
        uint64_t value = 0;
        if (!reader.ReadVarint(&value)) return Malformed(start, "truncated varint");
        AppendVarint(value, &header);
        break;
      }
      case 1:  // 64-bit
        if (!reader.CopyTo(8, &header)) return Malformed(start, "truncated fixed64");
        break;
      case 5:  // 32-bit
        if (!reader.CopyTo(4, &header)) return Malformed(start, "truncated fixed32");
        break;
      case 2: {  // length-delimited
        uint64_t size = 0;
        if (!reader.ReadVarint(&size)) return Malformed(start, "truncated length");
        AppendVarint(size, &header);
        if (!reader.CopyTo(size, &header)) return Malformed(start, "truncated field");
        break;
      }
      default:
        return Malformed(start, absl::StrCat("unsupported wire type ", wire_type));
    }
  }
  view->message_ = nullptr;
  if (!view->owned_header_.ParseFromString(header)) {
    return absl::InvalidArgumentError(
        "the request is not a valid ModelInferRequest: a field of its header (names, shapes, "
        "parameters) does not parse");
  }
  return absl::OkStatus();
}

InferRequestView ViewOf(const inference::ModelInferRequest& message) {
  InferRequestView view;
  view.message_ = &message;
  view.serialized_bytes = static_cast<int64_t>(message.ByteSizeLong());
  view.raw_inputs.reserve(message.raw_input_contents_size());
  for (const std::string& raw : message.raw_input_contents()) {
    TensorBytes bytes;
    bytes.size = static_cast<int64_t>(raw.size());
    bytes.pieces.push_back(raw);
    view.raw_inputs.push_back(std::move(bytes));
  }
  return view;
}

}  // namespace sparkle

