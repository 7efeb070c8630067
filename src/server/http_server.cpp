#include "server/http_server.h"

#include <httplib.h>

#include <csignal>
#include <cstdio>
#include <random>

#include "server/api_response.h"
#include "server/kv_request.h"
#include "server/peer_probe.h"
#include "server/request_log.h"
#include "server/session.h"

namespace atp {

using json = nlohmann::ordered_json;
using namespace std::chrono_literals;

namespace {
// cpp-httplib serving connections that ConnectionGate accepts. The library keeps the function that runs
// one connection (process_and_close_socket) private; an explicit instantiation may name a private
// member ([temp.spec.general]/6), which reaches it without patching the library. It is virtual and not
// overridden here, so the call runs the library's own implementation.
using ProcessFn = bool (httplib::Server::*)(socket_t);
ProcessFn ProcessAndClose();
template <ProcessFn F>
struct ExposeProcess {
  friend ProcessFn ProcessAndClose() { return F; }
};
template struct ExposeProcess<&httplib::Server::process_and_close_socket>;

class GatedServer : public httplib::Server {
 public:
  // Its keep-alive loops run while svr_sock_ holds a socket: the gate's listening one until shutdown.
  void Adopt(int fd) { svr_sock_ = fd; }
  void Release() { svr_sock_ = INVALID_SOCKET; }
  void Process(int fd) { (this->*ProcessAndClose())(fd); }
};
GatedServer& Gated(httplib::Server& s) { return static_cast<GatedServer&>(s); }

// The request a connection's thread is serving, from its arrival until the access log line.
struct InFlight {
  Session::Clock::time_point arrival;
  std::string id;
  int prompt_tokens = -1;
  std::shared_ptr<const Session> session;  // a completion's, all n choices; null for other requests
};
thread_local InFlight tl_request;
}  // namespace

// Holds the count of requests in flight; a streaming response keeps it until its last byte is written.
class HttpServer::Active {
 public:
  explicit Active(HttpServer* s) : s_(s) {
    std::lock_guard<std::mutex> lk(s_->active_mu_);
    ++s_->active_;
  }
  ~Active() {
    {
      std::lock_guard<std::mutex> lk(s_->active_mu_);
      --s_->active_;
    }
    s_->active_cv_.notify_all();
  }

 private:
  HttpServer* s_;
};

HttpServer::HttpServer(LlamaModel& model, const Tokenizer& tok, ChatTemplate chat, ServerOptions opt)
    : model_(model), tok_(tok), chat_(std::move(chat)), opt_(std::move(opt)), http_(std::make_unique<GatedServer>()) {
  // A client that hangs up must cost a failed write, not the process (cpp-httplib sends without MSG_NOSIGNAL).
  std::signal(SIGPIPE, SIG_IGN);
  scheduler_ = std::make_unique<Scheduler>(model_, tok_.eos_ids(), opt_.scheduler);
}

HttpServer::~HttpServer() { Shutdown(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Create(LlamaModel& model, const Tokenizer& tok, ChatTemplate chat,
                                                       ServerOptions opt) {
  std::unique_ptr<HttpServer> s(new HttpServer(model, tok, std::move(chat), std::move(opt)));
  auto kv = s->Policy(s->opt_.default_kv, /*from_request=*/false);
  if (!kv.ok()) return kv.status().WithContext("--kv: ");
  // Measured now rather than on the first request, which would wait for it.
  s->scheduler_->Prepare(**kv);
  s->Routes();
  return s;
}

Result<int> HttpServer::Bind() {
  ATP_ASSIGN_OR_RETURN(gate_, ConnectionGate::Listen(opt_.host, opt_.port, opt_.gate));
  Gated(*http_).Adopt(gate_->fd());
  port_ = gate_->port();
  return port_;
}

Status HttpServer::Serve() {
  if (!gate_) return Status::InvalidArgument("Serve() before Bind()");
  if (draining_) return Status::Ok();  // shut down before it started
  gate_->Run([this](int fd) { Gated(*http_).Process(fd); });
  return Status::Ok();
}

void HttpServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    draining_ = true;
    const auto deadline = std::chrono::steady_clock::now() + opt_.shutdown_timeout;
    scheduler_->Drain(opt_.shutdown_timeout);
    // Sequences are done; give their handlers a moment to write the last bytes.
    std::unique_lock<std::mutex> lk(active_mu_);
    active_cv_.wait_until(lk, deadline + 5s, [&] { return active_ == 0; });
    lk.unlock();
    // Stopping earlier would cut streams short. Keep-alive loops end after their current request.
    Gated(*http_).Release();
    if (gate_) gate_->Stop();
  });
}

