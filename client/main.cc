// sparklectl: the operator CLI of sparkled. This file owns every flag, the usage text and the
// dispatch to a command; the commands themselves live in commands.cc and bench.cc and never
// read flags (style rule 10).
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/arg_parse.h"
#include "client/bench.h"
#include "client/commands.h"
#include "client/connection_security.h"
#include "client/sparkle_client.h"
#include "client/status_commands.h"
#include "client/stats_command.h"
#include "client/weights_commands.h"
#include "base/status_macros.h"
#include "grpc/support/log.h"

// Connection (every command).
ABSL_FLAG(std::string, target, "127.0.0.1:8001",
          "sparkled gRPC address: host:port, unix:/path, a list ip:port,ip:port or "
          "dns:///name:port (lists and dns: names: round_robin for infer/bench, one row per "
          "daemon for status/devices/queue/drain)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "deadline of each RPC, and the bound on connecting");
ABSL_FLAG(int64_t, max_message_bytes, int64_t{1} << 30,
          "largest gRPC message sent or received, bytes [4096, 2147483647]");
// Security (every command, bench included). Any --tls_* flag turns TLS on.
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM CA certificate(s) the server's certificate must chain to (turns TLS on); "
          "default: the system's roots when another --tls_* flag is given, else plaintext");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM client certificate (chain) for a server that requires one (mTLS); with "
          "--tls_key_file; turns TLS on");
ABSL_FLAG(std::string, tls_key_file, "",
          "PEM private key of --tls_cert_file; turns TLS on");
ABSL_FLAG(std::string, tls_server_name, "",
          "name to verify in the server's certificate instead of the target's host (an IP "
          "target, a certificate for another name); turns TLS on");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token sent as `authorization: Bearer <token>` on every call "
          "(trailing newline stripped); default: $SPARKLE_TOKEN, else no token");

// status
ABSL_FLAG(bool, json, false,
          "status, stats, devices, queue, drain: print JSON instead of a table");

// drain
ABSL_FLAG(absl::Duration, drain_timeout, absl::ZeroDuration(),
          "drain: how long the daemon waits for accepted work, [0, 1h]; 0 = its own "
          "--drain_timeout");

// infer
ABSL_FLAG(std::string, input, "", "infer: input tensor .npy (FP32, NCHW or NHWC)");
ABSL_FLAG(std::string, weight, "", "infer: weight tensor .npy (FP32, KCRS)");
ABSL_FLAG(std::string, bias, "", "infer: bias tensor .npy (FP32, [K]); optional");
ABSL_FLAG(std::string, input_shape, "",
          "infer: generate a random input of this shape, e.g. 1x16x32x32");
ABSL_FLAG(std::string, weight_shape, "",
          "infer: generate a random weight of this shape, e.g. 16x16x3x3");
ABSL_FLAG(std::string, bias_shape, "", "infer: generate a random bias of this shape, e.g. 16");
ABSL_FLAG(uint64_t, seed, 1, "infer, bench: seed of generated tensors");
ABSL_FLAG(std::string, save_inputs, "", "infer: directory to write the tensors sent as .npy");
ABSL_FLAG(std::string, output, "", "infer: where to write the output .npy");
ABSL_FLAG(bool, shm, false,
          "infer, bench: send the tensors through system shared memory (a POSIX shm object "
          "registered with the daemon; the daemon must be on this host)");
ABSL_FLAG(std::string, weight_id, "",
          "infer, bench: registered weights to use instead of sending weight and bias");
// weights
ABSL_FLAG(std::string, label, "", "weights register: free text shown by `weights list`");
ABSL_FLAG(int64_t, stride, 1, "infer: stride, both dimensions");
ABSL_FLAG(int64_t, pad, 0, "infer: zero padding, both dimensions");
ABSL_FLAG(int64_t, dilation, 1, "infer: dilation, both dimensions");
ABSL_FLAG(int64_t, groups, 1, "infer: groups (C and K divisible by it)");
ABSL_FLAG(int64_t, stride_h, -1, "infer: stride in H (default: --stride)");
ABSL_FLAG(int64_t, stride_w, -1, "infer: stride in W (default: --stride)");
ABSL_FLAG(int64_t, pad_h, -1, "infer: padding in H (default: --pad)");
ABSL_FLAG(int64_t, pad_w, -1, "infer: padding in W (default: --pad)");
ABSL_FLAG(int64_t, dilation_h, -1, "infer: dilation in H (default: --dilation)");
ABSL_FLAG(int64_t, dilation_w, -1, "infer: dilation in W (default: --dilation)");
ABSL_FLAG(std::string, layout, "NCHW", "infer: input layout, NCHW or NHWC");
ABSL_FLAG(std::string, device, "",
          "infer, bench: placement: auto, cpu, gpu or gpu:N (default: not sent, the server "
          "picks)");
