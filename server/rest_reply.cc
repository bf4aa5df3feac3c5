#include "server/rest_reply.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/core/data_type.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace sparkle {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Whether `s` at `i` starts a valid UTF-8 sequence; its length in `n`.
bool Utf8At(absl::string_view s, size_t i, size_t* n) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  uint32_t cp;
  if (c < 0x80) {
    *n = 1;
    return true;
  } else if (c >= 0xC2 && c <= 0xDF) {
    *n = 2, cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    *n = 3, cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    *n = 4, cp = c & 0x07;
  } else {
    return false;
  }
  if (i + *n > s.size()) return false;
  for (size_t k = 1; k < *n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return false;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  // Overlong forms, surrogates and code points above U+10FFFF are not UTF-8.
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  return cp >= kMin[*n] && (cp < 0xD800 || cp > 0xDFFF) && cp <= 0x10FFFF;
}

// A JSON string of `s`; bytes that are not UTF-8 (a client's id, a path in a message) become
// U+FFFD, so that the reply is always valid JSON.
void WriteString(Writer& w, absl::string_view s) {
  std::string fixed;
  for (size_t i = 0, n = 0; i < s.size(); i += n) {
    if (!Utf8At(s, i, &n)) {
      if (fixed.empty()) fixed.assign(s.data(), i);
      fixed += "\xEF\xBF\xBD";
      n = 1;
    } else if (!fixed.empty()) {
      fixed.append(s.data() + i, n);
    }
  }
  if (!fixed.empty()) s = fixed;
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

// JSON has no NaN or infinity: null.
void WriteDouble(Writer& w, double d) {
  if (std::isfinite(d)) {
    w.Double(d);
  } else {
    w.Null();
  }
}

void WriteMessage(Writer& w, const Message& m);

// One value of `field` (element `index` when repeated, -1 otherwise).
void WriteValue(Writer& w, const Message& m, const FieldDescriptor* f, int index) {
  const Reflection* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      w.Int(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      w.Int64(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      w.Uint(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      w.Uint64(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      WriteDouble(w, rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      WriteDouble(w, rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      w.Bool(rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f));
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      WriteString(w, (rep ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f))->name());
      break;
    case FieldDescriptor::CPPTYPE_STRING:
      WriteString(w, rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f));
      break;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      WriteMessage(w, rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
      break;
  }
}

// Every scalar and repeated field (defaults included, as Triton prints its statistics), and
// the sub-messages and oneof members that are set.
void WriteMessage(Writer& w, const Message& m) {
  const Reflection* r = m.GetReflection();
  const google::protobuf::Descriptor* d = m.GetDescriptor();
  w.StartObject();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_map()) {
      WriteString(w, f->name());
      w.StartObject();
      const FieldDescriptor* key = f->message_type()->map_key();
      const FieldDescriptor* value = f->message_type()->map_value();
      for (int j = 0; j < r->FieldSize(m, f); ++j) {
        const Message& entry = r->GetRepeatedMessage(m, f, j);
        const Reflection* er = entry.GetReflection();
        // Map keys are integral or strings; JSON object keys are strings.
        if (key->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
          WriteString(w, er->GetString(entry, key));
        } else {
          WriteString(w, std::to_string(er->GetInt64(entry, key)));
        }
        WriteValue(w, entry, value, -1);
      }
      w.EndObject();
      continue;
    }
    if (f->is_repeated()) {
      WriteString(w, f->name());
      w.StartArray();
      for (int j = 0; j < r->FieldSize(m, f); ++j) WriteValue(w, m, f, j);
      w.EndArray();
      continue;
    }
    const bool optional_member =
        f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE || f->containing_oneof() != nullptr;
    if (optional_member && !r->HasField(m, f)) continue;
    WriteString(w, f->name());
    WriteValue(w, m, f, -1);
  }
  w.EndObject();
}

// A KServe parameter is the plain JSON value of whichever member is set.
void WriteParameters(Writer& w,
                     const google::protobuf::Map<std::string, inference::InferParameter>& params,
                     absl::string_view binary_key, int64_t binary_size) {
  w.Key("parameters");
  w.StartObject();
  for (const auto& [key, p] : params) {
    WriteString(w, key);
    switch (p.parameter_choice_case()) {
      case inference::InferParameter::kBoolParam:
        w.Bool(p.bool_param());
        break;
      case inference::InferParameter::kInt64Param:
        w.Int64(p.int64_param());
        break;
      case inference::InferParameter::kStringParam:
        WriteString(w, p.string_param());
        break;
      case inference::InferParameter::kDoubleParam:
        WriteDouble(w, p.double_param());
        break;
      case inference::InferParameter::kUint64Param:
        w.Uint64(p.uint64_param());
        break;
      default:
        w.Null();
    }
  }
  if (!binary_key.empty()) {
    WriteString(w, binary_key);
    w.Int64(binary_size);
  }
  w.EndObject();
}

// FP32, BF16 or FP16 values (`datatype`, the output's KServe name) as a flat JSON array, each
// widened exactly to a float and written in its shortest form that reads back as the same float
// (std::to_chars): a BF16/FP16 value read back and rounded to its datatype is the same value.
void WriteFloats(Writer& w, absl::string_view bytes, absl::string_view datatype) {
  w.StartArray();
  char buf[32];
  const DataType type = ParseDataType(datatype).value_or(DataType::kFp32);
  const size_t size = static_cast<size_t>(ElementSize(type));
  const size_t n = bytes.size() / size;
  for (size_t i = 0; i < n; ++i) {
    float v;
    if (type == DataType::kFp32) {
      std::memcpy(&v, bytes.data() + i * size, sizeof v);
    } else {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + i * size, sizeof bits);
      v = type == DataType::kBf16 ? Bf16ToFloat(bits) : Fp16ToFloat(bits);
    }
    if (!std::isfinite(v)) {  // JSON has no NaN or infinity
      w.Null();
      continue;
    }
    if (v == 0 && std::signbit(v)) {  // "-0" would read back as the integer 0
      w.RawValue("-0.0", 4, rapidjson::kNumberType);
      continue;
    }
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    w.RawValue(buf, static_cast<rapidjson::SizeType>(end - buf), rapidjson::kNumberType);
  }
  w.EndArray();
}

}  // namespace

int HttpStatusFor(const absl::Status& status, bool queue_full) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return queue_full ? 429 : 413;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(absl::string_view message) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("error");
  WriteString(w, message);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string ProtoToJson(const google::protobuf::Message& message) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  WriteMessage(w, message);
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string InferResponseJson(const inference::ModelInferResponse& header,
                              absl::string_view output, bool binary) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("model_name");
  WriteString(w, header.model_name());
  w.Key("model_version");
  WriteString(w, header.model_version());
  if (!header.id().empty()) {
    w.Key("id");
    WriteString(w, header.id());
  }
  w.Key("outputs");
  w.StartArray();
  for (const auto& out : header.outputs()) {
    w.StartObject();
    w.Key("name");
    WriteString(w, out.name());
    w.Key("datatype");
    WriteString(w, out.datatype());
    w.Key("shape");
    w.StartArray();
    for (int64_t d : out.shape()) w.Int64(d);
    w.EndArray();
    const bool has_bytes = !output.empty();
    if (has_bytes && binary) {
      WriteParameters(w, out.parameters(), "binary_data_size",
                      static_cast<int64_t>(output.size()));
    } else if (!out.parameters().empty()) {
      WriteParameters(w, out.parameters(), "", 0);
    }
    if (has_bytes && !binary) {
      w.Key("data");
      WriteFloats(w, output, out.datatype());
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace sparkle
