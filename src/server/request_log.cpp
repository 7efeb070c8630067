#include "server/request_log.h"

#include <cstdio>

#include <nlohmann/json.hpp>

namespace atp {

std::string FormatLogLine(const RequestRecord& r, LogFormat f) {
  if (f == LogFormat::kJson) {
    nlohmann::ordered_json j = {{"id", r.id}, {"method", r.method}, {"path", r.path}, {"status", r.status},
                                {"client", r.client}};
    const auto opt = [&](const char* k, double v) { j[k] = v < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(v); };
    j["prompt_tokens"] = r.prompt_tokens < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(r.prompt_tokens);
    j["completion_tokens"] =
        r.completion_tokens < 0 ? nlohmann::ordered_json() : nlohmann::ordered_json(r.completion_tokens);
    opt("ttft_s", r.ttft_s);
    j["total_s"] = r.total_s;
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  }
  char buf[64];
  std::string s = "atp serve: " + r.id + " " + r.method + " " + r.path + " " + std::to_string(r.status) +
                  " client=" + r.client;
  if (r.prompt_tokens >= 0) s += " prompt=" + std::to_string(r.prompt_tokens);
  if (r.completion_tokens >= 0) s += " completion=" + std::to_string(r.completion_tokens);
  if (r.ttft_s >= 0) std::snprintf(buf, sizeof buf, " ttft=%.3fs", r.ttft_s), s += buf;
  std::snprintf(buf, sizeof buf, " total=%.3fs", r.total_s);
  return s + buf;
}

}  // namespace atp
