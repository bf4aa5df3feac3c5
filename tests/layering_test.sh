#!/usr/bin/env bash
# Fails when engine/ includes gRPC, protobuf, Prometheus or abseil flags (ARCHITECTURE.md §1).
set -u
hits=$(grep -rnE '#include *[<"](grpc|grpcpp|google/protobuf|prometheus|absl/flags)|\.pb\.h|ABSL_FLAG' "$1")
if [ -n "$hits" ]; then
  echo "engine/ must not depend on gRPC, protobuf, Prometheus or flags:"
  echo "$hits"
  exit 1
fi
echo "engine/ layering clean"
