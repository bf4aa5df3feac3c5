// sparkled: the conv2d inference daemon. Flags → ServerOptions; SIGTERM/SIGINT → graceful drain.
#include <malloc.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/logging.h"
#include "server/sparkle_server.h"
#include "server/systemd_notifier.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:8001",
          "gRPC listen address host:port (port 0 picks a free one), or unix:/path");
ABSL_FLAG(int64_t, max_message_bytes, int64_t{256} << 20,
          "largest request/response message in bytes, [4096, 2147483647]");
ABSL_FLAG(std::string, admin_listen, "",
          "optional second listener for admin calls (Drain, RegisterWeights, UnregisterWeights): "
          "a UNIX socket unix:/path or a TCP host:port; when set, admin calls are refused on "
          "--listen; default empty: admin calls on --listen");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain: with --tls_key_file turns on TLS on --listen and a TCP "
          "--admin_listen; re-read when it changes; default empty (plaintext)");
ABSL_FLAG(std::string, tls_key_file, "",
          "PEM private key (unencrypted) of --tls_cert_file; both or neither; default empty");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: every client must present a certificate it signed (mTLS); needs "
          "--tls_cert_file; default empty (no client certificate asked)");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Seconds(5),
          "how often the TLS files are checked for a rotated certificate, [1s, 1h], whole "
          "seconds; default 5s");
ABSL_FLAG(std::string, auth_token_file, "",
          "bearer-token file, one token,name,role line each (role infer or admin), re-read "
          "when it changes (~1 s); when set every RPC but health/ServerLive/ServerReady needs "
          "'authorization: Bearer <token>'; default empty (no authentication)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "on SIGTERM/SIGINT, how long accepted work may take to finish, [0, 1h]");
ABSL_FLAG(absl::Duration, drain_delay, absl::ZeroDuration(),
          "on SIGTERM/SIGINT, how long health stays NOT_SERVING while requests are still "
          "served, before admission stops (load balancers move away first), [0, 1h]; default 0; "
          "counts against the stop budget in addition to --drain_timeout");
ABSL_FLAG(int, max_concurrent_streams, 8,
          "concurrent RPCs per client connection, [1, 65536]; calls beyond it wait on the "
          "client (HTTP/2), not in the daemon's memory");
ABSL_FLAG(int, max_inflight_per_stream, 64,
          "ModelStreamInfer: requests of one stream read and not yet answered, [1, 4096]; at the "
          "limit the daemon stops reading that stream until a reply has been written");
ABSL_FLAG(int64_t, tensor_pool_bytes, int64_t{256} << 20,
          "idle 64-byte-aligned tensor buffers (request copies, response outputs) kept for reuse, "
          "bytes of capacity, [0, 2^40]; 0 disables pooling. Buffers in use are bounded by "
          "--max_inflight_bytes");
ABSL_FLAG(std::string, shared_memory, "local",
          "system shared memory (Triton's extension): local = SystemSharedMemoryRegister "
          "accepted from clients on this host only (loopback, unix socket); any = from every "
          "peer (the object must still be on this host); off = no shared memory, the RPCs "
          "answer FAILED_PRECONDITION. Default local");
ABSL_FLAG(int, shm_max_regions, 64,
          "registered system shared-memory regions, all clients together, [1, 65536]");
ABSL_FLAG(int64_t, shm_max_bytes, int64_t{64} << 30,
          "sum of the byte sizes of registered shared-memory regions, bytes, [1 MiB, 2^50]; "
          "default 64 GiB. Mapped from the clients' objects, not allocated");
ABSL_FLAG(int64_t, retry_after_ms, 20,
          "retry hint in ms, sent as the trailers grpc-retry-pushback-ms (honoured by gRPC retry "
          "policies) and retry-after-ms with every overload refusal (queue or in-flight budget "
          "full), [0, 60000]");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:8002",
          "Prometheus endpoint host:port serving GET /metrics, plain HTTP without "
          "authentication, no tensor data (port 0 picks a free one); default loopback; empty "
          "turns metrics off");
