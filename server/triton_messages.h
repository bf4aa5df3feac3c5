// Triton's ModelConfig and ModelStatistics messages for the conv2d model, built from the
// engine's options and InferenceStats. Only the fields that mean something here are filled.
#pragma once

#include "engine/engine.h"
#include "inference/grpc_predict_v2.pb.h"
#include "server/inference_stats.h"

namespace sparkle {

// name conv2d, platform sparkle_conv2d, backend sparkle; max_batch_size 0 (N is the first
// dimension of every tensor and the server batches along it itself); inputs input, weight
// (FP32, 4 dims of -1), the optional bias (FP32, [-1]) and the optional residual (FP32, 4 dims
// of -1); output (FP32, 4 dims of -1). The datatype says FP32, the one every request may use:
// Triton's config has one type per tensor, and BF16/FP16 requests (all tensors alike) are
// accepted as well (docs/protocol.md);
// dynamic_batching with the batcher's delay, largest batch and priority levels; one CPU
// instance group with the compute threads, and one KIND_GPU group per GPU the engine opened.
void FillModelConfig(const Engine& engine, inference::ModelConfig* config);

void FillModelStatistics(const InferenceStats::Snapshot& stats, inference::ModelStatistics* out);

// ServerMetadata: name sparkled, the build's version, and Triton's names of the extensions
// served (model_configuration, statistics, schedule_policy, model_repository, logging,
// binary_tensor_data; system_shared_memory when `shared_memory` is on).
void FillServerMetadata(bool shared_memory, inference::ServerMetadataResponse* out);

// ModelMetadata of conv2d: version 1, platform sparkle_conv2d, inputs input and weight (FP32,
// 4 dims of -1), bias (FP32, [-1]) and residual (FP32, 4 dims of -1; optional, as bias: KServe
// metadata cannot say so), output (FP32, 4 dims of -1). FP32 stays the metadata's datatype for
// the clients that generate data from it (perf_analyzer, tritonclient); BF16 and FP16 are
// accepted too.
void FillModelMetadata(inference::ModelMetadataResponse* out);

}  // namespace sparkle
