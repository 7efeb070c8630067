// The HTTP API of `atp serve` on the reference model, in-process: endpoints and their OpenAI layouts
// (whole and streamed), stop strings, logprobs, metrics, and every validation case answering 400 with
// an OpenAI error object while the server keeps serving.
#include <gtest/gtest.h>

#include "server_fixture.h"

namespace atp::server_test {
namespace {

TEST(ServerApi, HealthModelsAndNotFound) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  auto h = Http(s.port(), "GET", "/health");
  EXPECT_EQ(h->status(), 200);
  EXPECT_EQ(h->Json()["status"], "ok");
  auto m = Http(s.port(), "GET", "/v1/models");
  ASSERT_EQ(m->status(), 200);
  EXPECT_EQ(m->Json()["data"][0]["id"], "ref-5m");
  auto nf = Http(s.port(), "GET", "/v1/nothing");
  EXPECT_EQ(nf->status(), 404);
  EXPECT_TRUE(nf->Json()["error"].contains("message"));
}

TEST(ServerApi, CompletionWholeAndStreamedAgree) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const std::string req = R"({"model": "ref-5m", "prompt": "In the beginning", "max_tokens": 12, "temperature": 0)";
  auto whole = Http(s.port(), "POST", "/v1/completions", req + "}");
  ASSERT_EQ(whole->status(), 200) << whole->body();
  const json j = whole->Json();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "ref-5m");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  const size_t prompt_tokens = Ref().tok->Encode("In the beginning", true).size();
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_EQ(j["usage"]["total_tokens"], prompt_tokens + 12);

  auto streamed = Http(s.port(), "POST", "/v1/completions", req + R"(, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_EQ(streamed->status(), 200);
  const std::string body = streamed->body();
  EXPECT_NE(body.find("data: [DONE]\n\n"), std::string::npos);
  EXPECT_EQ(CompletionText(body, true), CompletionText(whole->body(), false));
  const auto events = SseEvents(body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 12);
}

TEST(ServerApi, ChatWholeAndStreamed) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const std::string req = R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hello"}]}], "max_tokens": 6, "temperature": 0)";
  auto whole = Http(s.port(), "POST", "/v1/chat/completions", req + "}");
  ASSERT_EQ(whole->status(), 200) << whole->body();
  const json j = whole->Json();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  // ref-5m has no template: the documented default (BOS, then ChatML turns) was applied.
  const std::string rendered = "<|begin_of_text|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(j["usage"]["prompt_tokens"], Ref().tok->Encode(rendered, false).size());

  auto streamed = Http(s.port(), "POST", "/v1/chat/completions", req + R"(, "stream": true})");
  ASSERT_EQ(streamed->status(), 200);
  const auto events = SseEvents(streamed->body());
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(CompletionText(streamed->body(), true), j["choices"][0]["message"]["content"]);
}

TEST(ServerApi, StopStringCutsTheText) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  auto free_run = Http(s.port(), "POST", "/v1/completions", R"({"prompt": "The king said", "max_tokens": 24, "temperature": 0})");
  const std::string text = CompletionText(free_run->body(), false);
  ASSERT_GE(text.size(), 12u);
  const std::string stop = text.substr(8, 3);  // appears in the text; it may also appear earlier
  const size_t cut = text.find(stop);
  for (bool stream : {false, true}) {
    json req = {{"prompt", "The king said"}, {"max_tokens", 24}, {"temperature", 0}, {"stop", {"@@never@@", stop}},
                {"stream", stream}};
    auto r = Http(s.port(), "POST", "/v1/completions", req.dump());
    ASSERT_EQ(r->status(), 200);
    EXPECT_EQ(CompletionText(r->body(), stream), text.substr(0, cut)) << "stop '" << stop << "'";
    const std::string reason = stream ? SseEvents(r->body()).back()["choices"][0]["finish_reason"]
                                      : r->Json()["choices"][0]["finish_reason"];
    EXPECT_EQ(reason, "stop");
  }
}

