// OpenAI response bodies for the two completion endpoints: the whole response (text_completion,
// chat.completion) or server-sent-event chunks as tokens arrive (chat.completion.chunk), with one
// choice per sequence of the request (`n`), usage and logprobs in OpenAI's layouts. It formats only;
// it never waits or writes to a socket.
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
  // req.n choices; `model` is the id responses report.
  ResponseBuilder(const ApiRequest& req, const Tokenizer& tok, std::string model, size_t prompt_tokens);

  // Whole response: Add() pieces as they come, then Body() once every choice has finished.
  void Add(const std::vector<Session::Piece>& pieces);
  nlohmann::ordered_json Body() const;

  // Streaming: "data: {...}\n\n" events for these pieces: one per generated token, its text "" (and
  // no logprobs) while that text is held back (an incomplete UTF-8 character, a possible start of a
  // stop string); then, for each choice that ended, one with its finish reason and the text released
  // at the end. "" when there is nothing to send.
  std::string Chunk(const std::vector<Session::Piece>& pieces);
  // Once every choice has finished: the usage chunk if asked for, and "data: [DONE]\n\n".
  std::string Final() const;

  // JSON text as sent: invalid UTF-8 (a token cut inside a character) becomes U+FFFD.
  static std::string Dump(const nlohmann::ordered_json& j);

 private:
  struct ChoiceState {
    std::string text;                // whole response: the text so far
    nlohmann::ordered_json logprobs;  // whole response: logprobs so far
    size_t text_offset = 0;          // completions logprobs: where the next token's text starts
    bool role_sent = false;          // chat streaming: the first chunk carries the role
    std::string finish_reason;
  };

  nlohmann::ordered_json Envelope(const char* object) const;
  nlohmann::ordered_json Usage() const;
  // Logprobs of the tokens of `pieces` (all of one choice), in the endpoint's layout; null when not
  // asked for or when they hold no token.
  nlohmann::ordered_json Logprobs(const std::vector<const Session::Piece*>& pieces, ChoiceState& c) const;
  // `token`: the event of a generated token, which has a content field (chat) even when it is "".
  nlohmann::ordered_json Delta(int index, const std::string& text, nlohmann::ordered_json logprobs,
                               const nlohmann::ordered_json& finish_reason, bool token, ChoiceState& c) const;
  std::string Event(nlohmann::ordered_json choice) const;

  const Tokenizer& tok_;
  const bool chat_;
  const int logprobs_;
  const bool include_usage_;
  const std::string id_, model_;
  const int64_t created_;
  const size_t prompt_tokens_;
  size_t completion_tokens_ = 0;  // of all choices
  std::vector<ChoiceState> choices_;
};

}  // namespace atp
