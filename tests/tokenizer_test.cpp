// The tokenizer on the reference model (ids from the independent implementation that trained it)
// and on malformed tokenizer.json files, whose errors must name the file and field at fault.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/mapped_file.h"
#include "test_util.h"

namespace atp {
namespace {

using testing::kRefModel;
using testing::kShared;

std::unique_ptr<Tokenizer> LoadRef() {
  auto tok = Tokenizer::LoadFromDir(kRefModel);
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

TEST(TokenizerRef, MatchesReferenceCases) {
  if (!std::filesystem::exists(kRefModel)) GTEST_SKIP() << "no shared data at " << kShared;
  auto tok = LoadRef();
  ASSERT_TRUE(tok);
  auto text = ReadFile(kRefModel + "/reference/tokenizer_cases.json");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  const auto cases = nlohmann::json::parse(text.value());
  ASSERT_GT(cases.size(), 0u);
  for (const auto& c : cases) {
    const std::string s = c["text"];
    const std::vector<int32_t> want = c["ids"];
    EXPECT_EQ(tok->Encode(s, false), want) << "text: " << s;
    EXPECT_EQ(tok->Decode(want), s);
  }
}

TEST(TokenizerRef, SpecialIdsAndTemplate) {
  if (!std::filesystem::exists(kRefModel)) GTEST_SKIP() << "no shared data at " << kShared;
  auto tok = LoadRef();
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->vocab_size(), 4096);
  EXPECT_EQ(tok->bos_id(), 4092);
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>{4093});
  EXPECT_TRUE(tok->IsSpecial(4095));
  EXPECT_FALSE(tok->IsSpecial(72));
  EXPECT_EQ(tok->TokenToId("<|doc|>"), 4095);
  EXPECT_EQ(tok->IdToToken(4094), "<|pad|>");
  EXPECT_EQ(tok->IdToToken(4096), "");
  EXPECT_EQ(tok->TokenToId("no such token"), -1);

  const auto plain = tok->Encode("Hello world", false);
  auto with_bos = plain;
  with_bos.insert(with_bos.begin(), 4092);
  EXPECT_EQ(tok->Encode("Hello world", true), with_bos);
  // Special-token text inside ordinary text is split out as the special token.
  const auto ids = tok->Encode("a<|doc|>b<|end_of_text|>", false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 4095), 1);
  EXPECT_EQ(ids.back(), 4093);
  EXPECT_EQ(tok->Decode(ids), "a<|doc|>b<|end_of_text|>");
  EXPECT_EQ(tok->Decode(ids, /*skip_special=*/true), "ab");
}

TEST(TokenizerRef, ValidTextRoundTripsFast) {
  const std::string path = kShared + "/data/valid.txt";
  if (!std::filesystem::exists(path) || !std::filesystem::exists(kRefModel))
    GTEST_SKIP() << "no shared data at " << kShared;
  auto tok = LoadRef();
  ASSERT_TRUE(tok);
  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok());
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok->Encode(text.value(), false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("encoded %zu bytes into %zu tokens in %.3f s\n", text.value().size(), ids.size(), secs);
  EXPECT_LT(secs, 1.0) << "a Release build takes about 0.1 s";
  EXPECT_EQ(tok->Decode(ids), text.value());
}

// ---- malformed inputs: each error names the source and the field ----

const char* kMinimal = R"({
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
  "pre_tokenizer": null, "decoder": null, "added_tokens": []
})";

nlohmann::json Minimal() { return nlohmann::json::parse(kMinimal); }

Status LoadError(const std::string& tokenizer_json, const std::string& config = "") {
  auto r = Tokenizer::LoadFromJson(tokenizer_json, config, "test.json");
  return r.ok() ? Status::Ok() : r.status();
}

void ExpectError(const Status& s, Status::Code code, const std::vector<std::string>& parts) {
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), code) << s.ToString();
  for (const auto& p : parts)
    EXPECT_NE(s.message().find(p), std::string::npos) << s.ToString() << " lacks " << p;
}

