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
      prompt_tokens_(prompt_tokens),
      choices_(size_t(req.n)) {}

std::string ResponseBuilder::Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json ResponseBuilder::Envelope(const char* object) const {
  return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}};
}

json ResponseBuilder::Usage() const {
  return {{"prompt_tokens", prompt_tokens_},
          {"completion_tokens", completion_tokens_},
          {"total_tokens", prompt_tokens_ + completion_tokens_}};
}

json ResponseBuilder::Logprobs(const std::vector<const Session::Piece*>& pieces, ChoiceState& c) const {
  const bool any = std::any_of(pieces.begin(), pieces.end(), [](const Session::Piece* p) { return !p->tokens.empty(); });
  if (logprobs_ < 0 || !any) return nullptr;
  const auto text_of = [&](int32_t id) { return tok_.Decode(std::span<const int32_t>(&id, 1)); };
  const auto bytes_of = [](const std::string& s) {
    json b = json::array();
    for (unsigned char ch : s) b.push_back(int(ch));
    return b;
  };
  json out = chat_ ? json{{"content", json::array()}}
                   : json{{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                          {"text_offset", json::array()}};
  for (const Session::Piece* p : pieces) {
    for (const TokenEvent& token : p->tokens) {
      const std::string t = text_of(token.id);
      if (chat_) {
        json top = json::array();
        for (auto& [id, lp] : token.top) {
          const std::string s = text_of(id);
          top.push_back({{"token", s}, {"logprob", lp}, {"bytes", bytes_of(s)}});
        }
        out["content"].push_back({{"token", t}, {"logprob", token.logprob}, {"bytes", bytes_of(t)}, {"top_logprobs", top}});
      } else {
        json top = json::object();
        for (auto& [id, lp] : token.top) top[text_of(id)] = lp;
        out["tokens"].push_back(t);
        out["token_logprobs"].push_back(token.logprob);
        out["top_logprobs"].push_back(logprobs_ > 0 ? top : json());
        out["text_offset"].push_back(c.text_offset);
        c.text_offset += t.size();
      }
    }
  }
  return out;
}

json ResponseBuilder::Delta(int index, const std::string& text, json logprobs, const json& finish_reason, bool token,
                            ChoiceState& c) const {
  json out = {{"index", index}};
  if (chat_) {
    json delta = json::object();
    if (!c.role_sent) delta["role"] = "assistant";
    if (token || !text.empty() || !c.role_sent) delta["content"] = text;
    c.role_sent = true;
    out["delta"] = delta;
  } else {
    out["text"] = text;
  }
  out["logprobs"] = std::move(logprobs);
  out["finish_reason"] = finish_reason;
  return out;
}

std::string ResponseBuilder::Event(json choice) const {
  json chunk = Envelope(chat_ ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = json::array({std::move(choice)});
  return "data: " + Dump(chunk) + "\n\n";
}

void ResponseBuilder::Add(const std::vector<Session::Piece>& pieces) {
  for (const Session::Piece& p : pieces) {
    ChoiceState& c = choices_[size_t(p.choice)];
    c.text += p.text;
    completion_tokens_ += size_t(p.generated);
    if (p.last) c.finish_reason = p.finish_reason;
    json lp = Logprobs({&p}, c);
    if (lp.is_null()) continue;
    if (c.logprobs.is_null()) c.logprobs = std::move(lp);
    else
      for (auto& [key, list] : lp.items())
        for (auto& x : list) c.logprobs[key].push_back(x);
  }
}

json ResponseBuilder::Body() const {
  json body = Envelope(chat_ ? "chat.completion" : "text_completion");
  body["choices"] = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const ChoiceState& c = choices_[i];
    json choice = {{"index", i}};
    if (chat_) choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else choice["text"] = c.text;
    choice["logprobs"] = c.logprobs;
    choice["finish_reason"] = c.finish_reason;
    body["choices"].push_back(std::move(choice));
  }
  body["usage"] = Usage();
  return body;
}

std::string ResponseBuilder::Chunk(const std::vector<Session::Piece>& pieces) {
  std::string out;
  for (const Session::Piece& p : pieces) {
    ChoiceState& c = choices_[size_t(p.choice)];
    completion_tokens_ += size_t(p.generated);
    json lp = Logprobs({&p}, c);
    // A choice that was cancelled or failed gets no finish event: the request's error follows instead.
    const bool ends = p.last && (p.finish_reason == "stop" || p.finish_reason == "length");
    // Each generated token gets its event, even when its text is held back (as vLLM streams), so a
    // client sees every token arrive; a chat stream opens each choice with its role, even before any
    // text; the last piece's event carries what was still held back and the finish reason.
    if (p.generated > 0 || ends || !p.text.empty() || !lp.is_null() || (chat_ && !c.role_sent))
      out += Event(Delta(p.choice, p.text, std::move(lp), ends ? json(p.finish_reason) : json(), p.generated > 0, c));
  }
  return out;
}

std::string ResponseBuilder::Final() const {
  std::string out;
  if (include_usage_) {
    json usage = Envelope(chat_ ? "chat.completion.chunk" : "text_completion");
    usage["choices"] = json::array();
    usage["usage"] = Usage();
    out += "data: " + Dump(usage) + "\n\n";
  }
  return out + "data: [DONE]\n\n";
}

}  // namespace atp