void HttpServer::Reply(httplib::Response& res, const std::string& endpoint, const ApiError& e) {
  res.status = e.status;
  if (e.status == 429) res.set_header("Retry-After", "1");
  res.set_content(ResponseBuilder::Dump(e.ToJson()), "application/json");
  metrics_.CountRequest(endpoint, e.status);
}

Result<std::shared_ptr<const KvPolicyFactory>> HttpServer::Policy(const std::string& spec, bool from_request) {
  ATP_ASSIGN_OR_RETURN(const std::string resolved,
                       from_request ? ResolveRequestKv(spec, opt_.kv_bases) : Result<std::string>(spec));
  {
    std::lock_guard<std::mutex> lk(policy_mu_);
    if (auto it = policies_.find(resolved); it != policies_.end()) return it->second;
  }
  // Parsed outside the lock: a policy that reads a basis file must not hold up other requests.
  ATP_ASSIGN_OR_RETURN(std::shared_ptr<const KvPolicyFactory> f,
                       opt_.parse_kv ? opt_.parse_kv(resolved, model_.dir()) : ParseKvPolicy(resolved, model_.dir()));
  for (int l = 0; l < model_.config().num_layers; ++l) ATP_RETURN_IF_ERROR(f->CheckShape(model_.kv_shape(l)));
  std::lock_guard<std::mutex> lk(policy_mu_);
  // Bounded, so that a client sending endless variants cannot grow it; beyond that, parse each time.
  if (policies_.size() < 64) policies_.emplace(resolved, f);
  return f;
}

std::optional<ApiError> HttpServer::Prepare(const ApiRequest& a, SeqRequest* out) {
  if (auto err = CheckModel(a.model)) return err;
  const int ctx = scheduler_->options().context;
  const std::string where = a.chat ? "messages" : "prompt";
  if (a.chat) {
    auto text = chat_.Render(a.messages, /*add_generation_prompt=*/true);
    if (!text.ok()) return ApiError{400, text.status().message(), "messages"};
    // The template writes the special tokens itself (bos_token), as transformers tokenizes it.
    out->prompt = tok_.Encode(*text, /*add_special=*/false);
  } else if (!a.prompt_ids.empty()) {
    for (int32_t id : a.prompt_ids)
      if (id >= model_.config().vocab_size)
        return ApiError{400, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                 std::to_string(model_.config().vocab_size), "prompt"};
    out->prompt = a.prompt_ids;
  } else {
    out->prompt = tok_.Encode(a.prompt, /*add_special=*/true);
  }
  const int n = int(out->prompt.size());
  if (n == 0) return ApiError{400, "the prompt is empty after tokenization", where};
  if (n >= ctx)
    return ApiError{400, "the prompt has " + std::to_string(n) + " tokens; the context holds " + std::to_string(ctx) +
                             " tokens, prompt and completion together", where};
  if (a.max_tokens && *a.max_tokens > ctx - n)
    return ApiError{400, "max_tokens (" + std::to_string(*a.max_tokens) + ") plus the prompt (" + std::to_string(n) +
                             " tokens) exceeds the context of " + std::to_string(ctx) + " tokens", "max_tokens"};
  // OpenAI's defaults: 16 tokens for completions, the rest of the context for chat.
  out->max_tokens = a.max_tokens.value_or(a.chat ? ctx - n : std::min(16, ctx - n));
  out->sampling = a.sampling;
  if (!a.seeded) out->sampling.seed = std::random_device()() * 0x9E3779B97F4A7C15ull + std::random_device()();
  out->top_logprobs = a.logprobs;
  out->ignore_eos = a.ignore_eos;
  auto kv = a.kv ? Policy(*a.kv, /*from_request=*/true) : Policy(opt_.default_kv, false);
  if (!kv.ok()) return ApiError{400, kv.status().message(), "kv"};
  out->kv = *kv;
  return std::nullopt;
}

