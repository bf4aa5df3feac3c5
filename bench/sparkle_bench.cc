// sparkle_bench: the benchmarks of issue 3, each in ONE process and ONE run so that figures are
// compared side by side (this machine is shared and noisy), as ratios, over several rounds.
//
//   sparkle_bench layers    the layer table through (a) oneDNN called in-process (direct, and
//                           Winograd where oneDNN offers it), (b) a sparkled child process
//                           over loopback gRPC, tensors in the messages, and (c) the same
//                           daemon with the tensors in system shared memory (bench --shm);
//                           GFLOP/s of each and the ratios.
//   sparkle_bench batching  tiny jobs (1x16x32x32, K=16, 3x3) at concurrency 64 against two
//                           sparkled children, --max_batch_size=64 vs 1; requests/s and ratio.
//   sparkle_bench engine_batching  the same jobs straight into an in-process Engine (no gRPC):
//                           what batching does where the transport does not dominate.
//   sparkle_bench router    a mixed stream through an in-process Engine with a fake GPU (10x
//                           the CPU rate, fixed transfer cost): all-CPU vs all-GPU vs auto.
//   sparkle_bench metrics   the same tiny jobs against two sparkled children, Prometheus
//                           metrics on (--metrics_address=127.0.0.1:0) vs off; requests/s, ratio.
//   sparkle_bench metrics_record  ns to record one request (statistics, metrics) in-process.
//
// Run by hand (never a timed test): build/bench/sparkle_bench layers --rounds=3
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "bench/spread.h"
#include "bench/inprocess_onednn.h"
#include "bench/metrics_bench.h"
#include "bench/router_bench.h"
#include "client/bench.h"
#include "client/npy.h"
#include "client/weights_commands.h"
#include "engine/engine.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_predict_v2.grpc.pb.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/shape_table.h"

ABSL_FLAG(std::string, sparkled, SPARKLED_PATH, "the daemon binary to start");
ABSL_FLAG(int, rounds, 3, "rounds; each figure is reported as min/median/max over them");
ABSL_FLAG(absl::Duration, window, absl::Seconds(3), "measurement window per figure per round");
ABSL_FLAG(std::string, layers, "", "comma-separated layer names (default: the whole table)");
ABSL_FLAG(std::string, concurrency, "2", "daemon: requests in flight (comma list: best is kept)");
ABSL_FLAG(int, threads, 2, "compute threads, in-process and in the daemon");
ABSL_FLAG(int, batching_concurrency, 64, "batching, metrics: requests in flight");

namespace sparkle::bench {
namespace {

// GFLOP/s of in-process oneDNN: calls repeated for `window`, median call time.
double InProcessGflops(const Conv2dParams& p, InProcessOneDnn& conv,
                       const std::vector<float>& input, std::vector<float>& output,
                       absl::Duration window) {
  conv.Run(input.data(), output.data());  // warm-up
  std::vector<double> seconds;
  const absl::Time end = absl::Now() + window;
  while (absl::Now() < end || seconds.size() < 5) {
    const absl::Time t0 = absl::Now();
    conv.Run(input.data(), output.data());
    seconds.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
  }
  std::sort(seconds.begin(), seconds.end());
  return p.flops() / seconds[seconds.size() / 2] * 1e-9;
}

std::vector<int> ParseInts(const std::string& s) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(s, ',')) {
    int v;
    if (absl::SimpleAtoi(part, &v)) out.push_back(v);
  }
  return out;
}

// Daemon GFLOP/s (and requests/s) of one shape class: the best of the concurrency levels.
// With shared_memory, the tensors go through system shared memory (BenchOptions).
// `weight_id`: registered weights sent by id instead of with every request.
client::LevelResult DaemonLevel(const std::string& address, const std::string& shape_class,
                                const std::vector<int>& concurrency, absl::Duration window,
                                bool shared_memory = false, const std::string& weight_id = "") {
  client::SparkleClient::Options connection;
  connection.target = address;
  connection.channels = 2;
  connection.timeout = absl::Seconds(60);
  client::BenchOptions options;
  options.shape_classes = {shape_class};
  options.concurrency = concurrency;
  options.duration = window;
  options.warmup = absl::Milliseconds(500);
  options.shared_memory = shared_memory;
  options.weight_id = weight_id;
  std::vector<client::LevelResult> results;
  std::ostringstream quiet;
  absl::Status status = client::RunBench(connection, options, quiet, &results);
  // With shared memory, an answer that did not go through it makes the figure meaningless.
  const bool not_via_shm =
      std::any_of(results.begin(), results.end(),
                  [](const client::LevelResult& r) { return r.not_via_shared_memory > 0; });
  if (!status.ok() || results.empty() || not_via_shm) {
    std::cerr << "daemon bench failed for " << shape_class << ": " << status << "\n"
              << quiet.str();
    std::exit(1);
  }
  return *std::max_element(results.begin(), results.end(), [](const auto& a, const auto& b) {
    return a.GflopPerSecond() < b.GflopPerSecond();
  });
}