ABSL_FLAG(std::vector<std::string>, param, {},
          "infer, bench: extra int64 request parameters, key=value[,key=value...]");

// bench
ABSL_FLAG(std::string, concurrency, "1,4,16,64",
          "bench: requests in flight, one level after another");
ABSL_FLAG(std::vector<std::string>, shape_class, {"tiny"}, "bench: shape classes to run, in order");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "bench: measurement window per level");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1), "bench: unmeasured load before each window");
ABSL_FLAG(int64_t, max_requests, 0,
          "bench: end a window after this many completions (0: no bound)");
ABSL_FLAG(int, channels, 4, "bench: gRPC channels (TCP connections) to spread the load over");
ABSL_FLAG(std::string, csv, "", "bench: also write the results to this CSV file");
ABSL_FLAG(std::string, second_token_file, "",
          "bench: bearer token of a second identity (own connection) that runs alone, then "
          "alongside the main load, at each level; reports its latency ratios (fairness)");
ABSL_FLAG(int, second_concurrency, 1,
          "bench: requests the second identity keeps in flight, [1, 4096]");
ABSL_FLAG(bool, stream, false,
          "bench: send the requests on ModelStreamInfer streams (one per channel) instead of "
          "unary ModelInfer calls");

namespace sparkle::client {
namespace {

// Flags that belong to one command; giving one to another command is a usage error (it would
// otherwise be silently ignored, which hides typos such as `infer --concurrency=4`).
struct CommandFlags {
  const char* command;
  std::vector<const char*> flags;
};

const std::vector<CommandFlags>& FlagsByCommand() {
  static const auto* const kTable = new std::vector<CommandFlags>{
      {"health", {}},
      {"status", {"json"}},
      {"devices", {"json"}},
      {"queue", {"json"}},
      {"drain", {"json", "drain_timeout"}},
      {"stats", {"json"}},
      {"infer",
       {"input", "weight", "bias", "input_shape", "weight_shape", "bias_shape", "seed",
        "save_inputs", "output", "stride", "pad", "dilation", "groups", "stride_h", "stride_w",
        "pad_h", "pad_w", "dilation_h", "dilation_w", "layout", "device", "param", "weight_id",
        "shm"}},
      {"bench",
       {"concurrency", "shape_class", "duration", "warmup", "max_requests", "channels", "csv",
        "seed", "device", "param", "weight_id", "second_token_file", "second_concurrency",
        "stream", "shm"}},
      {"weights", {"json", "bias", "label"}},
  };
  return *kTable;
}

std::string Usage() {
  std::string classes;
  for (const ShapeClass& c : BuiltinShapeClasses()) {
    absl::StrAppend(&classes, absl::StrFormat("    %-15s %-42s %8.3f GFLOP\n", c.name,
                                              c.Describe(), c.Flop() / 1e9));
  }
  return absl::StrCat(
      R"(sparklectl: operator CLI of sparkled (conv2d inference over gRPC, KServe v2)

usage: sparklectl [--target=127.0.0.1:8001] [--timeout=30s] [--max_message_bytes=N]
                  [--tls_ca_file=ca.pem [--tls_cert_file=c.pem --tls_key_file=c.key]
                   [--tls_server_name=NAME]] [--token_file=FILE]
                  <command> [flags]

commands:
  health   ServerLive, ServerReady, ModelReady("conv2d") and grpc.health.v1 Check, one line
           each. Exit 0 if ready, 1 if reachable but not ready, 2 if unreachable.
  status   sparkle.v1.Control/GetStatus: version, uptime, readiness, draining, devices,
           router (policy, crossover), weights registry, queues, counters.
             --json                       print JSON (proto field names) instead of a table
  devices  one row per device: health, jobs, GFLOP, busy time, queued batches, memory.
             --json
  queue    queued and in-flight jobs, limits, jobs waiting per shape class.
             --json
  drain    sparkle.v1.Control/Drain: health NOT_SERVING, new requests UNAVAILABLE, waits for
           accepted work. The daemon stays up until stopped (SIGTERM, systemctl stop).
             [--drain_timeout=0]          0: the daemon's own --drain_timeout
             --json
           Exit 1 when work was still in flight at the timeout.
  stats    inference ModelStatistics("conv2d") (Triton's cumulative statistics): requests,
           mean latency per stage (queue, compute_input, compute_infer, compute_output) and
           executed batch sizes.
             --json                       print JSON (proto field names) instead of a table
  infer    send one conv2d request and write the output tensor.
             --input=x.npy | --input_shape=1x16x32x32     input, NCHW [N,C,H,W]
                                                          (or NHWC with --layout=NHWC)
             --weight=w.npy | --weight_shape=16x16x3x3    weight [K,C/groups,R,S]
             [--bias=b.npy | --bias_shape=16]             bias [K]
             [--output=y.npy]                             output [N,K,P,Q] (NHWC: [N,P,Q,K])
             [--stride=1] [--pad=0] [--dilation=1] [--groups=1]
             [--stride_h --stride_w --pad_h --pad_w --dilation_h --dilation_w] (override)
             [--layout=NCHW|NHWC] [--device=auto|cpu|gpu|gpu:N]
             [--seed=1] [--save_inputs=DIR]  generated tensors: seed, and where to save them
             [--param=key=value,...]         extra int64 request parameters (priority, timeout)
             [--weight_id=ID]                registered weights (and their bias) instead of
                                             --weight/--bias
             [--shm]                         tensors through system shared memory (one POSIX
                                             shm object, 0600; daemon on this host): no
                                             tensor bytes on the wire, same output
           .npy files hold float32 little-endian ('<f4') C-order arrays (numpy.save).
  bench    closed-loop load (perf_analyzer's concurrency mode) per shape class and level.
             [--shape_class=tiny,...] [--concurrency=1,4,16,64] [--duration=5s] [--warmup=1s]
             [--max_requests=0] [--channels=4] [--csv=out.csv] [--device=...] [--param=...]
             [--weight_id=ID]  registered weights matching every class (K, C, R, S, bias)
             [--stream]        ModelStreamInfer: one bidirectional stream per channel, the
                               level's requests spread over them, matched by id
             [--shm]           tensors through system shared memory (daemon on this host):
                               per level one region (0600, unlinked after it), a stretch per
                               in-flight request, written once; requests carry no tensor
                               bytes (MB/s shows 0). An answer with its output on the wire
                               counts as DATA_LOSS (not via shm). Works with --stream; not
                               with --second_token_file
             [--second_token_file=FILE [--second_concurrency=1]]  fairness: a second
                               identity runs alone, then alongside the load; prints its p50/p99
                               alone and alongside and the ratios
           reports requests/s, GFLOP/s, MB/s (request + response tensor bytes in the
           messages), latency p50/p90/p99/mean and errors by code; the CSV adds p95 and
           max (latencies in us).
  weights  the weights registry: register once, then name them with --weight_id.
             register FILE.npy [--bias=B.npy] [--label=TEXT]   stream the tensor (1 MiB
                                          chunks); prints its id (a content hash: the same
                                          bytes always give the same id)
             list                         id, shape, bias, bytes, jobs in use, uses, label
             rm ID                        unregister; jobs in flight finish first
             --json                       print JSON (proto field names) instead of a table
  help     print this text.

shape classes (NCHW, with bias; "mixed" = round robin of tiny, resnet_3x3_28, mobilenet_dw):
)",
      classes,
      R"(
targets:
  --target=host:port | unix:/path        one daemon
  --target=ip:port,ip:port | dns:///name:port
           several: status, devices, queue and drain query every daemon and print one row
           (one JSON array element) per daemon, exit code of the first failure; infer and
           bench spread their requests over them (gRPC round_robin).

security (every command):
  --tls_ca_file=ca.pem                   TLS; the server's certificate must chain to this CA
                                         (any --tls_* flag turns TLS on; default roots: the
                                         system's)
  --tls_cert_file=c.pem --tls_key_file=c.key   client certificate, for a server with mTLS
  --tls_server_name=NAME                 name expected in the server's certificate (IP targets)
  --token_file=FILE                      bearer token (default: $SPARKLE_TOKEN), sent as
                                         "authorization: Bearer ..." on every call

exit codes:
  0  success (health: ready)
  1  the server answered with an error (health: reachable but not ready)
  2  usage, file or connection error (nothing was served)
errors are printed to stderr as "sparklectl: <CODE>: <message>".
durations take units: 500ms, 5s, 1m. `sparklectl --helpfull` lists every flag.
)");
}

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(message, " (see `sparklectl help`)"));
}

// Checks the value text of one flag without setting it, so that a malformed value is a usage
// error with exit code 2; absl::ParseCommandLine would exit(1), which sparklectl reserves for
// server errors.
bool ValueParses(const absl::CommandLineFlag& flag, absl::string_view value, std::string* error) {
  auto check = [&](auto typed) {
    return absl::ParseFlag(value, &typed, error);
  };
  if (flag.IsOfType<bool>()) return check(bool{});
  if (flag.IsOfType<int>()) return check(int{});
  if (flag.IsOfType<int64_t>()) return check(int64_t{});
  if (flag.IsOfType<uint64_t>()) return check(uint64_t{});
  if (flag.IsOfType<double>()) return check(double{});
  if (flag.IsOfType<absl::Duration>()) return check(absl::Duration{});
  return true;  // strings and string lists accept any text
}

// Mirrors absl's flag syntax (--name=value, --name value, -name, --noname for bools, "--" ends
// flags) to find unknown flags and malformed values before absl::ParseCommandLine sees them.
absl::Status PrecheckFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no") && eq == absl::string_view::npos) {
      const absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr) return UsageError(absl::StrCat("unknown flag --", name));
    absl::string_view value;
    if (eq != absl::string_view::npos) {
      value = arg.substr(eq + 1);
    } else if (flag->IsOfType<bool>()) {
      continue;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return UsageError(absl::StrCat("flag --", name, " needs a value"));
    }
    std::string error;
    if (!ValueParses(*flag, value, &error)) {
      return UsageError(absl::StrCat("bad value \"", value, "\" for --", name,
                                     error.empty() ? "" : ": ", error));
    }
  }
  return absl::OkStatus();
}

