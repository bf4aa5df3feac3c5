// InProcessServer: the real SparkleServer (inference, control with weights, gRPC health; CallAuth
// and limits as configured) inside the test process, reached through gRPC's in-process
// transport (SparkleServer::InProcessChannel): no TCP port, no daemon. Its main listener is a
// UNIX socket in a private temporary directory (SparkleServer needs one; the tests never use
// it), and metrics are off unless the options name an address.
//
// To hold jobs inside the engine (drain, queue timeouts, status while busy), give it fake GPUs
// (tests/testing/fake_gpu_device.h) with engine.device_policy = gpu and Pause() them, or a
// large engine.batcher.max_queue_delay.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "server/server_options.h"
#include "server/sparkle_server.h"
#include "sparkle/v1/control.grpc.pb.h"
#include "tests/testing/fake_gpu_device.h"

namespace sparkle::testing {

class InProcessServer {
 public:
  struct Options {
    // Used as given, except: listen_address is replaced by a UNIX socket in a temporary
    // directory, metrics_address is cleared unless keep_metrics and http_address unless
    // keep_http. engine.cpu.threads defaults to 1 here (set it to change).
    ServerOptions server;
    bool keep_metrics = false;
    bool keep_http = false;
    // FakeGpuDevices opened through engine.open_gpus (0: a CPU-only engine whose fallback
    // reason is "test: no GPU"). With any, set engine rates (cpu_gflops, gpu_gflops,
    // gpu_transfer_gbps) are given fixed defaults so that Create runs no probe through them.
    int fake_gpus = 0;
    FakeGpuDevice::Options fake_gpu;
  };

  static absl::StatusOr<std::unique_ptr<InProcessServer>> Start(Options options);
  // Resumes every fake GPU (unless Shutdown ran), then SparkleServer::Shutdown with a 30 s
  // budget.
  ~InProcessServer();

  // SparkleServer::Shutdown; the fake GPUs go with the engine, so gpu(i) is invalid after it.
  // Use this rather than server().Shutdown, so that the destructor knows the GPUs are gone.
  absl::Status Shutdown(absl::Time deadline);

  SparkleServer& server() { return *server_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  std::unique_ptr<inference::GRPCInferenceService::Stub> Inference() const;
  std::unique_ptr<sparkle::v1::Control::Stub> Control() const;
  // The fake GPU `i` (owned by the engine; valid until shutdown).
  FakeGpuDevice& gpu(int i) const { return *gpus_->at(i); }
  int gpu_count() const { return static_cast<int>(gpus_->size()); }

  // ModelInfer / GetStatus with a deadline.
  grpc::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response,
                     absl::Duration timeout = absl::Seconds(30)) const;
  absl::StatusOr<sparkle::v1::GetStatusResponse> Status() const;
  // gRPC health for `service` ("" = the server): true while SERVING.
  absl::StatusOr<bool> Serving(const std::string& service = "") const;

 private:
  InProcessServer() = default;
  std::string dir_;
  // Filled by the engine's open_gpus on the thread that starts the server.
  std::shared_ptr<std::vector<FakeGpuDevice*>> gpus_ =
      std::make_shared<std::vector<FakeGpuDevice*>>();
  std::unique_ptr<SparkleServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

// An asynchronous ModelInfer: sent at construction, Wait() returns its outcome.
class PendingInfer {
 public:
  PendingInfer(inference::GRPCInferenceService::Stub* stub, inference::ModelInferRequest request,
               absl::Duration timeout = absl::Seconds(30));
  ~PendingInfer();  // waits for the outcome (cancels the call first if not yet done)
  const grpc::Status& Wait();
  bool done() const;
  const inference::ModelInferResponse& response() const { return response_; }
  grpc::ClientContext& context() { return context_; }

 private:
  grpc::ClientContext context_;
  inference::ModelInferRequest request_;
  inference::ModelInferResponse response_;
  mutable absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_;
};

}  // namespace sparkle::testing
