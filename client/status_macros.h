// SPARKLE_RETURN_IF_ERROR / SPARKLE_ASSIGN_OR_RETURN for the client. The client depends on the
// wire protocol only, never on engine/, so it cannot include engine/core/status_macros.h; the
// guards keep both definitions (identical in meaning) from colliding should a file see both.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#ifndef SPARKLE_STATUS_CONCAT_
#define SPARKLE_STATUS_CONCAT_INNER_(a, b) a##b
#define SPARKLE_STATUS_CONCAT_(a, b) SPARKLE_STATUS_CONCAT_INNER_(a, b)
#endif

#ifndef SPARKLE_RETURN_IF_ERROR
#define SPARKLE_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status sparkle_status_ = (expr);           \
    if (!sparkle_status_.ok()) return sparkle_status_; \
  } while (0)
#endif

#ifndef SPARKLE_ASSIGN_OR_RETURN
#define SPARKLE_ASSIGN_OR_RETURN(lhs, rexpr) \
  SPARKLE_ASSIGN_OR_RETURN_IMPL_(SPARKLE_STATUS_CONCAT_(sparkle_statusor_, __LINE__), lhs, rexpr)

#define SPARKLE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()
#endif
