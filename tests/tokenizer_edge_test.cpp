// Edge cases on small hand-written tokenizers: SentencePiece-style BPE (both Metaspace forms, byte
// fallback, unk), added-token options, Split behaviours, templates, streaming, NFC and UTF-8 repair.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_nfc.h"
#include "tokenizer/utf8.h"

namespace atp {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

constexpr int32_t kUnk = 0, kBos = 1, kEos = 2, kSpace = 259, kA = 260, kB = 261, kSpaceA = 262, kAB = 263,
                  kSpaceAB = 264;
int32_t Byte(int b) { return 3 + b; }

// A SentencePiece-like vocabulary: specials, 256 byte tokens, then "▁", "a", "b" and their merges.
json SpmModel(bool byte_fallback) {
  json vocab = {{"<unk>", kUnk}, {"<s>", kBos}, {"</s>", kEos}};
  if (byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      vocab[name] = Byte(b);
    }
  }
  for (const auto& [tok, id] : std::vector<std::pair<std::string, int32_t>>{
           {"▁", kSpace}, {"a", kA}, {"b", kB}, {"▁a", kSpaceA}, {"ab", kAB}, {"▁ab", kSpaceAB}})
    vocab[tok] = id;
  return {{"type", "BPE"},
          {"vocab", vocab},
          {"merges", {"▁ a", "a b", "▁a b"}},
          {"unk_token", "<unk>"},
          {"byte_fallback", byte_fallback},
          {"fuse_unk", true}};
}

json AddedTokenJson(const std::string& content, int id, bool special) {
  return {{"id", id},        {"content", content},  {"special", special},  {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"single_word", false}};
}

json BosTemplate() {
  return {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {kBos}}, {"tokens", {"<s>"}}}}}}};
}

// Llama-2 / Mistral as saved by recent tokenizers: normalizer Prepend + Replace, decoder chain.
json Llama2Style(bool byte_fallback = true) {
  return {{"model", SpmModel(byte_fallback)},
          {"added_tokens",
           {AddedTokenJson("<unk>", kUnk, true), AddedTokenJson("<s>", kBos, true),
            AddedTokenJson("</s>", kEos, true)}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "▁"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor", BosTemplate()},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}}};
}

// The older form: a Metaspace pre-tokenizer and decoder.
json MetaspaceStyle(const std::string& prepend_scheme) {
  json j = Llama2Style();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", prepend_scheme}, {"split", true}};
  j["decoder"] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", prepend_scheme}, {"split", true}};
  return j;
}

std::unique_ptr<Tokenizer> Load(const json& j, const std::string& config = "") {
  auto r = Tokenizer::LoadFromJson(j.dump(), config, "test.json");
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : nullptr;
}

std::string Stream(const Tokenizer& tok, const Ids& ids, std::vector<std::string>* parts = nullptr) {
  StreamDecoder s(tok);
  std::string all;
  for (int32_t id : ids) {
    std::string p = s.Push(id);
    if (parts) parts->push_back(p);
    all += p;
  }
  return all + s.Flush();
}

TEST(TokenizerSpm, NormalizerFormMergesAndBytes) {
  auto tok = Load(Llama2Style());
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->Encode("ab", false), (Ids{kSpaceAB}));
  EXPECT_EQ(tok->Encode("ab ab", false), (Ids{kSpaceAB, kSpaceAB}));
  EXPECT_EQ(tok->Encode("ab", true), (Ids{kBos, kSpaceAB}));
  EXPECT_EQ(tok->Encode("é", false), (Ids{kSpace, Byte(0xC3), Byte(0xA9)}));
  EXPECT_EQ(tok->Decode(Ids{kSpace, Byte(0xC3), Byte(0xA9)}), "é");
  EXPECT_EQ(tok->Decode(Ids{kSpaceAB, kSpaceAB}), "ab ab");
  EXPECT_EQ(tok->bos_id(), kBos);  // from the template: there is no tokenizer_config
  EXPECT_EQ(tok->IdToToken(Byte(0xE2)), "<0xE2>");
  EXPECT_EQ(tok->TokenToId("<0xE2>"), Byte(0xE2));
}

TEST(TokenizerSpm, EmptyAndWhitespace) {
  auto tok = Load(Llama2Style());
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->Encode("", false), Ids{});
  EXPECT_EQ(tok->Encode("", true), (Ids{kBos}));
  EXPECT_EQ(tok->Decode(Ids{}), "");
  EXPECT_EQ(tok->Encode(" ", false), (Ids{kSpace, kSpace}));
  EXPECT_EQ(tok->Decode(tok->Encode(" ", false)), " ");
  EXPECT_EQ(tok->Decode(tok->Encode("  a  ", false)), "  a  ");
  EXPECT_EQ(tok->Decode(Ids{kBos}), "<s>");
  EXPECT_EQ(tok->Decode(Ids{kBos, kSpaceA}, /*skip_special=*/true), "a");
  EXPECT_EQ(tok->Decode(Ids{-1, 100000, kSpaceA}), "a");  // ids outside the vocabulary have no text
}

