#include "server/model_repository_rpcs.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/request_parser.h"

namespace sparkle {
namespace {

absl::Status UnknownModel(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("unknown model '", name,
                                          "': sparkled has no model repository; it serves one "
                                          "built-in model, '",
                                          kModelName, "'"));
}

}  // namespace

void ListModelRepository(bool model_ready, const inference::RepositoryIndexRequest& request,
                         inference::RepositoryIndexResponse* response) {
  if (request.ready() && !model_ready) return;
  inference::RepositoryIndexResponse::ModelIndex* model = response->add_models();
  model->set_name(kModelName);
  model->set_version(kModelVersion);
  model->set_state(model_ready ? "READY" : "UNAVAILABLE");
  if (!model_ready) model->set_reason("draining");
}

absl::Status LoadModel(const inference::RepositoryModelLoadRequest& request) {
  if (request.model_name() != kModelName) return UnknownModel(request.model_name());
  if (!request.parameters().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RepositoryModelLoad of '", kModelName, "' has parameter '",
        request.parameters().begin()->first,
        "': the built-in model cannot be reconfigured or loaded from files; load it without "
        "parameters (it is always loaded)"));
  }
  return absl::OkStatus();
}

absl::Status UnloadModel(const inference::RepositoryModelUnloadRequest& request) {
  if (request.model_name() != kModelName) return UnknownModel(request.model_name());
  return absl::FailedPreconditionError(
      absl::StrCat("the built-in model cannot be unloaded: '", kModelName,
                   "' is served from start to exit; drain the daemon (SIGTERM or "
                   "Control.Drain) to take it out of service"));
}

}  // namespace sparkle