// Registers random weights [K, C/groups, R, S] and a bias [K] for `p` with the daemon (as
// `sparklectl weights register` does); returns the weight_id. Exits on failure.
std::string RegisterLayerWeights(const std::string& address, const Conv2dParams& p) {
  const std::string dir = absl::StrCat("/tmp/sparkle_bench.", getpid());
  std::filesystem::create_directories(dir);
  const std::string weight_path = dir + "/weight.npy", bias_path = dir + "/bias.npy";
  auto weight = client::NpyArray::FromFloats({p.k, p.c / p.groups, p.r, p.s},
                                             testing::RandomFloats(p.weight_elements(), 2));
  auto bias = client::NpyArray::FromFloats({p.k}, testing::RandomFloats(p.k, 3));
  client::SparkleClient::Options connection;
  connection.target = address;
  client::WeightsCommandOptions options;
  options.bias_path = bias_path;
  options.json = true;
  std::ostringstream out;
  absl::Status status = weight.status();
  if (status.ok()) status = bias.status();
  if (status.ok()) status = client::WriteNpyFile(weight_path, *weight);
  if (status.ok()) status = client::WriteNpyFile(bias_path, *bias);
  if (status.ok()) status = client::RunWeightsRegister(connection, weight_path, options, out);
  std::filesystem::remove_all(dir);
  const std::string json = out.str();
  const std::string key = "\"weight_id\": \"";
  const size_t at = json.find(key);
  if (!status.ok() || at == std::string::npos) {
    std::cerr << "registering weights failed: " << status << "\n" << json;
    std::exit(1);
  }
  const size_t from = at + key.size();
  return json.substr(from, json.find('"', from) - from);
}

std::unique_ptr<testing::DaemonProcess> StartDaemon(std::vector<std::string> args) {
  args.push_back(absl::StrCat("--threads=", absl::GetFlag(FLAGS_threads)));
  args.push_back("--log_level=info");  // the address is logged at info
  auto d = testing::DaemonProcess::Start(absl::GetFlag(FLAGS_sparkled), args);
  if (!d.ok()) {
    std::cerr << d.status() << "\n";
    std::exit(1);
  }
  return *std::move(d);
}

// Debian's gRPC 1.51 aborts ("double free or corruption", in grpc_cq_internal_unref on a
// callback thread) when the callback API's shared completion queue is torn down and created
// again between rounds. A channel that made one callback call holds that queue for as long as
// the caller keeps it, whatever happens to its server: keep it for the whole run.
std::shared_ptr<grpc::Channel> HoldCallbackQueue(const std::string& address) {
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  grpc::ClientContext context;
  inference::ServerLiveRequest request;
  inference::ServerLiveResponse response;
  absl::Notification done;
  stub->async()->ServerLive(&context, &request, &response,
                            [&done](grpc::Status) { done.Notify(); });
  done.WaitForNotification();
  return channel;
}