// Issue 17: a stream sends one event per generated token, as vLLM does, even while the token's text is
// held back (the tiny random model's greedy text has multi-byte characters, whose first bytes are tokens
// of their own): that event's text is "" (chat: "content": ""), and the text and logprobs follow with
// the token that completes the character. The text is the whole response's.
TEST(ServerApi, StreamSendsAnEventPerTokenWhileTextIsHeldBack) {
  TestServer s({}, nullptr, /*tiny=*/true);
  constexpr int kTokens = 40;
  for (const bool chat : {false, true}) {
    json req = {{"max_tokens", kTokens}, {"temperature", 0}};
    if (chat) req.update({{"messages", {{{"role", "user"}, {"content", "hello"}}}}, {"logprobs", true}});
    else req.update({{"prompt", "hello"}, {"logprobs", 0}});
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    auto whole = Http(s.port(), "POST", path, req.dump());
    ASSERT_EQ(whole->status(), 200) << whole->body();
    ASSERT_EQ(whole->Json()["choices"][0]["finish_reason"], "length") << "the greedy run met EOS: pick another prompt";
    req.update({{"stream", true}, {"stream_options", {{"include_usage", true}}}});
    auto streamed = Http(s.port(), "POST", path, req.dump());
    ASSERT_EQ(streamed->status(), 200) << streamed->body();
    int token_events = 0, held = 0, finish_events = 0;
    size_t logprob_tokens = 0;
    for (const json& e : SseEvents(streamed->body())) {
      if (e["choices"].empty()) continue;  // the usage event
      const json& c = e["choices"][0];
      if (!c["logprobs"].is_null()) logprob_tokens += chat ? c["logprobs"]["content"].size() : c["logprobs"]["tokens"].size();
      if (!c["finish_reason"].is_null()) {
        ++finish_events;
        continue;
      }
      ++token_events;
      if (chat) {
        ASSERT_TRUE(c["delta"].contains("content")) << e.dump();
      }
      held += (chat ? c["delta"]["content"] : c["text"]).get<std::string>().empty();
    }
    const std::string where = chat ? "chat" : "completions";
    EXPECT_EQ(token_events, kTokens) << where;
    EXPECT_EQ(finish_events, 1) << where;
    EXPECT_GT(held, 0) << where << ": no token's text was held back, so the case was not exercised";
    EXPECT_EQ(logprob_tokens, size_t(kTokens)) << where;
    EXPECT_EQ(CompletionText(streamed->body(), true), CompletionText(whole->body(), false)) << where;
    EXPECT_EQ(SseEvents(streamed->body()).back()["usage"]["completion_tokens"], kTokens) << where;
  }
}

// ignore_eos (vLLM's and llama.cpp's extension): EOS no longer ends a choice, max_tokens does. The tiny
// random model samples its EOS now and then at temperature 2: the first seed whose request ends on it
// early is asked again with ignore_eos, whole and streamed.
TEST(ServerApi, IgnoreEosRunsToMaxTokens) {
  TestServer s({}, nullptr, /*tiny=*/true);
  constexpr int kMax = 60;
  json req = {{"prompt", "hello"}, {"max_tokens", kMax}, {"temperature", 2}, {"logprobs", 0}};
  std::vector<std::string> stopped;  // the tokens before EOS
  bool found = false;
  for (int seed = 1; seed <= 100 && !found; ++seed) {
    req["seed"] = seed;
    auto r = Http(s.port(), "POST", "/v1/completions", req.dump());
    ASSERT_EQ(r->status(), 200) << r->body();
    const json c = r->Json()["choices"][0];
    found = c["finish_reason"] == "stop";
    if (found && !c["logprobs"].is_null()) stopped = c["logprobs"]["tokens"].get<std::vector<std::string>>();
  }
  ASSERT_TRUE(found) << "none of 100 seeds met EOS within " << kMax << " tokens";
  ASSERT_LT(stopped.size(), size_t(kMax));
  req["ignore_eos"] = true;
  for (const bool stream : {false, true}) {
    req["stream"] = stream;
    auto r = Http(s.port(), "POST", "/v1/completions", req.dump());
    ASSERT_EQ(r->status(), 200) << r->body();
    std::vector<std::string> tokens;
    std::string finish;
    for (const json& e : stream ? SseEvents(r->body()) : std::vector<json>{r->Json()}) {
      if (e["choices"].empty()) continue;
      const json& c = e["choices"][0];
      if (!c["logprobs"].is_null())
        for (const json& t : c["logprobs"]["tokens"]) tokens.push_back(t);
      if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
    }
    EXPECT_EQ(finish, "length") << (stream ? "streamed" : "whole");
    ASSERT_EQ(tokens.size(), size_t(kMax)) << (stream ? "streamed" : "whole");
    // The same draws up to EOS, which is now a token of the completion (its text: none, a special token).
    EXPECT_EQ(std::vector<std::string>(tokens.begin(), tokens.begin() + long(stopped.size())), stopped);
  }
}

