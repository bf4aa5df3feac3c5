#include "server/rest_infer_request.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <type_traits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "rapidjson/error/en.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"

namespace sparkle {
namespace {

constexpr int kMaxDataDepth = 16;

// Where the reader is. Each object or array of the request's grammar is one frame.
enum class Frame {
  kRoot,           // {id, parameters, inputs, outputs}
  kRequestParams,  // the request's parameters
  kInputs,         // [input, ...]
  kInput,          // {name, datatype, shape, parameters, data}
  kShape,          // [d, ...]
  kInputParams,
  kData,           // nested arrays of values
  kOutputs,        // [output, ...]
  kOutput,         // {name, parameters}
  kOutputParams,
};

// The values of one input's `data`, as JSON gave them; converted by datatype at the input's end
// (the datatype may come after the data).
// Numbers are kept as int64 while every one is an integer (exact for INT64), as doubles from
// the first that is not: 8 bytes a value either way.
struct DataValues {
  enum class Kind { kNone, kNumber, kBool, kString };
  Kind kind = Kind::kNone;
  bool present = false;
  bool all_integers = true;
  std::vector<int64_t> integers;
  std::vector<double> numbers;
  std::vector<bool> bools;
  std::vector<std::string> strings;

  void AddInteger(int64_t v) {
    if (all_integers) {
      integers.push_back(v);
    } else {
      numbers.push_back(static_cast<double>(v));
    }
  }
  void AddDouble(double d) {
    if (all_integers) {
      all_integers = false;
      numbers.assign(integers.begin(), integers.end());
      std::vector<int64_t>().swap(integers);
    }
    numbers.push_back(d);
  }
};

template <typename T>
bool IntegerFits(int64_t v) {
  if constexpr (std::is_signed_v<T>) {
    return v >= std::numeric_limits<T>::lowest() && v <= std::numeric_limits<T>::max();
  } else {
    return v >= 0 && static_cast<uint64_t>(v) <= std::numeric_limits<T>::max();
  }
}

template <typename T>
bool FitsInteger(double v) {
  return std::trunc(v) == v && v >= static_cast<double>(std::numeric_limits<T>::lowest()) &&
         v < static_cast<double>(std::numeric_limits<T>::max()) + 1.0;  // max + 1: 2^63, 2^64 exact
}

// RapidJSON SAX handler: each callback returns false to stop the reader with error_ set.
class RequestHandler {
 public:
  explicit RequestHandler(RestInferRequest* out) : out_(out) {}

  const std::string& error() const { return error_; }

