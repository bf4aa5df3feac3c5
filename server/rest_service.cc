#include "server/rest_service.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "base/status_macros.h"
#include "httplib.h"
#include "rapidjson/document.h"
#include "server/certificate_watcher.h"
#include "server/infer_request_reader.h"
#include "server/model_infer_handler.h"
#include "server/rest_infer_request.h"
#include "server/rest_reply.h"
#include "server/shared_memory_rpcs.h"
#include "server/triton_messages.h"
#include "spdlog/spdlog.h"

namespace sparkle {
namespace {

constexpr char kJson[] = "application/json";
constexpr char kHeaderLength[] = "Inference-Header-Content-Length";
// The model part of a path: /v2/models/NAME[/versions/VERSION].
constexpr char kModel[] = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";

// The caller's address as gRPC writes a peer (CallAuth, SchedulingClient and the shared-memory
// locality check all read that form).
std::string PeerOf(const httplib::Request& req) {
  if (req.remote_addr.find(':') != std::string::npos) {
    return absl::StrCat("ipv6:[", req.remote_addr, "]:", req.remote_port);
  }
  return absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port);
}

// The model name and version of a kModel match.
std::pair<std::string, std::string> ModelOf(const httplib::Request& req) {
  return {req.matches[1].str(), req.matches.size() > 2 ? req.matches[2].str() : ""};
}

// What an infer request's body holds once read: the header the view points at and the binary
// tensors its raw inputs point into. Kept alive by the handler until the reply.
struct RestBody {
  RestInferRequest request;
  std::vector<TensorBufferPool::Buffer> binaries;
};

// Reads an infer body as it streams in: the JSON part (Inference-Header-Content-Length bytes,
// or all of it), then each binary tensor straight into its own pooled buffer.
class BodyReader {
 public:
  BodyReader(TensorBufferPool* pool, int64_t header_length, int64_t max_json_bytes)
      : pool_(pool), header_length_(header_length), max_json_bytes_(max_json_bytes) {
    if (header_length_ >= 0) json_.reserve(static_cast<size_t>(header_length_));
  }

  // False (with status() set) stops the read.
  bool Feed(const char* data, size_t length) {
    while (length > 0) {
      if (!header_done_) {
        size_t take = length;
        if (header_length_ >= 0) {
          take = std::min(take, static_cast<size_t>(header_length_) - json_.size());
        }
        if (static_cast<int64_t>(json_.size() + take) > max_json_bytes_) {
          return Fail(absl::ResourceExhaustedError(absl::StrCat(
              "the request's JSON is above the ", max_json_bytes_,
              "-byte limit --http_max_json_bytes; send large tensors as binary data "
              "(binary_data_size)")));
        }
        json_.append(data, take);
        data += take;
        length -= take;
        if (header_length_ >= 0 && static_cast<int64_t>(json_.size()) == header_length_ &&
            !FinishHeader()) {
          return false;
        }
        continue;
      }
      while (current_ < body_->binaries.size() &&
             filled_ == body_->binaries[current_].size()) {
        ++current_;
        filled_ = 0;
      }
      if (current_ == body_->binaries.size()) {
        return Fail(absl::InvalidArgumentError(
            "the body has bytes after the last binary tensor (binary_data_size of the inputs "
            "and Inference-Header-Content-Length do not add up to Content-Length)"));
      }
      TensorBufferPool::Buffer& buffer = body_->binaries[current_];
      const size_t take = std::min(length, static_cast<size_t>(buffer.size() - filled_));
      std::memcpy(buffer.data() + filled_, data, take);
      filled_ += static_cast<int64_t>(take);
      data += take;
      length -= take;
    }
    return true;
  }

