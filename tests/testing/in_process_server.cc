#include "tests/testing/in_process_server.h"

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "tests/testing/grpc_test_util.h"

namespace sparkle::testing {

absl::StatusOr<std::unique_ptr<InProcessServer>> InProcessServer::Start(Options options) {
  std::unique_ptr<InProcessServer> s(new InProcessServer);
  char dir_template[] = "/tmp/sparkle_inproc_XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return absl::InternalError("mkdtemp failed");
  s->dir_ = dir_template;
  ServerOptions& o = options.server;
  o.listen_address = absl::StrCat("unix:", s->dir_, "/sparkled.sock");
  if (!options.keep_metrics) o.metrics_address.clear();
  if (!options.keep_http) o.http_address.clear();
  EngineOptions& e = o.engine;
  if (e.cpu.threads == 0) e.cpu.threads = 1;
  if (!e.open_gpus) {
    if (options.fake_gpus > 0) {
      if (e.cpu_gflops == 0) e.cpu_gflops = 10;
      if (e.gpu_gflops == 0) e.gpu_gflops = options.fake_gpu.gflops;
      if (e.gpu_transfer_gbps == 0) e.gpu_transfer_gbps = options.fake_gpu.transfer_gbps;
    }
    e.open_gpus = [gpus = s->gpus_, count = options.fake_gpus,
                   fake = options.fake_gpu](const GpuOptions&) {
      GpuDevices out;
      out.platform = "emu";
      if (count == 0) out.no_gpu_reason = "test: no GPU";
      for (int i = 0; i < count; ++i) {
        FakeGpuDevice::Options f = fake;
        f.name = absl::StrCat("fake-gpu-", i);
        auto device = std::make_unique<FakeGpuDevice>(f);
        gpus->push_back(device.get());
        out.devices.push_back(std::move(device));
      }
      return out;
    };
  }
  SPARKLE_ASSIGN_OR_RETURN(s->server_, SparkleServer::Start(o));
  s->channel_ = s->server_->InProcessChannel();
  return s;
}

absl::Status InProcessServer::Shutdown(absl::Time deadline) {
  absl::Status s = server_->Shutdown(deadline);
  gpus_->clear();  // destroyed with the engine
  return s;
}

InProcessServer::~InProcessServer() {
  for (FakeGpuDevice* gpu : *gpus_) gpu->Resume();
  if (server_ != nullptr) server_->Shutdown(absl::Now() + absl::Seconds(30)).IgnoreError();
  channel_.reset();
  server_.reset();
  if (!dir_.empty()) {
    unlink(absl::StrCat(dir_, "/sparkled.sock").c_str());
    rmdir(dir_.c_str());
  }
}

std::unique_ptr<inference::GRPCInferenceService::Stub> InProcessServer::Inference() const {
  return inference::GRPCInferenceService::NewStub(channel_);
}

std::unique_ptr<sparkle::v1::Control::Stub> InProcessServer::Control() const {
  return sparkle::v1::Control::NewStub(channel_);
}

grpc::Status InProcessServer::Infer(const inference::ModelInferRequest& request,
                                    inference::ModelInferResponse* response,
                                    absl::Duration timeout) const {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  return Inference()->ModelInfer(&ctx, request, response);
}

absl::StatusOr<sparkle::v1::GetStatusResponse> InProcessServer::Status() const {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  sparkle::v1::GetStatusResponse response;
  const grpc::Status s = Control()->GetStatus(&ctx, {}, &response);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return response;
}

absl::StatusOr<bool> InProcessServer::Serving(const std::string& service) const {
  bool serving = false;
  const grpc::Status s = HealthCheck(channel_, service, &serving);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return serving;
}

PendingInfer::PendingInfer(inference::GRPCInferenceService::Stub* stub,
                           inference::ModelInferRequest request, absl::Duration timeout)
    : request_(std::move(request)) {
  context_.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  stub->async()->ModelInfer(&context_, &request_, &response_, [this](grpc::Status s) {
    absl::MutexLock lock(&mu_);
    status_ = std::move(s);
    done_ = true;
  });
}

PendingInfer::~PendingInfer() {
  if (!done()) context_.TryCancel();
  Wait();
}

const grpc::Status& PendingInfer::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
  return status_;
}

bool PendingInfer::done() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

}  // namespace sparkle::testing