int Layers() {
  const std::string only = absl::GetFlag(FLAGS_layers);
  const std::vector<int> concurrency = ParseInts(absl::GetFlag(FLAGS_concurrency));
  const absl::Duration window = absl::GetFlag(FLAGS_window);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  setenv("OMP_NUM_THREADS", absl::StrCat(absl::GetFlag(FLAGS_threads)).c_str(), 1);
  auto daemon = StartDaemon({});
  const std::shared_ptr<grpc::Channel> keepalive = HoldCallbackQueue(daemon->address());
  // The daemon has logged before this point, so it is up; its own threads idle while the
  // in-process figures are taken.
  std::printf("sparkled pid %d at %s; %d round(s), %s windows, daemon concurrency %s\n",
              daemon->pid(), daemon->address().c_str(), rounds,
              absl::FormatDuration(window).c_str(), absl::GetFlag(FLAGS_concurrency).c_str());
  // GFLOP/s columns, then ratios: daemon (tensors in the messages) and daemon shm (tensors in
  // system shared memory) over the in-process best; daemon over in-process direct.
  std::printf("%-17s %7s | %-17s %-17s %-17s %-17s %-17s | %-14s %-14s %-14s %-14s\n", "layer",
              "MFLOP", "inproc direct", "inproc best", "daemon", "daemon shm", "shm+reg",
              "daemon/best", "shm/best", "shm+reg/best", "daemon/direct");
  for (const testing::NamedShape& layer : testing::LayerTable()) {
    if (!only.empty() && !absl::StrContains(absl::StrCat(",", only, ","),
                                            absl::StrCat(",", layer.name, ","))) {
      continue;
    }
    const Conv2dParams& p = layer.params;
    const std::vector<float> input = testing::RandomFloats(p.input_elements(), 1);
    const std::vector<float> weight = testing::RandomFloats(p.weight_elements(), 2);
    std::vector<float> output(p.output_elements());
    InProcessOneDnn direct(p, weight, /*winograd=*/false);
    InProcessOneDnn wino(p, weight, /*winograd=*/true);
    // The layer's weights registered once (the in-process side prepacks them once too).
    const std::string weight_id = RegisterLayerWeights(daemon->address(), p);
    std::vector<double> d_direct, d_best, d_daemon, d_shm, d_reg, r_best, r_shm, r_reg, r_direct;
    for (int round = 0; round < rounds; ++round) {
      const double g_direct = InProcessGflops(p, direct, input, output, window);
      const double g_wino = InProcessGflops(p, wino, input, output, window);
      const double g_best = std::max(g_direct, g_wino);
      const double g_daemon =
          DaemonLevel(daemon->address(), layer.name, concurrency, window).GflopPerSecond();
      const double g_shm =
          DaemonLevel(daemon->address(), layer.name, concurrency, window, /*shared_memory=*/true)
              .GflopPerSecond();
      d_direct.push_back(g_direct);
      d_best.push_back(g_best);
      d_daemon.push_back(g_daemon);
      const double g_reg = DaemonLevel(daemon->address(), layer.name, concurrency, window,
                                       /*shared_memory=*/true, weight_id)
                               .GflopPerSecond();
      d_shm.push_back(g_shm);
      d_reg.push_back(g_reg);
      r_reg.push_back(g_reg / g_best);
      r_best.push_back(g_daemon / g_best);
      r_shm.push_back(g_shm / g_best);
      r_direct.push_back(g_daemon / g_direct);
    }
    std::printf("%-17s %7.1f | %-17s %-17s %-17s %-17s %-17s | %-14s %-14s %-14s %-14s [%s]\n",
                layer.name.c_str(), p.flops() * 1e-6, Fmt(Summarize(d_direct)).c_str(),
                Fmt(Summarize(d_best)).c_str(), Fmt(Summarize(d_daemon)).c_str(),
                Fmt(Summarize(d_shm)).c_str(), Fmt(Summarize(d_reg)).c_str(),
                Fmt(Summarize(r_best), "%.2f").c_str(), Fmt(Summarize(r_shm), "%.2f").c_str(),
                Fmt(Summarize(r_reg), "%.2f").c_str(), Fmt(Summarize(r_direct), "%.2f").c_str(),
                wino.algorithm().c_str());
    std::fflush(stdout);
  }
  std::printf("GFLOP/s and ratios as min/median/max over rounds; 'best' = the faster of direct "
              "and Winograd in-process; 'daemon shm' = tensors in system shared memory; "
              "'shm+reg' = the same with the weights registered once (weight_id)\n");
  return daemon->Stop(SIGTERM).value_or(1);
}