  bool Null() { return Fail("null is not a valid value here"); }
  bool Bool(bool b) {
    if (Top() == Frame::kData) return AddData(DataValues::Kind::kBool, [&] {
      data_.bools.push_back(b);
    });
    if (IsParams()) {
      if (Top() == Frame::kOutputParams && key_ == "binary_data") {
        out_->binary_outputs.back() = b;
        return true;
      }
      if (Top() == Frame::kRequestParams && key_ == "binary_data_output") {
        out_->binary_data_output = b;
        return true;
      }
      if (IsRestKey()) return Unexpected("a boolean");
      Param()->set_bool_param(b);
      return true;
    }
    return Unexpected("a boolean");
  }
  // RapidJSON's handler interface; with kParseNumbersAsStringsFlag, RawNumber gets every number.
  bool Int(int i) { return Integer(i); }
  bool Uint(unsigned u) { return Integer(u); }
  bool Int64(int64_t i) { return Integer(i); }
  bool Uint64(uint64_t u) { return Double(static_cast<double>(u)); }
  // Every number arrives as its text (kParseNumbersAsStringsFlag) and is read here with
  // std::from_chars: integers exactly as int64, others as the nearest double. (RapidJSON's own
  // full-precision reader misreads `0e300`.)
  bool RawNumber(const char* s, rapidjson::SizeType length, bool) {
    const char* end = s + length;
    const bool integral = std::find_if(s, end, [](char c) {
                            return c == '.' || c == 'e' || c == 'E';
                          }) == end;
    if (integral) {
      int64_t i = 0;
      const auto [p, ec] = std::from_chars(s, end, i);
      if (ec == std::errc() && p == end) return Integer(i);
      return Fail(absl::StrCat(absl::string_view(s, length), " is too large (outside int64) in ",
                               Where(),
                               Top() == Frame::kData ? "; send such data as binary" : ""));
    }
    double d = 0;
    const auto [p, ec] = std::from_chars(s, end, d);
    if (ec == std::errc::result_out_of_range) {
      // Too small for a double is a zero of its sign; too large has no value.
      const char* e = std::find_if(s, end, [](char c) { return c == 'e' || c == 'E'; });
      if (e + 1 < end && e[1] == '-') return Double(*s == '-' ? -0.0 : 0.0);
      return Fail(absl::StrCat("number ", absl::string_view(s, length), " in ", Where(),
                               " is outside the range of a double"));
    }
    if (ec != std::errc() || p != end) {
      return Fail(absl::StrCat("cannot read the number ", absl::string_view(s, length)));
    }
    return Double(d);
  }
  bool Double(double d) {
    if (Top() == Frame::kData) return AddData(DataValues::Kind::kNumber, [&] {
      data_.AddDouble(d);
    });
    if (IsParams() && !IsRestKey()) {
      Param()->set_double_param(d);
      return true;
    }
    return Unexpected("a number with a fraction");
  }
  bool String(const char* s, rapidjson::SizeType length, bool) {
    std::string value(s, length);
    switch (Top()) {
      case Frame::kData:
        return AddData(DataValues::Kind::kString,
                       [&] { data_.strings.push_back(std::move(value)); });
      case Frame::kRoot:
        if (key_ == "id") {
          out_->header.set_id(std::move(value));
          return true;
        }
        break;
      case Frame::kInput:
        if (key_ == "name") {
          Input()->set_name(std::move(value));
          return true;
        }
        if (key_ == "datatype") {
          Input()->set_datatype(std::move(value));
          return true;
        }
        break;
      case Frame::kOutput:
        if (key_ == "name") {
          out_->header.mutable_outputs()->rbegin()->set_name(std::move(value));
          return true;
        }
        break;
      default:
        if (IsParams() && !IsRestKey()) {
          Param()->set_string_param(std::move(value));
          return true;
        }
    }
    return Unexpected("a string");
  }

  bool StartObject() {
    if (stack_.empty()) return Push(Frame::kRoot);
    switch (Top()) {
      case Frame::kRoot:
        if (key_ == "parameters") return Push(Frame::kRequestParams);
        break;
      case Frame::kInputs:
        out_->header.add_inputs();
        out_->binary_sizes.push_back(-1);
        data_ = DataValues();
        return Push(Frame::kInput);
      case Frame::kInput:
        if (key_ == "parameters") return Push(Frame::kInputParams);
        break;
      case Frame::kOutputs:
        out_->header.add_outputs();
        out_->binary_outputs.push_back(false);
        return Push(Frame::kOutput);
      case Frame::kOutput:
        if (key_ == "parameters") return Push(Frame::kOutputParams);
        break;
      default:
        break;
    }
    return Unexpected("an object");
  }
  bool Key(const char* s, rapidjson::SizeType length, bool) {
    key_.assign(s, length);
    auto known = [&](std::initializer_list<const char*> keys) {
      for (const char* k : keys) {
        if (key_ == k) return true;
      }
      return Fail(absl::StrCat("unknown key '", key_, "' in ", Where()));
    };
    switch (Top()) {
      case Frame::kRoot:
        return known({"id", "parameters", "inputs", "outputs"});
      case Frame::kInput:
        return known({"name", "datatype", "shape", "parameters", "data"});
      case Frame::kOutput:
        return known({"name", "parameters"});
      default:
        return true;  // parameters: any key
    }
  }
  bool EndObject(rapidjson::SizeType) {
    const Frame frame = Top();
    stack_.pop_back();
    if (frame == Frame::kInput) return FinishInput();
    return true;
  }
  bool StartArray() {
    switch (Top()) {
      case Frame::kRoot:
        if (key_ == "inputs") return Push(Frame::kInputs);
        if (key_ == "outputs") return Push(Frame::kOutputs);
        break;
      case Frame::kInput:
        if (key_ == "shape") return Push(Frame::kShape);
        if (key_ == "data") {
          if (data_.present) return Fail(absl::StrCat("two 'data' in ", Where()));
          data_.present = true;
          data_depth_ = 1;
          return Push(Frame::kData);
        }
        break;
      case Frame::kData:
        if (++data_depth_ > kMaxDataDepth) {
          return Fail(absl::StrCat("'data' of ", Where(), " is nested deeper than ",
                                   kMaxDataDepth, " levels"));
        }
        return true;
      default:
        break;
    }
    return Unexpected("an array");
  }
  bool EndArray(rapidjson::SizeType) {
    if (Top() == Frame::kData && --data_depth_ > 0) return true;
    stack_.pop_back();
    return true;
  }

