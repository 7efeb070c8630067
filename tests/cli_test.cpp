// The `atp` binary as a user meets it: --help on every subcommand, --json output that is exactly one
// JSON object with DESIGN.md section 7's field names, and errors that exit non-zero with one line
// on stderr naming the file, field or parameter at fault.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace atp {
namespace {

using nlohmann::json;
using testing::CmdResult;
using testing::RunAtp;

// Parses stdout as exactly one JSON object (nlohmann rejects trailing content) on one line.
json OneJsonObject(const CmdResult& r) {
  EXPECT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "stdout is not one JSON value: [" << r.out << "]";
  EXPECT_TRUE(j.is_object()) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << "stdout must be one line: [" << r.out << "]";
  return j.is_object() ? j : json::object();
}

void ExpectFields(const json& j, std::initializer_list<const char*> fields) {
  for (const char* f : fields) EXPECT_TRUE(j.contains(f)) << "missing field '" << f << "' in " << j.dump();
}

// A failed run: non-zero exit, nothing on stdout, exactly one non-empty line on stderr containing `needles`.
void ExpectOneLineError(const CmdResult& r, std::initializer_list<std::string> needles) {
  EXPECT_NE(r.exit_code, 0) << "stdout: " << r.out;
  EXPECT_EQ(r.out, "") << "an error must print nothing on stdout";
  std::string e = r.err;
  while (!e.empty() && e.back() == '\n') e.pop_back();
  EXPECT_FALSE(e.empty()) << "no message on stderr";
  EXPECT_EQ(e.find('\n'), std::string::npos) << "stderr must be one line: [" << r.err << "]";
  for (auto& n : needles) EXPECT_NE(e.find(n), std::string::npos) << "'" << n << "' not in: " << e;
}

// Subcommand names from the top-level help's "Subcommands:" section (so new ones are covered).
std::vector<std::string> Subcommands() {
  CmdResult r = RunAtp("--help");
  std::vector<std::string> names;
  std::istringstream in(r.out);
  std::string line;
  bool in_section = false;
  while (std::getline(in, line)) {
    if (line.rfind("Subcommands:", 0) == 0 || line.rfind("SUBCOMMANDS:", 0) == 0) {
      in_section = true;
      continue;
    }
    if (!in_section) continue;
    if (line.empty() || line[0] != ' ') break;
    std::istringstream ls(line);
    std::string name;
    ls >> name;
    if (!name.empty()) names.push_back(name);
  }
  return names;
}

TEST(Cli, HelpOnEverySubcommand) {
  CmdResult top = RunAtp("--help");
  EXPECT_EQ(top.exit_code, 0) << top.err;
  auto subs = Subcommands();
  for (const char* want : {"generate", "perplexity", "inspect", "bench", "testgen"})
    EXPECT_NE(std::find(subs.begin(), subs.end(), want), subs.end()) << want << " not listed in:\n" << top.out;
  for (auto& s : subs) {
    CmdResult r = RunAtp(s + " --help");
    EXPECT_EQ(r.exit_code, 0) << s << " --help: " << r.err;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << s << " --help printed: " << r.out;
    // Help cites only documents a clone has (docs/), and no flag is spelled --context: it meant the
    // perplexity window's context in one command and the decode context in another (-c/--ctx is the limit).
    EXPECT_EQ(r.out.find("DESIGN.md"), std::string::npos) << s << " --help: " << r.out;
    EXPECT_EQ(r.out.find("--context "), std::string::npos) << s << " --help: " << r.out;
  }
}

TEST(Cli, Version) {
  CmdResult r = RunAtp("--version");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("atp 0.1.0", 0), 0u) << r.out;  // the CMake project version, then `git describe` if known
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
}

class CliTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir("cli_tiny");
    CmdResult r = RunAtp("testgen --shape tiny -o '" + dir_->path() + "' --type f32");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(r.out, "");  // testgen logs to stderr only
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string M() { return "-m '" + dir_->path() + "'"; }
  static testing::TempDir* dir_;
};
testing::TempDir* CliTiny::dir_ = nullptr;

TEST_F(CliTiny, TestgenWroteAModelDirectory) {
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(std::filesystem::exists(*dir_ / f)) << f;
}

