#include "server/unknown_method_service.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

constexpr size_t kMaxMethodBytes = 256;

class UnimplementedReactor final : public grpc::ServerGenericBidiReactor {
 public:
  explicit UnimplementedReactor(const std::string& message) {
    Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, message));
  }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerGenericBidiReactor* UnknownMethodService::CreateReactor(
    grpc::GenericCallbackServerContext* context) {
  std::string method = context->method();
  if (method.size() > kMaxMethodBytes) {
    method = absl::StrCat(method.substr(0, kMaxMethodBytes), "...");
  }
  std::string message = absl::StrCat("sparkled does not implement ", method);
  spdlog::debug("{} (called by {})", message, context->peer());
  return new UnimplementedReactor(message);
}

}  // namespace sparkle
