#include "server/api_response.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>

namespace atp {

namespace {
using json = nlohmann::ordered_json;

std::string NewId(bool chat) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device()();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s-%08llx%08llx", chat ? "chatcmpl" : "cmpl",
                static_cast<unsigned long long>(salt & 0xffffffff), static_cast<unsigned long long>(++counter));
  return buf;
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

ResponseBuilder::ResponseBuilder(const ApiRequest& req, const Tokenizer& tok, std::string model, size_t prompt_tokens)
    : tok_(tok),
      chat_(req.chat),
      logprobs_(req.logprobs),
      include_usage_(req.include_usage),
      id_(NewId(req.chat)),
      model_(std::move(model)),
      created_(UnixNow()),
      prompt_tokens_(prompt_tokens) {}

std::string ResponseBuilder::Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json ResponseBuilder::Envelope(const char* object) const {
  return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}};
}

json ResponseBuilder::Usage() const {
  return {{"prompt_tokens", prompt_tokens_},
          {"completion_tokens", completion_tokens_},
          {"total_tokens", prompt_tokens_ + completion_tokens_}};
}

json ResponseBuilder::Logprobs(const std::vector<Session::Piece>& pieces) {
  const bool any = std::any_of(pieces.begin(), pieces.end(), [](const Session::Piece& p) { return p.has_token; });
  if (logprobs_ < 0 || !any) return nullptr;
  const auto text_of = [&](int32_t id) { return tok_.Decode(std::span<const int32_t>(&id, 1)); };
  const auto bytes_of = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(int(c));
    return b;
  };
  json out = chat_ ? json{{"content", json::array()}}
                   : json{{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                          {"text_offset", json::array()}};
  for (auto& p : pieces) {
    if (!p.has_token) continue;
    const std::string t = text_of(p.token.id);
    if (chat_) {
      json top = json::array();
      for (auto& [id, lp] : p.token.top) {
        const std::string s = text_of(id);
        top.push_back({{"token", s}, {"logprob", lp}, {"bytes", bytes_of(s)}});
      }
      out["content"].push_back({{"token", t}, {"logprob", p.token.logprob}, {"bytes", bytes_of(t)}, {"top_logprobs", top}});
    } else {
      json top = json::object();
      for (auto& [id, lp] : p.token.top) top[text_of(id)] = lp;
      out["tokens"].push_back(t);
      out["token_logprobs"].push_back(p.token.logprob);
      out["top_logprobs"].push_back(logprobs_ > 0 ? top : json());
      out["text_offset"].push_back(text_offset_);
      text_offset_ += t.size();
    }
  }
  return out;
}

json ResponseBuilder::Choice(const std::string& text, json logprobs, const json& finish_reason) {
  json c = {{"index", 0}};
  if (chat_) {
    json delta = json::object();
    if (!role_sent_) delta["role"] = "assistant";
    if (!text.empty() || !role_sent_) delta["content"] = text;
    role_sent_ = true;
    c["delta"] = delta;
  } else {
    c["text"] = text;
  }
  c["logprobs"] = std::move(logprobs);
  c["finish_reason"] = finish_reason;
  return c;
}

void ResponseBuilder::Add(const std::vector<Session::Piece>& pieces) {
  for (auto& p : pieces) {
    text_ += p.text;
    completion_tokens_ += p.has_token ? 1 : 0;
  }
  json lp = Logprobs(pieces);
  if (lp.is_null()) return;
  if (logprobs_acc_.is_null()) {
    logprobs_acc_ = std::move(lp);
    return;
  }
  for (auto& [key, list] : lp.items())
    for (auto& x : list) logprobs_acc_[key].push_back(x);
}

json ResponseBuilder::Body(const std::string& finish_reason) const {
  json body = Envelope(chat_ ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}};
  if (chat_) choice["message"] = {{"role", "assistant"}, {"content", text_}};
  else choice["text"] = text_;
  choice["logprobs"] = logprobs_acc_;
  choice["finish_reason"] = finish_reason;
  body["choices"] = json::array({choice});
  body["usage"] = Usage();
  return body;
}

std::string ResponseBuilder::Chunk(const std::vector<Session::Piece>& pieces) {
  std::string text;
  size_t tokens = 0;
  for (auto& p : pieces) {
    text += p.text;
    tokens += p.has_token ? 1 : 0;
  }
  completion_tokens_ += tokens;
  json lp = Logprobs(pieces);
  // A token whose text is held back still sends its logprobs; with neither, there is nothing to send.
  const bool role_pending = chat_ && !role_sent_;
  if (text.empty() && lp.is_null() && !role_pending) return "";
  json chunk = Envelope(chat_ ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = json::array({Choice(text, std::move(lp), nullptr)});
  return "data: " + Dump(chunk) + "\n\n";
}

std::string ResponseBuilder::Final(const std::string& finish_reason) {
  json chunk = Envelope(chat_ ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = json::array({Choice("", nullptr, finish_reason)});
  std::string out = "data: " + Dump(chunk) + "\n\n";
  if (include_usage_) {
    json usage = Envelope(chat_ ? "chat.completion.chunk" : "text_completion");
    usage["choices"] = json::array();
    usage["usage"] = Usage();
    out += "data: " + Dump(usage) + "\n\n";
  }
  return out + "data: [DONE]\n\n";
}

}  // namespace atp
