#!/usr/bin/env bash
# The layering docs/architecture.md describes, checked on the sources under $1 (the project root):
# engine/ includes no gRPC, protobuf, Prometheus or abseil flags; base/ includes nothing of the
# project but base/; client/ (sparklectl) never includes engine/ or server/; only main.cc files
# define flags.
set -u
root=$1
fail=0
check() {  # check DESCRIPTION HITS
  if [ -n "$2" ]; then
    echo "$1:"
    echo "$2"
    fail=1
  fi
}
check "engine/ must not depend on gRPC, protobuf, Prometheus or flags" \
  "$(grep -rnE '#include *[<"](grpc|grpcpp|google/protobuf|prometheus|absl/flags)|\.pb\.h|ABSL_FLAG' "$root/engine")"
check "base/ must include only abseil, the standard library and base/" \
  "$(grep -rnE '#include *"(engine|server|client|proto)/' "$root/base")"
check "client/ (sparklectl) must not include engine/ or server/" \
  "$(grep -rnE '#include *"(engine|server)/' "$root/client")"
check "flags are defined only in main.cc" \
  "$(grep -rln 'ABSL_FLAG(' "$root/engine" "$root/server" "$root/client" "$root/base" | grep -v '/main\.cc$')"
[ $fail -eq 0 ] && echo "layering clean"
exit $fail
