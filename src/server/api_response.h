// OpenAI response bodies for the two completion endpoints: the whole response (text_completion,
// chat.completion) or server-sent-event chunks as tokens arrive (chat.completion.chunk), with usage
// and logprobs in OpenAI's layouts. It formats only; it never waits or writes to a socket.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/api_request.h"
#include "server/session.h"
#include "tokenizer/tokenizer.h"

namespace atp {

class ResponseBuilder {
 public:
  ResponseBuilder(const ApiRequest& req, const Tokenizer& tok, std::string model, size_t prompt_tokens);

  // Whole response: Add() pieces as they come, then Body() once finished.
  void Add(const std::vector<Session::Piece>& pieces);
  nlohmann::ordered_json Body(const std::string& finish_reason) const;

  // Streaming: "data: {...}\n\n" for these pieces, or "" when they carry nothing to send.
  std::string Chunk(const std::vector<Session::Piece>& pieces);
  // The chunk with the finish reason, the usage chunk if asked for, and "data: [DONE]\n\n".
  std::string Final(const std::string& finish_reason);

  // JSON text as sent: invalid UTF-8 (a token cut inside a character) becomes U+FFFD.
  static std::string Dump(const nlohmann::ordered_json& j);

 private:
  nlohmann::ordered_json Envelope(const char* object) const;
  nlohmann::ordered_json Usage() const;
  // Logprobs of the tokens among `pieces`, in the endpoint's layout; null when not asked for.
  nlohmann::ordered_json Logprobs(const std::vector<Session::Piece>& pieces);
  nlohmann::ordered_json Choice(const std::string& text, nlohmann::ordered_json logprobs, const nlohmann::ordered_json& finish_reason);

  const Tokenizer& tok_;
  const bool chat_;
  const int logprobs_;
  const bool include_usage_;
  const std::string id_, model_;
  const int64_t created_;
  const size_t prompt_tokens_;
  size_t completion_tokens_ = 0;
  size_t text_offset_ = 0;    // completions logprobs: where the next token's text starts
  bool role_sent_ = false;    // chat streaming: the first chunk carries the role
  std::string text_;          // whole response: the text so far
  nlohmann::ordered_json logprobs_acc_;  // whole response: logprobs so far
};

}  // namespace atp
