#include "server/request_parser.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

namespace sparkle {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using InputTensor = inference::ModelInferRequest::InferInputTensor;

// Parameters that generic KServe/Triton clients attach; accepted and ignored (docs/protocol.md).
bool IsIgnoredKey(absl::string_view key) {
  static const auto* keys = new absl::flat_hash_set<absl::string_view>{
      "sequence_id",   "sequence_start", "sequence_end", "binary_data_output",
      "binary_data",   "binary_data_size", "classification", "headers",
      "triton_enable_empty_final_response"};
  return keys->contains(key);
}

absl::StatusOr<int64_t> IntParam(absl::string_view key, const InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case InferParameter::kInt64Param:
      return p.int64_param();
    case InferParameter::kUint64Param:
      if (p.uint64_param() > static_cast<uint64_t>(INT64_MAX)) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter ", key, " is out of range: ", p.uint64_param()));
      }
      return static_cast<int64_t>(p.uint64_param());
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("parameter ", key, " must be an int64_param or uint64_param"));
  }
}

absl::StatusOr<std::string> StringParam(absl::string_view key, const InferParameter& p) {
  if (p.parameter_choice_case() != InferParameter::kStringParam) {
    return absl::InvalidArgumentError(absl::StrCat("parameter ", key, " must be a string_param"));
  }
  return p.string_param();
}

// An int64_param, uint64_param or double_param as a double (clip bounds).
absl::StatusOr<double> NumberParam(absl::string_view key, const InferParameter& p) {
  if (p.parameter_choice_case() == InferParameter::kDoubleParam) return p.double_param();
  if (p.parameter_choice_case() == InferParameter::kInt64Param ||
      p.parameter_choice_case() == InferParameter::kUint64Param) {
    SPARKLE_ASSIGN_OR_RETURN(int64_t v, IntParam(key, p));
    return static_cast<double>(v);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "parameter ", key, " must be an int64_param, uint64_param or double_param"));
}

// Geometry and epilogue from the request parameters. A shorthand (stride, pad, dilation) sets
// both axes; an explicit _h/_w key overrides it, and a per-side pad key (pad_top, ...)
// overrides pad_h/pad_w for its side, whatever the order in the map.
struct Geometry {
  std::optional<int64_t> stride, pad, dilation;
  std::optional<int64_t> stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  std::optional<int64_t> pad_top, pad_bottom, pad_left, pad_right;
  std::optional<std::string> auto_pad;
  int64_t groups = 1;
  std::optional<Activation> activation;
  std::optional<double> clip_min, clip_max;
};

// The explicit padding keys, in the order their errors are reported.
constexpr const char* kPadKeys[] = {"pad", "pad_h", "pad_w", "pad_top", "pad_bottom",
                                    "pad_left", "pad_right"};

