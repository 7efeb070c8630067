#include "server/api_request.h"

#include <algorithm>
#include <climits>
#include <cmath>

namespace atp {

nlohmann::ordered_json ApiError::ToJson() const {
  return {{"error",
           {{"message", message}, {"type", type}, {"param", param.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(param)},
            {"code", code.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(code)}}}};
}

namespace {

using OJson = nlohmann::ordered_json;

// Reads optional fields of the request object (JSON null counts as absent) and keeps the first
// type or range error, so that checks read as a flat list.
class Fields {
 public:
  explicit Fields(const OJson& o) : o_(o) {}

  const OJson* Get(const std::string& key) const {
    auto it = o_.find(key);
    return it == o_.end() || it->is_null() ? nullptr : &*it;
  }
  void Fail(const std::string& param, const std::string& message) {
    if (!error) error = ApiError{400, message, param};
  }

  std::optional<double> Number(const std::string& key, double lo, double hi, bool lo_open = false) {
    const OJson* v = Get(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) return Fail(key, "'" + key + "' must be a number"), std::nullopt;
    const double x = v->get<double>();
    if (!(lo_open ? x > lo : x >= lo) || !(x <= hi)) {
      Fail(key, "'" + key + "' must be in " + std::string(lo_open ? "(" : "[") + Num(lo) + ", " + Num(hi) + "], got " + Num(x));
      return std::nullopt;
    }
    return x;
  }
  std::optional<int64_t> Integer(const std::string& key, int64_t lo, int64_t hi) {
    const OJson* v = Get(key);
    if (!v) return std::nullopt;
    const bool integral = v->is_number_integer() || (v->is_number_float() && std::nearbyint(v->get<double>()) == v->get<double>() &&
                                                     std::fabs(v->get<double>()) < 9e18);
    if (!integral) return Fail(key, "'" + key + "' must be an integer"), std::nullopt;
    const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v->get<int64_t>();
    if (x < lo || x > hi) {
      Fail(key, "'" + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(x));
      return std::nullopt;
    }
    return x;
  }
  std::optional<bool> Bool(const std::string& key) {
    const OJson* v = Get(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) return Fail(key, "'" + key + "' must be a boolean"), std::nullopt;
    return v->get<bool>();
  }
  std::optional<std::string> String(const std::string& key) {
    const OJson* v = Get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) return Fail(key, "'" + key + "' must be a string"), std::nullopt;
    return v->get<std::string>();
  }
  // Present with the given JSON type, or absent; anything else is an error.
  const OJson* Typed(const std::string& key, bool (OJson::*is)() const noexcept, const char* type) {
    const OJson* v = Get(key);
    if (v && !(v->*is)()) {
      Fail(key, "'" + key + "' must be " + type);
      return nullptr;
    }
    return v;
  }

  std::optional<ApiError> error;