ABSL_FLAG(std::string, http_listen, "127.0.0.1:8000",
          "KServe v2 HTTP/REST listen address host:port (Triton's port; port 0 picks a free "
          "one), with the same tokens, limits and TLS certificate as --listen; default loopback; "
          "empty turns REST off");
ABSL_FLAG(int, http_threads, 16,
          "REST worker threads: REST requests served at once (more connections wait), [1, 1024]");
ABSL_FLAG(int64_t, http_max_json_bytes, int64_t{16} << 20,
          "largest JSON part of a REST infer request in bytes, [4096, 2147483647] (a smaller "
          "--max_message_bytes is the limit then); large tensors go as binary data "
          "(binary_data_size)");
ABSL_FLAG(int, threads, 0,
          "CPU threads for compute; 0 = the CPUs this process may use (affinity and cgroup "
          "quota), [0, 1024]");
ABSL_FLAG(bool, winograd, true,
          "use oneDNN Winograd for 3x3 stride-1 dense convolutions (rel. L2 error < 1e-5)");
ABSL_FLAG(int64_t, max_batch_size, 64, "largest sum of N in one batch, [1, 65536]; 1 = no batching");
ABSL_FLAG(int64_t, max_batch_bytes, int64_t{64} << 20,
          "largest sum of job bytes (in + weight + bias + out) in one batch, [1, 2^40]");
ABSL_FLAG(absl::Duration, max_queue_delay, absl::ZeroDuration(),
          "how long a partial batch may wait to fill, [0, 1s]; 0 = run what is queued");
ABSL_FLAG(int, priority_levels, 2,
          "request priority levels, [1, 16] (default 2); 1 is served first, a request's "
          "priority 0 means the lowest level");
ABSL_FLAG(absl::Duration, priority_aging, absl::Seconds(1),
          "a queued job is served as if one level higher per this much waiting (never above "
          "1), duration in [0, 1h] (default 1s); 0 = no aging");
ABSL_FLAG(int64_t, max_queued_jobs, 4096, "jobs waiting at most, [1, 2^31]");
ABSL_FLAG(int64_t, max_queued_bytes, int64_t{2} << 30, "bytes of waiting jobs at most, [1, 2^50]");
ABSL_FLAG(int64_t, max_job_bytes, int64_t{1} << 30,
          "largest in + weight + bias + out bytes of one request, [1, 2^50]");
ABSL_FLAG(double, max_job_gflop, 500,
          "largest cost of one request in GFLOP (2*N*K*P*Q*C/groups*R*S), (0, 1e9]; above it "
          "RESOURCE_EXHAUSTED before anything is allocated (500 GFLOP: ~1.5 s on 2 cores)");
ABSL_FLAG(int64_t, max_job_scratch_bytes, int64_t{512} << 20,
          "largest scratch of one request in bytes: its padded input, im2col bound x threads, "
          "and oneDNN's scratchpad + layout buffers, [2^20, 2^50]");
ABSL_FLAG(int64_t, max_inflight_bytes, int64_t{448} << 20,
          "bytes (in + weight + bias + out) of admitted requests not yet answered, queued and "
          "running, [2^20, 2^50]; beyond it RESOURCE_EXHAUSTED with a retry hint");
ABSL_FLAG(double, small_job_max_mflop, 20,
          "requests below this many MFLOP batch together and run one thread each, side by side; "
          "larger ones run alone on every thread, [0, 1e9]");
ABSL_FLAG(int64_t, weights_budget_bytes, int64_t{2} << 30,
          "bytes the weights registry may hold (registered weights and their prepacked copies), "
          "[0, 2^50]");
ABSL_FLAG(std::string, weights_dir, "",
          "directory where weight registrations persist across restarts; empty: memory only");
ABSL_FLAG(absl::Duration, weights_upload_idle_timeout, absl::Seconds(30),
          "a RegisterWeights stream that sends no message for this long is finished "
          "DEADLINE_EXCEEDED and its reserved bytes returned, [1ms, 1h]; default 30s");
ABSL_FLAG(std::string, device, "auto",
          "where requests that say device=auto (or nothing) run: auto (the router predicts the "
          "fastest device per batch), cpu, gpu (the best healthy GPU) or gpu:N; a GPU policy "
          "without that GPU refuses to start");
