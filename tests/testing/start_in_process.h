// StartServer: InProcessServer::Start for a test, with a test failure (and null) naming the
// status when the server does not start. Header-only: the testing libraries do not link gtest.
#pragma once

#include <memory>
#include <utility>

#include "gtest/gtest.h"
#include "tests/testing/in_process_server.h"

namespace sparkle::testing {

inline std::unique_ptr<InProcessServer> StartServer(InProcessServer::Options options = {}) {
  auto s = InProcessServer::Start(std::move(options));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(s).value() : nullptr;
}

}  // namespace sparkle::testing
