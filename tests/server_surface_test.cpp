// The API surface of `atp serve` that issue 15 asked for, in-process on the reference model: the API
// key, model names and aliases, GET /v1/models/{id}, n > 1 choices, response_format and message roles,
// logprobs cut with the text at a stop string, /tokenize and /detokenize, and the body limit whatever
// the body's Content-Type or transfer coding.
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

// Finding 1: with --api-key, /v1/* and /(de)tokenize need "Authorization: Bearer KEY"; /health and /metrics do not.
TEST(ServerSurface, ApiKeyGuardsV1AndTokenizeButNotHealthOrMetrics) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.api_key = "sk-test-123";
  TestServer s(opt);
  const std::string good = "Authorization: Bearer sk-test-123\r\n";
  const std::string completion = R"({"prompt": "The", "max_tokens": 2, "temperature": 0})";
  const std::vector<std::tuple<const char*, const char*, std::string>> guarded = {
      {"POST", "/v1/completions", completion},
      {"POST", "/v1/chat/completions", R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})"},
      {"GET", "/v1/models", ""},
      {"GET", "/v1/models/ref-5m", ""},
      {"POST", "/tokenize", R"({"content": "Hi"})"},
      {"POST", "/detokenize", R"({"tokens": [5]})"},
  };
  for (const auto& [method, path, body] : guarded) {
    for (const std::string& bad : {std::string(), std::string("Authorization: Bearer sk-test-124\r\n"),
                                   std::string("Authorization: Bearer sk-test-1234\r\n"),
                                   std::string("Authorization: Basic c2stdGVzdC0xMjM=\r\n")}) {
      auto r = Http(s.port(), method, path, body, 60, bad);
      ExpectError(*r, 401, "invalid_api_key", std::string(path) + " with '" + bad + "'");
      EXPECT_NE(r->head().find("WWW-Authenticate: Bearer"), std::string::npos) << r->head();
    }
    auto ok = Http(s.port(), method, path, body, 60, good);
    EXPECT_EQ(ok->status(), 200) << path << " -> " << ok->body();
  }
  // The scheme is case-insensitive (RFC 7235); the key is not.
  EXPECT_EQ(Http(s.port(), "GET", "/v1/models", "", 60, "Authorization: bearer sk-test-123\r\n")->status(), 200);
  EXPECT_EQ(Http(s.port(), "GET", "/v1/models", "", 60, "Authorization: Bearer SK-TEST-123\r\n")->status(), 401);
  EXPECT_EQ(Http(s.port(), "GET", "/health")->status(), 200);
  auto m = Http(s.port(), "GET", "/metrics");
  EXPECT_EQ(m->status(), 200);
  EXPECT_NE(m->body().find("atp_requests_total{endpoint=\"completions\",code=\"401\"} 4"), std::string::npos) << m->body();
}

// Finding 2: a request's model must be one the server serves; --name's aliases serve too; absent is accepted.
TEST(ServerSurface, UnknownModelIs404ModelNotFoundAndAliasesServe) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.model_name = "ref-5m";
  opt.model_aliases = {"gpt-4o-mini", "small"};
  TestServer s(opt);
  for (const char* model : {"ref-5m", "gpt-4o-mini", "small", ""}) {
    json req = {{"prompt", "The"}, {"max_tokens", 2}};
    if (*model) req["model"] = model;
    auto r = Http(s.port(), "POST", "/v1/completions", req.dump());
    ASSERT_EQ(r->status(), 200) << model << " -> " << r->body();
    EXPECT_EQ(r->Json()["model"], "ref-5m") << "responses name the model by its first name";
  }
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    const json req = {{"model", "gpt-5"}, {"prompt", "The"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
    auto r = Http(s.port(), "POST", path, req.dump());
    ExpectError(*r, 404, "model_not_found", path);
    const std::string message = r->Json()["error"]["message"];
    EXPECT_EQ(message.rfind("The model `gpt-5` does not exist", 0), 0u) << message;
    EXPECT_NE(message.find("ref-5m, gpt-4o-mini, small"), std::string::npos) << message;
  }
  auto list = Http(s.port(), "GET", "/v1/models")->Json();
  ASSERT_EQ(list["data"].size(), 3u) << list.dump();
  EXPECT_EQ(list["data"][0]["id"], "ref-5m");
  EXPECT_EQ(list["data"][1]["id"], "gpt-4o-mini");
  EXPECT_EQ(list["data"][2]["id"], "small");
}

// Finding 3: GET /v1/models/{id}.
TEST(ServerSurface, RetrieveModelById) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.model_aliases = {"org/model-v1"};
  TestServer s(opt);
  for (const char* id : {"ref-5m", "org/model-v1"}) {
    auto r = Http(s.port(), "GET", std::string("/v1/models/") + id);
    ASSERT_EQ(r->status(), 200) << r->body();
    const json m = r->Json();
    EXPECT_EQ(m["id"], id);
    EXPECT_EQ(m["object"], "model");
    EXPECT_EQ(m["owned_by"], "atp");
  }
  ExpectError(*Http(s.port(), "GET", "/v1/models/nope"), 404, "model_not_found", "/v1/models/nope");
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

