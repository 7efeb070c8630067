// Inputs that crashed, hung or tripped a sanitizer in the fuzz/ targets (or in reviewing them), kept
// as they were found: each test fails on the code before its fix. docs/hardening.md lists them.
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "eval/serving_plot.h"
#include "format/safetensors.h"
#include "kv/kv_policy.h"
#include "model/config.h"
#include "model/testgen.h"
#include "model/weights.h"
#include "server/api_request.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace atp {
namespace {

// fuzz_config: q_dim() = 65536 * 65536 overflowed int (UBSan: signed integer overflow).
TEST(FuzzRegression, ConfigHeadProductOutOfRange) {
  const std::string cfg =
      R"({"model_type":"llama","hidden_size":256,"intermediate_size":688,"num_hidden_layers":6,)"
      R"("num_attention_heads":65536,"num_key_value_heads":65536,"head_dim":65536,"vocab_size":4096})";
  auto c = ParseModelConfig(cfg, "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("num_attention_heads * head_dim"), std::string::npos) << c.status().ToString();
}

// fuzz_config: a config claiming 2^30 layers made BindWeights allocate all of them (about 500 GB)
// before finding that layer 2 is missing; it must fail on the missing tensor instead.
TEST(FuzzRegression, ConfigClaimingMoreLayersThanTheFileHolds) {
  testing::TempDir d("layers");
  ASSERT_TRUE(WriteTestModel("tiny", d.path(), DType::kF32, 1).ok());
  auto text = ReadFile(d / "config.json");
  ASSERT_TRUE(text.ok());
  nlohmann::json j = nlohmann::json::parse(*text);
  const int layers = j["num_hidden_layers"];
  j["num_hidden_layers"] = 1 << 30;
  auto cfg = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  auto st = SafeTensors::Open(d.path());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto w = BindWeights(*cfg, **st);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("model.layers." + std::to_string(layers) + "."), std::string::npos)
      << w.status().ToString();
}

// A 200 KB body of nested lists overflowed the stack: ParseApiRequest copies "stop" and each message,
// and a JSON copy recurses once per level. (Found writing fuzz_api_request, whose inputs stay far
// smaller by default; the same copy ran on a server thread.)
TEST(FuzzRegression, RequestNestedTooDeeply) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  for (const auto& [body, chat] : {std::pair{R"({"prompt":"x","stop":)" + deep + "}", false},
                                   {R"({"messages":[{"role":"user","content":"x","extra":)" + deep + "}]}", true}}) {
    ApiRequest r;
    auto err = ParseApiRequest(body, chat, &r);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->status, 400);
    EXPECT_NE(err->message.find("deeper than 64"), std::string::npos) << err->message;
  }
  ApiRequest r;  // the nesting real requests use still parses
  EXPECT_FALSE(ParseApiRequest(R"({"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]})", true, &r));
}

// fuzz_api_request: a content part whose "type" was an object made part.value("type", "") throw
// nlohmann's type_error out of ParseApiRequest (std::terminate). The same pattern read a
// tokenizer_config.json chat_template list entry's "name" (found in review): both compare the field
// as JSON now, so a non-string is just not a match.
TEST(FuzzRegression, NonStringFieldsWhereStringsAreCompared) {
  ApiRequest r;
  auto err = ParseApiRequest(R"({"messages":[{"role":"user","content":[{"type":{"prompt":[1]},"text":"there"}]}]})", true, &r);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->status, 400);
  EXPECT_NE(err->message.find("only parts of type 'text'"), std::string::npos) << err->message;
  const auto cfg = nlohmann::json::parse(
      R"({"chat_template": [{"name": 7, "template": "bad"}, {"name": "default", "template": "{{ 'ok' }}"}]})");
  auto t = ChatTemplate::FromTokenizerConfig(cfg, "tokenizer_config.json");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  auto text = t->Render(nlohmann::ordered_json::array(), false);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "ok");
}

// fuzz_tokenizer_json: a Split on \C cut "é" into its two bytes; the next Split then matched past
// the end of the one-byte piece and substr threw std::out_of_range out of Encode (std::terminate).
// \C is now refused when the tokenizer loads.
TEST(FuzzRegression, TokenizerRegexSplittingCharactersIsRefused) {
  const std::string tok = R"({"model":{"type":"BPE","vocab":{"a":0,"\u00e9":1},"merges":[]},)"
                          R"("pre_tokenizer":{"type":"Sequence","pretokenizers":[)"
                          R"({"type":"Split","pattern":{"Regex":"\\C"},"behavior":"Isolated"},)"
                          R"({"type":"Split","pattern":{"Regex":"."},"behavior":"Removed"}]}})";
  auto t = Tokenizer::LoadFromJson(tok, "", "tokenizer.json");
  ASSERT_FALSE(t.ok()) << "loaded; Encode(\"\u00e9\") would have split the character";
  EXPECT_EQ(t.status().code(), Status::Code::kUnsupported) << t.status().ToString();
  EXPECT_NE(t.status().message().find("pretokenizers[0].pattern.Regex"), std::string::npos) << t.status().ToString();
}

// 11 (docs/hardening.md): numbers a server_bench.py report may hold that `atp plot serving` did not
// survive: a count of 1e30 cast to an integer (undefined; it printed -9223372036854775808), and a
// concurrency near DBL_MAX, whose tick loop ran forever.
TEST(FuzzRegression, ServingReportHugeNumbers) {
  nlohmann::json policy = {{"kv", "dense"}, {"levels", nlohmann::json::array({{{"concurrency", 1}, {"tok_s", 42.5}}})}};
  nlohmann::json report = {{"prompt_tokens", 1e30}, {"policies", nlohmann::json::array({policy})}};
  auto plots = ServingPlots(report);
  ASSERT_TRUE(plots.ok()) << plots.status().ToString();
  EXPECT_NE((*plots)[0].second.find("1e+30-token prompt"), std::string::npos) << (*plots)[0].second;
  report["policies"][0]["levels"][0]["concurrency"] = 1.7e308;
  auto bad = ServingPlots(report);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'concurrency' missing or not a number from 1 to 2^20"), std::string::npos)
      << bad.status().ToString();
}

// fuzz_kv_policy (2026-12-06): online lowrank with rv=366 and block=1 padded every one-token block's basis
// to 366 zero columns that each query multiplied: 15 s for 70 tokens under ASan. A rank beyond head_dim is
// now refused by CheckShape, which every user of a policy string calls before creating layers.
TEST(FuzzRegression, LowRankRankBeyondHeadDimIsRefused) {
  auto f = ParseKvPolicy("lowrank:rk=7,rv=366,mode=online,block=1");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const Status st = (*f)->CheckShape(KvShape{0, 32, 4, 2, 64});
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("rk and rv must be <= head_dim 64"), std::string::npos) << st.ToString();
  EXPECT_TRUE(ParseKvPolicy("lowrank:rk=7,rv=64,mode=online,block=1").value()->CheckShape(KvShape{0, 32, 4, 2, 64}).ok());
}

}  // namespace
}  // namespace atp