void HttpServer::HandleCompletion(const httplib::Request& req, httplib::Response& res, bool chat) {
  const auto arrival = Session::Clock::now();
  const std::string endpoint = chat ? "chat" : "completions";
  auto active = std::make_shared<Active>(this);
  if (draining_) return Reply(res, endpoint, {503, "the server is shutting down", "", "server_error"});
  ApiRequest a;
  if (auto err = ParseApiRequest(req.body, chat, &a)) return Reply(res, endpoint, *err);
  SeqRequest sr;
  if (auto err = Prepare(a, &sr)) return Reply(res, endpoint, *err);
  tl_request.prompt_tokens = int(sr.prompt.size());
  auto session = std::make_shared<Session>(tok_, a.stop, a.n, metrics_, arrival);
  tl_request.session = session;
  auto builder = std::make_shared<ResponseBuilder>(a, tok_, opt_.model_name, sr.prompt.size());
  auto id = SubmitChoices(a, sr, session);
  if (!id.ok()) {
    switch (id.status().code()) {
      case Status::Code::kResourceExhausted:
        return Reply(res, endpoint, {429, id.status().message(), "", "rate_limit_error"});
      case Status::Code::kUnsupported: return Reply(res, endpoint, {503, id.status().message(), "", "server_error"});
      default: return Reply(res, endpoint, {400, id.status().message(), a.chat ? "messages" : "prompt"});
    }
  }
  const std::vector<uint64_t> seqs = *id;
  auto probe = std::make_shared<PeerProbe>(req.remote_addr, req.remote_port, port_);
  const auto failure = [](const Session::Update& u) -> std::optional<ApiError> {
    if (!u.error.ok()) return ApiError{500, u.error.message(), "", "server_error"};
    if (u.cancelled)
      return ApiError{503, "the request was cancelled: the server is shutting down", "", "server_error"};
    return std::nullopt;
  };

  if (!a.stream) {
    while (true) {
      Session::Update u = session->Wait(100ms, /*until_finished=*/true);
      builder->Add(u.pieces);
      if (u.finished) {
        if (auto err = failure(u)) return Reply(res, endpoint, *err);
        metrics_.CountRequest(endpoint, 200);
        return res.set_content(ResponseBuilder::Dump(builder->Body()), "application/json");
      }
      if (probe->Gone()) {
        Cancel(seqs);
        return metrics_.CountRequest(endpoint, 499);  // nginx's "client closed request"
      }
    }
  }

  metrics_.CountRequest(endpoint, 200);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, session, builder, probe, seqs, failure](size_t, httplib::DataSink& sink) {
        Session::Update u = session->Wait(100ms);
        std::string out = builder->Chunk(u.pieces);
        if (u.finished) {
          if (auto err = failure(u)) out += "data: " + ResponseBuilder::Dump(err->ToJson()) + "\n\ndata: [DONE]\n\n";
          else out += builder->Final();
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          Cancel(seqs);  // the client went away mid-stream
          return false;
        }
        if (u.finished) sink.done();
        else if (out.empty() && probe->Gone()) return Cancel(seqs), false;
        return true;
      },
      [this, session, seqs, active](bool) {
        if (!session->finished()) Cancel(seqs);
      });
}

