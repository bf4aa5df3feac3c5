// WeightHeaderFromProto: the first RegisterWeights message's header (sparkle.v1.WeightsHeader)
// → the registry's WeightHeader. Outside bytes: the weights service and its fuzz target
// (tests/fuzz/weight_upload_fuzz.cc) share this one conversion.
#pragma once

#include "absl/status/statusor.h"
#include "engine/registry/weight_upload.h"
#include "sparkle/v1/control.pb.h"

namespace sparkle {

// INVALID_ARGUMENT when the bias bytes are not a whole number of FP32 values. The shape and
// datatype are checked by the registry (WeightUpload::Begin), not here.
absl::StatusOr<WeightHeader> WeightHeaderFromProto(const sparkle::v1::WeightsHeader& h);

}  // namespace sparkle