absl::Status ParseRequestParameters(const ModelInferRequest& request, Geometry* g,
                                    ParsedInferRequest* out) {
  for (const auto& [key, value] : request.parameters()) {
    std::optional<int64_t>* slot = nullptr;
    if (key == "stride") slot = &g->stride;
    else if (key == "pad") slot = &g->pad;
    else if (key == "dilation") slot = &g->dilation;
    else if (key == "stride_h") slot = &g->stride_h;
    else if (key == "stride_w") slot = &g->stride_w;
    else if (key == "pad_h") slot = &g->pad_h;
    else if (key == "pad_w") slot = &g->pad_w;
    else if (key == "dilation_h") slot = &g->dilation_h;
    else if (key == "dilation_w") slot = &g->dilation_w;
    else if (key == "pad_top") slot = &g->pad_top;
    else if (key == "pad_bottom") slot = &g->pad_bottom;
    else if (key == "pad_left") slot = &g->pad_left;
    else if (key == "pad_right") slot = &g->pad_right;
    if (slot != nullptr) {
      SPARKLE_ASSIGN_OR_RETURN(*slot, IntParam(key, value));
      // Named by its wire key: Validate would name the side it lands on.
      if (absl::StartsWith(key, "pad") && **slot < 0) {
        return absl::InvalidArgumentError(absl::StrCat(key, " must be >= 0; was ", **slot));
      }
    } else if (key == "auto_pad") {
      SPARKLE_ASSIGN_OR_RETURN(std::string mode, StringParam(key, value));
      if (mode != "SAME_UPPER" && mode != "SAME_LOWER" && mode != "VALID" && mode != "NOTSET") {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter auto_pad must be SAME_UPPER, SAME_LOWER, VALID or NOTSET; was '", mode,
            "'"));
      }
      // ONNX's NOTSET (its default, which exporters write out) means the explicit pads.
      if (mode != "NOTSET") g->auto_pad = std::move(mode);
    } else if (key == "activation") {
      SPARKLE_ASSIGN_OR_RETURN(std::string name, StringParam(key, value));
      g->activation = ParseActivation(name);
      if (!g->activation.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("parameter activation must be one of ",
                                                       ActivationNames(), "; was '", name, "'"));
      }
    } else if (key == "clip_min" || key == "clip_max") {
      SPARKLE_ASSIGN_OR_RETURN(double bound, NumberParam(key, value));
      // Finite and a float: the epilogue computes in FP32.
      if (!std::isfinite(bound) || std::fabs(bound) > FLT_MAX) {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter ", key, " must be a finite number within the FP32 range; was ", bound));
      }
      (key == "clip_min" ? g->clip_min : g->clip_max) = bound;
    } else if (key == "groups") {
      SPARKLE_ASSIGN_OR_RETURN(g->groups, IntParam(key, value));
    } else if (key == "priority") {
      SPARKLE_ASSIGN_OR_RETURN(int64_t priority, IntParam(key, value));
      if (priority < 0 || priority > 16) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter priority must be in [0, 16]; was ", priority));
      }
      out->priority = static_cast<int>(priority);
    } else if (key == "timeout") {
      SPARKLE_ASSIGN_OR_RETURN(int64_t timeout_us, IntParam(key, value));
      if (timeout_us < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter timeout (µs) must be >= 0; was ", timeout_us));
      }
      // Triton: 0 means no timeout.
      if (timeout_us > 0) out->queue_timeout = absl::Microseconds(timeout_us);
    } else if (key == "weight_id") {
      SPARKLE_ASSIGN_OR_RETURN(out->weight_id, StringParam(key, value));
    } else if (key == "device") {
      SPARKLE_ASSIGN_OR_RETURN(std::string device, StringParam(key, value));
      absl::StatusOr<DeviceRequest> parsed = ParseDeviceRequest(device);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("parameter ", parsed.status().message()));
      }
      out->device = *parsed;
    } else if (!IsIgnoredKey(key)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown request parameter '", key,
          "' (known: stride, stride_h, stride_w, pad, pad_h, pad_w, pad_top, pad_bottom, "
          "pad_left, pad_right, auto_pad, dilation, dilation_h, dilation_w, groups, activation, "
          "clip_min, clip_max, priority, timeout, device, weight_id)"));
    }
  }
  if (g->auto_pad.has_value()) {
    for (const char* key : kPadKeys) {
      if (request.parameters().contains(key)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameter auto_pad (", *g->auto_pad, ") cannot be combined with an explicit pad (",
            key, "); send one or the other"));
      }
    }
  }
  const bool clip = g->activation == Activation::kClip;
  const std::pair<const char*, std::optional<double>> bounds[] = {{"clip_min", g->clip_min},
                                                                   {"clip_max", g->clip_max}};
  for (const auto& [key, bound] : bounds) {
    if (bound.has_value() && !clip) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parameter ", key, " is only valid with activation=clip; the activation is ",
          ActivationName(g->activation.value_or(Activation::kNone))));
    }
  }
  if (clip && g->clip_min.value_or(-FLT_MAX) > g->clip_max.value_or(FLT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("parameter clip_min (", *g->clip_min,
                                                   ") must be <= clip_max (", *g->clip_max, ")"));
  }
  return absl::OkStatus();
}