ABSL_FLAG(std::string, gpu_fault_policy, "cpu",
          "when a GPU latches unhealthy, its queued auto work goes to the cpu (cpu) or fails "
          "UNAVAILABLE (fail); requests that named the GPU always fail");
ABSL_FLAG(int, gpu_slots, 3,
          "staging slots (pipeline depth) per GPU, [1, 8]; 3 = triple buffering");
ABSL_FLAG(std::string, gpu_tuning_cache_dir, "",
          "directory where GPU kernel tuning results persist across restarts; empty = memory only");
ABSL_FLAG(int, emulated_gpus, -1,
          "SPARKLE_GPU=emu builds only (test/demo): emulate this many GPUs; -1 = the "
          "HIPEMU_DEVICES environment (default 0), [-1, 64]; ignored by other builds");
ABSL_FLAG(std::string, log_level, "info",
          "trace, debug, info, warn, error, critical or off; info logs lifecycle events only "
          "(never one line per request)");

namespace {

// Keeps freed request and response buffers mapped. Fresh pages cost ~11 µs each on the
// reference VM (cpu-conv-anchors.md): without this, glibc returns every large reply buffer to
// the kernel and the next request faults it back in.
void KeepFreedMemoryMapped() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // the largest glibc allows; bigger blocks still mmap
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_ARENA_MAX, 4);
}

sparkle::ServerOptions OptionsFromFlags() {
  sparkle::ServerOptions o;
  o.listen_address = absl::GetFlag(FLAGS_listen);
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.admin_listen_address = absl::GetFlag(FLAGS_admin_listen);
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  o.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  o.tls_reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  o.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  o.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  o.drain_delay = absl::GetFlag(FLAGS_drain_delay);
  o.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  o.max_inflight_per_stream = absl::GetFlag(FLAGS_max_inflight_per_stream);
  o.retry_after_ms = absl::GetFlag(FLAGS_retry_after_ms);
  o.tensor_pool_bytes = absl::GetFlag(FLAGS_tensor_pool_bytes);
  o.shared_memory = absl::GetFlag(FLAGS_shared_memory);
  o.shm_max_regions = absl::GetFlag(FLAGS_shm_max_regions);
  o.shm_max_bytes = absl::GetFlag(FLAGS_shm_max_bytes);
  o.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  o.http_address = absl::GetFlag(FLAGS_http_listen);
  o.http_threads = absl::GetFlag(FLAGS_http_threads);
  o.http_max_json_bytes = absl::GetFlag(FLAGS_http_max_json_bytes);
  sparkle::EngineOptions& e = o.engine;
  e.cpu.threads = absl::GetFlag(FLAGS_threads);
  e.cpu.allow_winograd = absl::GetFlag(FLAGS_winograd);
  e.batcher.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  e.batcher.max_batch_bytes = absl::GetFlag(FLAGS_max_batch_bytes);
  e.batcher.max_queue_delay = absl::GetFlag(FLAGS_max_queue_delay);
  e.batcher.priority_levels = absl::GetFlag(FLAGS_priority_levels);
  e.batcher.priority_aging = absl::GetFlag(FLAGS_priority_aging);
  e.batcher.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  e.batcher.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  e.max_job_bytes = absl::GetFlag(FLAGS_max_job_bytes);
  e.max_job_gflop = absl::GetFlag(FLAGS_max_job_gflop);
  e.max_job_scratch_bytes = absl::GetFlag(FLAGS_max_job_scratch_bytes);
  e.max_inflight_bytes = absl::GetFlag(FLAGS_max_inflight_bytes);
  e.small_job_max_flops = absl::GetFlag(FLAGS_small_job_max_mflop) * 1e6;
  e.weights.budget_bytes = absl::GetFlag(FLAGS_weights_budget_bytes);
  e.weights.dir = absl::GetFlag(FLAGS_weights_dir);
  e.weights.upload_idle_timeout = absl::GetFlag(FLAGS_weights_upload_idle_timeout);
  return o;
}

