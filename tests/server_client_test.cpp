// Real clients against the server: the official OpenAI npm package (tests/server_js/client.mjs drives
// models, completions, chat, streaming, n choices, the kv field, an API key and the errors 400, 401
// and 404) and curl. Each skips, saying why, when
// node, tests/server_js/node_modules (npm ci --prefix tests/server_js) or curl is missing.
#include <cstdio>

#include <gtest/gtest.h>

#include "server_fixture.h"

namespace atp::server_test {
namespace {

const std::string kJsDir = ATP_SOURCE_DIR "/tests/server_js";

bool OnPath(const std::string& tool) { return std::system(("command -v " + tool + " >/dev/null 2>&1").c_str()) == 0; }

// Runs a shell command; returns its exit status and stdout+stderr.
int Shell(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out->append(buf, n);
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(ServerClients, OpenAiNodeClient) {
  ATP_REQUIRE_REF_MODEL();
  if (!OnPath("node")) GTEST_SKIP() << "node is not installed";
  if (!std::filesystem::exists(kJsDir + "/node_modules/openai"))
    GTEST_SKIP() << "no " << kJsDir << "/node_modules: run npm ci --prefix tests/server_js";
  ServerOptions opt;
  opt.api_key = "sk-atp-client-test";
  TestServer s(opt);
  std::string out;
  const int rc = Shell("node " + kJsDir + "/client.mjs http://127.0.0.1:" + std::to_string(s.port()) + "/v1 " + opt.api_key, &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("ok"), std::string::npos) << out;
}

TEST(ServerClients, Curl) {
  ATP_REQUIRE_REF_MODEL();
  if (!OnPath("curl")) GTEST_SKIP() << "curl is not installed";
  TestServer s;
  const std::string url = "http://127.0.0.1:" + std::to_string(s.port());
  std::string whole, streamed, health;
  ASSERT_EQ(Shell("curl -sS " + url + "/v1/completions -H 'Content-Type: application/json' "
                "-d '{\"prompt\": \"In the beginning\", \"max_tokens\": 8, \"temperature\": 0}'", &whole), 0) << whole;
  ASSERT_EQ(Shell("curl -sSN " + url + "/v1/completions -H 'Content-Type: application/json' "
                "-d '{\"prompt\": \"In the beginning\", \"max_tokens\": 8, \"temperature\": 0, \"stream\": true}'", &streamed), 0)
      << streamed;
  EXPECT_EQ(CompletionText(streamed, true), CompletionText(whole, false));
  EXPECT_NE(streamed.find("data: [DONE]"), std::string::npos);
  ASSERT_EQ(Shell("curl -sS -o /dev/null -w '%{http_code}' " + url + "/v1/chat/completions -d '{\"messages\": 3}'", &health), 0);
  EXPECT_EQ(health, "400");
}

}  // namespace
}  // namespace atp::server_test
