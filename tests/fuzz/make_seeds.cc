// Writes the seed corpora of the libFuzzer targets (tests/fuzz/corpus/<target>/): a few small
// valid and near-valid inputs each. Run by hand after a format changes, then commit the files:
//   build-fuzz/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus
// It prints the id of the weight request_parser_fuzz registers (request_parser_fuzz.dict has it).
// Crash inputs (crash-*) found by fuzzing, and the token_file_fuzz seeds (plain text), are
// written by hand; this program never rewrites them.
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "client/npy.h"
#include "engine/registry/weight_file.h"
#include "inference/grpc_predict_v2.pb.h"
#include "sparkle/v1/control.pb.h"
#include "tests/fuzz/fuzz_util.h"
#include "tests/fuzz/fuzz_weights.h"

namespace sparkle::fuzz {
namespace {

using inference::ModelInferRequest;

std::string root;

// The message's bytes with map entries in key order, so that the seeds are the same every run.
std::string Bytes(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = absl::StrCat(root, "/", target);
  ::mkdir(dir.c_str(), 0755);
  WriteFileOrDie(absl::StrCat(dir, "/", name), bytes);
}

std::string Floats(int64_t n, float scale = 0.5f) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>(i % 7) - 1.0f;
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A tensor with raw contents (appended to raw_input_contents) or fp32_contents.
void AddTensor(ModelInferRequest* r, const std::string& name, std::vector<int64_t> shape,
               bool raw) {
  auto* t = r->add_inputs();
  t->set_name(name);
  t->set_datatype("FP32");
  for (int64_t d : shape) t->add_shape(d);
  if (raw) {
    *r->add_raw_input_contents() = Floats(Product(shape));
  } else {
    for (int64_t i = 0; i < Product(shape); ++i) t->mutable_contents()->add_fp32_contents(0.25f * i);
  }
}

void IntParam(ModelInferRequest* r, const std::string& key, int64_t v) {
  (*r->mutable_parameters())[key].set_int64_param(v);
}

void RequestParserSeeds(const std::string& id) {
  const std::string t = "request_parser_fuzz";
  {
    ModelInferRequest r;
    r.set_model_name("conv2d");
    AddTensor(&r, "input", {1, 3, 5, 5}, true);
    AddTensor(&r, "weight", {4, 3, 3, 3}, true);
    AddTensor(&r, "bias", {4}, true);
    IntParam(&r, "pad", 1);
    IntParam(&r, "stride", 1);
    r.add_outputs()->set_name("output");
    Write(t, "raw_bias_pad", Bytes(r));
    r.mutable_raw_input_contents(0)->resize(20);  // near-valid: too few input bytes
    Write(t, "raw_short_input", Bytes(r));
  }
  {
    ModelInferRequest r;
    r.set_model_name("conv2d");
    r.set_model_version("1");
    AddTensor(&r, "input", {1, 1, 3, 3}, false);
    AddTensor(&r, "weight", {1, 1, 2, 2}, false);
    IntParam(&r, "stride_h", 2);
    IntParam(&r, "dilation_w", 2);
    (*r.mutable_parameters())["priority"].set_uint64_param(3);
    (*r.mutable_parameters())["device"].set_string_param("cpu");
    Write(t, "fp32_contents", Bytes(r));
  }
  {
    ModelInferRequest r;
    r.set_model_name("conv2d");
    AddTensor(&r, "input", {1, 4, 4, 3}, true);
    (*r.mutable_inputs(0)->mutable_parameters())["layout"].set_string_param("NHWC");
    (*r.mutable_parameters())["weight_id"].set_string_param(id);
    IntParam(&r, "timeout", 1000);
    Write(t, "weight_id_nhwc", Bytes(r));
    (*r.mutable_parameters())["weight_id"].set_string_param("sha256:00");
    Write(t, "weight_id_unknown", Bytes(r));
  }
  {
    ModelInferRequest r;
    r.set_model_name("conv2d");
    AddTensor(&r, "input", {2, 6, 4, 4}, true);
    AddTensor(&r, "weight", {6, 2, 3, 3}, true);
    IntParam(&r, "groups", 3);
    IntParam(&r, "pad_h", 1);
    IntParam(&r, "pad_w", 2);
    (*r.mutable_parameters())["device"].set_string_param("gpu:1");
    Write(t, "groups_device", Bytes(r));
    IntParam(&r, "groups", 4);  // near-valid: does not divide C
    Write(t, "groups_bad", Bytes(r));
  }
  {
    ModelInferRequest r;  // near-valid: output above the limit
    r.set_model_name("conv2d");
    AddTensor(&r, "input", {1, 1, 1, 1}, true);
    AddTensor(&r, "weight", {1, 1, 1, 1}, true);
    IntParam(&r, "pad", 1000);
    Write(t, "output_too_large", Bytes(r));
  }
  // Issue 13: 16-bit datatypes, the residual, the epilogue, per-side and auto padding.
  auto add16 = [](ModelInferRequest* r, const std::string& name, std::vector<int64_t> shape,
                  const char* datatype) {
    auto* tensor = r->add_inputs();
    tensor->set_name(name);
    tensor->set_datatype(datatype);
    for (int64_t d : shape) tensor->add_shape(d);
    *r->add_raw_input_contents() = Floats(Product(shape)).substr(0, Product(shape) * 2);
  };
  {
    ModelInferRequest r;  // BF16, residual, relu, FP32 output
    r.set_model_name("conv2d");
    add16(&r, "input", {1, 2, 5, 5}, "BF16");
    add16(&r, "weight", {3, 2, 3, 3}, "BF16");
    add16(&r, "bias", {3}, "BF16");
    add16(&r, "residual", {1, 3, 5, 5}, "BF16");
    IntParam(&r, "pad", 1);
    (*r.mutable_parameters())["activation"].set_string_param("relu");
    auto* out = r.add_outputs();
    out->set_name("output");
    (*out->mutable_parameters())["datatype"].set_string_param("FP32");
    Write(t, "bf16_residual_relu_fp32_out", Bytes(r));
    r.mutable_inputs(3)->set_shape(3, 4);  // near-valid: residual of the wrong shape
    Write(t, "bf16_residual_bad_shape", Bytes(r));
    r.mutable_inputs(3)->set_shape(3, 5);
    r.mutable_inputs(1)->set_datatype("FP16");  // near-valid: mixed datatypes
    Write(t, "bf16_mixed_fp16_weight", Bytes(r));
  }
  {
    ModelInferRequest r;  // FP16 NHWC, SAME_LOWER with stride 2, clip, FP16 output
    r.set_model_name("conv2d");
    add16(&r, "input", {1, 6, 7, 2}, "FP16");
    (*r.mutable_inputs(0)->mutable_parameters())["layout"].set_string_param("NHWC");
    add16(&r, "weight", {4, 2, 3, 2}, "FP16");
    add16(&r, "residual", {1, 3, 4, 4}, "FP16");
    IntParam(&r, "stride", 2);
    (*r.mutable_parameters())["auto_pad"].set_string_param("SAME_LOWER");
    (*r.mutable_parameters())["activation"].set_string_param("clip");
    (*r.mutable_parameters())["clip_min"].set_double_param(-0.5);
    IntParam(&r, "clip_max", 6);
    Write(t, "fp16_nhwc_same_lower_clip", Bytes(r));
    IntParam(&r, "pad_h", 0);  // near-valid: auto_pad with an explicit pad
    Write(t, "auto_pad_with_pad", Bytes(r));
  }
  {
    ModelInferRequest r;  // FP32, asymmetric pads, gelu, typed contents with a residual
    r.set_model_name("conv2d");
    AddTensor(&r, "input", {1, 1, 4, 5}, false);
    AddTensor(&r, "weight", {2, 1, 2, 3}, false);
    IntParam(&r, "pad_top", 1);
    IntParam(&r, "pad_bottom", 0);
    IntParam(&r, "pad_left", 2);
    IntParam(&r, "pad_w", 1);
    (*r.mutable_parameters())["activation"].set_string_param("gelu");
    AddTensor(&r, "residual", {1, 2, 4, 6}, false);
    Write(t, "fp32_asymmetric_gelu_residual", Bytes(r));
  }
}

std::string UploadInput(const sparkle::v1::WeightsHeader& h, const std::vector<std::string>& chunks) {
  auto record = [](const std::string& bytes) {
    std::string out;
    out.push_back(static_cast<char>(bytes.size() & 0xff));
    out.push_back(static_cast<char>(bytes.size() >> 8));
    return out + bytes;
  };
  std::string in = record(Bytes(h));
  for (const std::string& c : chunks) in += record(c);
  return in;
}

void WeightUploadSeeds() {
  const std::string t = "weight_upload_fuzz";
  sparkle::v1::WeightsHeader h;
  h.set_label("layer1.conv");
  for (int64_t d : {2, 1, 2, 2}) h.add_shape(d);
  h.set_datatype("FP32");
  h.set_bias(Floats(2));
  const std::string w = Floats(8);
  Write(t, "two_chunks_bias", UploadInput(h, {w.substr(0, 16), w.substr(16)}));
  Write(t, "missing_bytes", UploadInput(h, {w.substr(0, 12)}));
  Write(t, "too_many_bytes", UploadInput(h, {w, "abcd"}));
  sparkle::v1::WeightsHeader one;
  for (int64_t d : {1, 1, 1, 1}) one.add_shape(d);
  Write(t, "one_value", UploadInput(one, {Floats(1)}));
  sparkle::v1::WeightsHeader big = one;
  big.set_shape(0, 64);
  big.set_shape(1, 64);
  Write(t, "over_budget", UploadInput(big, {Floats(4)}));
  sparkle::v1::WeightsHeader fp16 = one;
  fp16.set_datatype("FP16");
  Write(t, "fp16", UploadInput(fp16, {"ab"}));
}

void WeightFileSeeds() {
  const std::string t = "weight_file_fuzz";
  const std::string dir = absl::StrCat(root, "/", t);
  ::mkdir(dir.c_str(), 0755);
  auto write_weight = [&](const std::string& name, WeightHeader header, int64_t elements) {
    auto upload = WeightUpload::Begin(std::move(header), nullptr);
    if (!upload.ok() || !(*upload)->Append(Floats(elements)).ok() || !(*upload)->Digest().ok()) {
      std::abort();
    }
    auto weight = (*upload)->Build(2, absl::FromUnixSeconds(1764892800));
    if (!WriteWeightFile(absl::StrCat(dir, "/", name), *weight).ok()) std::abort();
  };
  write_weight("bias", RegisteredHeader(), 4 * 3 * 3 * 3);
  WeightHeader plain;
  plain.label = "tab\there \"quoted\" \\ \x01";
  plain.shape = {2, 1, 1, 3};
  write_weight("no_bias_escaped_label", plain, 6);
  Write(t, "truncated_weights",
        "sparkle-weights 1\nlabel x\nshape 1 1 2 2\nbias 0\nregistered 1.5\n\n12345678");
  Write(t, "huge_shape", "sparkle-weights 1\nlabel \nshape 1024 1024 3 3\nbias 0\nregistered 0\n\n");
  Write(t, "trailing", "sparkle-weights 1\nshape 1 1 1 1\nbias 0\nregistered 0\n\nabcdE");
}

void TuningCacheSeeds() {
  const std::string t = "tuning_cache_fuzz";
  Write(t, "valid",
        "sparkle-conv-tuning 1\ndevice Fuzz GPU 0\n"
        "implicit_gemm\t12.5\tn1c64h56w56k64r3s3\ndirect\t3\tn8c3h224w224k64r7s7u2v2p3q3\n");
  Write(t, "empty_table", "sparkle-conv-tuning 1\ndevice Fuzz GPU 0\n");
  Write(t, "other_device", "sparkle-conv-tuning 1\ndevice MI300X\ndirect\t1\tk\n");
  Write(t, "bad_time", "sparkle-conv-tuning 1\ndevice Fuzz GPU 0\ndirect\tnan\tkey\n");
}

void NpySeeds() {
  const std::string t = "npy_fuzz";
  auto save = [&](const std::string& name, std::vector<int64_t> shape) {
    client::NpyArray a;
    a.shape = shape;
    a.data = Floats(Product(shape));
    auto bytes = client::SerializeNpy(a);
    if (!bytes.ok()) std::abort();
    Write(t, name, *bytes);
    return *bytes;
  };
  const std::string v1 = save("v1_2x3", {2, 3});
  save("scalar", {});
  save("empty_0x4", {0, 4});
  // Format 2.0: 4-byte header length.
  const std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }          \n";
  std::string v2 = std::string("\x93NUMPY\x02\x00", 8);
  const uint32_t n = header.size();
  for (int i = 0; i < 4; ++i) v2.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  Write(t, "v2_1x2", v2 + header + Floats(2));
  std::string f8 = v1;
  f8.replace(f8.find("<f4"), 3, "<f8");
  Write(t, "dtype_f8", f8);
  std::string fortran = v1;
  fortran.replace(fortran.find("False"), 5, "True ");
  Write(t, "fortran_order", fortran);
  Write(t, "truncated", v1.substr(0, v1.size() - 3));
}

}  // namespace
}  // namespace sparkle::fuzz

int main(int argc, char** argv) {
  using namespace sparkle::fuzz;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus root, e.g. tests/fuzz/corpus>\n", argv[0]);
    return 2;
  }
  root = argv[1];
  ::mkdir(root.c_str(), 0755);
  std::string id;
  auto registry = MakeRegistryWithOneWeight(&id);
  RequestParserSeeds(id);
  WeightUploadSeeds();
  WeightFileSeeds();
  TuningCacheSeeds();
  NpySeeds();
  std::printf("registered weight id (request_parser_fuzz.dict): %s\n", id.c_str());
  return 0;
}