TEST(TokenizerSpm, ByteFallbackDecodeOfBrokenUtf8) {
  auto tok = Load(Llama2Style());
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->Decode(Ids{Byte(0xE2), Byte(0x82)}), "\xEF\xBF\xBD");  // one U+FFFD per maximal subpart
  EXPECT_EQ(tok->Decode(Ids{Byte(0xFF), kA}),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(tok->Decode(Ids{Byte(0xE2), Byte(0x82), Byte(0xAC)}), "€");
}

TEST(TokenizerSpm, UnkIsFusedWithoutByteFallback) {
  auto tok = Load(Llama2Style(/*byte_fallback=*/false));
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->Encode("xyz", false), (Ids{kSpace, kUnk}));
  EXPECT_EQ(tok->Encode("xaz", false), (Ids{kSpace, kUnk, kA, kUnk}));
}

TEST(TokenizerSpm, MetaspacePreTokenizerForm) {
  auto always = Load(MetaspaceStyle("always"));
  ASSERT_TRUE(always);
  EXPECT_EQ(always->Encode("ab ab", false), (Ids{kSpaceAB, kSpaceAB}));
  EXPECT_EQ(always->Decode(Ids{kSpaceAB, kSpaceAB}), "ab ab");
  // "first" prepends only where the text starts, not after an added token.
  EXPECT_EQ(always->Encode("ab<s>ab", false), (Ids{kSpaceAB, kBos, kSpaceAB}));
  auto first = Load(MetaspaceStyle("first"));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->Encode("ab<s>ab", false), (Ids{kSpaceAB, kBos, kAB}));
  auto never = Load(MetaspaceStyle("never"));
  ASSERT_TRUE(never);
  EXPECT_EQ(never->Encode("ab ab", false), (Ids{kAB, kSpaceAB}));
  EXPECT_EQ(never->Decode(Ids{kSpaceAB}), " ab");
}

TEST(TokenizerAdded, StripSingleWordAndNormalized) {
  json j = Llama2Style();
  json mask = AddedTokenJson("<mask>", 300, true);
  mask["lstrip"] = true;
  json sep = AddedTokenJson("<sep>", 301, true);
  sep["rstrip"] = true;
  json word = AddedTokenJson("zz", 302, false);
  word["single_word"] = true;
  json norm = AddedTokenJson("▁ab", 303, false);
  norm["normalized"] = true;
  for (const json& t : {mask, sep, word, norm}) j["added_tokens"].push_back(t);
  auto tok = Load(j);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->vocab_size(), 304);
  EXPECT_EQ(tok->Encode("a <mask>", false), (Ids{kSpaceA, 300}));   // the space before <mask> is swallowed
  EXPECT_EQ(tok->Encode("<sep>   a", false), (Ids{301, kSpaceA}));  // the spaces after <sep> too
  EXPECT_EQ(tok->Encode("a <sep> a", false), (Ids{kSpaceA, kSpace, 301, kSpaceA}));
  const Ids words = tok->Encode("zz zzz zz", false);
  EXPECT_EQ(std::count(words.begin(), words.end(), 302), 2) << "zz inside zzz is not a single word";
  // A normalized added token is found after the normalizer ran: "ab" becomes "▁ab".
  EXPECT_EQ(tok->Encode("ab", false), (Ids{303}));
  EXPECT_FALSE(tok->IsSpecial(302));
  EXPECT_TRUE(tok->IsSpecial(300));
  EXPECT_EQ(tok->Decode(Ids{kSpaceA, 300, 302}, true), "azz");
}