// A command's flags must not be given to another command (see FlagsByCommand). "Given" means
// "differs from its default": the only test abseil 20220623 offers publicly.
absl::Status CheckFlagsApply(absl::string_view command) {
  for (const CommandFlags& entry : FlagsByCommand()) {
    if (entry.command == command) continue;
    for (const char* name : entry.flags) {
      bool allowed = false;
      for (const CommandFlags& own : FlagsByCommand()) {
        if (own.command != command) continue;
        for (const char* mine : own.flags) allowed |= absl::string_view(mine) == name;
      }
      const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
      if (!allowed && flag != nullptr && flag->CurrentValue() != flag->DefaultValue()) {
        return UsageError(absl::StrCat("--", name, " does not apply to `", command, "`"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> ShapeFlag(absl::string_view name, const std::string& text) {
  if (text.empty()) return std::vector<int64_t>();
  absl::StatusOr<std::vector<int64_t>> shape = ParseShape(text);
  if (!shape.ok()) return UsageError(absl::StrCat("--", name, ": ", shape.status().message()));
  return shape;
}

absl::StatusOr<std::vector<std::pair<std::string, int64_t>>> ParamFlag() {
  std::vector<std::pair<std::string, int64_t>> params;
  for (const std::string& text : absl::GetFlag(FLAGS_param)) {
    absl::StatusOr<std::pair<std::string, int64_t>> param = ParseInt64Param(text);
    if (!param.ok()) return UsageError(absl::StrCat("--param: ", param.status().message()));
    params.push_back(*std::move(param));
  }
  return params;
}

absl::StatusOr<ConvGeometry> GeometryFromFlags() {
  auto pick = [](int64_t specific, int64_t both) { return specific >= 0 ? specific : both; };
  ConvGeometry g;
  g.stride_h = pick(absl::GetFlag(FLAGS_stride_h), absl::GetFlag(FLAGS_stride));
  g.stride_w = pick(absl::GetFlag(FLAGS_stride_w), absl::GetFlag(FLAGS_stride));
  g.pad_h = pick(absl::GetFlag(FLAGS_pad_h), absl::GetFlag(FLAGS_pad));
  g.pad_w = pick(absl::GetFlag(FLAGS_pad_w), absl::GetFlag(FLAGS_pad));
  g.dilation_h = pick(absl::GetFlag(FLAGS_dilation_h), absl::GetFlag(FLAGS_dilation));
  g.dilation_w = pick(absl::GetFlag(FLAGS_dilation_w), absl::GetFlag(FLAGS_dilation));
  g.groups = absl::GetFlag(FLAGS_groups);
  // Caught here rather than by the server so that they are usage errors (exit 2) naming the flag.
  const std::pair<const char*, int64_t> at_least_one[] = {
      {"stride_h (--stride_h or --stride)", g.stride_h},
      {"stride_w (--stride_w or --stride)", g.stride_w},
      {"dilation_h (--dilation_h or --dilation)", g.dilation_h},
      {"dilation_w (--dilation_w or --dilation)", g.dilation_w},
      {"--groups", g.groups}};
  for (const auto& [name, value] : at_least_one) {
    if (value < 1) return UsageError(absl::StrCat(name, " must be >= 1; was ", value));
  }
  if (g.pad_h < 0 || g.pad_w < 0) {
    return UsageError(absl::StrCat("padding (--pad, --pad_h, --pad_w) must be >= 0; was ",
                                   g.pad_h, "x", g.pad_w));
  }
  return g;
}

absl::StatusOr<InferCommandOptions> InferOptionsFromFlags() {
  InferCommandOptions options;
  options.input_path = absl::GetFlag(FLAGS_input);
  options.weight_path = absl::GetFlag(FLAGS_weight);
  options.bias_path = absl::GetFlag(FLAGS_bias);
  SPARKLE_ASSIGN_OR_RETURN(options.input_shape,
                           ShapeFlag("input_shape", absl::GetFlag(FLAGS_input_shape)));
  SPARKLE_ASSIGN_OR_RETURN(options.weight_shape,
                           ShapeFlag("weight_shape", absl::GetFlag(FLAGS_weight_shape)));
  SPARKLE_ASSIGN_OR_RETURN(options.bias_shape,
                           ShapeFlag("bias_shape", absl::GetFlag(FLAGS_bias_shape)));
  options.seed = absl::GetFlag(FLAGS_seed);
  options.save_inputs_dir = absl::GetFlag(FLAGS_save_inputs);
  options.output_path = absl::GetFlag(FLAGS_output);
  options.shared_memory = absl::GetFlag(FLAGS_shm);
  SPARKLE_ASSIGN_OR_RETURN(options.request.geometry, GeometryFromFlags());
  absl::StatusOr<Layout> layout = ParseLayout(absl::GetFlag(FLAGS_layout));
  if (!layout.ok()) return UsageError(absl::StrCat("--", layout.status().message()));
  options.request.layout = *layout;
  options.request.device = absl::GetFlag(FLAGS_device);
  options.request.weight_id = absl::GetFlag(FLAGS_weight_id);
  SPARKLE_ASSIGN_OR_RETURN(options.request.extra_params, ParamFlag());
  if (absl::Status s = ValidateInferOptions(options); !s.ok()) return UsageError(s.message());
  return options;
}

absl::StatusOr<BenchOptions> BenchOptionsFromFlags(const SparkleClient::Options& connection) {
  BenchOptions options;
  if (const std::string file = absl::GetFlag(FLAGS_second_token_file); !file.empty()) {
    // The same target and TLS settings, one connection of its own, another token.
    SparkleClient::Options second = connection;
    second.channels = 1;
    absl::StatusOr<std::string> token = LoadBearerToken(file, nullptr);
    if (!token.ok()) {
      return UsageError(absl::StrCat("--second_token_file: ", token.status().message()));
    }
    second.security.bearer_token = *std::move(token);
    options.second_connection = std::move(second);
  }
  options.second_concurrency = absl::GetFlag(FLAGS_second_concurrency);
  absl::StatusOr<std::vector<int>> levels =
      ParseIntList(absl::GetFlag(FLAGS_concurrency), 1, 4096);
  if (!levels.ok()) return UsageError(absl::StrCat("--concurrency: ", levels.status().message()));
  options.concurrency = *std::move(levels);
  options.shape_classes = absl::GetFlag(FLAGS_shape_class);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.max_requests = absl::GetFlag(FLAGS_max_requests);
  options.device = absl::GetFlag(FLAGS_device);
  options.weight_id = absl::GetFlag(FLAGS_weight_id);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.csv_path = absl::GetFlag(FLAGS_csv);
  options.stream = absl::GetFlag(FLAGS_stream);
  options.shared_memory = absl::GetFlag(FLAGS_shm);
  SPARKLE_ASSIGN_OR_RETURN(options.extra_params, ParamFlag());
  if (absl::Status s = ValidateBenchOptions(options); !s.ok()) return UsageError(s.message());
  return options;
}

absl::Status Run(absl::string_view command, const std::vector<std::string>& args) {
  SPARKLE_RETURN_IF_ERROR(CheckFlagsApply(command));
  SparkleClient::Options connection;
  connection.target = absl::GetFlag(FLAGS_target);
  connection.timeout = absl::GetFlag(FLAGS_timeout);
  connection.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  connection.channels = command == "bench" ? absl::GetFlag(FLAGS_channels) : 1;
  connection.security.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  connection.security.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  connection.security.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  connection.security.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  SPARKLE_ASSIGN_OR_RETURN(connection.security.bearer_token,
                           LoadBearerToken(absl::GetFlag(FLAGS_token_file),
                                           std::getenv(kTokenEnvironmentVariable)));
  SPARKLE_RETURN_IF_ERROR(ValidateConnectionSecurity(connection.security));

  if (command == "health") return RunHealth(connection, std::cout);
  if (command == "status") return RunStatus(connection, absl::GetFlag(FLAGS_json), std::cout);
  if (command == "devices") return RunDevices(connection, absl::GetFlag(FLAGS_json), std::cout);
  if (command == "queue") return RunQueue(connection, absl::GetFlag(FLAGS_json), std::cout);
  if (command == "drain") {
    return RunDrain(connection, absl::GetFlag(FLAGS_drain_timeout), absl::GetFlag(FLAGS_json),
                    std::cout);
  }
  if (command == "stats") return RunStats(connection, absl::GetFlag(FLAGS_json), std::cout);
  if (command == "infer") {
    SPARKLE_ASSIGN_OR_RETURN(InferCommandOptions options, InferOptionsFromFlags());
    return RunInfer(connection, std::move(options), std::cout);
  }
  if (command == "bench") {
    SPARKLE_ASSIGN_OR_RETURN(BenchOptions options, BenchOptionsFromFlags(connection));
    return RunBench(connection, options, std::cout);
  }
  if (command == "weights") {
    WeightsCommandOptions options;
    options.bias_path = absl::GetFlag(FLAGS_bias);
    options.label = absl::GetFlag(FLAGS_label);
    options.json = absl::GetFlag(FLAGS_json);
    return RunWeights(connection, args, options, std::cout);
  }
  if (!args.empty()) return UsageError(absl::StrCat("unexpected argument \"", args[0], "\""));
  return UsageError(absl::StrCat("unknown command \"", command, "\""));
}

// gRPC logs handshake failures to stderr in its own words ("Handshake failed with fatal error
// SSL_ERROR_SSL ..."); sparklectl says what failed instead (DescribeHandshakeFailure). Its log
// stays available with GRPC_VERBOSITY set.
void QuietGrpcLog(gpr_log_func_args*) {}

int Main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(QuietGrpcLog);
  // --help / -h print sparklectl's own usage (abseil's would list flags without the commands).
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "-h") {
      std::cout << Usage();
      return kExitOk;
    }
  }
  absl::Status status = PrecheckFlags(argc, argv);
  std::vector<char*> positional;
  if (status.ok()) {
    positional = absl::ParseCommandLine(argc, argv);
    if (positional.size() < 2) {
      status = UsageError("no command given");
    } else if (positional.size() > 2 && absl::string_view(positional[1]) != "weights") {
      status = UsageError(absl::StrCat("unexpected argument \"", positional[2], "\""));
    } else if (absl::string_view(positional[1]) == "help") {
      std::cout << Usage();
      return kExitOk;
    } else {
      status = Run(positional[1],
                   std::vector<std::string>(positional.begin() + 2, positional.end()));
    }
  }
  if (status.ok()) return kExitOk;
  std::cout.flush();
  std::cerr << "sparklectl: " << StatusText(status) << std::endl;
  return ExitCodeFor(status);
}

}  // namespace
}  // namespace sparkle::client

int main(int argc, char** argv) { return sparkle::client::Main(argc, argv); }