  // After the last Feed: the body read whole, or why not.
  absl::StatusOr<std::shared_ptr<RestBody>> Finish() {
    if (!status_.ok()) return status_;
    if (!header_done_) {
      if (header_length_ >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the body ends inside the JSON header (", json_.size(), " of ", header_length_,
            " bytes of ", kHeaderLength, ")"));
      }
      if (!FinishHeader()) return status_;
    }
    for (size_t i = current_; i < body_->binaries.size(); ++i) {
      const int64_t have = i == current_ ? filled_ : 0;
      if (have < body_->binaries[i].size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the body ends inside binary tensor ", i, " (", have, " of ",
            body_->binaries[i].size(), " bytes)"));
      }
    }
    return std::move(body_);
  }

  const absl::Status& status() const { return status_; }

 private:
  bool Fail(absl::Status status) {
    status_ = std::move(status);
    return false;
  }

  // Parses the JSON and makes a buffer for each binary tensor.
  bool FinishHeader() {
    header_done_ = true;
    absl::StatusOr<RestInferRequest> request = ParseRestInferRequest(json_);
    if (!request.ok()) return Fail(request.status());
    body_ = std::make_shared<RestBody>();
    body_->request = *std::move(request);
    std::string().swap(json_);
    for (int64_t size : body_->request.binary_sizes) {
      if (size < 0) continue;
      absl::StatusOr<TensorBufferPool::Buffer> buffer = pool_->Get(size);
      if (!buffer.ok()) return Fail(buffer.status());
      body_->binaries.push_back(*std::move(buffer));
    }
    return true;
  }

  TensorBufferPool* const pool_;
  const int64_t header_length_;  // -1: the whole body is JSON
  const int64_t max_json_bytes_;
  std::string json_;
  bool header_done_ = false;
  std::shared_ptr<RestBody> body_;
  size_t current_ = 0;   // the binary tensor being filled
  int64_t filled_ = 0;   // its bytes so far
  absl::Status status_;
};

// FP32 JSON data of an input, as the raw bytes the parser reads (a request that mixes JSON and
// binary inputs: raw entries then cover every input not in shared memory, in order).
absl::Status MoveJsonDataToRaw(RestBody* body, TensorBufferPool* pool) {
  auto& header = body->request.header;
  std::vector<TensorBufferPool::Buffer> ordered;
  size_t next_binary = 0;
  for (int i = 0; i < header.inputs_size(); ++i) {
    auto* input = header.mutable_inputs(i);
    if (input->parameters().contains("shared_memory_region")) continue;
    if (body->request.binary_sizes[i] >= 0) {
      ordered.push_back(std::move(body->binaries[next_binary++]));
      continue;
    }
    const auto& floats = input->contents().fp32_contents();
    if (input->contents().ByteSizeLong() != 0 && floats.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", input->name(), "': a request with binary inputs can carry JSON data only ",
          "for FP32 inputs; send this one as binary data too"));
    }
    SPARKLE_ASSIGN_OR_RETURN(TensorBufferPool::Buffer buffer,
                             pool->Get(static_cast<int64_t>(floats.size()) * 4));
    if (!floats.empty()) std::memcpy(buffer.data(), floats.data(), floats.size() * 4);
    input->clear_contents();
    ordered.push_back(std::move(buffer));
  }
  body->binaries = std::move(ordered);
  return absl::OkStatus();
}

// The REST-only JSON body of a shared-memory register call: {"key", "offset", "byte_size"}.
absl::StatusOr<inference::SystemSharedMemoryRegisterRequest> ParseRegisterBody(
    const std::string& name, const std::string& body) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return absl::InvalidArgumentError(
        "the body must be a JSON object {\"key\": ..., \"offset\": ..., \"byte_size\": ...}");
  }
  inference::SystemSharedMemoryRegisterRequest request;
  request.set_name(name);
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    const std::string key = it->name.GetString();
    if (key == "key" && it->value.IsString()) {
      request.set_key(it->value.GetString());
    } else if (key == "offset" && it->value.IsUint64()) {
      request.set_offset(it->value.GetUint64());
    } else if (key == "byte_size" && it->value.IsUint64()) {
      request.set_byte_size(it->value.GetUint64());
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("'", key, "' is not a key of a register body, or has the wrong type"));
    }
  }
  return request;
}

// OpenSSL's certificate callback: the certificate and key the watcher publishes now.
int UseCurrentCertificate(SSL* ssl, void* arg) {
  const auto* watcher = static_cast<const CertificateWatcher*>(arg);
  if (SSL_use_certificate_chain_file(ssl, watcher->cert_path().c_str()) != 1 ||
      SSL_use_PrivateKey_file(ssl, watcher->key_path().c_str(), SSL_FILETYPE_PEM) != 1) {
    spdlog::warn("REST TLS handshake: cannot load the published certificate or key");
    return 0;
  }
  return 1;
}

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http_listen must be host:port (or [ipv6]:port); was '", address, "'"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

}  // namespace