// Finding 7: /tokenize (llama.cpp's and vLLM's bodies) and /detokenize, errors in OpenAI's shape.
TEST(ServerSurface, TokenizeAndDetokenize) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const std::string text = "In the beginning God created the heaven";
  const std::vector<int32_t> plain = Ref().tok->Encode(text, false), special = Ref().tok->Encode(text, true);
  ASSERT_NE(plain, special);
  const std::vector<std::pair<json, std::vector<int32_t>>> cases = {
      {{{"content", text}}, plain},
      {{{"content", text}, {"add_special", true}}, special},
      {{{"prompt", text}}, special},
      {{{"prompt", text}, {"add_special_tokens", false}, {"model", "ref-5m"}}, plain},
  };
  for (const auto& [req, want] : cases) {
    auto r = Http(s.port(), "POST", "/tokenize", req.dump());
    ASSERT_EQ(r->status(), 200) << req.dump() << " -> " << r->body();
    EXPECT_EQ(r->Json()["tokens"].get<std::vector<int32_t>>(), want) << req.dump();
    EXPECT_EQ(r->Json()["count"], want.size());
  }
  auto d = Http(s.port(), "POST", "/detokenize", json{{"tokens", plain}}.dump());
  ASSERT_EQ(d->status(), 200) << d->body();
  EXPECT_EQ(d->Json()["content"], text);
  EXPECT_EQ(d->Json()["prompt"], text);
  const std::vector<std::tuple<const char*, std::string, const char*>> bad = {
      {"/tokenize", "{}", "content"},
      {"/tokenize", R"({"content": 5})", "content"},
      {"/tokenize", R"({"content": "x", "add_special": "yes"})", "add_special"},
      {"/tokenize", "not json", nullptr},
      {"/detokenize", "{}", "tokens"},
      {"/detokenize", R"({"tokens": "1 2"})", "tokens"},
      {"/detokenize", R"({"tokens": [1, -2]})", "tokens"},
      {"/detokenize", R"({"tokens": [1, 2.5]})", "tokens"},
      {"/detokenize", R"({"tokens": [4096]})", "tokens"},
      {"/detokenize", R"({"tokens": [1], "model": 7})", "model"},
  };
  for (const auto& [path, body, param] : bad) {
    auto r = Http(s.port(), "POST", path, body);
    ExpectError(*r, 400, "", std::string(path) + " " + body);
    if (param) EXPECT_EQ(r->Json()["error"]["param"], param) << path << " " << body;
    else EXPECT_TRUE(r->Json()["error"]["param"].is_null()) << path << " " << body;
  }
  ExpectError(*Http(s.port(), "POST", "/tokenize", R"({"content": "x", "model": "other"})"), 404, "model_not_found", "model");
}

// Finding 8: the body limit holds, and its error says so, whatever the Content-Type or transfer coding;
// a JSON body sent as curl -d sends it (form-urlencoded) is read as JSON whatever its size.
TEST(ServerSurface, BodyLimitWhateverTheContentType) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.max_body_bytes = 64 << 10;
  TestServer s(opt);
  const auto post = [&](const std::string& headers, const std::string& body) {
    auto c = std::make_unique<HttpConnection>(s.port(), "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
                                                            headers + "\r\n" + body);
    c->ReadAll(60);
    return c;
  };
  const auto sized = [](size_t n) { return "Content-Length: " + std::to_string(n) + "\r\n"; };
  // Valid JSON padded past 8 KiB (cpp-httplib's own limit for form-urlencoded bodies) but under the limit.
  const std::string padded = json{{"prompt", "The"}, {"max_tokens", 2}, {"pad", std::string(20000, 'x')}}.dump();
  const std::string big = json{{"prompt", "The"}, {"pad", std::string(100000, 'x')}}.dump();
  for (const char* type : {"application/x-www-form-urlencoded", "text/plain", "application/json"}) {
    const std::string ct = std::string("Content-Type: ") + type + "\r\n";
    auto ok = post(ct + sized(padded.size()), padded);
    EXPECT_EQ(ok->status(), 200) << type << " -> " << ok->body();
    auto over = post(ct + sized(big.size()), big);
    ExpectError(*over, 400, "", type);
    EXPECT_NE(over->body().find("exceeds 65536 bytes"), std::string::npos) << type << " -> " << over->body();
  }
  // Chunked: no Content-Length to check beforehand.
  const auto chunked = [](const std::string& body) {
    std::string out;
    for (size_t i = 0; i < body.size(); i += 4096) {
      const std::string piece = body.substr(i, 4096);
      char len[16];
      std::snprintf(len, sizeof len, "%zx\r\n", piece.size());
      out += len + piece + "\r\n";
    }
    return out + "0\r\n\r\n";
  };
  auto c = post("Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", chunked(big));
  ExpectError(*c, 400, "", "chunked");
  EXPECT_NE(c->body().find("exceeds 65536 bytes"), std::string::npos) << c->body();
  // Multipart: refused as not JSON under the limit, as too large over it.
  const std::string part = "--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n";
  const std::string small_form = part + padded + "\r\n--XyZ--\r\n", big_form = part + big + "\r\n--XyZ--\r\n";
  const std::string mp = "Content-Type: multipart/form-data; boundary=XyZ\r\n";
  auto m1 = post(mp + sized(small_form.size()), small_form);
  ExpectError(*m1, 400, "", "multipart");
  EXPECT_NE(m1->body().find("multipart/form-data"), std::string::npos) << m1->body();
  auto m2 = post(mp + sized(big_form.size()), big_form);
  EXPECT_NE(m2->body().find("exceeds 65536 bytes"), std::string::npos) << m2->body();
  auto m3 = post(mp + "Transfer-Encoding: chunked\r\n", chunked(big_form));
  EXPECT_NE(m3->body().find("exceeds 65536 bytes"), std::string::npos) << m3->body();
}

}  // namespace
}  // namespace atp::server_test