// ONNX's auto_pad for one axis: SAME_* pads the input so that out = ceil(in / stride), the total
// padding max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - in) split with the odd one
// at the end (SAME_UPPER) or the start (SAME_LOWER); VALID pads nothing. Overflow-checked: the
// stride and dilation are not validated yet (values < 1 leave the padding 0 for Validate to
// refuse); in and kernel are in [1, 2^31 - 1].
absl::Status AutoPad(absl::string_view mode, const char* axis, int64_t in, int64_t kernel,
                     int64_t stride, int64_t dilation, int64_t* begin, int64_t* end) {
  *begin = *end = 0;
  if (mode == "VALID" || stride < 1 || dilation < 1) return absl::OkStatus();
  const int64_t out = in / stride + (in % stride != 0 ? 1 : 0);
  int64_t span, total;
  if (__builtin_mul_overflow(out - 1, stride, &total) ||
      __builtin_mul_overflow(kernel - 1, dilation, &span) ||
      __builtin_add_overflow(total, span, &total) || __builtin_add_overflow(total, 1, &total)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "auto_pad ", mode, ": the ", axis, " padding overflows (input ", in, ", kernel ", kernel,
        ", stride ", stride, ", dilation ", dilation, ")"));
  }
  total = total > in ? total - in : 0;
  const int64_t half = total / 2;
  *begin = mode == "SAME_UPPER" ? half : total - half;
  *end = total - *begin;
  return absl::OkStatus();
}

// True when contents uses a typed field other than fp32_contents.
bool HasNonFp32Contents(const InputTensor& t) {
  const auto& c = t.contents();
  return c.bool_contents_size() || c.int_contents_size() || c.int64_contents_size() ||
         c.uint_contents_size() || c.uint64_contents_size() || c.fp64_contents_size() ||
         c.bytes_contents_size();
}

bool HasTypedContents(const InputTensor& t) {
  return HasNonFp32Contents(t) || t.contents().fp32_contents_size() > 0;
}

// Where a tensor's bytes are: a shared-memory region (`shm_region` set), else the next
// raw_input_contents entry (`raw_index`), else the tensor's typed contents.
struct TensorSource {
  std::string shm_region;
  int64_t shm_offset = 0;
  int64_t shm_byte_size = -1;  // -1: the parameter was not given
  int raw_index = -1;
};

// Takes `key` into `source` when it is a shared-memory parameter; false when it is not one.
absl::StatusOr<bool> TakeSharedMemoryParameter(absl::string_view key, const InferParameter& value,
                                               TensorSource* source) {
  if (key == "shared_memory_region") {
    SPARKLE_ASSIGN_OR_RETURN(source->shm_region, StringParam(key, value));
  } else if (key == "shared_memory_byte_size" || key == "shared_memory_offset") {
    SPARKLE_ASSIGN_OR_RETURN(int64_t v, IntParam(key, value));
    if (v < 0) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", key, " must be >= 0; was ", v));
    }
    (key == "shared_memory_offset" ? source->shm_offset : source->shm_byte_size) = v;
  } else {
    return false;
  }
  return true;
}