// The device flags, which can be malformed: INVALID_ARGUMENT naming the flag.
absl::Status DeviceOptionsFromFlags(sparkle::EngineOptions* e) {
  absl::StatusOr<sparkle::DeviceRequest> device =
      sparkle::ParseDeviceRequest(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", device.status().message()));
  }
  e->device_policy = *device;
  const std::string fault = absl::GetFlag(FLAGS_gpu_fault_policy);
  if (fault == "cpu") {
    e->on_gpu_fault = sparkle::GpuFaultPolicy::kRerouteToCpu;
  } else if (fault == "fail") {
    e->on_gpu_fault = sparkle::GpuFaultPolicy::kFail;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu_fault_policy must be cpu or fail; was '", fault, "'"));
  }
  e->gpu.slots = absl::GetFlag(FLAGS_gpu_slots);
  e->gpu.tuning_cache_dir = absl::GetFlag(FLAGS_gpu_tuning_cache_dir);
  e->gpu.emulated_devices = absl::GetFlag(FLAGS_emulated_gpus);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "sparkled: conv2d inference daemon (KServe v2 gRPC).\n"
      "  sparkled [--listen=127.0.0.1:8001] [--threads=0] ...   (--help lists every flag)");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status s = sparkle::ConfigureLogging(absl::GetFlag(FLAGS_log_level)); !s.ok()) {
    spdlog::critical("cannot start: {}", s.ToString());
    return 1;
  }
  KeepFreedMemoryMapped();
  // Debian's abseil is built with Mutex deadlock detection on: every Lock records lock-order
  // edges in a global graph (GraphCycles: ~2 % of the daemon's CPU at 64 tiny requests in
  // flight, perf). The tests keep it on (they link abseil's default); the daemon turns it off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Blocked before any thread starts, so every thread inherits the mask and only the sigwait
  // thread below sees them (a handler could not safely drain anything).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // READY/STOPPING/STATUS/WATCHDOG to systemd when it started us (Type=notify); else no-ops.
  // "Healthy" for the watchdog: SparkleServer::Healthy (the engine's lock answers).
  std::unique_ptr<sparkle::SparkleServer>* running = nullptr;
  sparkle::SystemdNotifier systemd([&running] { return running && (*running)->Healthy(); });

  sparkle::ServerOptions options = OptionsFromFlags();
  if (absl::Status s = DeviceOptionsFromFlags(&options.engine); !s.ok()) {
    spdlog::critical("cannot start: {}", s.ToString());
    return 1;
  }
  options.on_drain_start = [&systemd] {
    systemd.Status("draining: not serving, accepted work finishing");
  };
  absl::StatusOr<std::unique_ptr<sparkle::SparkleServer>> server =
      sparkle::SparkleServer::Start(options);
  if (!server.ok()) {
    spdlog::critical("cannot start: {}", server.status().ToString());
    return 1;
  }
  const std::string& address = (*server)->address();
  spdlog::info("sparkled {} listening on {} (KServe v2 gRPC: inference.GRPCInferenceService, "
               "sparkle.v1.Control, grpc.health.v1.Health)",
               SPARKLE_VERSION, address);
  running = &*server;
  systemd.Ready(absl::StrCat("serving on ", address));
  systemd.StartWatchdog();
  spdlog::info("try: sparklectl --target={} status", address);
  spdlog::info("     sparklectl --target={} infer --input_shape=1x16x32x32 "
               "--weight_shape=16x16x3x3 --pad=1 --output=y.npy",
               address);

  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    spdlog::info("received {}: health NOT_SERVING, no new requests, draining (budget {})",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 absl::FormatDuration(options.drain_timeout));
    systemd.Stopping(absl::StrCat("stopping: draining (budget ",
                                  absl::FormatDuration(options.drain_timeout), ")"));
    // The drain, then exit without stopping gRPC (SparkleServer::DrainForExit says why): a
    // client never sees CANCELLED for a call that was not accepted, only UNAVAILABLE.
    (*server)->DrainForExit(absl::Now() + options.drain_timeout).IgnoreError();
    systemd.StopWatchdog();
    spdlog::info("sparkled stopped");
    spdlog::shutdown();  // flushes
    std::_Exit(0);
  });
  (*server)->Wait();  // never returns: the signal thread ends the process
  return 0;
}
