// ControlService: sparkle.v1.Control, the daemon's own status API for sparklectl and operators.
#pragma once

#include <string>

#include "absl/time/time.h"
#include "engine/engine.h"
#include "sparkle/v1/control.grpc.pb.h"

namespace sparkle {

class ControlService final : public sparkle::v1::Control::CallbackService {
 public:
  // `engine` is not owned and must outlive the service.
  ControlService(Engine* engine, std::string listen_address);

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const sparkle::v1::GetStatusRequest* request,
                                      sparkle::v1::GetStatusResponse* response) override;

 private:
  Engine* const engine_;
  const std::string listen_address_;
  const absl::Time start_ = absl::Now();
};

}  // namespace sparkle