absl::Status CheckSharedMemoryParameters(absl::string_view what, const TensorSource& source) {
  if (source.shm_region.empty() && (source.shm_byte_size >= 0 || source.shm_offset != 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has shared_memory_byte_size or shared_memory_offset but no shared_memory_region"));
  }
  return absl::OkStatus();
}

struct NamedInputs {
  const InputTensor* input = nullptr;
  const InputTensor* weight = nullptr;
  const InputTensor* bias = nullptr;
  const InputTensor* residual = nullptr;
  TensorSource input_source, weight_source, bias_source, residual_source;
  Layout layout = Layout::kNCHW;
  std::optional<Layout> residual_layout;  // its `layout` parameter; absent: the input's
  DataType dtype = DataType::kFp32;       // the first tensor's (all must match)
};

// The tensor's parameters: `layout` (input and residual only), the shared-memory ones, ignored
// keys.
absl::Status ParseTensorParameters(const InputTensor& t, bool takes_layout,
                                   std::optional<Layout>* layout, TensorSource* source) {
  for (const auto& [key, value] : t.parameters()) {
    SPARKLE_ASSIGN_OR_RETURN(bool shm, TakeSharedMemoryParameter(key, value, source));
    if (shm || IsIgnoredKey(key)) continue;
    if (takes_layout && key == "layout") {
      SPARKLE_ASSIGN_OR_RETURN(std::string s, StringParam("layout", value));
      if (s == "NHWC") {
        *layout = Layout::kNHWC;
      } else if (s == "NCHW") {
        *layout = Layout::kNCHW;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor parameter layout must be NCHW or NHWC; was '", s, "'"));
      }
      continue;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("unknown parameter '", key, "' on input tensor '", t.name(), "' (known: ",
                     takes_layout ? "layout, " : "",
                     "shared_memory_region, shared_memory_byte_size, shared_memory_offset)"));
  }
  return CheckSharedMemoryParameters(absl::StrCat("input tensor '", t.name(), "'"), *source);
}

// `by_id`: the request names registered weights, so it must send neither weight nor bias.
absl::StatusOr<NamedInputs> MatchInputs(const ModelInferRequest& request, int raw_entries,
                                        bool by_id) {
  NamedInputs named;
  int in_shared_memory = 0;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const InputTensor& t = request.inputs(i);
    const InputTensor** slot = nullptr;
    TensorSource* source = nullptr;
    if (t.name() == "input") {
      slot = &named.input, source = &named.input_source;
    } else if (t.name() == "weight") {
      slot = &named.weight, source = &named.weight_source;
    } else if (t.name() == "bias") {
      slot = &named.bias, source = &named.bias_source;
    } else if (t.name() == "residual") {
      slot = &named.residual, source = &named.residual_source;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown input tensor '", t.name(),
                       "' (the conv2d model takes input, weight, bias, residual)"));
    }
    if (*slot != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("input tensor '", t.name(), "' is given twice"));
    }
    *slot = &t;
    const std::optional<DataType> dtype = ParseDataType(t.datatype());
    if (!dtype.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("input tensor '", t.name(),
                                                     "' has datatype '", t.datatype(),
                                                     "'; the conv2d model takes FP32, BF16 or FP16"));
    }
    if (i == 0) {
      named.dtype = *dtype;
    } else if (*dtype != named.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor '", t.name(), "' has datatype '", t.datatype(), "' but input tensor '",
          request.inputs(0).name(), "' has datatype '", request.inputs(0).datatype(),
          "'; input, weight, bias and residual must share one datatype"));
    }
    std::optional<Layout> layout;
    SPARKLE_RETURN_IF_ERROR(ParseTensorParameters(
        t, slot == &named.input || slot == &named.residual, &layout, source));
    if (slot == &named.input) named.layout = layout.value_or(Layout::kNCHW);
    if (slot == &named.residual) named.residual_layout = layout;
    if (!source->shm_region.empty()) {
      ++in_shared_memory;
      if (HasTypedContents(t)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input tensor '", t.name(),
            "' is in shared memory and also has contents; send one or the other"));
      }
    } else if (raw_entries > 0) {
      // Triton's clients send one raw entry per input not in shared memory, in order.
      source->raw_index = i - in_shared_memory;
      if (HasTypedContents(t)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input tensor '", t.name(),
            "' has contents while raw_input_contents is used; send one or the other"));
      }
    }
  }
  if (raw_entries > 0 && raw_entries != request.inputs_size() - in_shared_memory) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", raw_entries, " entries but the request lists ",
        request.inputs_size() - in_shared_memory, " inputs",
        in_shared_memory > 0 ? " not in shared memory" : "", " (one entry each)"));
  }
  if (named.input == nullptr) {
    return absl::InvalidArgumentError("missing input tensor 'input' ([N, C, H, W], FP32)");
  }
  if (by_id && (named.weight != nullptr || named.bias != nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request names registered weights (weight_id) and also sends the '",
        named.weight != nullptr ? "weight" : "bias",
        "' input; send one or the other (a registration carries its own bias)"));
  }
  if (!by_id && named.weight == nullptr) {
    return absl::InvalidArgumentError(
        "missing input tensor 'weight' ([K, C/groups, R, S], FP32) or weight_id parameter");
  }
  return named;
}