 private:
  static std::string Num(double x) {
    std::string s = std::to_string(x);
    while (s.size() > 1 && s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s;
  }
  const OJson& o_;
};

void ParsePrompt(Fields& f, ApiRequest* r) {
  const OJson* p = f.Get("prompt");
  if (!p) return f.Fail("prompt", "'prompt' is required");
  const OJson* one = p;
  if (p->is_array()) {
    // ["text"], [ids...] or [[ids...]]: one prompt; several would need several choices.
    if (p->empty()) return f.Fail("prompt", "'prompt' must not be empty");
    const bool ids = std::all_of(p->begin(), p->end(), [](const OJson& x) { return x.is_number_integer(); });
    if (!ids) {
      if (p->size() != 1) return f.Fail("prompt", "only one prompt per request is supported");
      one = &(*p)[0];
    }
  }
  if (one->is_string()) {
    r->prompt = one->get<std::string>();
    if (r->prompt.empty()) f.Fail("prompt", "'prompt' must not be empty");
    return;
  }
  if (!one->is_array() || one->empty())
    return f.Fail("prompt", "'prompt' must be a non-empty string, a list of token ids, or a list holding one of these");
  for (const OJson& x : *one) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
      return f.Fail("prompt", "'prompt' token ids must be non-negative integers");
    r->prompt_ids.push_back(int32_t(x.get<int64_t>()));
  }
}

// Content may be a string, null, or a list of {"type": "text", "text": ...} parts (joined).
void ParseMessages(Fields& f, ApiRequest* r) {
  const OJson* m = f.Get("messages");
  if (!m) return f.Fail("messages", "'messages' is required");
  if (!m->is_array() || m->empty()) return f.Fail("messages", "'messages' must be a non-empty list");
  r->messages = OJson::array();
  for (size_t i = 0; i < m->size(); ++i) {
    const std::string at = "messages[" + std::to_string(i) + "]";
    const OJson& msg = (*m)[i];
    if (!msg.is_object()) return f.Fail(at, at + " must be an object");
    if (!msg.contains("role") || !msg["role"].is_string() || msg["role"].get<std::string>().empty())
      return f.Fail(at + ".role", at + ".role must be a non-empty string");
    const std::string role = msg["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool" && role != "developer")
      return f.Fail(at + ".role", at + ".role '" + role + "' is not one of system, user, assistant, tool, developer");
    OJson out = msg;
    // OpenAI's newer name for system instructions; chat templates predate it and know only "system".
    if (role == "developer") out["role"] = "system";
    const OJson content = msg.value("content", OJson());
    if (content.is_null()) {
      out["content"] = "";
    } else if (content.is_array()) {
      std::string text;
      for (const OJson& part : content) {
        // value(key, OJson()): a "type" that is not a string compares unequal instead of throwing.
        if (!part.is_object() || part.value("type", OJson()) != "text" || !part.contains("text") || !part["text"].is_string())
          return f.Fail(at + ".content", at + ".content: only parts of type 'text' are supported");
        text += part["text"].get<std::string>();
      }
      out["content"] = text;
    } else if (!content.is_string()) {
      return f.Fail(at + ".content", at + ".content must be a string or a list of text parts");
    }
    r->messages.push_back(std::move(out));
  }
}

void ParseStop(Fields& f, ApiRequest* r) {
  const OJson* s = f.Get("stop");
  if (!s) return;
  std::vector<OJson> items = s->is_array() ? std::vector<OJson>(s->begin(), s->end()) : std::vector<OJson>{*s};
  if (items.size() > 16) return f.Fail("stop", "'stop' takes at most 16 strings");
  for (const OJson& x : items) {
    if (!x.is_string()) return f.Fail("stop", "'stop' must be a string or a list of strings");
    if (x.get<std::string>().empty()) return f.Fail("stop", "'stop' strings must not be empty");
    r->stop.push_back(x.get<std::string>());
  }
}

// Only {"type": "text"} (plain text, the default) can be honoured: no JSON mode, no schemas.
void ParseResponseFormat(Fields& f) {
  const OJson* rf = f.Typed("response_format", &OJson::is_object, "an object");
  if (rf && rf->value("type", OJson()) != "text")
    f.Fail("response_format", "'response_format' must be {\"type\": \"text\"}: JSON mode and schemas are not supported");
}

// The body as a JSON object, or the error to send.
std::optional<ApiError> ParseObject(const std::string& body, OJson* j) {
  // Copying a JSON value (messages, stop) or rendering it in a chat template recurses once per level:
  // a body of a few hundred KB of '[' would overflow a server thread's stack. Real requests nest a few levels.
  constexpr int kMaxDepth = 64;
  int depth = 0;
  const auto track = [&depth](int d, OJson::parse_event_t, OJson&) {
    depth = std::max(depth, d);
    return true;
  };
  *j = OJson::parse(body, track, false);
  if (j->is_discarded()) return ApiError{400, "the request body is not valid JSON", ""};
  if (depth > kMaxDepth)
    return ApiError{400, "the request body nests JSON deeper than " + std::to_string(kMaxDepth) + " levels", ""};
  if (!j->is_object()) return ApiError{400, "the request body must be a JSON object", ""};
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> ParseApiRequest(const std::string& body, bool chat, ApiRequest* out) {
  OJson j;
  if (auto err = ParseObject(body, &j)) return err;
  Fields f(j);
  ApiRequest r;
  r.chat = chat;
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 1.0f;
  r.sampling.top_k = 0;
  r.sampling.min_p = 0.0f;
  r.sampling.repetition_penalty = 1.0f;

  r.model = f.String("model").value_or("");
  if (chat) ParseMessages(f, &r);
  else ParsePrompt(f, &r);
  constexpr int64_t kMaxTokens = int64_t(1) << 30;  // the context check comes later, with the prompt
  r.max_tokens = f.Integer("max_tokens", 1, kMaxTokens);
  if (chat)
    if (auto m = f.Integer("max_completion_tokens", 1, kMaxTokens)) r.max_tokens = int(*m);
  if (auto t = f.Number("temperature", 0, 2)) r.sampling.temperature = float(*t);
  if (auto p = f.Number("top_p", 0, 1, /*lo_open=*/true)) r.sampling.top_p = float(*p);
  if (auto k = f.Integer("top_k", -1, INT32_MAX)) r.sampling.top_k = int(std::max<int64_t>(*k, 0));  // -1: off (vLLM)
  if (auto p = f.Number("min_p", 0, 1)) r.sampling.min_p = float(*p);
  if (auto p = f.Number("repetition_penalty", 0, 10, /*lo_open=*/true)) r.sampling.repetition_penalty = float(*p);
  for (const char* pen : {"frequency_penalty", "presence_penalty"})
    if (auto p = f.Number(pen, -2, 2); p && *p != 0)
      f.Fail(pen, std::string("'") + pen + "' is not supported (use repetition_penalty)");
  if (auto s = f.Integer("seed", INT64_MIN, INT64_MAX)) {
    r.sampling.seed = uint64_t(*s);
    r.seeded = true;
  }
  ParseStop(f, &r);
  r.ignore_eos = f.Bool("ignore_eos").value_or(false);
  if (chat) {
    const bool lp = f.Bool("logprobs").value_or(false);
    const auto top = f.Integer("top_logprobs", 0, 20);
    if (top && !lp) f.Fail("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    if (lp) r.logprobs = int(top.value_or(0));
  } else if (auto lp = f.Integer("logprobs", 0, 5)) {
    r.logprobs = int(*lp);
  }
  if (auto n = f.Integer("n", 1, kMaxChoices)) r.n = int(*n);
  if (!chat)
    if (auto b = f.Integer("best_of", 1, 128); b && *b != 1) f.Fail("best_of", "'best_of' must be 1");
  if (!chat && f.Bool("echo").value_or(false)) f.Fail("echo", "'echo' is not supported");
  if (!chat && !f.String("suffix").value_or("").empty()) f.Fail("suffix", "'suffix' is not supported");
  if (const OJson* b = f.Typed("logit_bias", &OJson::is_object, "an object"); b && !b->empty())
    f.Fail("logit_bias", "'logit_bias' is not supported");
  if (const OJson* t = f.Typed("tools", &OJson::is_array, "a list"); t && !t->empty())
    f.Fail("tools", "'tools' is not supported");
  ParseResponseFormat(f);
  r.stream = f.Bool("stream").value_or(false);
  if (const OJson* so = f.Typed("stream_options", &OJson::is_object, "an object")) {
    Fields sf(*so);
    r.include_usage = sf.Bool("include_usage").value_or(false);
    if (sf.error) f.Fail("stream_options.include_usage", sf.error->message);
  }
  f.String("user");
  if (auto kv = f.String("kv")) {
    if (kv->empty()) f.Fail("kv", "'kv' must not be empty");
    r.kv = *kv;
  }
  if (f.error) return f.error;
  *out = std::move(r);
  return std::nullopt;
}

std::optional<ApiError> ParseTokenizeRequest(const std::string& body, TokenizeRequest* out) {
  OJson j;
  if (auto err = ParseObject(body, &j)) return err;
  Fields f(j);
  TokenizeRequest r;
  r.model = f.String("model").value_or("");
  if (auto content = f.String("content")) {
    r.text = *content;
    r.add_special = f.Bool("add_special").value_or(false);
  } else if (auto prompt = f.String("prompt")) {
    r.text = *prompt;
    r.add_special = f.Bool("add_special_tokens").value_or(true);
  } else if (!f.error) {
    f.Fail("content", "'content' (or 'prompt') is required: the text to tokenize");
  }
  if (f.error) return f.error;
  *out = std::move(r);
  return std::nullopt;
}

std::optional<ApiError> ParseDetokenizeRequest(const std::string& body, DetokenizeRequest* out) {
  OJson j;
  if (auto err = ParseObject(body, &j)) return err;
  Fields f(j);
  DetokenizeRequest r;
  r.model = f.String("model").value_or("");
  const OJson* t = f.Get("tokens");
  if (!t) f.Fail("tokens", "'tokens' is required: a list of token ids");
  else if (!t->is_array()) f.Fail("tokens", "'tokens' must be a list of token ids");
  else
    for (const OJson& x : *t) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX) {
        f.Fail("tokens", "'tokens' must hold non-negative integer token ids");
        break;
      }
      r.tokens.push_back(int32_t(x.get<int64_t>()));
    }
  if (f.error) return f.error;
  *out = std::move(r);
  return std::nullopt;
}

}  // namespace atp