struct RestService::Impl {
  Options options;
  Engine* engine = nullptr;
  InferenceStats* stats = nullptr;
  std::unique_ptr<ModelInferHandler> handler;
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  std::string address;

  absl::StatusOr<CallIdentity> Authorize(const httplib::Request& req, absl::string_view method,
                                         Access access) const {
    if (options.auth == nullptr) return CallIdentity{PeerOf(req)};
    return options.auth->Check(req.get_header_value("Authorization"), PeerOf(req), method,
                               access);
  }

  void Reply(httplib::Response& res, const absl::Status& status, bool queue_full = false) {
    res.status = HttpStatusFor(status, queue_full);
    if (queue_full) {
      res.set_header("Retry-After",
                     absl::StrCat(std::max<int64_t>(1, (options.retry_after_ms + 999) / 1000)));
    }
    res.set_content(ErrorJson(status.message()), kJson);
  }

  // Runs `fill` for a caller allowed `access`; its JSON (or error) is the reply.
  template <typename Fill>
  void Answer(const httplib::Request& req, httplib::Response& res, absl::string_view method,
              Access access, Fill fill) {
    absl::StatusOr<CallIdentity> caller = Authorize(req, method, access);
    if (!caller.ok()) return Reply(res, caller.status());
    std::string json;
    const absl::Status status = fill(*caller, &json);
    if (!status.ok()) return Reply(res, status);
    res.status = 200;
    res.set_content(json, kJson);
  }

  void Ready(const httplib::Request&, httplib::Response& res) {
    res.status = options.ready() ? 200 : 503;
  }