absl::Status CheckShape(const InputTensor& t, int rank, absl::string_view layout_hint) {
  if (t.shape_size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat("input tensor '", t.name(), "' must have rank ",
                                                   rank, " ", layout_hint, "; its shape is [",
                                                   absl::StrJoin(t.shape(), ", "), "]"));
  }
  for (int64_t d : t.shape()) {
    if (d < 1 || d > Conv2dParams::kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat("input tensor '", t.name(), "' shape [",
                                                     absl::StrJoin(t.shape(), ", "),
                                                     "] has a dimension outside [1, 2^31 - 1]"));
    }
  }
  return absl::OkStatus();
}

// The requested outputs: only `output`, optionally into a shared-memory region, optionally with
// its `datatype` (checked against the inputs' later). Any other key
// is refused, never ignored: a client that asked for `classification` (tritonclient's
// class_count) would otherwise take the raw tensor for its top-k. REST-only keys (binary_data)
// are stripped by the REST adapter before the parser, so they are refused here too.
absl::StatusOr<TensorSource> ParseRequestedOutputs(const ModelInferRequest& request,
                                                   std::optional<std::string>* datatype) {
  TensorSource source;
  for (const auto& requested : request.outputs()) {
    if (requested.name() != "output") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown requested output '", requested.name(), "' (the conv2d model has 'output')"));
    }
    for (const auto& [key, value] : requested.parameters()) {
      SPARKLE_ASSIGN_OR_RETURN(bool shm, TakeSharedMemoryParameter(key, value, &source));
      if (shm) continue;
      if (key == "datatype") {
        if (value.parameter_choice_case() != InferParameter::kStringParam) {
          return absl::InvalidArgumentError(
              "parameter datatype of requested output 'output' must be a string_param");
        }
        *datatype = value.string_param();
        continue;
      }
      if (key == "classification") {
        return absl::InvalidArgumentError(
            "requested output 'output' has parameter 'classification' (class_count): the conv2d "
            "model returns the whole output tensor and cannot classify; request it without "
            "class_count");
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown parameter '", key, "' on requested output 'output' (known: datatype, "
          "shared_memory_region, shared_memory_byte_size, shared_memory_offset)"));
    }
  }
  SPARKLE_RETURN_IF_ERROR(CheckSharedMemoryParameters("requested output 'output'", source));
  return source;
}

TensorBufferPool* UnpooledBuffers() {
  static TensorBufferPool* const pool = TensorBufferPool::Create({.max_idle_bytes = 0})->release();
  return pool;
}

absl::StatusOr<SharedMemorySpan> FindRegion(const ParseContext& context, absl::string_view what,
                                            const TensorSource& source, int64_t bytes) {
  if (context.shared_memory == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " names shared memory region '", source.shm_region,
        "' but shared memory is off on this server (--shared_memory=off)"));
  }
  return context.shared_memory->Find(context.owner, source.shm_region,
                                     static_cast<uint64_t>(source.shm_offset),
                                     static_cast<uint64_t>(bytes));
}

