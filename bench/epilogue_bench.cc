// epilogue_bench: ResNet's relu(conv(x) + b + skip) served two ways against one running daemon,
// in alternating rounds (docs/performance.md, "Fused epilogue"):
//   fused:  one request with the `residual` input and `activation: relu`;
//   client: the convolution alone, then the client adds the residual and applies relu itself.
// CONCURRENCY threads each keep one synchronous ModelInfer in flight. Both modes parse every
// response into a ModelInferResponse (as a real client does); the client mode then adds and
// clamps in place. Prints requests/s per round and the fused/client ratio min/median/max.
//
// Usage: epilogue_bench --target=HOST:PORT [--concurrency=16] [--rounds=5] [--seconds=4]
// The shape is resnet_3x3_56: 1x64x56x56, 64 filters 3x3, pad 1, bias.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_predict_v2.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:8001", "the daemon's gRPC address");
ABSL_FLAG(int, concurrency, 16, "requests in flight (one thread each)");
ABSL_FLAG(int, rounds, 5, "rounds of each mode, alternating");
ABSL_FLAG(double, seconds, 4, "seconds per round");

namespace {

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void AddInput(ModelInferRequest* r, const char* name, std::vector<int64_t> shape,
              const std::vector<float>& data) {
  auto* t = r->add_inputs();
  t->set_name(name);
  t->set_datatype("FP32");
  for (int64_t d : shape) t->add_shape(d);
  r->add_raw_input_contents()->assign(reinterpret_cast<const char*>(data.data()),
                                      data.size() * sizeof(float));
}

struct Workload {
  ModelInferRequest fused, plain;
  std::vector<float> residual;
};

Workload Make() {
  const int64_t n = 1, c = 64, h = 56, w = 56, k = 64, r = 3;
  Workload wl;
  const auto input = Random(n * c * h * w, 1), weight = Random(k * c * r * r, 2),
             bias = Random(k, 3);
  wl.residual = Random(n * k * h * w, 4);
  for (ModelInferRequest* req : {&wl.fused, &wl.plain}) {
    req->set_model_name("conv2d");
    (*req->mutable_parameters())["pad"].set_int64_param(1);
    AddInput(req, "input", {n, c, h, w}, input);
    AddInput(req, "weight", {k, c, r, r}, weight);
    AddInput(req, "bias", {k}, bias);
  }
  (*wl.fused.mutable_parameters())["activation"].set_string_param("relu");
  AddInput(&wl.fused, "residual", {n, k, h, w}, wl.residual);
  return wl;
}

// Requests/s of one round; exits on the first failed call.
double Round(GRPCInferenceService::Stub* stub, const Workload& wl, bool fused, int threads,
             double seconds) {
  std::atomic<int64_t> done{0};
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      std::vector<float> out(wl.residual.size());
      while (std::chrono::steady_clock::now() < end) {
        grpc::ClientContext ctx;
        ModelInferResponse response;
        const grpc::Status s = stub->ModelInfer(&ctx, fused ? wl.fused : wl.plain, &response);
        if (!s.ok() || response.raw_output_contents_size() != 1 ||
            response.raw_output_contents(0).size() != out.size() * sizeof(float)) {
          std::fprintf(stderr, "request failed: %s\n", s.error_message().c_str());
          std::exit(1);
        }
        if (!fused) {
          std::memcpy(out.data(), response.raw_output_contents(0).data(),
                      out.size() * sizeof(float));
          for (size_t i = 0; i < out.size(); ++i) {
            out[i] = std::max(out[i] + wl.residual[i], 0.0f);
          }
        }
        done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& th : pool) th.join();
  return static_cast<double>(done.load()) / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target),
                                           grpc::InsecureChannelCredentials(), args);
  auto stub = GRPCInferenceService::NewStub(channel);
  const Workload wl = Make();
  const int threads = absl::GetFlag(FLAGS_concurrency);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  Round(stub.get(), wl, true, threads, 1);  // warm-up: connections, primitives, weights
  Round(stub.get(), wl, false, threads, 1);
  std::vector<double> ratios;
  for (int i = 0; i < absl::GetFlag(FLAGS_rounds); ++i) {
    const double fused = Round(stub.get(), wl, true, threads, seconds);
    const double client = Round(stub.get(), wl, false, threads, seconds);
    ratios.push_back(fused / client);
    std::printf("round %d: fused %.1f req/s, client add+relu %.1f req/s, ratio %.3f\n", i + 1,
                fused, client, fused / client);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("fused/client requests/s at %d in flight: min %.3f median %.3f max %.3f\n", threads,
              ratios.front(), ratios[ratios.size() / 2], ratios.back());
  return 0;
}