int Batching() {
  const int concurrency = absl::GetFlag(FLAGS_batching_concurrency);
  const absl::Duration window = absl::GetFlag(FLAGS_window);
  auto on = StartDaemon({"--max_batch_size=64"});
  auto off = StartDaemon({"--max_batch_size=1"});
  const std::shared_ptr<grpc::Channel> keepalive = HoldCallbackQueue(on->address());
  std::printf("tiny (1x16x32x32, K=16, 3x3, pad 1) at concurrency %d, %s windows\n",
              concurrency, absl::FormatDuration(window).c_str());
  std::vector<double> rps_on, rps_off, ratio;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    const double a = DaemonLevel(on->address(), "tiny", {concurrency}, window).RequestsPerSecond();
    const double b = DaemonLevel(off->address(), "tiny", {concurrency}, window).RequestsPerSecond();
    rps_on.push_back(a), rps_off.push_back(b), ratio.push_back(a / b);
    std::printf("round %d: batching on %.0f req/s, off %.0f req/s, ratio %.2f\n", round, a, b,
                a / b);
    std::fflush(stdout);
  }
  std::printf("requests/s min/median/max: on %s, off %s; on/off %s\n",
              Fmt(Summarize(rps_on), "%.0f").c_str(), Fmt(Summarize(rps_off), "%.0f").c_str(),
              Fmt(Summarize(ratio), "%.2f").c_str());
  int code = on->Stop(SIGTERM).value_or(1);
  return code | off->Stop(SIGTERM).value_or(1);
}

// CPU seconds (user + system) the process has used so far, from /proc/PID/stat; -1 if unknown.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return -1;
  // Fields after the command name: state is field 3; utime and stime are fields 14 and 15.
  std::vector<std::string> fields = absl::StrSplit(text.substr(paren + 2), ' ');
  if (fields.size() < 13) return -1;
  double utime = 0, stime = 0;
  if (!absl::SimpleAtod(fields[11], &utime) || !absl::SimpleAtod(fields[12], &stime)) return -1;
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Metrics overhead: the per-request recording (counters, histograms) is the only difference.
// Two figures per daemon: requests/s, and the daemon's CPU time per request (less sensitive to
// other load on a shared machine than throughput). Both daemons are started afresh each
// round, and which one starts and runs first alternates.
int Metrics() {
  const int concurrency = absl::GetFlag(FLAGS_batching_concurrency);
  const absl::Duration window = absl::GetFlag(FLAGS_window);
  const std::vector<std::string> on_args = {"--metrics_address=127.0.0.1:0"};
  const std::vector<std::string> off_args = {"--metrics_address="};
  std::printf("tiny (1x16x32x32, K=16, 3x3, pad 1) at concurrency %d, %s windows\n",
              concurrency, absl::FormatDuration(window).c_str());
  std::shared_ptr<grpc::Channel> keepalive;  // see HoldCallbackQueue
  std::vector<double> rps_on, rps_off, ratio, cpu_on, cpu_off, cpu_ratio;
  int code = 0;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    const bool on_first = round % 2 == 0;
    auto first = StartDaemon(on_first ? on_args : off_args);
    auto second = StartDaemon(on_first ? off_args : on_args);
    testing::DaemonProcess& on = on_first ? *first : *second;
    testing::DaemonProcess& off = on_first ? *second : *first;
    if (keepalive == nullptr) keepalive = HoldCallbackQueue(on.address());
    // Requests/s in the window, and daemon CPU µs per request over warmup + window (the
    // requests of the warmup are not counted, alike for both daemons).
    auto run = [&](const testing::DaemonProcess& d, double* cpu_us) {
      const double cpu_before = ProcessCpuSeconds(d.pid());
      const client::LevelResult r = DaemonLevel(d.address(), "tiny", {concurrency}, window);
      *cpu_us = (ProcessCpuSeconds(d.pid()) - cpu_before) * 1e6 / static_cast<double>(r.ok);
      return r.RequestsPerSecond();
    };
    double a = 0, b = 0, ca = 0, cb = 0;
    if (on_first) {
      a = run(on, &ca), b = run(off, &cb);
    } else {
      b = run(off, &cb), a = run(on, &ca);
    }
    rps_on.push_back(a), rps_off.push_back(b), ratio.push_back(a / b);
    cpu_on.push_back(ca), cpu_off.push_back(cb), cpu_ratio.push_back(ca / cb);
    std::printf("round %d: metrics on %.0f req/s %.1f us CPU/req, off %.0f req/s %.1f us CPU/req; "
                "req/s ratio %.3f, CPU/req ratio %.3f\n",
                round, a, ca, b, cb, a / b, ca / cb);
    std::fflush(stdout);
    code |= first->Stop(SIGTERM).value_or(1);
    code |= second->Stop(SIGTERM).value_or(1);
  }
  std::printf("requests/s min/median/max: on %s, off %s; on/off %s\n",
              Fmt(Summarize(rps_on), "%.0f").c_str(), Fmt(Summarize(rps_off), "%.0f").c_str(),
              Fmt(Summarize(ratio), "%.3f").c_str());
  std::printf("daemon CPU us/request min/median/max: on %s, off %s; on/off %s\n",
              Fmt(Summarize(cpu_on), "%.1f").c_str(), Fmt(Summarize(cpu_off), "%.1f").c_str(),
              Fmt(Summarize(cpu_ratio), "%.3f").c_str());
  return code;
}

