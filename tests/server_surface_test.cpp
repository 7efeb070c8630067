// The API surface of `atp serve` that issue 15 asked for, in-process on the reference model: n > 1
// choices, response_format and message roles, and logprobs cut with the text at a stop string.
#include <gtest/gtest.h>

#include "server_fixture.h"

namespace atp::server_test {
namespace {

void ExpectError(const HttpConnection& r, int status, const std::string& code, const std::string& what) {
  EXPECT_EQ(r.status(), status) << what << " -> " << r.body();
  const json e = r.Json();
  ASSERT_TRUE(e.contains("error")) << what << " -> " << r.body();
  EXPECT_EQ(e["error"]["type"], "invalid_request_error") << what;
  EXPECT_FALSE(e["error"]["message"].get<std::string>().empty()) << what;
  if (code.empty()) EXPECT_TRUE(e["error"]["code"].is_null()) << what << " -> " << r.body();
  else EXPECT_EQ(e["error"]["code"], code) << what;
}

// Finding 4: n choices, each its own sequence; seeded choices differ and repeat; usage sums them.
TEST(ServerSurface, NChoicesWholeAndStreamed) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const json req = {{"prompt", "The"}, {"max_tokens", 12}, {"temperature", 1.0}, {"seed", 11}, {"n", 3}, {"logprobs", 1}};
  auto a = Http(s.port(), "POST", "/v1/completions", req.dump());
  ASSERT_EQ(a->status(), 200) << a->body();
  const json j = a->Json();
  ASSERT_EQ(j["choices"].size(), 3u);
  std::vector<std::string> texts;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["finish_reason"], "length");
    EXPECT_EQ(j["choices"][i]["logprobs"]["tokens"].size(), 12u);
    texts.push_back(j["choices"][i]["text"]);
  }
  EXPECT_EQ(j["usage"]["completion_tokens"], 36);
  EXPECT_EQ(j["usage"]["prompt_tokens"], Ref().tok->Encode("The", true).size());
  EXPECT_TRUE(texts[0] != texts[1] && texts[1] != texts[2] && texts[0] != texts[2]) << texts[0] << " | " << texts[1] << " | " << texts[2];
  // Choice i samples with seed + i: choice 1 of seed 11 is choice 0 of seed 12.
  json one = req;
  one["n"] = 1;
  one["seed"] = 12;
  EXPECT_EQ(CompletionText(Http(s.port(), "POST", "/v1/completions", one.dump())->body(), false), texts[1]);

  json streamed = req;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  auto b = Http(s.port(), "POST", "/v1/completions", streamed.dump());
  ASSERT_EQ(b->status(), 200);
  std::vector<std::string> pieces(3);
  std::vector<int> finished(3, 0);
  json usage;
  for (const json& e : SseEvents(b->body())) {
    if (e.contains("usage")) usage = e["usage"];
    for (const json& c : e["choices"]) {
      const int i = c["index"];
      ASSERT_TRUE(i >= 0 && i < 3) << e.dump();
      pieces[size_t(i)] += c["text"].get<std::string>();
      if (!c["finish_reason"].is_null()) ++finished[size_t(i)];
    }
  }
  EXPECT_EQ(pieces, texts);
  EXPECT_EQ(finished, std::vector<int>(3, 1));
  EXPECT_EQ(usage["completion_tokens"], 36);

  auto chat = Http(s.port(), "POST", "/v1/chat/completions",
                   R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "n": 2, "stream": true})");
  int roles = 0;
  for (const json& e : SseEvents(chat->body()))
    for (const json& c : e["choices"]) roles += c["delta"].contains("role");
  EXPECT_EQ(roles, 2) << chat->body();
}

// Finding 4: n is bounded.
TEST(ServerSurface, NAboveTheLimitIs400) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  for (const char* n : {"0", "17", "1000"}) {
    auto r = Http(s.port(), "POST", "/v1/completions", std::string(R"({"prompt": "The", "n": )") + n + "}");
    ExpectError(*r, 400, "", std::string("n = ") + n);
    EXPECT_EQ(r->Json()["error"]["param"], "n");
    EXPECT_NE(r->Json()["error"]["message"].get<std::string>().find("16"), std::string::npos) << r->body();
  }
}