// Vocabulary where the split decides the result: "a-b" merges fully unless split at "-".
json SplitTokenizer(const std::string& behavior) {
  return {{"model",
           {{"type", "BPE"},
            {"vocab", {{"a", 0}, {"-", 1}, {"b", 2}, {"a-", 3}, {"-b", 4}, {"a-b", 5}}},
            {"merges", json::parse(R"([["a", "-"], ["-", "b"], ["a-", "b"]])")}}},
          {"pre_tokenizer",
           {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", false}}}};
}

TEST(TokenizerSplit, Behaviors) {
  const std::vector<std::pair<std::string, Ids>> cases = {{"Isolated", {0, 1, 2}},
                                                          {"Removed", {0, 2}},
                                                          {"MergedWithPrevious", {3, 2}},
                                                          {"MergedWithNext", {0, 4}}};
  for (const auto& [behavior, want] : cases) {
    auto tok = Load(SplitTokenizer(behavior));
    ASSERT_TRUE(tok);
    EXPECT_EQ(tok->Encode("a-b", false), want) << behavior;
  }
  json j = SplitTokenizer("Isolated");
  j.erase("pre_tokenizer");
  EXPECT_EQ(Load(j)->Encode("a-b", false), (Ids{5}));
  j["pre_tokenizer"] = SplitTokenizer("Contiguous")["pre_tokenizer"];
  auto r = Tokenizer::LoadFromJson(j.dump(), "", "t.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("pre_tokenizer.behavior"), std::string::npos) << r.status().ToString();
  // No decoder: tokens are joined with spaces, as Hugging Face does.
  EXPECT_EQ(Load(SplitTokenizer("Isolated"))->Decode(Ids{0, 1, 2}), "a - b");
}

TEST(TokenizerSplit, RegexReplaceNormalizer) {
  json j = SplitTokenizer("Isolated");
  j.erase("pre_tokenizer");
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", "-"}};
  EXPECT_EQ(Load(j)->Encode("a \t\n b", false), (Ids{5}));
}

TEST(TokenizerConfig, SpecialIdsFromConfig) {
  json j = Llama2Style();
  j["post_processor"] = json::parse(R"({"type": "Sequence", "processors": [
      {"type": "ByteLevel", "trim_offsets": false},
      {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                {"Sequence": {"id": "A", "type_id": 0}},
                                                {"SpecialToken": {"id": "</s>", "type_id": 0}}]}]})");
  auto from_template = Load(j);
  ASSERT_TRUE(from_template);
  EXPECT_EQ(from_template->Encode("a", true), (Ids{kBos, kSpaceA, kEos}));
  EXPECT_EQ(from_template->bos_id(), kBos);
  EXPECT_EQ(from_template->eos_ids(), (Ids{kEos}));

  // The config names BOS/EOS (string or AddedToken object); add_bos_token does not override the
  // post-processor, as in transformers' fast tokenizers.
  auto from_config =
      Load(j, R"({"bos_token": {"__type": "AddedToken", "content": "</s>"}, "eos_token": "<unk>",
                                 "add_bos_token": false, "additional_special_tokens": ["a"]})");
  ASSERT_TRUE(from_config);
  EXPECT_EQ(from_config->bos_id(), kEos);
  EXPECT_EQ(from_config->eos_ids(), (Ids{kUnk}));
  EXPECT_EQ(from_config->Encode("a", true), (Ids{kBos, kSpaceA, kEos}));
  EXPECT_TRUE(from_config->IsSpecial(kA));
}

