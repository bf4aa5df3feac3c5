// sparkle_bench: the benchmarks of issue 3, each in ONE process and ONE run so that figures are
// compared side by side (this machine is shared and noisy), as ratios, over several rounds.
//
//   sparkle_bench layers    the layer table through (a) oneDNN called in-process (direct, and
//                           Winograd where oneDNN offers it) and (b) a sparkled child process
//                           over loopback gRPC; GFLOP/s of each and the ratios.
//   sparkle_bench batching  tiny jobs (1x16x32x32, K=16, 3x3) at concurrency 64 against two
//                           sparkled children, --max_batch_size=64 vs 1; requests/s and ratio.
//   sparkle_bench engine_batching  the same jobs straight into an in-process Engine (no gRPC):
//                           what batching does where the transport does not dominate.
//
// Run by hand (never a timed test): build/bench/sparkle_bench layers --rounds=3
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
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
#include "absl/time/clock.h"
#include "bench/inprocess_onednn.h"
#include "client/bench.h"
#include "engine/engine.h"
#include "tests/testing/daemon_process.h"
#include "tests/testing/shape_table.h"

ABSL_FLAG(std::string, sparkled, SPARKLED_PATH, "the daemon binary to start");
ABSL_FLAG(int, rounds, 3, "rounds; each figure is reported as min/median/max over them");
ABSL_FLAG(absl::Duration, window, absl::Seconds(3), "measurement window per figure per round");
ABSL_FLAG(std::string, layers, "", "comma-separated layer names (default: the whole table)");
ABSL_FLAG(std::string, concurrency, "2", "daemon: requests in flight (comma list: best is kept)");
ABSL_FLAG(int, threads, 2, "compute threads, in-process and in the daemon");
ABSL_FLAG(int, batching_concurrency, 64, "batching: requests in flight");

namespace sparkle::bench {
namespace {

struct Spread {
  double min = 0, median = 0, max = 0;
};
Spread Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}
std::string Fmt(const Spread& s, const char* f = "%.1f") {
  return absl::StrFormat("%s/%s/%s", absl::StrFormat(f, s.min), absl::StrFormat(f, s.median),
                         absl::StrFormat(f, s.max));
}

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
client::LevelResult DaemonLevel(const std::string& address, const std::string& shape_class,
                                const std::vector<int>& concurrency, absl::Duration window) {
  client::SparkleClient::Options connection;
  connection.target = address;
  connection.channels = 2;
  connection.timeout = absl::Seconds(60);
  client::BenchOptions options;
  options.shape_classes = {shape_class};
  options.concurrency = concurrency;
  options.duration = window;
  options.warmup = absl::Milliseconds(500);
  std::vector<client::LevelResult> results;
  std::ostringstream quiet;
  absl::Status status = client::RunBench(connection, options, quiet, &results);
  if (!status.ok() || results.empty()) {
    std::cerr << "daemon bench failed for " << shape_class << ": " << status << "\n"
              << quiet.str();
    std::exit(1);
  }
  return *std::max_element(results.begin(), results.end(), [](const auto& a, const auto& b) {
    return a.GflopPerSecond() < b.GflopPerSecond();
  });
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

int Layers() {
  const std::string only = absl::GetFlag(FLAGS_layers);
  const std::vector<int> concurrency = ParseInts(absl::GetFlag(FLAGS_concurrency));
  const absl::Duration window = absl::GetFlag(FLAGS_window);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  setenv("OMP_NUM_THREADS", absl::StrCat(absl::GetFlag(FLAGS_threads)).c_str(), 1);
  auto daemon = StartDaemon({});
  // The daemon has logged before this point, so it is up; its own threads idle while the
  // in-process figures are taken.
  std::printf("sparkled pid %d at %s; %d round(s), %s windows, daemon concurrency %s\n",
              daemon->pid(), daemon->address().c_str(), rounds,
              absl::FormatDuration(window).c_str(), absl::GetFlag(FLAGS_concurrency).c_str());
  std::printf("%-17s %8s | %-20s %-20s %-20s | %-17s %-17s\n", "layer", "MFLOP",
              "inproc direct", "inproc best", "daemon", "daemon/best", "daemon/direct");
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
    std::vector<double> d_direct, d_best, d_daemon, r_best, r_direct;
    for (int round = 0; round < rounds; ++round) {
      const double g_direct = InProcessGflops(p, direct, input, output, window);
      const double g_wino = InProcessGflops(p, wino, input, output, window);
      const double g_best = std::max(g_direct, g_wino);
      const double g_daemon =
          DaemonLevel(daemon->address(), layer.name, concurrency, window).GflopPerSecond();
      d_direct.push_back(g_direct);
      d_best.push_back(g_best);
      d_daemon.push_back(g_daemon);
      r_best.push_back(g_daemon / g_best);
      r_direct.push_back(g_daemon / g_direct);
    }
    std::printf("%-17s %8.1f | %-20s %-20s %-20s | %-17s %-17s  [%s]\n", layer.name.c_str(),
                p.flops() * 1e-6, Fmt(Summarize(d_direct)).c_str(), Fmt(Summarize(d_best)).c_str(),
                Fmt(Summarize(d_daemon)).c_str(), Fmt(Summarize(r_best), "%.2f").c_str(),
                Fmt(Summarize(r_direct), "%.2f").c_str(), wino.algorithm().c_str());
    std::fflush(stdout);
  }
  std::printf("GFLOP/s and ratios as min/median/max over rounds; 'best' = the faster of direct "
              "and Winograd in-process\n");
  return daemon->Stop(SIGTERM).value_or(1);
}

int Batching() {
  const int concurrency = absl::GetFlag(FLAGS_batching_concurrency);
  const absl::Duration window = absl::GetFlag(FLAGS_window);
  auto on = StartDaemon({"--max_batch_size=64"});
  auto off = StartDaemon({"--max_batch_size=1"});
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
  p.c = p.k = 16, p.h = p.w = 32, p.r = p.s = 3, p.pad_h = p.pad_w = 1;
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
  std::fprintf(stderr, "usage: sparkle_bench layers|batching|engine_batching [--rounds=3] [--window=3s] ...\n");
  return 2;
}