TEST(ServerApi, LogprobsInBothLayouts) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  auto c = Http(s.port(), "POST", "/v1/completions", R"({"prompt": "And God said", "max_tokens": 5, "temperature": 0, "logprobs": 2})");
  ASSERT_EQ(c->status(), 200) << c->body();
  const json lp = c->Json()["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
    ASSERT_EQ(lp["top_logprobs"][i].size(), 2u);
    // Greedy: the chosen token is the most likely one.
    double best = -1e30;
    for (auto& [tok, v] : lp["top_logprobs"][i].items()) best = std::max(best, v.get<double>());
    EXPECT_FLOAT_EQ(best, lp["token_logprobs"][i].get<double>());
  }
  auto chat = Http(s.port(), "POST", "/v1/chat/completions",
                   R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0, "logprobs": true, "top_logprobs": 3})");
  ASSERT_EQ(chat->status(), 200) << chat->body();
  const json content = chat->Json()["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 3u);
  EXPECT_EQ(content[0]["top_logprobs"].size(), 3u);
  EXPECT_TRUE(content[0]["bytes"].is_array());
}

TEST(ServerApi, SeededSamplingRepeats) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const std::string req = R"({"prompt": "The", "max_tokens": 16, "temperature": 1.0, "top_p": 0.9, "top_k": 50, "seed": 7})";
  auto a = Http(s.port(), "POST", "/v1/completions", req);
  auto b = Http(s.port(), "POST", "/v1/completions", req);
  ASSERT_EQ(a->status(), 200);
  EXPECT_EQ(CompletionText(a->body(), false), CompletionText(b->body(), false));
}

TEST(ServerApi, MetricsArePrometheusText) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  Http(s.port(), "POST", "/v1/completions", R"({"prompt": "The", "max_tokens": 4, "temperature": 0})");
  Http(s.port(), "POST", "/v1/completions", R"({"prompt": ""})");
  auto m = Http(s.port(), "GET", "/metrics");
  ASSERT_EQ(m->status(), 200);
  const std::string t = m->body();
  for (const char* line : {"atp_requests_total{endpoint=\"completions\",code=\"200\"} 1",
                           "atp_requests_total{endpoint=\"completions\",code=\"400\"} 1", "atp_generated_tokens_total 4",
                           "atp_queue_depth 0", "atp_running_sequences 0", "atp_kv_bytes_in_use 0",
                           "atp_kv_bytes_capacity 1073741824", "atp_kv_page_store_capacity_bytes 1073741824",
                           "atp_time_to_first_token_seconds_count 1",
                           "atp_inter_token_latency_seconds_count 3", "atp_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1",
                           "# TYPE atp_inter_token_latency_seconds histogram"})
    EXPECT_NE(t.find(line), std::string::npos) << "missing: " << line << "\n" << t;
}

// `atp serve` caches prefixes by default: a prompt sent again adopts its whole blocks from the cache, the
// answer is the same, and /metrics counts the tokens looked up and found.
TEST(ServerApi, RepeatedPromptHitsThePrefixCache) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.scheduler.prefix_caching = true;
  TestServer s(opt);
  std::string text;
  for (int i = 0; i < 40; ++i) text += "the cat sat on the mat. ";
  const std::string req = R"({"prompt": ")" + text + R"(", "max_tokens": 6, "temperature": 0})";
  auto a = Http(s.port(), "POST", "/v1/completions", req);
  auto b = Http(s.port(), "POST", "/v1/completions", req);
  ASSERT_EQ(a->status(), 200);
  ASSERT_EQ(b->status(), 200);
  EXPECT_EQ(CompletionText(a->body(), false), CompletionText(b->body(), false));
  const json usage = json::parse(a->body())["usage"];
  const int prompt_tokens = usage["prompt_tokens"].get<int>();
  ASSERT_GT(prompt_tokens, 128);
  const std::string t = Http(s.port(), "GET", "/metrics")->body();
  const int64_t hit = (prompt_tokens - 1) / 64 * 64;  // the whole blocks before the last prompt token
  for (const std::string& line : {"atp_prefix_cache_queries_total " + std::to_string(2 * prompt_tokens),
                                 "atp_prefix_cache_hits_total " + std::to_string(hit)})
    EXPECT_NE(t.find(line + "\n"), std::string::npos) << "missing: " << line << "\n" << t;
  EXPECT_EQ(t.find("atp_prefix_cache_blocks 0\n"), std::string::npos) << t;
}

struct BadRequest {
  const char* path;
  std::string body;
  const char* param;  // nullptr: the error names no field
};

