// The request bodies of POST /v1/completions, /v1/chat/completions, /tokenize and /detokenize, parsed
// and checked: the OpenAI fields this server honours, their types and ranges. Unknown fields are
// ignored; a known field of the wrong type, a value out of range or an option it cannot honour (echo,
// logit_bias, a response_format other than text) is an error.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sampling/params.h"

namespace atp {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;  // the request field at fault; "" renders as null
  std::string type = "invalid_request_error";
  std::string code = "";  // OpenAI's machine-readable code ("invalid_api_key", "model_not_found"); "" renders as null
  nlohmann::ordered_json ToJson() const;
};

// The most choices (`n`) one request may ask for: each is a sequence of its own in the scheduler.
constexpr int kMaxChoices = 16;

struct ApiRequest {
  bool chat = false;
  std::string model;                   // "" when absent (accepted: the server has one model)
  std::string prompt;                  // completions: prompt text ("" when given as token ids)
  std::vector<int32_t> prompt_ids;     // completions: a prompt given as token ids
  nlohmann::ordered_json messages;     // chat: [{"role", "content" (a string)}, ...] plus other fields;
                                       // roles system, user, assistant, tool ("developer" becomes "system")
  SamplingParams sampling;             // OpenAI defaults: temperature 1, top_p 1; top_k, min_p off
  bool seeded = false;                 // without a seed each request draws its own
  int n = 1;                           // choices, 1..kMaxChoices; choice i samples with seed + i
  std::optional<int> max_tokens;
  std::vector<std::string> stop;
  bool ignore_eos = false;             // extension (vLLM, llama.cpp): EOS does not end the choices
  int logprobs = -1;                   // -1: none; else the number of alternatives per token
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
  std::optional<std::string> kv;       // extension: KV policy string for this request
};

// Parses a JSON body; on failure returns the error to send (the request is then not usable).
std::optional<ApiError> ParseApiRequest(const std::string& body, bool chat, ApiRequest* out);

// POST /tokenize: llama.cpp's {"content": text, "add_special": bool (default false)} or vLLM's
// {"prompt": text, "add_special_tokens": bool (default true)}; an optional "model".
struct TokenizeRequest {
  std::string model;
  std::string text;
  bool add_special = false;
};
std::optional<ApiError> ParseTokenizeRequest(const std::string& body, TokenizeRequest* out);

// POST /detokenize: {"tokens": [non-negative ids]}; an optional "model". The ids are checked against
// the vocabulary by the caller, which knows it.
struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;
};
std::optional<ApiError> ParseDetokenizeRequest(const std::string& body, DetokenizeRequest* out);

}  // namespace atp
