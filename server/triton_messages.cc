#include "server/triton_messages.h"

#include <cstdint>

#include "engine/core/activation.h"
#include "server/request_parser.h"

namespace sparkle {
namespace {

void AddInput(inference::ModelConfig* config, const char* name, int rank, bool optional) {
  inference::ModelInput* input = config->add_input();
  input->set_name(name);
  input->set_data_type(inference::TYPE_FP32);
  for (int i = 0; i < rank; ++i) input->add_dims(-1);
  input->set_optional(optional);
}

void SetDuration(const InferenceStats::Duration& from, inference::StatisticDuration* to) {
  to->set_count(from.count);
  to->set_ns(from.ns);
}

}  // namespace

void FillModelConfig(const Engine& engine, inference::ModelConfig* config) {
  const EngineOptions& options = engine.options();
  config->set_name(kModelName);
  config->set_platform("sparkle_conv2d");
  config->set_backend("sparkle");
  config->set_max_batch_size(0);
  AddInput(config, "input", 4, false);
  AddInput(config, "weight", 4, false);
  AddInput(config, "bias", 1, true);
  // The fused epilogue's skip connection: the output's shape and layout (docs/protocol.md).
  AddInput(config, "residual", 4, true);
  inference::ModelOutput* output = config->add_output();
  output->set_name("output");
  output->set_data_type(inference::TYPE_FP32);
  for (int i = 0; i < 4; ++i) output->add_dims(-1);

  // What the one tensor datatype above cannot say (docs/protocol.md, "Datatypes").
  auto& parameters = *config->mutable_parameters();
  parameters["datatypes"].set_string_value("FP32,BF16,FP16");
  parameters["activations"].set_string_value(ActivationNames());
  parameters["auto_pad"].set_string_value("SAME_UPPER,SAME_LOWER,VALID,NOTSET");

  inference::ModelDynamicBatching* batching = config->mutable_dynamic_batching();
  batching->add_preferred_batch_size(static_cast<int32_t>(options.batcher.max_batch_size));
  batching->set_max_queue_delay_microseconds(
      static_cast<uint64_t>(absl::ToInt64Microseconds(options.batcher.max_queue_delay)));
  batching->set_priority_levels(static_cast<uint64_t>(options.batcher.priority_levels));
  // A request without `priority` gets the lowest level (ShapeBatcher::Options).
  batching->set_default_priority_level(static_cast<uint64_t>(options.batcher.priority_levels));

  inference::ModelInstanceGroup* cpu = config->add_instance_group();
  cpu->set_name("cpu");
  cpu->set_kind(inference::ModelInstanceGroup::KIND_CPU);
  cpu->set_count(engine.cpu().threads());
  for (const DeviceSnapshot& device : engine.Devices().devices) {
    if (device.index < 0) continue;
    inference::ModelInstanceGroup* gpu = config->add_instance_group();
    gpu->set_name(device.name);
    gpu->set_kind(inference::ModelInstanceGroup::KIND_GPU);
    gpu->set_count(1);
    gpu->add_gpus(device.index);
  }
}

void FillModelStatistics(const InferenceStats::Snapshot& stats, inference::ModelStatistics* out) {
  out->set_name(kModelName);
  out->set_version(kModelVersion);
  out->set_last_inference(stats.last_inference > absl::UnixEpoch()
                              ? static_cast<uint64_t>(absl::ToUnixMillis(stats.last_inference))
                              : 0);
  out->set_inference_count(stats.inference_count);
  out->set_execution_count(stats.execution_count);
  inference::InferStatistics* s = out->mutable_inference_stats();
  SetDuration(stats.success, s->mutable_success());
  SetDuration(stats.fail, s->mutable_fail());
  SetDuration(stats.queue, s->mutable_queue());
  SetDuration(stats.compute_input, s->mutable_compute_input());
  SetDuration(stats.compute_infer, s->mutable_compute_infer());
  SetDuration(stats.compute_output, s->mutable_compute_output());
  for (const InferenceStats::BatchSize& size : stats.batch_sizes) {
    inference::InferBatchStatistics* b = out->add_batch_stats();
    b->set_batch_size(static_cast<uint64_t>(size.batch_size));
    SetDuration(size.compute_input, b->mutable_compute_input());
    SetDuration(size.compute_infer, b->mutable_compute_infer());
    SetDuration(size.compute_output, b->mutable_compute_output());
  }
}

namespace {

void AddTensorMetadata(const char* name, int rank,
                       google::protobuf::RepeatedPtrField<
                           inference::ModelMetadataResponse::TensorMetadata>* list) {
  auto* t = list->Add();
  t->set_name(name);
  t->set_datatype("FP32");
  for (int i = 0; i < rank; ++i) t->add_shape(-1);
}

}  // namespace

void FillServerMetadata(bool shared_memory, inference::ServerMetadataResponse* out) {
  out->set_name("sparkled");
  out->set_version(SPARKLE_VERSION);
  // Triton's extension names, for what sparkled serves (docs/protocol.md).
  for (const char* extension : {"model_configuration", "statistics", "schedule_policy",
                                "model_repository", "logging", "binary_tensor_data"}) {
    out->add_extensions(extension);
  }
  if (shared_memory) out->add_extensions("system_shared_memory");
}

void FillModelMetadata(inference::ModelMetadataResponse* out) {
  out->set_name(kModelName);
  out->add_versions(kModelVersion);
  out->set_platform("sparkle_conv2d");
  AddTensorMetadata("input", 4, out->mutable_inputs());
  AddTensorMetadata("weight", 4, out->mutable_inputs());
  AddTensorMetadata("bias", 1, out->mutable_inputs());
  AddTensorMetadata("residual", 4, out->mutable_inputs());
  AddTensorMetadata("output", 4, out->mutable_outputs());
}

}  // namespace sparkle