void HttpServer::Arrived(httplib::Response& r) {
  ConnectionGate::RequestRead();
  tl_request = InFlight{Session::Clock::now(), "req-" + std::to_string(++requests_), -1, nullptr};
  r.set_header("X-Request-Id", tl_request.id);
}

void HttpServer::Log(const httplib::Request& q, const httplib::Response& r) {
  ConnectionGate::ResponseWritten();
  if (opt_.log_format == LogFormat::kOff || tl_request.id.empty()) return;
  RequestRecord rec{tl_request.id, q.method, q.path, q.remote_addr, r.status, tl_request.prompt_tokens};
  if (const auto& s = tl_request.session) {
    rec.completion_tokens = s->tokens();
    rec.ttft_s = s->ttft();
  }
  rec.total_s = std::chrono::duration<double>(Session::Clock::now() - tl_request.arrival).count();
  tl_request = InFlight();
  const std::string line = FormatLogLine(rec, opt_.log_format) + "\n";
  std::lock_guard<std::mutex> lk(log_mu_);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

void HttpServer::Routes() {
  // ConnectionGate gives each connection a thread of its own; the library's pool stays unused.
  http_->set_payload_max_length(opt_.max_body_bytes);
  http_->set_tcp_nodelay(true);  // stream chunks are small; Nagle would hold them back
  http_->set_keep_alive_max_count(1000);

  http_->set_keep_alive_timeout(std::max<time_t>(1, std::chrono::duration_cast<std::chrono::seconds>(opt_.gate.request_timeout).count()));
  http_->set_logger([this](const httplib::Request& q, const httplib::Response& r) { Log(q, r); });

  Post("/v1/completions", "completions", [this](const httplib::Request& q, httplib::Response& r) { HandleCompletion(q, r, false); });
  Post("/v1/chat/completions", "chat", [this](const httplib::Request& q, httplib::Response& r) { HandleCompletion(q, r, true); });
  Post("/tokenize", "tokenize", [this](const httplib::Request& q, httplib::Response& r) { HandleTokenize(q, r); });
  Post("/detokenize", "detokenize", [this](const httplib::Request& q, httplib::Response& r) { HandleDetokenize(q, r); });
  Get("/v1/models", "models", true, [this](const httplib::Request& q, httplib::Response& r) { HandleModels(q, r); });
  Get(R"(/v1/models/(.+))", "models", true, [this](const httplib::Request& q, httplib::Response& r) { HandleModels(q, r); });
  Get("/health", "health", false, [this](const httplib::Request&, httplib::Response& r) {
    r.status = draining_ ? 503 : 200;
    r.set_content(json{{"status", draining_ ? "draining" : "ok"}}.dump(), "application/json");
  });
  Get("/metrics", "metrics", false, [this](const httplib::Request&, httplib::Response& r) {
    r.set_content(metrics_.Render(scheduler_->stats()), "text/plain; version=0.0.4");
  });
  // cpp-httplib calls this for every status >= 400, our own replies included: fill only empty bodies.
  http_->set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request&, httplib::Response& r) {
    if (!r.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (tl_request.id.empty()) Arrived(r);  // refused before any handler ran (404, 413, ...)
    ApiError e{r.status, "HTTP " + std::to_string(r.status), ""};
    if (r.status == 413) e = {400, "the request body exceeds " + std::to_string(opt_.max_body_bytes) + " bytes", ""};
    if (r.status == 404) e = {404, "no such endpoint", ""};
    r.status = e.status;
    r.set_content(ResponseBuilder::Dump(e.ToJson()), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& r, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    r.status = 500;
    r.set_content(ResponseBuilder::Dump(ApiError{500, what, "", "server_error"}.ToJson()), "application/json");
  });
}

}  // namespace atp
