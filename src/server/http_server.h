// The HTTP front of `atp serve`: OpenAI-compatible completion endpoints, /v1/models, /tokenize,
// /detokenize, /health and /metrics on cpp-httplib, over one Scheduler. Every request is validated
// before it reaches the engine. With an API key, every endpoint but /health and /metrics needs it.
// Shutdown drains (new requests get 503) before it stops listening. No TLS.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "server/api_request.h"
#include "server/connection_gate.h"
#include "server/kv_request.h"
#include "server/metrics.h"
#include "server/request_log.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
class Server;
class ContentReader;
struct Request;
struct Response;
}  // namespace httplib

namespace atp {

class Session;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (Bind() returns it)
  std::string model_name;             // the id /v1/models reports first and responses carry
  std::vector<std::string> model_aliases;  // more names a request's "model" may give (/v1/models lists them)
  std::string api_key;                // "": open; else requests need "Authorization: Bearer <api_key>"
  std::string default_kv = "dense";   // policy of requests without a "kv" field
  SchedulerOptions scheduler;
  size_t max_body_bytes = size_t(8) << 20;
  GateOptions gate;
  LogFormat log_format = LogFormat::kText;  // the access log on stderr                   // connection caps and the deadline for reading a request
  std::chrono::milliseconds shutdown_timeout{30000};  // for in-flight requests to finish
  // How a request's kv string becomes policies: the CPU registry (ParseKvPolicy) when empty;
  // `serve --device cuda` passes the GPU's (ParseCudaKvPolicy), whose policies the model's backend drives.
  KvPolicyParser parse_kv;
  KvBases kv_bases;  // basis files requests may select by name (basis=NAME), registered at start-up
};

class HttpServer {
 public:
  // model and tok must outlive the server. Fails when the default policy does not parse or fit.
  static Result<std::unique_ptr<HttpServer>> Create(LlamaModel& model, const Tokenizer& tok, ChatTemplate chat,
                                                    ServerOptions opt);
  ~HttpServer();

  // Listens on host:port and returns the port (errors name the address and the reason).
  Result<int> Bind();
  // Serves until Shutdown() has finished (Ok), or until listening fails.
  Status Serve();
  // From any thread, once or more: refuses new requests, lets in-flight ones finish (cancelling those
  // still running after the timeout), then stops Serve(). Returns when that is done.
  void Shutdown();

  Scheduler& scheduler() { return *scheduler_; }

 private:
  HttpServer(LlamaModel& model, const Tokenizer& tok, ChatTemplate chat, ServerOptions opt);
  class Active;  // counts a request from arrival until its response is written

  void Routes();
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // Route registration: `guarded` routes need the API key (when one is set). POST routes read their
  // body themselves (ReadBody), whatever its Content-Type, before the key is checked.
  void Get(const std::string& pattern, const std::string& endpoint, bool guarded, Handler h);
  void Post(const std::string& pattern, const std::string& endpoint, Handler h);
  // Replies 401 and returns false unless the request carries the API key (or none is set).
  bool Authorized(const httplib::Request& req, httplib::Response& res, const std::string& endpoint);
  // The raw body, at most max_body_bytes, or the error to answer with.
  std::optional<ApiError> ReadBody(const httplib::Request& req, httplib::Response& res,
                                   const httplib::ContentReader& reader, std::string* body) const;
  // 404 model_not_found unless `model` is empty or one of the served names.
  std::optional<ApiError> CheckModel(const std::string& model) const;
  void HandleModels(const httplib::Request& req, httplib::Response& res);
  void HandleTokenize(const httplib::Request& req, httplib::Response& res);
  void HandleDetokenize(const httplib::Request& req, httplib::Response& res);
  // Submits one sequence per choice of `a` (choice i samples with seed + i) reporting to `session`;
  // on failure cancels those already submitted.
  Result<std::vector<uint64_t>> SubmitChoices(const ApiRequest& a, const SeqRequest& sr, const std::shared_ptr<Session>& session);
  void Cancel(const std::vector<uint64_t>& seqs);
  void HandleCompletion(const httplib::Request& req, httplib::Response& res, bool chat);
  // Tokenized prompt, policy and limits of a parsed request, or the error to answer with.
  std::optional<ApiError> Prepare(const ApiRequest& a, SeqRequest* out);
  // The factory of a policy string, cached by string. A request's string (from_request) may not name
  // files: it goes through ResolveRequestKv first.
  Result<std::shared_ptr<const KvPolicyFactory>> Policy(const std::string& spec, bool from_request);
  void Reply(httplib::Response& res, const std::string& endpoint, const ApiError& e);
  // The whole request has arrived (the Get/Post wrappers call it before the route's handler): the gate's
  // read deadline stops here, and the request gets its id and arrival time for the access log.
  void Arrived(httplib::Response& r);
  void Log(const httplib::Request& q, const httplib::Response& r);  // after the response's last byte

  LlamaModel& model_;
  const Tokenizer& tok_;
  const ChatTemplate chat_;
  const ServerOptions opt_;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<ConnectionGate> gate_;  // from Bind()
  std::unique_ptr<Scheduler> scheduler_;
  ServerMetrics metrics_;
  int port_ = 0;

  std::mutex policy_mu_;
  std::map<std::string, std::shared_ptr<const KvPolicyFactory>> policies_;  // by request string

  std::atomic<uint64_t> requests_{0};
  std::mutex log_mu_;  // one whole line at a time on stderr
  std::atomic<bool> draining_{false};
  std::mutex active_mu_;
  std::condition_variable active_cv_;
  int active_ = 0;
  std::once_flag shutdown_once_;
};

}  // namespace atp