TEST_F(CliTiny, GenerateJson) {
  json j = OneJsonObject(RunAtp("generate " + M() + " -p 'hello' -n 5 --temp 0 --json"));
  ExpectFields(j, {"prompt_tokens", "completion_tokens", "text", "token_ids", "prefill_tok_s", "decode_tok_s"});
  EXPECT_EQ(j.value("prompt_tokens", 0), 6);  // BOS + one token per byte (the tiny tokenizer has no merges)
  ASSERT_TRUE(j["token_ids"].is_array());
  EXPECT_EQ(j["token_ids"].size(), j.value("completion_tokens", size_t(0)));
  EXPECT_LE(j["token_ids"].size(), 5u);
  EXPECT_TRUE(j["text"].is_string());
  // Greedy is deterministic: the same command gives the same tokens.
  json k = OneJsonObject(RunAtp("generate " + M() + " -p 'hello' -n 5 --temp 0 --json"));
  EXPECT_EQ(j["token_ids"], k["token_ids"]);
}

TEST_F(CliTiny, GenerateStreamsTextWithoutJson) {
  CmdResult r = RunAtp("generate " + M() + " -p 'hi' -n 3 --temp 0");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("prompt tokens"), std::string::npos) << "stats line on stderr: " << r.err;
}

TEST_F(CliTiny, InspectJson) {
  json j = OneJsonObject(RunAtp("inspect " + M() + " --json"));
  ExpectFields(j, {"model_type", "layers", "hidden_size", "heads", "kv_heads", "head_dim", "vocab_size", "tensors"});
  EXPECT_EQ(j.value("layers", 0), 2);
  EXPECT_EQ(j.value("hidden_size", 0), 64);
  EXPECT_EQ(j["tensors"].size(), 3u + 9u * 2u);  // embed, norm, lm_head + 9 per layer
}

TEST_F(CliTiny, BenchJson) {
  json j = OneJsonObject(RunAtp("bench " + M() +
                                " --prompt-tokens 16 --decode-context 16 --decode-tokens 2 --repeats 1 --roofline --json"));
  ExpectFields(j, {"prefill_tok_s", "decode_tok_s", "context", "threads", "kv", "kv_bytes_per_token", "roofline_fraction"});
  EXPECT_EQ(j.value("context", 0), 16);
  EXPECT_GT(j.value("prefill_tok_s", 0.0), 0);
  EXPECT_GT(j.value("decode_tok_s", 0.0), 0);
  EXPECT_TRUE(j["roofline_fraction"].is_number()) << j.dump();
  EXPECT_GT(j.value("roofline_fraction", 0.0), 0);
  // dense f32: 2 (K and V) * kv_dim (2 heads * 16) * 4 bytes * 2 layers
  EXPECT_DOUBLE_EQ(j.value("kv_bytes_per_token", 0.0), 2.0 * 32 * 4 * 2);
  EXPECT_EQ(j.value("kv", ""), "dense:dtype=f32");
}

// --random-fill appends the context straight to the policies: each extra context token must add
// one dense f32 row pair (2 * kv_dim 32 * 4 bytes * 2 layers) to the bytes a decode step reads.
TEST_F(CliTiny, BenchRandomFillHoldsTheContext) {
  auto bytes_read = [&](int context) {
    json j = OneJsonObject(RunAtp("bench " + M() + " --random-fill --prompt-tokens 4 --decode-context " +
                                  std::to_string(context) + " --decode-tokens 3 --repeats 1 --json"));
    EXPECT_TRUE(j.value("random_fill", false));
    EXPECT_GT(j.value("decode_tok_s", 0.0), 0);
    return j.value("bytes_per_decode_token", 0.0);
  };
  EXPECT_DOUBLE_EQ(bytes_read(200) - bytes_read(100), 100 * 2.0 * 32 * 4 * 2);
}