// Tiny jobs straight into an in-process Engine (no gRPC): `in_flight` outstanding, each new one
// submitted from the previous one's done. Jobs/s over the window.
double EngineJobsPerSecond(int64_t max_batch_size, int in_flight, absl::Duration window) {
  EngineOptions options;
  options.cpu.threads = absl::GetFlag(FLAGS_threads);
  options.batcher.max_batch_size = max_batch_size;
  auto engine = Engine::Create(options);
  if (!engine.ok()) {
    std::cerr << engine.status() << "\n";
    std::exit(1);
  }
  Conv2dParams p;
  p.c = p.k = 16, p.h = p.w = 32, p.r = p.s = 3, p.SetPad(1, 1);
  const std::vector<float> weight = testing::RandomFloats(p.weight_elements(), 2);
  struct Slot {
    std::vector<float> input, output;
  };
  std::vector<Slot> slots(in_flight);
  absl::Mutex mu;
  int64_t done = 0;
  int outstanding = in_flight;
  const absl::Time end = absl::Now() + window;
  std::function<void(int)> submit = [&](int i) {
    auto job = std::make_unique<Conv2dJob>();
    job->params = p;
    job->input = slots[i].input.data();
    job->weight = weight.data();
    job->output = slots[i].output.data();
    job->done = [&, i](const absl::Status& s, const ExecTimestamps&) {
      bool again = absl::Now() < end;
      {
        absl::MutexLock lock(&mu);
        if (s.ok()) done++;
        if (!again) outstanding--;
      }
      if (again) submit(i);
    };
    if (!(*engine)->Submit(&job).ok()) std::exit(1);
  };
  for (int i = 0; i < in_flight; ++i) {
    slots[i].input = testing::RandomFloats(p.input_elements(), i);
    slots[i].output.resize(p.output_elements());
  }
  const absl::Time start = absl::Now();
  for (int i = 0; i < in_flight; ++i) submit(i);
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(+[](int* n) { return *n == 0; }, &outstanding));
  return done / absl::ToDoubleSeconds(absl::Now() - start);
}

int EngineBatching() {
  const int in_flight = absl::GetFlag(FLAGS_batching_concurrency);
  const absl::Duration window = absl::GetFlag(FLAGS_window);
  std::printf("in-process Engine, tiny jobs (1x16x32x32, K=16, 3x3), %d in flight, %s windows\n",
              in_flight, absl::FormatDuration(window).c_str());
  std::vector<double> on, off, ratio;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    const double a = EngineJobsPerSecond(64, in_flight, window);
    const double b = EngineJobsPerSecond(1, in_flight, window);
    on.push_back(a), off.push_back(b), ratio.push_back(a / b);
  }
  std::printf("jobs/s min/median/max: batching on %s, off %s; on/off %s\n",
              Fmt(Summarize(on), "%.0f").c_str(), Fmt(Summarize(off), "%.0f").c_str(),
              Fmt(Summarize(ratio), "%.2f").c_str());
  return 0;
}

}  // namespace
}  // namespace sparkle::bench

int main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string mode = args.size() > 1 ? args[1] : "";
  if (mode == "layers") return sparkle::bench::Layers();
  if (mode == "batching") return sparkle::bench::Batching();
  if (mode == "engine_batching") return sparkle::bench::EngineBatching();
  if (mode == "router") {
    sparkle::bench::RouterBenchOptions o;
    o.rounds = absl::GetFlag(FLAGS_rounds);
    o.threads = absl::GetFlag(FLAGS_threads);
    return sparkle::bench::RouterBench(o);
  }
  if (mode == "metrics") return sparkle::bench::Metrics();
  if (mode == "metrics_record") return sparkle::bench::MetricsRecord(absl::GetFlag(FLAGS_rounds));
  std::fprintf(stderr, "usage: sparkle_bench layers|batching|engine_batching|metrics|metrics_record|router [--rounds=3] [--window=3s] ...\n");
  return 2;
}
