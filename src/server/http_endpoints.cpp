// HttpServer's route wrappers (API key, request bodies), the model names, /v1/models, /tokenize,
// /detokenize, and the submission of a request's choices. The rest of the server: http_server.cpp.
#include <httplib.h>
#include <strings.h>

#include <algorithm>

#include "server/api_response.h"
#include "server/http_server.h"
#include "server/session.h"

namespace atp {

using json = nlohmann::ordered_json;

namespace {
// Equal strings, in a time that depends on `secret`'s length alone, not on where `given` differs.
bool SameSecret(const std::string& given, const std::string& secret) {
  unsigned diff = given.size() != secret.size();
  for (size_t i = 0; i < secret.size(); ++i) diff |= unsigned(uint8_t(i < given.size() ? given[i] : 0) ^ uint8_t(secret[i]));
  return diff == 0;
}
}  // namespace

void HttpServer::Get(const std::string& pattern, const std::string& endpoint, bool guarded, Handler h) {
  http_->Get(pattern, [this, endpoint, guarded, h](const httplib::Request& req, httplib::Response& res) {
    Arrived(res);
    if (guarded && !Authorized(req, res, endpoint)) return;
    h(req, res);
  });
}

void HttpServer::Post(const std::string& pattern, const std::string& endpoint, Handler h) {
  http_->Post(pattern, [this, endpoint, h](const httplib::Request& req, httplib::Response& res,
                                           const httplib::ContentReader& reader) {
    httplib::Request full = req;
    // Read first, even when the key is wrong: an unread body would be taken for the connection's next request.
    const auto body_error = ReadBody(req, res, reader, &full.body);
    Arrived(res);  // the body too: a slow body is bound by the gate's deadline like slow headers
    if (!Authorized(req, res, endpoint)) return;
    if (body_error) return Reply(res, endpoint, *body_error);
    h(full, res);
  });
}

bool HttpServer::Authorized(const httplib::Request& req, httplib::Response& res, const std::string& endpoint) {
  if (opt_.api_key.empty()) return true;
  const std::string auth = req.get_header_value("Authorization");
  // RFC 7235: the scheme is case-insensitive.
  const bool bearer = auth.size() > 7 && strncasecmp(auth.c_str(), "Bearer ", 7) == 0;
  if (bearer && SameSecret(auth.substr(7), opt_.api_key)) return true;
  res.set_header("WWW-Authenticate", "Bearer");
  Reply(res, endpoint,
        {401,
         bearer ? "Incorrect API key provided."
                : "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                  "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
         "", "invalid_request_error", "invalid_api_key"});
  return false;
}

std::optional<ApiError> HttpServer::ReadBody(const httplib::Request& req, httplib::Response& res,
                                             const httplib::ContentReader& reader, std::string* body) const {
  // cpp-httplib would read the body by its Content-Type: form-urlencoded bodies over 8 KiB refused as
  // 413, multipart bodies parsed into parts, chunked bodies without any limit. Here every body is
  // bytes under one limit.
  const size_t limit = opt_.max_body_bytes;
  size_t seen = 0;
  const auto take = [&](const char* data, size_t n) {
    seen += n;
    if (seen <= limit) body->append(data, n);
    // Past the limit nothing is kept, but reading goes on for a while so that a client which sends the
    // whole body before it reads gets the answer.
    return seen <= 2 * limit;
  };
  const bool multipart = req.is_multipart_form_data();
  const bool ok = multipart ? reader([](const httplib::MultipartFormData&) { return true; }, take) : reader(take);
  const std::string too_large = "the request body exceeds " + std::to_string(limit) + " bytes";
  // 413: cpp-httplib saw a Content-Length over the limit and skipped the body.
  if (res.status == 413 || seen > limit) return ApiError{400, too_large, ""};
  if (res.status == 415) return ApiError{400, "the request body's Content-Encoding is not supported", ""};
  if (!ok)
    return ApiError{400, "the request body could not be read (malformed chunked or multipart encoding, or the connection closed early)", ""};
  if (multipart) return ApiError{400, "the request body must be JSON (Content-Type: application/json), not multipart/form-data", ""};
  return std::nullopt;
}

std::optional<ApiError> HttpServer::CheckModel(const std::string& model) const {
  // A request without a model is served (llama.cpp does so; OpenAI requires the field): there is only one.
  if (model.empty() || model == opt_.model_name) return std::nullopt;
  for (const std::string& alias : opt_.model_aliases)
    if (model == alias) return std::nullopt;
  std::string names = opt_.model_name;
  for (const std::string& alias : opt_.model_aliases) names += ", " + alias;
  // OpenAI's text, status and code, then what this server does serve.
  return ApiError{404, "The model `" + model + "` does not exist or you do not have access to it. This server serves: " + names + ".",
                  "", "invalid_request_error", "model_not_found"};
}

void HttpServer::HandleModels(const httplib::Request& req, httplib::Response& res) {
  const auto card = [this](const std::string& id) {
    return json{{"id", id}, {"object", "model"}, {"created", 0}, {"owned_by", "atp"},
                {"max_model_len", scheduler_->options().context}, {"vocab_size", model_.config().vocab_size}};
  };
  if (req.matches.size() > 1) {  // /v1/models/{id}
    const std::string id = req.matches[1];
    if (auto err = CheckModel(id)) return Reply(res, "models", *err);
    return res.set_content(card(id).dump(), "application/json");
  }
  json data = json::array({card(opt_.model_name)});
  for (const std::string& alias : opt_.model_aliases) data.push_back(card(alias));
  res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
}

void HttpServer::HandleTokenize(const httplib::Request& req, httplib::Response& res) {
  TokenizeRequest t;
  if (auto err = ParseTokenizeRequest(req.body, &t)) return Reply(res, "tokenize", *err);
  if (auto err = CheckModel(t.model)) return Reply(res, "tokenize", *err);
  const std::vector<int32_t> ids = tok_.Encode(t.text, t.add_special);
  // llama.cpp's {"tokens"} and vLLM's {"count", "max_model_len"} together.
  const json body = {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", scheduler_->options().context}};
  metrics_.CountRequest("tokenize", 200);
  res.set_content(ResponseBuilder::Dump(body), "application/json");
}

void HttpServer::HandleDetokenize(const httplib::Request& req, httplib::Response& res) {
  DetokenizeRequest d;
  if (auto err = ParseDetokenizeRequest(req.body, &d)) return Reply(res, "detokenize", *err);
  if (auto err = CheckModel(d.model)) return Reply(res, "detokenize", *err);
  const int32_t vocab = std::min<int32_t>(tok_.vocab_size(), model_.config().vocab_size);
  for (int32_t id : d.tokens)
    if (id >= vocab)
      return Reply(res, "detokenize",
                   {400, "token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab), "tokens"});
  const std::string text = tok_.Decode(d.tokens);
  // llama.cpp names the text "content", vLLM "prompt".
  metrics_.CountRequest("detokenize", 200);
  res.set_content(ResponseBuilder::Dump(json{{"content", text}, {"prompt", text}}), "application/json");
}

Result<std::vector<uint64_t>> HttpServer::SubmitChoices(const ApiRequest& a, const SeqRequest& sr,
                                                        const std::shared_ptr<Session>& session) {
  std::vector<uint64_t> seqs;
  for (int i = 0; i < a.n; ++i) {
    SeqRequest r = sr;
    // Choices differ, and a seeded request repeats all of them.
    r.sampling.seed = sr.sampling.seed + uint64_t(i);
    r.on_token = [session, i](const TokenEvent& ev) { return session->OnToken(i, ev); };
    r.on_finish = [session, i](const std::string& reason, const Status& error) { session->OnFinish(i, reason, error); };
    auto id = scheduler_->Submit(std::move(r));
    if (!id.ok()) {
      Cancel(seqs);
      return id.status();
    }
    seqs.push_back(*id);
  }
  return seqs;
}

void HttpServer::Cancel(const std::vector<uint64_t>& seqs) {
  for (uint64_t seq : seqs) scheduler_->Cancel(seq);
}

}  // namespace atp