// Points *data at the tensor's `elements` elements of `dtype`: in place when they lie whole and
// aligned to the element size in one buffer (a slice, a region, a typed field), else in one
// pooled copy.
absl::Status TensorData(const InferRequestView& request, const InputTensor& t,
                        const TensorSource& source, DataType dtype, int64_t elements,
                        const ParseContext& context, ParsedInferRequest* out, const void** data) {
  const int64_t element_size = ElementSize(dtype);
  const int64_t bytes = elements * element_size;
  const char* type = DataTypeName(dtype);
  absl::InlinedVector<absl::string_view, 1> pieces;
  if (!source.shm_region.empty()) {
    if (source.shm_byte_size != bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor '", t.name(), "' has shape [", absl::StrJoin(t.shape(), ", "), "] = ",
          elements, " ", type, " elements (", bytes, " bytes), but its shared_memory_byte_size is ",
          source.shm_byte_size < 0 ? "missing" : absl::StrCat(source.shm_byte_size)));
    }
    SPARKLE_ASSIGN_OR_RETURN(SharedMemorySpan span,
                             FindRegion(context, absl::StrCat("input tensor '", t.name(), "'"),
                                        source, bytes));
    pieces.push_back(absl::string_view(reinterpret_cast<const char*>(span.data), bytes));
    out->regions.push_back(std::move(span.region));
  } else if (source.raw_index >= 0) {
    const TensorBytes& raw = request.raw_inputs[source.raw_index];
    if (raw.size != bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor '", t.name(), "' has shape [", absl::StrJoin(t.shape(), ", "), "] = ",
          elements, " ", type, " elements (", bytes, " bytes), but raw_input_contents[",
          source.raw_index, "] holds ", raw.size, " bytes"));
    }
    pieces = raw.pieces;
  } else {
    const auto& c = t.contents();
    if (dtype != DataType::kFp32) {
      // KServe v2 has no typed contents field for 16-bit floats.
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor '", t.name(), "' is ", type,
          ", which has no typed contents field in KServe v2; send its bytes in "
          "raw_input_contents (little-endian) or in shared memory"));
    }
    if (HasNonFp32Contents(t)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor '", t.name(), "' is FP32 but its contents use another type's field; "
                                      "put the values in contents.fp32_contents"));
    }
    if (c.fp32_contents_size() != elements) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor '", t.name(), "' has shape [", absl::StrJoin(t.shape(), ", "), "] = ",
          elements, " elements, but contents.fp32_contents holds ", c.fp32_contents_size(),
          c.fp32_contents_size() == 0 ? " (and no raw_input_contents were sent)" : ""));
    }
    *data = c.fp32_contents().data();
    return absl::OkStatus();
  }
  // The bytes are little-endian, as this machine's float and uint16_t.
  if (pieces.size() == 1 &&
      reinterpret_cast<uintptr_t>(pieces[0].data()) % static_cast<uintptr_t>(element_size) == 0) {
    *data = pieces[0].data();
    return absl::OkStatus();
  }
  TensorBufferPool* pool = context.pool != nullptr ? context.pool : UnpooledBuffers();
  SPARKLE_ASSIGN_OR_RETURN(TensorBufferPool::Buffer copy, pool->Get(bytes));
  uint8_t* to = copy.data();
  for (absl::string_view piece : pieces) {
    std::memcpy(to, piece.data(), piece.size());
    to += piece.size();
  }
  *data = copy.data();
  out->copies.push_back(std::move(copy));
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckModel(const std::string& name, const std::string& version) {
  if (name != kModelName) {
    return absl::NotFoundError(
        absl::StrCat("unknown model '", name, "'; this server serves '", kModelName, "'"));
  }
  if (!version.empty() && version != kModelVersion) {
    return absl::NotFoundError(absl::StrCat("unknown version '", version, "' of model '", name,
                                            "'; available: ", kModelVersion));
  }
  return absl::OkStatus();
}