 private:
  Frame Top() const { return stack_.empty() ? Frame::kRoot : stack_.back(); }
  bool Push(Frame f) {
    stack_.push_back(f);
    return true;
  }
  bool IsParams() const {
    const Frame f = Top();
    return f == Frame::kRequestParams || f == Frame::kInputParams || f == Frame::kOutputParams;
  }
  // The REST-only keys, consumed here and never given to the parser.
  bool IsRestKey() const {
    return (Top() == Frame::kInputParams && key_ == "binary_data_size") ||
           (Top() == Frame::kOutputParams && key_ == "binary_data") ||
           (Top() == Frame::kRequestParams && key_ == "binary_data_output");
  }
  inference::ModelInferRequest::InferInputTensor* Input() {
    return &*out_->header.mutable_inputs()->rbegin();
  }
  inference::InferParameter* Param() {
    switch (Top()) {
      case Frame::kInputParams:
        return &(*Input()->mutable_parameters())[key_];
      case Frame::kOutputParams:
        return &(*out_->header.mutable_outputs()->rbegin()->mutable_parameters())[key_];
      default:
        return &(*out_->header.mutable_parameters())[key_];
    }
  }
  std::string Where() const {
    switch (Top()) {
      case Frame::kRoot:
        return "the request";
      case Frame::kRequestParams:
        return "the request's parameters";
      case Frame::kOutputs:
      case Frame::kOutput:
      case Frame::kOutputParams:
        return absl::StrCat("output ", out_->header.outputs_size() - 1);
      default:
        return absl::StrCat("input ", out_->header.inputs_size() - 1);
    }
  }
  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }
  bool Unexpected(const char* what) {
    return Fail(absl::StrCat("unexpected ", what,
                             key_.empty() ? std::string() : absl::StrCat(" for '", key_, "'"),
                             " in ", Where()));
  }
  template <typename Append>
  bool AddData(DataValues::Kind kind, Append append) {
    if (data_.kind != DataValues::Kind::kNone && data_.kind != kind) {
      return Fail(absl::StrCat("'data' of ", Where(), " mixes numbers, booleans and strings"));
    }
    data_.kind = kind;
    append();
    return true;
  }
  bool Integer(int64_t v) {
    switch (Top()) {
      case Frame::kData:
        return AddData(DataValues::Kind::kNumber, [&] { data_.AddInteger(v); });
      case Frame::kShape:
        if (v < 0) return Fail(absl::StrCat("negative dimension ", v, " in ", Where()));
        Input()->add_shape(v);
        return true;
      case Frame::kInputParams:
        if (key_ == "binary_data_size") {
          if (v < 0) return Fail(absl::StrCat("negative binary_data_size in ", Where()));
          out_->binary_sizes.back() = v;
          return true;
        }
        [[fallthrough]];
      case Frame::kRequestParams:
      case Frame::kOutputParams:
        if (IsRestKey()) break;
        Param()->set_int64_param(v);
        return true;
      default:
        break;
    }
    return Unexpected("an integer");
  }

