// SPARKLE_RETURN_IF_ERROR / SPARKLE_ASSIGN_OR_RETURN: the meaning of abseil's later
// ABSL_RETURN_IF_ERROR / ABSL_ASSIGN_OR_RETURN, which abseil 20220623 (Debian 12) lacks.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SPARKLE_STATUS_CONCAT_INNER_(a, b) a##b
#define SPARKLE_STATUS_CONCAT_(a, b) SPARKLE_STATUS_CONCAT_INNER_(a, b)

#define SPARKLE_RETURN_IF_ERROR(expr)                    \
  do {                                                   \
    ::absl::Status sparkle_status_ = (expr);             \
    if (!sparkle_status_.ok()) return sparkle_status_;   \
  } while (0)

#define SPARKLE_ASSIGN_OR_RETURN(lhs, rexpr) \
  SPARKLE_ASSIGN_OR_RETURN_IMPL_(SPARKLE_STATUS_CONCAT_(sparkle_statusor_, __LINE__), lhs, rexpr)

#define SPARKLE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()