TEST(TokenizerLoad, MinimalLoads) {
  auto tok = Tokenizer::LoadFromJson(kMinimal, "", "test.json");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ(tok.value()->Encode("abba", false), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(tok.value()->bos_id(), -1);
  EXPECT_TRUE(tok.value()->eos_ids().empty());
}

TEST(TokenizerLoad, InvalidJson) {
  ExpectError(LoadError("{\"model\": "), Status::Code::kCorruption, {"test.json", "invalid JSON"});
  ExpectError(LoadError(kMinimal, "{not json"), Status::Code::kCorruption,
              {"tokenizer_config", "invalid JSON"});
  ExpectError(LoadError("[1, 2]"), Status::Code::kCorruption, {"test.json"});
}

TEST(TokenizerLoad, MissingModel) {
  auto j = Minimal();
  j.erase("model");
  ExpectError(LoadError(j.dump()), Status::Code::kCorruption, {"test.json", "model", "missing"});
  j = Minimal();
  j["model"].erase("vocab");
  ExpectError(LoadError(j.dump()), Status::Code::kCorruption, {"test.json", "model.vocab", "missing"});
  j = Minimal();
  j["model"]["merges"] = 3;
  ExpectError(LoadError(j.dump()), Status::Code::kCorruption, {"model.merges", "array"});
  j = Minimal();
  j["model"]["merges"] = {"a c"};
  ExpectError(LoadError(j.dump()), Status::Code::kCorruption, {"model.merges[0]", "vocabulary"});
}

TEST(TokenizerLoad, UnknownTypes) {
  auto j = Minimal();
  j["model"]["type"] = "Unigram";
  ExpectError(LoadError(j.dump()), Status::Code::kUnsupported, {"test.json", "model.type", "Unigram"});
  j = Minimal();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "ByteLevel"}}, {{"type", "Whitespace"}}}}};
  ExpectError(LoadError(j.dump()), Status::Code::kUnsupported,
              {"test.json", "pre_tokenizer.pretokenizers[1].type", "Whitespace"});
  j = Minimal();
  j["normalizer"] = {{"type", "NFKC"}};
  ExpectError(LoadError(j.dump()), Status::Code::kUnsupported, {"normalizer.type", "NFKC"});
  j = Minimal();
  j["decoder"] = {{"type", "WordPiece"}};
  ExpectError(LoadError(j.dump()), Status::Code::kUnsupported, {"decoder.type", "WordPiece"});
  j = Minimal();
  j["post_processor"] = {{"type", "BertProcessing"}};
  ExpectError(LoadError(j.dump()), Status::Code::kUnsupported, {"post_processor.type", "BertProcessing"});
  j = Minimal();
  j["pre_tokenizer"] = {{"kind", "ByteLevel"}};
  ExpectError(LoadError(j.dump()), Status::Code::kCorruption, {"pre_tokenizer.type", "missing"});
}

TEST(TokenizerLoad, BadFields) {
  auto j = Minimal();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  ExpectError(LoadError(j.dump()), Status::Code::kUnsupported, {"pre_tokenizer.pattern.Regex", "regex"});
  j = Minimal();
  j["added_tokens"] = {{{"id", "seven"}, {"content", "<x>"}}};
  ExpectError(LoadError(j.dump()), Status::Code::kCorruption, {"added_tokens[0].id", "token id"});
  ExpectError(LoadError(kMinimal, R"({"bos_token": "<s>"})"), Status::Code::kCorruption,
              {"tokenizer_config", "bos_token", "<s>"});
  ExpectError(LoadError(kMinimal, R"({"eos_token": {"lstrip": false}})"), Status::Code::kCorruption,
              {"eos_token.content", "missing"});
}

TEST(TokenizerLoad, MissingDirectory) {
  auto r = Tokenizer::LoadFromDir("/nonexistent/model");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nonexistent/model/tokenizer.json"), std::string::npos);
}

}  // namespace
}  // namespace atp
