// The access log of `atp serve`: one line per request on stderr, written once its response is (for a
// stream, after its last byte), as text for people or as one JSON object per line for log pipelines.
#pragma once
#include <string>

namespace atp {

enum class LogFormat { kText, kJson, kOff };

struct RequestRecord {
  std::string id;              // also sent as the X-Request-Id response header
  std::string method, path, client;
  int status = 0;
  int prompt_tokens = -1;      // -1: not a completion request (or refused before tokenization)
  int completion_tokens = -1;
  double ttft_s = -1;          // seconds from the request's arrival to its first token; -1: none
  double total_s = 0;          // seconds from arrival to the response's last byte
};

// "text": `atp serve: req-7 POST /v1/completions 200 client=127.0.0.1 prompt=12 completion=16 ttft=0.021s total=0.180s`
// "json": {"id":"req-7","method":"POST",...}. Unknown fields are omitted in text and null in JSON.
std::string FormatLogLine(const RequestRecord& r, LogFormat f);

}  // namespace atp