// Finding 5: response_format other than text, and roles no template knows, are refused.
TEST(ServerSurface, ResponseFormatAndUnknownRolesAre400) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const std::string msgs = R"("messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2)";
  for (const char* rf : {R"({"type": "json_object"})", R"({"type": "json_schema", "json_schema": {}})", R"("json")", R"({})"}) {
    auto r = Http(s.port(), "POST", "/v1/chat/completions", "{" + msgs + R"(, "response_format": )" + rf + "}");
    ExpectError(*r, 400, "", rf);
    EXPECT_EQ(r->Json()["error"]["param"], "response_format") << rf;
  }
  EXPECT_EQ(Http(s.port(), "POST", "/v1/chat/completions", "{" + msgs + R"(, "response_format": {"type": "text"}})")->status(), 200);
  for (const char* role : {"wizard", "function", "User", "model"}) {
    const json req = {{"messages", {{{"role", role}, {"content", "Hi"}}}}, {"max_tokens", 2}};
    auto r = Http(s.port(), "POST", "/v1/chat/completions", req.dump());
    ExpectError(*r, 400, "", role);
    EXPECT_EQ(r->Json()["error"]["param"], "messages[0].role") << role;
  }
  // "developer" is OpenAI's newer "system": rendered as one.
  auto dev = Http(s.port(), "POST", "/v1/chat/completions",
                  R"({"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_tokens": 2})");
  ASSERT_EQ(dev->status(), 200) << dev->body();
  const std::string rendered = "<|begin_of_text|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(dev->Json()["usage"]["prompt_tokens"], Ref().tok->Encode(rendered, false).size());
}

// Finding 6: a stop string hides its text, and with it the logprobs of the tokens that begin inside it.
TEST(ServerSurface, LogprobsEndWithTheTextAtAStopString) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const json base = {{"prompt", "The king said"}, {"max_tokens", 24}, {"temperature", 0}, {"logprobs", 1}};
  auto free_run = Http(s.port(), "POST", "/v1/completions", base.dump());
  ASSERT_EQ(free_run->status(), 200) << free_run->body();
  const json lp = free_run->Json()["choices"][0]["logprobs"];
  const std::string text = free_run->Json()["choices"][0]["text"];
  ASSERT_GE(lp["tokens"].size(), 10u);
  // A stop string made of tokens 5 and 6 (whole tokens, so that where it begins is a token's start).
  const size_t at = lp["text_offset"][5];
  const std::string stop = lp["tokens"][5].get<std::string>() + lp["tokens"][6].get<std::string>();
  ASSERT_EQ(text.substr(at, stop.size()), stop);
  const size_t cut = text.find(stop);
  size_t kept = 0;  // tokens that begin before the cut
  while (kept < lp["text_offset"].size() && lp["text_offset"][kept].get<size_t>() < cut) ++kept;
  for (bool stream : {false, true}) {
    json req = base;
    req["stop"] = stop;
    req["stream"] = stream;
    auto r = Http(s.port(), "POST", "/v1/completions", req.dump());
    ASSERT_EQ(r->status(), 200) << r->body();
    EXPECT_EQ(CompletionText(r->body(), stream), text.substr(0, cut)) << "stop '" << stop << "'";
    std::vector<std::string> tokens;
    if (!stream) tokens = r->Json()["choices"][0]["logprobs"]["tokens"].get<std::vector<std::string>>();
    for (const json& e : stream ? SseEvents(r->body()) : std::vector<json>{})
      if (!e["choices"].empty() && !e["choices"][0]["logprobs"].is_null())
        for (const json& t : e["choices"][0]["logprobs"]["tokens"]) tokens.push_back(t);
    ASSERT_EQ(tokens.size(), kept) << (stream ? "streamed" : "whole") << ", stop '" << stop << "' at byte " << cut;
    for (size_t i = 0; i < kept; ++i) EXPECT_EQ(tokens[i], lp["tokens"][i]) << i;
  }
}

}  // namespace
}  // namespace atp::server_test