TEST(ServerApi, InvalidRequestsGet400WithAnErrorObject) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const char* C = "/v1/completions";
  const char* H = "/v1/chat/completions";
  std::string long_prompt;
  for (int i = 0; i < 3000; ++i) long_prompt += "word ";
  const std::vector<BadRequest> cases = {
      {C, "{not json", nullptr},
      {C, "[1, 2]", nullptr},
      {C, "{}", "prompt"},
      {C, R"({"prompt": ""})", "prompt"},
      {C, R"({"prompt": 5})", "prompt"},
      {C, R"({"prompt": ["a", "b"]})", "prompt"},
      {C, R"({"prompt": [99999]})", "prompt"},
      {C, json{{"prompt", long_prompt}}.dump(), "prompt"},
      {C, R"({"prompt": "hi", "max_tokens": 0})", "max_tokens"},
      {C, R"({"prompt": "hi", "max_tokens": -5})", "max_tokens"},
      {C, R"({"prompt": "hi", "max_tokens": "10"})", "max_tokens"},
      {C, R"({"prompt": "hi", "max_tokens": 2.5})", "max_tokens"},
      {C, R"({"prompt": "hi", "max_tokens": 100000})", "max_tokens"},
      {C, R"({"prompt": "hi", "max_tokens": 2048})", "max_tokens"},
      {C, R"({"prompt": "hi", "temperature": 2.5})", "temperature"},
      {C, R"({"prompt": "hi", "temperature": -0.1})", "temperature"},
      {C, R"({"prompt": "hi", "temperature": "hot"})", "temperature"},
      {C, R"({"prompt": "hi", "top_p": 0})", "top_p"},
      {C, R"({"prompt": "hi", "top_p": 1.5})", "top_p"},
      {C, R"({"prompt": "hi", "top_k": -3})", "top_k"},
      {C, R"({"prompt": "hi", "seed": "x"})", "seed"},
      {C, R"({"prompt": "hi", "n": 17})", "n"},
      {C, R"({"prompt": "hi", "stop": [1]})", "stop"},
      {C, R"({"prompt": "hi", "stop": ""})", "stop"},
      {C, R"({"prompt": "hi", "logprobs": 9})", "logprobs"},
      {C, R"({"prompt": "hi", "stream": "yes"})", "stream"},
      {C, R"({"prompt": "hi", "ignore_eos": 1})", "ignore_eos"},
      {H, R"({"messages": [{"role": "user", "content": "x"}], "ignore_eos": "true"})", "ignore_eos"},
      {C, R"({"prompt": "hi", "echo": true})", "echo"},
      {C, R"({"prompt": "hi", "presence_penalty": 1})", "presence_penalty"},
      {C, R"({"prompt": "hi", "logit_bias": {"1": 5}})", "logit_bias"},
      {C, R"({"prompt": "hi", "kv": "nonsense"})", "kv"},
      {C, R"({"prompt": "hi", "kv": "dense:dtype=f7"})", "kv"},
      {C, R"({"prompt": "hi", "kv": 3})", "kv"},
      {C, R"({"prompt": "hi", "model": 3})", "model"},
      {H, R"({"messages": []})", "messages"},
      {H, R"({"messages": "hi"})", "messages"},
      {H, R"({"messages": [{"content": "x"}]})", "messages[0].role"},
      {H, R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {H, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content"},
      {H, R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs"},
      {H, R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})", "logprobs"},
      {C, std::string(9 << 20, ' '), nullptr},  // over the 8 MiB body limit
  };
  for (const BadRequest& c : cases) {
    auto r = Http(s.port(), "POST", c.path, c.body);
    const std::string shown = c.body.substr(0, 80);
    ASSERT_EQ(r->status(), 400) << shown << " -> " << r->body();
    const json e = r->Json();
    ASSERT_TRUE(e.contains("error")) << shown << " -> " << r->body();
    EXPECT_EQ(e["error"]["type"], "invalid_request_error") << shown;
    EXPECT_TRUE(e["error"]["code"].is_null()) << shown;
    EXPECT_FALSE(e["error"]["message"].get<std::string>().empty()) << shown;
    if (c.param) EXPECT_EQ(e["error"]["param"], c.param) << shown << " -> " << r->body();
    else EXPECT_TRUE(e["error"]["param"].is_null()) << shown << " -> " << r->body();
  }
  // Unknown fields of any type are ignored, and the server still serves.
  auto ok = Http(s.port(), "POST", C, R"({"prompt": "hi", "max_tokens": 2, "foo": {"bar": [1]}, "user": "u"})");
  EXPECT_EQ(ok->status(), 200) << ok->body();
}

}  // namespace
}  // namespace atp::server_test