// Without --json, bench prints lines for people; JSON only with --json.
TEST_F(CliTiny, BenchPrintsATableWithoutJson) {
  CmdResult r = RunAtp("bench " + M() + " --prompt-tokens 8 --decode-context 8 --decode-tokens 2 --repeats 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('{'), std::string::npos) << r.out;
  for (const char* s : {"prefill  8 tokens", "decode   after 8 tokens", "tok/s", "ms/token", "512 KV bytes/token"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " not in:\n" << r.out;
}

// calibrate writes NAME.kv_basis.safetensors into the current directory, not into the model's
// directory unless --into-model asks (where `--kv lowrank` without file= looks).
TEST_F(CliTiny, CalibrateWritesIntoTheCurrentDirectory) {
  testing::TempDir cwd("calib_cwd");
  const std::string text = cwd / "calib.txt";
  std::string words;
  for (int i = 0; i < 200; ++i) words += "word" + std::to_string(i % 37) + " ";
  testing::WriteString(text, words);
  const std::string model_basis = dir_->path() + "/kv_basis.safetensors";
  const std::string run = "cd '" + cwd.path() + "' && '" + ATP_BINARY + "' calibrate " + M() + " -f '" + text +
                          "' --window 32 --max-windows 1 2>/dev/null";
  ASSERT_EQ(std::system(run.c_str()), 0);
  const std::string name = std::filesystem::path(dir_->path()).filename().string();
  EXPECT_TRUE(std::filesystem::exists(cwd / (name + ".kv_basis.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(model_basis));
  ASSERT_EQ(std::system((run + " --into-model").c_str()), 0);
  EXPECT_TRUE(std::filesystem::exists(model_basis));
  std::filesystem::remove(model_basis);
}

// Writes `text` to a file in the suite's directory and returns a shell redirect of stdin from it.
std::string StdinFrom(const testing::TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir / name;
  std::ofstream(path) << text;
  return " < '" + path + "'";
}

TEST_F(CliTiny, ChatTurnsResetAndContextOverflow) {
  // Greedy, so a conversation restarted with /reset must give its first reply again, from the same prompt.
  json j = OneJsonObject(RunAtp("chat " + M() + " --temp 0 -n 4 --json" +
                                StdinFrom(*dir_, "chat1.txt", "hello\nagain\n/reset\nhello\n")));
  ASSERT_EQ(j["turns"].size(), 3u) << j.dump();
  const json& t = j["turns"];
  EXPECT_EQ(t[0]["user"], "hello");
  EXPECT_GT(t[1]["prompt_tokens"].get<int>(), t[0]["prompt_tokens"].get<int>() + 4) << "turn 2 sees turn 1";
  EXPECT_EQ(t[2]["prompt_tokens"], t[0]["prompt_tokens"]);
  EXPECT_EQ(t[2]["assistant"], t[0]["assistant"]);
  // A message that cannot fit the context is reported and skipped; the conversation goes on.
  const std::string big(400, 'x');
  CmdResult r = RunAtp("chat " + M() + " --temp 0 -n 2 -c 64 --json" +
                       StdinFrom(*dir_, "chat2.txt", big + "\nhi\n"));
  json k = OneJsonObject(r);
  EXPECT_NE(r.err.find("the context holds 64"), std::string::npos) << r.err;
  ASSERT_EQ(k["turns"].size(), 1u) << k.dump();
  EXPECT_EQ(k["turns"][0]["user"], "hi");
}

// Issue 15, finding 10: without --seed, generate and chat draw a seed per run and report it; --seed repeats a run.
TEST_F(CliTiny, GenerateAndChatDrawAndReportASeedUnlessGiven) {
  const std::string cmd = "generate " + M() + " -p 'hello' -n 8 --temp 1.5 --json";
  const json a = OneJsonObject(RunAtp(cmd)), b = OneJsonObject(RunAtp(cmd));
  ASSERT_TRUE(a.contains("seed") && b.contains("seed")) << a.dump();
  EXPECT_NE(a["seed"], b["seed"]);
  EXPECT_NE(a["token_ids"], b["token_ids"]) << "two unseeded runs sampled the same tokens";
  const json c = OneJsonObject(RunAtp(cmd + " --seed " + std::to_string(a["seed"].get<uint64_t>())));
  EXPECT_EQ(c["seed"], a["seed"]);
  EXPECT_EQ(c["token_ids"], a["token_ids"]);
  CmdResult r = RunAtp("generate " + M() + " -p hi -n 2 --seed 42");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("seed 42]"), std::string::npos) << r.err;
  const json chat = OneJsonObject(RunAtp("chat " + M() + " -n 2 --json" + StdinFrom(*dir_, "chat_seed.txt", "hello\n")));
  EXPECT_TRUE(chat["seed"].is_number_unsigned()) << chat.dump();
  EXPECT_EQ(OneJsonObject(RunAtp("chat " + M() + " -n 2 --seed 7 --json" + StdinFrom(*dir_, "chat_seed.txt", "hello\n")))["seed"], 7);
}

// Issue 15, finding 10: generate reads its prompt from -f FILE, or from stdin with -p - or -f -.
TEST_F(CliTiny, GeneratePromptFromFileOrStdin) {
  const std::string file = *dir_ / "prompt.txt";
  std::ofstream(file) << "hello";
  const std::string flags = " -n 4 --temp 0 --json";
  const json want = OneJsonObject(RunAtp("generate " + M() + " -p 'hello'" + flags));
  for (const std::string& from : {" -f '" + file + "'", " -f -" + StdinFrom(*dir_, "stdin1.txt", "hello"),
                                  " -p -" + StdinFrom(*dir_, "stdin2.txt", "hello")}) {
    const json j = OneJsonObject(RunAtp("generate " + M() + from + flags));
    EXPECT_EQ(j["prompt_tokens"], want["prompt_tokens"]) << from;
    EXPECT_EQ(j["token_ids"], want["token_ids"]) << from;
  }
  ExpectOneLineError(RunAtp("generate " + M() + " -f /nonexistent/prompt.txt"), {"/nonexistent/prompt.txt"});
  ExpectOneLineError(RunAtp("generate " + M() + " -n 2"), {"no prompt", "-f FILE"});
  ExpectOneLineError(RunAtp("generate " + M() + " -p hi -f '" + file + "'"), {"--file"});
}

// --weights converts the matrices at load; a decode step then reads fewer bytes. The tiny shape's
// matrices (LM head 300x64; per layer q 64x64, k and v 32x64, o 64x64, gate and up 160x64, down
// 64x160) hold 105216 weights = 3288 blocks: 34 bytes each in q8_0, 18 in q4_0, 128 in f32; the
// norms stay f32 and the KV bytes are the same for the same context.
TEST_F(CliTiny, WeightsFlagQuantizesAtLoad) {
  auto bytes_read = [&](const std::string& weights) {
    json j = OneJsonObject(RunAtp("bench " + M() + weights + " --prompt-tokens 8 --decode-context 8 --decode-tokens 2 --repeats 1 --json"));
    EXPECT_GT(j.value("decode_tok_s", 0.0), 0);
    return j.value("bytes_per_decode_token", 0.0);
  };
  const double f32 = bytes_read(""), q8 = bytes_read(" --weights q8_0"), q4 = bytes_read(" --weights q4_0");
  EXPECT_DOUBLE_EQ(f32 - q8, 3288.0 * (128 - 34));
  EXPECT_DOUBLE_EQ(q8 - q4, 3288.0 * (34 - 18));
  json g = OneJsonObject(RunAtp("generate " + M() + " -p 'hello' -n 4 --temp 0 --weights q4_0 --json"));
  EXPECT_EQ(g.value("completion_tokens", 0), 4);
  // A file mix is a convert format, not a dtype the matrices can take at load.
  ExpectOneLineError(RunAtp("generate " + M() + " -p hi --weights q4_k_m"), {"--weights", "q4_k_m"});
}

TEST(CliRef, PerplexityJson) {
  ATP_SKIP_WITHOUT_SHARED();
  json j = OneJsonObject(
      RunAtp("perplexity -m '" + testing::kRefModel + "' -f '" + testing::kValidText + "' --max-windows 2 --json"));
  ExpectFields(j, {"model", "file", "kv", "ppl", "nll", "scored_tokens", "windows", "context", "scored_per_window",
                   "kv_bytes_per_token", "kv_bytes_per_token_dense"});
  EXPECT_EQ(j.value("windows", 0), 2);
  EXPECT_EQ(j.value("scored_tokens", 0), 256);
  EXPECT_EQ(j.value("context", 0), 384);
  EXPECT_EQ(j.value("scored_per_window", 0), 128);
  const double ppl = j.value("ppl", 0.0), nll = j.value("nll", 0.0);
  EXPECT_NEAR(std::log(ppl), nll, 1e-9);
  EXPECT_GT(ppl, 10);  // a trained 4096-token model: far below uniform (4096), far above 1
  EXPECT_LT(ppl, 500);
}

TEST(CliRef, GreedyGenerateMatchesReference) {
  ATP_SKIP_WITHOUT_SHARED();
  auto cases = json::parse(testing::Slurp(testing::kRefModel + "/reference/greedy.json"));
  const auto& c = cases[0];
  json j = OneJsonObject(RunAtp("generate -m '" + testing::kRefModel + "' -p '" + c["prompt"].get<std::string>() +
                                "' -n 32 --temp 0 --json"));
  EXPECT_EQ(j.value("prompt_tokens", size_t(0)), c["prompt_ids"].size());
  EXPECT_EQ(j["token_ids"], c["greedy_ids"]);
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST_F(CliTiny, PromptLongerThanContext) {
  ExpectOneLineError(RunAtp("generate " + M() + " -c 8 -p 'a prompt much longer than eight tokens' --json"),
                     {"atp generate", "context of 8"});
}

TEST_F(CliTiny, EmptyPromptWithoutBos) {
  ExpectOneLineError(RunAtp("generate " + M() + " -p '' --no-bos"), {"prompt is empty"});
}

TEST_F(CliTiny, InvalidKvListsPoliciesAndKeys) {
  ExpectOneLineError(RunAtp("generate " + M() + " -p hi --kv bogus"), {"bogus", "valid policies", "dense"});
  ExpectOneLineError(RunAtp("perplexity " + M() + " -f x --kv dense:bits=4"), {"bits", "valid keys", "dtype"});
  ExpectOneLineError(RunAtp("bench " + M() + " --kv dense:dtype=q3 --json"), {"dtype=q3", "f32"});
}

TEST_F(CliTiny, BadSamplingFlagIsNamed) {
  ExpectOneLineError(RunAtp("generate " + M() + " -p hi --temp -1"), {"temperature"});
  ExpectOneLineError(RunAtp("generate " + M() + " -p hi --top-p 0"), {"top_p"});
  ExpectOneLineError(RunAtp("generate " + M() + " -p hi -t -2"), {"--threads"});
}

TEST_F(CliTiny, MissingTextFileIsNamed) {
  ExpectOneLineError(RunAtp("perplexity " + M() + " -f /nonexistent/text.txt --json"), {"/nonexistent/text.txt"});
}

TEST_F(CliTiny, TextShorterThanOneWindow) {
  testing::WriteString(*dir_ / "short.txt", "too short");
  ExpectOneLineError(RunAtp("perplexity " + M() + " -f '" + (*dir_ / "short.txt") + "' --json"), {"fewer than one window"});
}

TEST(CliErrors, MissingModelDirectoryIsNamed) {
  ExpectOneLineError(RunAtp("generate -m /nonexistent/model -p hi"), {"/nonexistent/model"});
  ExpectOneLineError(RunAtp("inspect -m /nonexistent/model --json"), {"/nonexistent/model"});
  ExpectOneLineError(RunAtp("bench -m /nonexistent/model --json"), {"/nonexistent/model"});
}

// Q8_0/Q4_0 have no safetensors dtype: testgen refuses them and names the way that works.
TEST(CliErrors, TestgenRefusesBlockDTypes) {
  testing::TempDir d("cli_q8");
  ExpectOneLineError(RunAtp("testgen --shape tiny --type q8_0 -o '" + d.path() + "/m'"), {"--type", "--weights"});
  EXPECT_FALSE(std::filesystem::exists(d / "m"));
}

TEST(CliErrors, UnknownTestgenShapeListsShapes) {
  testing::TempDir d("cli_shape");
  ExpectOneLineError(RunAtp("testgen --shape gpt5 -o '" + d.path() + "/m'"), {"gpt5", "tiny", "llama-3.2-1b"});
  EXPECT_FALSE(std::filesystem::exists(d / "m"));
}

TEST(CliErrors, UsageErrorsAreOneLine) {
  ExpectOneLineError(RunAtp(""), {"subcommand"});
  ExpectOneLineError(RunAtp("generate -p hi"), {"--model"});
  ExpectOneLineError(RunAtp("generate -m x -p hi --no-such-flag"), {"--no-such-flag"});
  ExpectOneLineError(RunAtp("frobnicate"), {"frobnicate"});
  ExpectOneLineError(RunAtp("generate -m x -p hi -n many"), {"many"});
}

TEST(CliErrors, CorruptModelIsNamed) {
  testing::TempDir d("cli_corrupt");
  testing::WriteString(d / "config.json", "{\"model_type\": \"llama\"");
  testing::WriteString(d / "model.safetensors", "xx");
  ExpectOneLineError(RunAtp("inspect -m '" + d.path() + "'"), {"config.json", "invalid JSON"});
}

}  // namespace
}  // namespace atp