TEST(TokenizerStream, HoldsBackIncompleteCharacters) {
  auto tok = Load(Llama2Style());
  ASSERT_TRUE(tok);
  const Ids euro = {kSpace, Byte(0xE2), Byte(0x82), Byte(0xAC), kSpaceA};
  std::vector<std::string> parts;
  EXPECT_EQ(Stream(*tok, euro, &parts), tok->Decode(euro));
  EXPECT_EQ(parts, (std::vector<std::string>{"", "", "", "€", " a"}));
  // An unfinished character at the end only comes out at Flush, as U+FFFD.
  StreamDecoder s(*tok);
  EXPECT_EQ(s.Push(kSpaceA), "a");
  EXPECT_EQ(s.Push(Byte(0xF0)), "");
  EXPECT_EQ(s.Flush(), "\xEF\xBF\xBD");
  // A long stream keeps matching the one-shot decode although the window is trimmed.
  Ids many;
  for (int i = 0; i < 200; ++i)
    many.insert(many.end(), {kSpaceAB, kSpace, Byte(0xC3), Byte(0xA9), Byte(0xFF), kA});
  EXPECT_EQ(Stream(*tok, many), tok->Decode(many));
}

TEST(TokenizerUtf8, InvalidInputIsRepaired) {
  auto tok = Load(Llama2Style());
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->Encode("a\xFF"
                        "b",
                        false),
            tok->Encode("a\xEF\xBF\xBD"
                        "b",
                        false));
  EXPECT_EQ(tok->Encode("\xE2\x82", false), tok->Encode("\xEF\xBF\xBD", false));
  EXPECT_TRUE(utf8::IsValid("plain \xEF\xBF\xBD é 🙂"));
  EXPECT_FALSE(utf8::IsValid("\xC0\xAF"));          // overlong
  EXPECT_FALSE(utf8::IsValid("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(utf8::IsValid("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_EQ(utf8::Repair("\xF0\x9F\x99"
                         "a"),
            "\xEF\xBF\xBD"
            "a");  // a truncated 4-byte sequence
  EXPECT_EQ(utf8::Repair("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TokenizerNfc, ComposesAndReorders) {
  EXPECT_EQ(ToNfc("e\u0301"), "\u00e9");
  EXPECT_EQ(ToNfc("\u212B"), "\u00C5");                             // singleton: Angstrom sign
  EXPECT_EQ(ToNfc("\u2126"), "\u03A9");                             // Ohm sign
  EXPECT_EQ(ToNfc("a\u0323\u0302"), "\u1EAD");                      // dot below then circumflex
  EXPECT_EQ(ToNfc("a\u0302\u0323"), "\u1EAD");                      // reordered by combining class first
  EXPECT_EQ(ToNfc("\u1100\u1161\u11A8"), "\uAC01");                 // Hangul L V T
  EXPECT_EQ(ToNfc("\uAC00\u11A8"), "\uAC01");                       // Hangul LV + T
  EXPECT_EQ(ToNfc("\u0958"), "\u0915\u093C");                       // composition exclusion stays decomposed
  EXPECT_EQ(ToNfc("\u0301e"), "\u0301e");                           // a leading mark has nothing to join
  EXPECT_EQ(ToNfc("a\u0308\u0301b\u0327"), "\u00e4\u0301b\u0327");  // no precomposed ä́ or b̧
  EXPECT_EQ(ToNfc("plain ASCII"), "plain ASCII");
  EXPECT_EQ(ToNfc("日本語 🙂"), "日本語 🙂");
}

TEST(TokenizerThreads, ConcurrentEncodeAgrees) {
  auto tok = Load(Llama2Style());
  ASSERT_TRUE(tok);
  std::string text;
  for (int i = 0; i < 2000; ++i) text += i % 3 ? "ab a " : "é € b ";
  const Ids want = tok->Encode(text, true);
  std::vector<std::thread> threads;
  std::vector<Ids> got(4);
  for (int t = 0; t < 4; ++t) threads.emplace_back([&, t] { got[size_t(t)] = tok->Encode(text, true); });
  for (auto& th : threads) th.join();
  for (const Ids& g : got) EXPECT_EQ(g, want);
}

}  // namespace
}  // namespace atp
