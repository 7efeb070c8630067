// The HTTP front of `atp serve`: OpenAI-compatible completion endpoints, /v1/models, /health and
// /metrics on cpp-httplib, over one Scheduler. Every request is validated before it reaches the engine.
// Shutdown drains (new requests get 503) before it stops listening. No TLS, no authentication.
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
#include "server/metrics.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace atp {

class Session;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (Bind() returns it)
  std::string model_name;             // the id /v1/models reports
  std::string default_kv = "dense";   // policy of requests without a "kv" field
  SchedulerOptions scheduler;
  size_t max_body_bytes = size_t(8) << 20;
  std::chrono::milliseconds shutdown_timeout{30000};  // for in-flight requests to finish
  // How a request's kv string becomes policies: the CPU registry (ParseKvPolicy) when empty;
  // `serve --device cuda` passes the GPU's (MakeCudaKvFactory), whose policies the model's backend drives.
  KvPolicyParser parse_kv;
};

class HttpServer {
 public:
  // model and tok must outlive the server. Fails when the default policy does not parse or fit.
  static Result<std::unique_ptr<HttpServer>> Create(LlamaModel& model, const Tokenizer& tok, ChatTemplate chat,
                                                    ServerOptions opt);
  ~HttpServer();

  // Listens on host:port and returns the port.
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
  void HandleCompletion(const httplib::Request& req, httplib::Response& res, bool chat);
  // Tokenized prompt, policy and limits of a parsed request, or the error to answer with.
  std::optional<ApiError> Prepare(const ApiRequest& a, SeqRequest* out);
  // Submits one sequence per choice of `a` (choice i samples with seed + i) reporting to `session`;
  // on failure cancels those already submitted.
  Result<std::vector<uint64_t>> SubmitChoices(const ApiRequest& a, const SeqRequest& sr, const std::shared_ptr<Session>& session);
  void Cancel(const std::vector<uint64_t>& seqs);
  Result<std::shared_ptr<const KvPolicyFactory>> Policy(const std::string& spec);
  void Reply(httplib::Response& res, const std::string& endpoint, const ApiError& e);

  LlamaModel& model_;
  const Tokenizer& tok_;
  const ChatTemplate chat_;
  const ServerOptions opt_;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<Scheduler> scheduler_;
  ServerMetrics metrics_;
  int port_ = 0;

  std::mutex policy_mu_;
  std::map<std::string, std::shared_ptr<const KvPolicyFactory>> policies_;  // by request string

  std::atomic<bool> draining_{false};
  std::mutex active_mu_;
  std::condition_variable active_cv_;
  int active_ = 0;
  std::once_flag shutdown_once_;
};

}  // namespace atp