  void Infer(const httplib::Request& req, httplib::Response& res,
             const httplib::ContentReader& content_reader) {
    // A refusal before the body is read whole leaves the rest of it in the socket, where it
    // would be read as the next request: such a reply closes the connection.
    auto refuse_unread = [&](const absl::Status& status) {
      res.set_header("Connection", "close");
      Reply(res, status);
    };
    absl::StatusOr<CallIdentity> caller = Authorize(req, "ModelInfer", Access::kInfer);
    if (!caller.ok()) return refuse_unread(caller.status());
    const auto [name, version] = ModelOf(req);
    if (absl::Status model = CheckModel(name, version); !model.ok()) {
      return refuse_unread(model);
    }
    const int64_t limit = options.limits.max_request_bytes;
    int64_t length = -1;
    if (req.has_header("Content-Length") &&
        (!absl::SimpleAtoi(req.get_header_value("Content-Length"), &length) || length < 0)) {
      return refuse_unread(absl::InvalidArgumentError("Content-Length is not a byte count"));
    }
    if (length > limit) {
      return refuse_unread(absl::ResourceExhaustedError(absl::StrCat(
                            "the request is ", length, " bytes, above the ", limit,
                            "-byte message limit --max_message_bytes")));
    }
    int64_t header_length = -1;
    if (req.has_header(kHeaderLength) &&
        (!absl::SimpleAtoi(req.get_header_value(kHeaderLength), &header_length) ||
         header_length < 0 || (length >= 0 && header_length > length))) {
      return refuse_unread(absl::InvalidArgumentError(
          absl::StrCat(kHeaderLength, " must be a byte count within the body")));
    }
    BodyReader body_reader(options.pool, header_length,
                           std::min(options.max_json_bytes, limit));
    int64_t read = 0;
    const bool complete = content_reader([&](const char* data, size_t n) {
      read += static_cast<int64_t>(n);
      if (read > limit) return false;
      return body_reader.Feed(data, n);
    });
    if (read > limit) {
      return refuse_unread(absl::ResourceExhaustedError(absl::StrCat(
          "the request is above the ", limit, "-byte message limit --max_message_bytes")));
    }
    if (!complete) {
      return refuse_unread(body_reader.status().ok()
                               ? absl::InvalidArgumentError("the request body could not be read")
                               : body_reader.status());
    }
    absl::StatusOr<std::shared_ptr<RestBody>> body = body_reader.Finish();
    if (!body.ok()) return Reply(res, body.status());
    RestBody* b = body->get();
    b->request.header.set_model_name(name);
    b->request.header.set_model_version(version);
    const bool has_binary = !b->binaries.empty();
    if (has_binary) {
      if (absl::Status moved = MoveJsonDataToRaw(b, options.pool); !moved.ok()) {
        return Reply(res, moved);
      }
    }
    InferRequestView view = ViewOf(b->request.header);
    view.serialized_bytes = read;
    for (const TensorBufferPool::Buffer& buffer : b->binaries) {
      TensorBytes bytes;
      bytes.size = buffer.size();
      bytes.pieces.emplace_back(reinterpret_cast<const char*>(buffer.data()),
                                static_cast<size_t>(buffer.size()));
      view.raw_inputs.push_back(std::move(bytes));
    }
    // The one requested output ("output"), or the request's default.
    const bool binary = b->request.binary_outputs.empty() ? b->request.binary_data_output
                                                          : b->request.binary_outputs.front();
    // Shared with the done callback, which may still be inside Notify() when the wait returns.
    struct Waiter {
      InferReply reply;
      absl::Notification done;
    };
    auto waiter = std::make_shared<Waiter>();
    handler->Handle(std::move(view), *std::move(body), *caller, absl::InfiniteFuture(),
                    std::make_shared<std::atomic<bool>>(false), [waiter](InferReply r) {
                      waiter->reply = std::move(r);
                      waiter->done.Notify();
                    });
    waiter->done.WaitForNotification();
    InferReply& reply = waiter->reply;
    if (!reply.status.ok()) return Reply(res, reply.status, reply.queue_full);
    const absl::string_view output(reply.output.data(), static_cast<size_t>(reply.output.size()));
    std::string json = InferResponseJson(reply.header, output, binary);
    res.status = 200;
    if (!binary || output.empty()) {
      res.set_content(json, kJson);
      return;
    }
    // JSON, then the output straight from the engine's buffer (held until the body is sent).
    res.set_header(kHeaderLength, absl::StrCat(json.size()));
    auto held = std::make_shared<std::pair<std::string, InferOutput>>(std::move(json),
                                                                     std::move(reply.output));
    const size_t total = held->first.size() + output.size();
    res.set_content_provider(
        total, "application/octet-stream",
        [held](size_t offset, size_t length, httplib::DataSink& sink) {
          const std::string& head = held->first;
          const char* out = held->second.data();
          const size_t end = offset + length;
          if (offset < head.size()) {
            const size_t n = std::min(end, head.size()) - offset;
            if (!sink.write(head.data() + offset, n)) return false;
            offset += n;
          }
          if (offset < end) return sink.write(out + (offset - head.size()), end - offset);
          return true;
        });
  }