absl::StatusOr<ParsedInferRequest> ParseInferRequest(const InferRequestView& view,
                                                     const ParseContext& context) {
  const ParseLimits& limits = context.limits;
  const ModelInferRequest& request = view.header();
  if (view.serialized_bytes > limits.max_request_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request is ", view.serialized_bytes, " bytes, above the ", limits.max_request_bytes,
        "-byte message limit max_message_bytes"));
  }
  SPARKLE_RETURN_IF_ERROR(CheckModel(request.model_name(), request.model_version()));
  ParsedInferRequest out;
  Geometry g;
  SPARKLE_RETURN_IF_ERROR(ParseRequestParameters(request, &g, &out));
  SPARKLE_ASSIGN_OR_RETURN(
      NamedInputs named,
      MatchInputs(request, static_cast<int>(view.raw_inputs.size()), !out.weight_id.empty()));
  std::optional<std::string> output_datatype;
  SPARKLE_ASSIGN_OR_RETURN(TensorSource output_source,
                           ParseRequestedOutputs(request, &output_datatype));

  const Layout layout = named.layout;
  const DataType dtype = named.dtype;
  DataType output_dtype = dtype;
  if (output_datatype.has_value()) {
    if (*output_datatype == "FP32") {
      output_dtype = DataType::kFp32;
    } else if (*output_datatype != DataTypeName(dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "requested output 'output' has datatype '", *output_datatype, "'; ",
          dtype == DataType::kFp32
              ? std::string("it must be FP32 (the inputs' datatype)")
              : absl::StrCat("it may be FP32 or ", DataTypeName(dtype), " (the inputs' datatype)")));
    }
  }
  SPARKLE_RETURN_IF_ERROR(CheckShape(*named.input, 4,
                                     layout == Layout::kNHWC ? "[N, H, W, C]" : "[N, C, H, W]"));
  std::vector<int64_t> ws;  // [K, C/groups, R, S]
  if (named.weight != nullptr) {
    SPARKLE_RETURN_IF_ERROR(CheckShape(*named.weight, 4, "[K, C/groups, R, S]"));
    ws.assign(named.weight->shape().begin(), named.weight->shape().end());
  } else {
    if (context.registry == nullptr) {
      return absl::NotFoundError(absl::StrCat("no registered weights with weight_id '",
                                              out.weight_id, "' (no weights registry)"));
    }
    SPARKLE_ASSIGN_OR_RETURN(out.registered_weight, context.registry->Acquire(out.weight_id));
    const RegisteredWeight& w = *out.registered_weight;
    const DataType registered = w.dtype();
    if (registered != dtype) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the registered weights '", out.weight_id, "' are ", DataTypeName(registered),
          " but the request's tensors are ", DataTypeName(dtype),
          "; register them in the request's datatype"));
    }
    ws.assign(w.shape().begin(), w.shape().end());
    out.weight = w.weight();
    out.bias = w.bias();
  }

  Conv2dParams& p = out.params;
  p.layout = layout;
  const auto& is = named.input->shape();
  p.n = is[0];
  p.c = layout == Layout::kNHWC ? is[3] : is[1];
  p.h = layout == Layout::kNHWC ? is[1] : is[2];
  p.w = layout == Layout::kNHWC ? is[2] : is[3];
  p.k = ws[0];
  p.r = ws[2];
  p.s = ws[3];
  p.stride_h = g.stride_h.value_or(g.stride.value_or(1));
  p.stride_w = g.stride_w.value_or(g.stride.value_or(1));
  p.dilation_h = g.dilation_h.value_or(g.dilation.value_or(1));
  p.dilation_w = g.dilation_w.value_or(g.dilation.value_or(1));
  if (g.auto_pad.has_value()) {
    SPARKLE_RETURN_IF_ERROR(AutoPad(*g.auto_pad, "height", p.h, p.r, p.stride_h, p.dilation_h,
                                    &p.pad_top, &p.pad_bottom));
    SPARKLE_RETURN_IF_ERROR(AutoPad(*g.auto_pad, "width", p.w, p.s, p.stride_w, p.dilation_w,
                                    &p.pad_left, &p.pad_right));
  } else {
    const int64_t pad_h = g.pad_h.value_or(g.pad.value_or(0));
    const int64_t pad_w = g.pad_w.value_or(g.pad.value_or(0));
    p.pad_top = g.pad_top.value_or(pad_h);
    p.pad_bottom = g.pad_bottom.value_or(pad_h);
    p.pad_left = g.pad_left.value_or(pad_w);
    p.pad_right = g.pad_right.value_or(pad_w);
  }
  p.groups = g.groups;
  p.has_bias = named.bias != nullptr ||
               (out.registered_weight != nullptr && out.registered_weight->has_bias());
  p.has_residual = named.residual != nullptr;
  p.activation = g.activation.value_or(Activation::kNone);
  if (p.activation == Activation::kClip) {
    // A missing bound is unbounded.
    p.clip_min = static_cast<float>(g.clip_min.value_or(-FLT_MAX));
    p.clip_max = static_cast<float>(g.clip_max.value_or(FLT_MAX));
  }
  p.dtype = dtype;
  p.output_dtype = output_dtype;
  SPARKLE_RETURN_IF_ERROR(p.Validate());
  if (ws[1] * p.groups != p.c) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight shape [", absl::StrJoin(ws, ", "), "] has C/groups=", ws[1],
        " but the input has C=", p.c, " and groups=", p.groups, " (expected C/groups=",
        p.c / p.groups, ")"));
  }
  if (named.bias != nullptr) {
    SPARKLE_RETURN_IF_ERROR(CheckShape(*named.bias, 1, "[K]"));
    if (named.bias->shape(0) != p.k) {
      return absl::InvalidArgumentError(absl::StrCat("bias shape [", named.bias->shape(0),
                                                     "] does not match K=", p.k,
                                                     " of the weight"));
    }
  }
  if (named.residual != nullptr) {
    const Layout residual_layout = named.residual_layout.value_or(layout);
    if (residual_layout != layout) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor 'residual' has layout ", LayoutName(residual_layout),
          " but the input's is ", LayoutName(layout), "; the residual has the output's layout"));
    }
    const std::vector<int64_t> expected =
        layout == Layout::kNHWC ? std::vector<int64_t>{p.n, p.p(), p.q(), p.k}
                                : std::vector<int64_t>{p.n, p.k, p.p(), p.q()};
    if (!std::equal(named.residual->shape().begin(), named.residual->shape().end(),
                    expected.begin(), expected.end())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor 'residual' has shape [", absl::StrJoin(named.residual->shape(), ", "),
          "] but the output's shape is [", absl::StrJoin(expected, ", "), "] (",
          layout == Layout::kNHWC ? "[N, P, Q, K]" : "[N, K, P, Q]",
          "); the residual has the output's shape"));
    }
  }
  const int64_t output_element_size = ElementSize(output_dtype);
  const int64_t output_bytes = p.output_elements() * output_element_size;
  if (!output_source.shm_region.empty()) {
    if (output_source.shm_byte_size < output_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "requested output 'output' needs ", output_bytes,
          " bytes but its shared_memory_byte_size is ",
          output_source.shm_byte_size < 0 ? "missing"
                                          : absl::StrCat(output_source.shm_byte_size)));
    }
    SPARKLE_ASSIGN_OR_RETURN(
        SharedMemorySpan span,
        FindRegion(context, "requested output 'output'", output_source, output_bytes));
    if (reinterpret_cast<uintptr_t>(span.data) % static_cast<uintptr_t>(output_element_size) !=
        0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "requested output 'output' in shared memory region '", output_source.shm_region,
          "' at offset ", output_source.shm_offset, " is not ", output_element_size,
          "-byte aligned; the output (", DataTypeName(output_dtype),
          ") needs an offset that is a multiple of ", output_element_size));
    }
    out.output_in_region = span.data;
    out.regions.push_back(std::move(span.region));
  } else {
    // The whole response message counts against gRPC's send limit, not just the output bytes:
    // a response over it would be computed in full and then refused by gRPC.
    const int64_t response_bytes =
        output_bytes + kResponseOverheadBytes + static_cast<int64_t>(request.id().size());
    if (response_bytes > limits.max_response_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the response would be ", response_bytes, " bytes (", output_bytes,
          " of output), above the ", limits.max_response_bytes,
          "-byte message limit max_message_bytes"));
    }
  }
  SPARKLE_RETURN_IF_ERROR(TensorData(view, *named.input, named.input_source, dtype,
                                     p.input_elements(), context, &out, &out.input));
  if (named.weight != nullptr) {
    SPARKLE_RETURN_IF_ERROR(TensorData(view, *named.weight, named.weight_source, dtype,
                                       p.weight_elements(), context, &out, &out.weight));
  }
  if (named.bias != nullptr) {
    SPARKLE_RETURN_IF_ERROR(
        TensorData(view, *named.bias, named.bias_source, dtype, p.k, context, &out, &out.bias));
  }
  if (named.residual != nullptr) {
    SPARKLE_RETURN_IF_ERROR(TensorData(view, *named.residual, named.residual_source, dtype,
                                       p.residual_elements(), context, &out, &out.residual));
  }
  return out;
}

absl::StatusOr<ParsedInferRequest> ParseInferRequest(const ModelInferRequest& request,
                                                     const ParseLimits& limits,
                                                     WeightRegistry* registry) {
  ParseContext context;
  context.limits = limits;
  context.registry = registry;
  return ParseInferRequest(ViewOf(request), context);
}

}  // namespace sparkle
