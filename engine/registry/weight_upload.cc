#include "engine/registry/weight_upload.h"

#include <openssl/evp.h>

#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/conv2d_params.h"

namespace sparkle {
namespace {

constexpr size_t kMaxLabelBytes = 1024;
// Versions the hashed layout below; a change of layout must change it.
constexpr char kHashTag[] = "sparkle.weights.v1";

void AppendLe64(std::string* out, int64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}

}  // namespace

// SHA-256 through OpenSSL's EVP interface (libcrypto).
struct WeightUpload::Hasher {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Hasher() { EVP_MD_CTX_free(ctx); }
};

absl::StatusOr<std::unique_ptr<WeightUpload>> WeightUpload::Begin(
    WeightHeader header, std::shared_ptr<MemoryBudget> budget) {
  const std::optional<DataType> dtype = ParseDataType(header.datatype);
  if (!dtype.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("weights datatype must be FP32, BF16 or FP16; was '",
                                                   absl::CHexEscape(header.datatype), "'"));
  }
  const int64_t element = ElementSize(*dtype);
  if (header.shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights shape must have rank 4 [K, C/groups, R, S]; was [",
        absl::StrJoin(header.shape, ", "), "]"));
  }
  int64_t elements = 1;
  for (int64_t d : header.shape) {
    if (d < 1 || d > Conv2dParams::kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat("weights shape [",
                                                     absl::StrJoin(header.shape, ", "),
                                                     "] has a dimension outside [1, 2^31 - 1]"));
    }
    if (elements > (int64_t{1} << 60) / d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weights shape [", absl::StrJoin(header.shape, ", "), "] is too large"));
    }
    elements *= d;
  }
  if (!header.bias.empty() && static_cast<int64_t>(header.bias.size()) != header.shape[0]) {
    return absl::InvalidArgumentError(absl::StrCat("bias has ", header.bias.size(),
                                                   " values; the weights have K=",
                                                   header.shape[0]));
  }
  if (header.label.size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(absl::StrCat("label is ", header.label.size(),
                                                   " bytes; at most ", kMaxLabelBytes));
  }
  const int64_t bias_bytes = static_cast<int64_t>(header.bias.size()) * element;
  const int64_t bytes = elements * element + bias_bytes;
  // Only the bias is reserved now; the weight bytes are reserved as they arrive (Append), so a
  // stalled upload holds what it sent, not what it declared. A tensor that cannot fit in what is
  // free now is refused at once rather than after its bytes were sent.
  if (budget != nullptr && (bytes > budget->limit() - budget->used() ||
                            !budget->TryReserve(bias_bytes))) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the weights registry has no room for ", bytes, " bytes: ", budget->used(), " of ",
        budget->limit(), " bytes are used (unregister weights, or raise weights.budget_bytes)"));
  }
  auto upload = std::unique_ptr<WeightUpload>(new WeightUpload(
      std::move(header), budget, bias_bytes));
  try {
    upload->weight_ = AllocateAligned((elements * element + 3) / 4);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory allocating ", elements * element, " bytes of weights"));
  }
  upload->weight_bytes_ = elements * element;
  upload->dtype_ = *dtype;
  upload->bias_.resize(static_cast<size_t>(bias_bytes));
  if (bias_bytes > 0) {
    NarrowFromFloat(*dtype, upload->header_.bias.data(), upload->bias_.data(),
                    static_cast<int64_t>(upload->header_.bias.size()));
  }

  std::string prefix(kHashTag, sizeof(kHashTag));  // with its NUL
  for (int64_t d : upload->header_.shape) AppendLe64(&prefix, d);
  prefix.push_back(upload->header_.bias.empty() ? 0 : 1);
  if (*dtype != DataType::kFp32) absl::StrAppend(&prefix, DataTypeName(*dtype));
  EVP_MD_CTX* ctx = upload->hasher_->ctx;
  if (ctx == nullptr || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx, prefix.data(), prefix.size()) != 1 ||
      (!upload->bias_.empty() &&  // data() of an empty vector may be null
       EVP_DigestUpdate(ctx, upload->bias_.data(), upload->bias_.size()) != 1)) {
    return absl::InternalError("OpenSSL SHA-256 initialisation failed");
  }
  return upload;
}

WeightUpload::WeightUpload(WeightHeader header, std::shared_ptr<MemoryBudget> budget,
                           int64_t reserved)
    : header_(std::move(header)),
      budget_(std::move(budget)),
      reserved_(reserved),
      weight_bytes_(0),
      hasher_(std::make_unique<Hasher>()) {}

WeightUpload::~WeightUpload() {
  if (budget_ != nullptr) budget_->Release(reserved_);
}

absl::Status WeightUpload::Append(absl::string_view bytes) {
  if (!id_.empty() || weight_ == nullptr) {
    return absl::FailedPreconditionError("the weights upload is already complete");
  }
  if (static_cast<int64_t>(bytes.size()) > weight_bytes_ - received_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights data is longer than the shape [", absl::StrJoin(header_.shape, ", "),
        "] declares: ", weight_bytes_, " bytes expected, ", received_ + bytes.size(),
        " received"));
  }
  if (bytes.empty()) return absl::OkStatus();  // memcpy's pointers may then be null
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (budget_ != nullptr && !budget_->TryReserve(size)) return NoRoom(size);
  reserved_ += size;
  std::memcpy(reinterpret_cast<char*>(weight_.get()) + received_, bytes.data(), bytes.size());
  if (EVP_DigestUpdate(hasher_->ctx, bytes.data(), bytes.size()) != 1) {
    return absl::InternalError("OpenSSL SHA-256 update failed");
  }
  received_ += size;
  return absl::OkStatus();
}

absl::Status WeightUpload::NoRoom(int64_t bytes) const {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the weights registry has no room for ", bytes, " more bytes of this upload (", received_,
      " of ", weight_bytes_, " received): ", budget_->used(), " of ", budget_->limit(),
      " bytes are used (unregister weights, or raise weights.budget_bytes)"));
}

absl::StatusOr<std::string> WeightUpload::Digest() {
  if (!id_.empty()) return id_;
  if (received_ != weight_bytes_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights data is shorter than the shape [", absl::StrJoin(header_.shape, ", "),
        "] declares: ", weight_bytes_, " bytes expected, ", received_, " received"));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(hasher_->ctx, digest, &size) != 1 || size != 32) {
    return absl::InternalError("OpenSSL SHA-256 finalisation failed");
  }
  id_ = absl::StrCat("sha256:",
                     absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), size)));
  return id_;
}

std::shared_ptr<RegisteredWeight> WeightUpload::Build(uint64_t weight_key,
                                                      absl::Time registered_at) {
  const std::vector<int64_t>& s = header_.shape;
  auto weight = std::make_shared<RegisteredWeight>(
      id_, std::move(header_.label), std::array<int64_t, 4>{s[0], s[1], s[2], s[3]}, dtype_,
      std::move(weight_), std::move(bias_), weight_key, registered_at, budget_, reserved_);
  reserved_ = 0;  // now the weight's
  return weight;
}

}  // namespace sparkle