  void RegisterRoutes() {
    httplib::Server& s = *server;
    s.Get("/v2/health/live", [](const httplib::Request&, httplib::Response& res) {
      res.status = 200;
    });
    s.Get("/v2/health/ready",
          [this](const httplib::Request& req, httplib::Response& res) { Ready(req, res); });
    s.Get("/v2", [this](const httplib::Request& req, httplib::Response& res) {
      Answer(req, res, "ServerMetadata", Access::kInfer, [this](const CallIdentity&, std::string* j) {
        inference::ServerMetadataResponse m;
        FillServerMetadata(options.shared_memory != nullptr, &m);
        *j = ProtoToJson(m);
        return absl::OkStatus();
      });
    });
    // Before the model metadata route, whose pattern would take "stats" for a model name.
    auto stats_route = [this](const httplib::Request& req, httplib::Response& res) {
      Answer(req, res, "ModelStatistics", Access::kInfer, [&](const CallIdentity&, std::string* j) {
        if (req.matches.size() > 1) {
          const auto [name, version] = ModelOf(req);
          SPARKLE_RETURN_IF_ERROR(CheckModel(name, version));
        }
        inference::ModelStatisticsResponse m;
        FillModelStatistics(stats->Get(), m.add_model_stats());
        *j = ProtoToJson(m);
        return absl::OkStatus();
      });
    };
    s.Get("/v2/models/stats", stats_route);
    s.Get(absl::StrCat(kModel, "/stats"), stats_route);
    s.Get(kModel, [this](const httplib::Request& req, httplib::Response& res) {
      Answer(req, res, "ModelMetadata", Access::kInfer, [&](const CallIdentity&, std::string* j) {
        const auto [name, version] = ModelOf(req);
        SPARKLE_RETURN_IF_ERROR(CheckModel(name, version));
        inference::ModelMetadataResponse m;
        FillModelMetadata(&m);
        *j = ProtoToJson(m);
        return absl::OkStatus();
      });
    });
    s.Get(absl::StrCat(kModel, "/ready"), [this](const httplib::Request& req,
                                                 httplib::Response& res) {
      absl::StatusOr<CallIdentity> caller = Authorize(req, "ModelReady", Access::kInfer);
      if (!caller.ok()) return Reply(res, caller.status());
      const auto [name, version] = ModelOf(req);
      if (absl::Status model = CheckModel(name, version); !model.ok()) return Reply(res, model);
      Ready(req, res);
    });
    s.Get(absl::StrCat(kModel, "/config"), [this](const httplib::Request& req,
                                                  httplib::Response& res) {
      Answer(req, res, "ModelConfig", Access::kInfer, [&](const CallIdentity&, std::string* j) {
        const auto [name, version] = ModelOf(req);
        SPARKLE_RETURN_IF_ERROR(CheckModel(name, version));
        inference::ModelConfig config;
        FillModelConfig(*engine, &config);
        *j = ProtoToJson(config);
        return absl::OkStatus();
      });
    });
    s.Post(absl::StrCat(kModel, "/infer"),
           [this](const httplib::Request& req, httplib::Response& res,
                  const httplib::ContentReader& reader) { Infer(req, res, reader); });

    // Triton's system shared-memory endpoints, over the same registry as gRPC.
    s.Get(R"(/v2/systemsharedmemory(?:/region/([^/]+))?/status)",
          [this](const httplib::Request& req, httplib::Response& res) {
            Answer(req, res, "SystemSharedMemoryStatus", Access::kInfer,
                   [&](const CallIdentity& caller, std::string* j) {
                     inference::SystemSharedMemoryStatusRequest request;
                     request.set_name(req.matches[1].str());
                     inference::SystemSharedMemoryStatusResponse status;
                     SPARKLE_RETURN_IF_ERROR(SystemSharedMemoryStatus(
                         options.shared_memory, caller, request, &status));
                     // Triton's REST form: a list of regions.
                     std::string list = "[";
                     for (const auto& [region_name, region] : status.regions()) {
                       if (list.size() > 1) list += ",";
                       list += ProtoToJson(region);
                     }
                     *j = list + "]";
                     return absl::OkStatus();
                   });
          });
    s.Post(R"(/v2/systemsharedmemory/region/([^/]+)/register)",
           [this](const httplib::Request& req, httplib::Response& res) {
             Answer(req, res, "SystemSharedMemoryRegister", Access::kInfer,
                    [&](const CallIdentity& caller, std::string* j) {
                      SPARKLE_ASSIGN_OR_RETURN(auto request,
                                               ParseRegisterBody(req.matches[1].str(), req.body));
                      SPARKLE_RETURN_IF_ERROR(SystemSharedMemoryRegister(
                          options.shared_memory, caller, PeerOf(req),
                          options.shared_memory_allow_remote, request));
                      *j = "{}";
                      return absl::OkStatus();
                    });
           });
    s.Post(R"(/v2/systemsharedmemory(?:/region/([^/]+))?/unregister)",
           [this](const httplib::Request& req, httplib::Response& res) {
             Answer(req, res, "SystemSharedMemoryUnregister", Access::kInfer,
                    [&](const CallIdentity& caller, std::string* j) {
                      inference::SystemSharedMemoryUnregisterRequest request;
                      request.set_name(req.matches[1].str());
                      SPARKLE_RETURN_IF_ERROR(SystemSharedMemoryUnregister(
                          options.shared_memory, caller, request));
                      *j = "{}";
                      return absl::OkStatus();
                    });
           });
    auto cuda = [this](const httplib::Request&, httplib::Response& res) {
      Reply(res, CudaSharedMemoryUnsupported("CudaSharedMemory (REST /v2/cudasharedmemory)"));
    };
    s.Get(R"(/v2/cudasharedmemory.*)", cuda);
    s.Post(R"(/v2/cudasharedmemory.*)", cuda);

    // Anything else: a JSON error naming the path, never an empty body.
    s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::string message =
          res.status == 404
              ? absl::StrCat("no KServe v2 endpoint ", req.method, " ", req.path,
                             " (docs/protocol.md, KServe v2 REST)")
              : absl::StrCat("HTTP ", res.status, " for ", req.method, " ", req.path);
      res.set_content(ErrorJson(message), kJson);
    });
    s.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
          spdlog::error("REST {} {}: unexpected exception", req.method, req.path);
          res.status = 500;
          res.set_content(ErrorJson("internal error"), kJson);
        });
  }
};