  // Moves the input's JSON data into the typed contents its datatype names.
  bool FinishInput() {
    ++finished_inputs_;
    auto* input = &out_->header.mutable_inputs()->at(finished_inputs_ - 1);
    if (!data_.present) return true;
    const std::string where = absl::StrCat("input '", input->name(), "'");
    if (out_->binary_sizes[finished_inputs_ - 1] >= 0) {
      return Fail(absl::StrCat(where, " has both 'data' and binary_data_size"));
    }
    const std::string& type = input->datatype();
    auto* contents = input->mutable_contents();
    using Kind = DataValues::Kind;
    const Kind kind = data_.kind;
    auto wrong = [&] {
      return Fail(absl::StrCat("'data' of ", where, " does not fit its datatype '", type, "'"));
    };
    // Into `field` from the integers (when all are: checked by `fits_integer`) or the doubles
    // (checked by `fits`).
    auto numbers = [&](auto* field, auto fits, auto fits_integer) {
      using T = typename std::remove_pointer_t<decltype(field)>::value_type;
      if (kind != Kind::kNumber && kind != Kind::kNone) return wrong();
      if (data_.all_integers) {
        field->Reserve(static_cast<int>(data_.integers.size()));
        for (int64_t v : data_.integers) {
          if (!fits_integer(v)) return wrong();
          field->Add(static_cast<T>(v));
        }
        return true;
      }
      field->Reserve(static_cast<int>(data_.numbers.size()));
      for (double v : data_.numbers) {
        if (!fits(v)) return wrong();
        field->Add(static_cast<T>(v));
      }
      return true;
    };
    auto any = [](auto) { return true; };
    bool ok;
    if (type == "FP32") {
      ok = numbers(
          contents->mutable_fp32_contents(),
          [](double v) {
            return !std::isfinite(v) || std::fabs(v) < 0x1.ffffffp127;  // rounds to <= FLT_MAX
          },
          any);
    } else if (type == "FP64") {
      ok = numbers(contents->mutable_fp64_contents(), any, any);
    } else if (type == "INT8") {
      ok = numbers(contents->mutable_int_contents(), FitsInteger<int8_t>, IntegerFits<int8_t>);
    } else if (type == "INT16") {
      ok = numbers(contents->mutable_int_contents(), FitsInteger<int16_t>, IntegerFits<int16_t>);
    } else if (type == "INT32") {
      ok = numbers(contents->mutable_int_contents(), FitsInteger<int32_t>, IntegerFits<int32_t>);
    } else if (type == "INT64") {
      ok = numbers(contents->mutable_int64_contents(), FitsInteger<int64_t>, IntegerFits<int64_t>);
    } else if (type == "UINT8") {
      ok = numbers(contents->mutable_uint_contents(), FitsInteger<uint8_t>, IntegerFits<uint8_t>);
    } else if (type == "UINT16") {
      ok = numbers(contents->mutable_uint_contents(), FitsInteger<uint16_t>, IntegerFits<uint16_t>);
    } else if (type == "UINT32") {
      ok = numbers(contents->mutable_uint_contents(), FitsInteger<uint32_t>, IntegerFits<uint32_t>);
    } else if (type == "UINT64") {
      ok = numbers(contents->mutable_uint64_contents(), FitsInteger<uint64_t>, IntegerFits<uint64_t>);
    } else if (type == "BOOL") {
      if (kind != Kind::kBool && kind != Kind::kNone) return wrong();
      for (bool b : data_.bools) contents->add_bool_contents(b);
      ok = true;
    } else if (type == "BYTES") {
      if (kind != Kind::kString && kind != Kind::kNone) return wrong();
      for (std::string& s : data_.strings) contents->add_bytes_contents(std::move(s));
      ok = true;
    } else {
      return Fail(absl::StrCat("'data' of ", where, ": datatype '", type,
                               "' cannot be sent as JSON; send its bytes with binary_data_size"));
    }
    data_ = DataValues();
    return ok;
  }

  RestInferRequest* const out_;
  std::vector<Frame> stack_;
  std::string key_;
  DataValues data_;
  int data_depth_ = 0;
  int finished_inputs_ = 0;
  std::string error_;
};

}  // namespace

absl::StatusOr<RestInferRequest> ParseRestInferRequest(absl::string_view json) {
  RestInferRequest out;
  RequestHandler handler(&out);
  rapidjson::MemoryStream stream(json.data(), json.size());
  rapidjson::Reader reader;
  constexpr unsigned kFlags = rapidjson::kParseIterativeFlag |
                              rapidjson::kParseValidateEncodingFlag |
                              rapidjson::kParseNumbersAsStringsFlag;
  const rapidjson::ParseResult result = reader.Parse<kFlags>(stream, handler);
  if (!result) {
    if (!handler.error().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the request's JSON: ", handler.error(), " (at byte ", result.Offset(),
                       ")"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "the request's JSON does not parse: ", rapidjson::GetParseError_En(result.Code()),
        " (at byte ", result.Offset(), ")"));
  }
  return out;
}

}  // namespace sparkle