absl::StatusOr<std::unique_ptr<RestService>> RestService::Create(Engine* engine,
                                                                 InferenceStats* stats,
                                                                 ServerMetrics* metrics,
                                                                 const Options& options) {
  if (options.threads < 1 || options.threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http_threads must be in [1, 1024]; was ", options.threads));
  }
  if (options.max_json_bytes < 4096 || options.max_json_bytes > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http_max_json_bytes must be in [4096, 2147483647]; was ", options.max_json_bytes));
  }
  if (options.pool == nullptr || !options.ready) {
    return absl::InvalidArgumentError("RestService needs a buffer pool and a readiness check");
  }
  SPARKLE_ASSIGN_OR_RETURN(auto host_port, SplitHostPort(options.address));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->engine = engine;
  impl->stats = stats;
  impl->handler = std::make_unique<ModelInferHandler>(
      engine, options.pool, options.shared_memory, stats, metrics,
      ModelInferHandler::Options{options.limits});
  if (options.certificate != nullptr) {
    const CertificateWatcher* watcher = options.certificate;
    const bool verify = options.require_client_certificate;
    impl->server = std::make_unique<httplib::SSLServer>([watcher, verify](SSL_CTX& ctx) {
      SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
      SSL_CTX_set_cert_cb(&ctx, &UseCurrentCertificate, const_cast<CertificateWatcher*>(watcher));
      if (verify) {
        if (SSL_CTX_load_verify_locations(&ctx, watcher->ca_path().c_str(), nullptr) != 1) {
          return false;
        }
        SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      }
      return true;
    });
  } else {
    impl->server = std::make_unique<httplib::Server>();
  }
  if (!impl->server->is_valid()) {
    return absl::InternalError("cannot set up the REST listener's TLS context");
  }
  const int threads = options.threads;
  impl->server->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  impl->server->set_payload_max_length(static_cast<size_t>(options.limits.max_request_bytes));
  impl->server->set_keep_alive_max_count(std::numeric_limits<int>::max());
  // httplib notices stop() only between requests: an idle keep-alive connection keeps its
  // worker until this timeout, which so bounds Stop() (5 s: httplib's default).
  impl->server->set_keep_alive_timeout(5);
  // A client silent for 15 s while sending gives its worker back; 60 s for a slow reader.
  impl->server->set_read_timeout(15);
  impl->server->set_write_timeout(60);
  impl->server->set_tcp_nodelay(true);
  impl->RegisterRoutes();
  const auto& [host, port] = host_port;
  int bound = port;
  if (port == 0) {
    bound = impl->server->bind_to_any_port(host);
  } else if (!impl->server->bind_to_port(host, port)) {
    bound = -1;
  }
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on --http_listen ",
                                               options.address,
                                               " (address in use, or not a valid address?)"));
  }
  impl->address = absl::StrCat(host.find(':') != std::string::npos ? "[" + host + "]" : host,
                               ":", bound);
  httplib::Server* server = impl->server.get();
  impl->thread = std::thread([server] { server->listen_after_bind(); });
  return std::unique_ptr<RestService>(new RestService(std::move(impl)));
}

RestService::RestService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RestService::~RestService() { Stop(); }

void RestService::StopAccepting() { impl_->server->stop(); }

void RestService::Stop() {
  StopAccepting();
  if (impl_->thread.joinable()) impl_->thread.join();
}

const std::string& RestService::address() const { return impl_->address; }

}  // namespace sparkle
