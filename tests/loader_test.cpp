// config.json parsing (Llama, Mistral, Qwen2 fields, RoPE scaling) and every way a checkpoint or a
// request can be malformed: each case must fail with a Status whose message names the problem.
#include <cmath>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/generate.h"
#include "format/safetensors.h"
#include "kv/kv_policy.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/testgen.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace atp {
namespace {

using nlohmann::json;

json LlamaJson() {
  return {{"model_type", "llama"},  {"hidden_size", 256},       {"intermediate_size", 688},
          {"num_hidden_layers", 6}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
          {"vocab_size", 4096},     {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},  {"tie_word_embeddings", true}, {"bos_token_id", 4092},
          {"eos_token_id", 4093},   {"attention_bias", false}};
}

Result<ModelConfig> Parse(const json& j) { return ParseModelConfig(j.dump(), "cfg.json"); }

// Expects a failure whose message contains every one of `needles`.
void ExpectError(const Status& s, std::initializer_list<std::string> needles) {
  ASSERT_FALSE(s.ok()) << "expected an error mentioning " << *needles.begin();
  for (auto& n : needles) EXPECT_NE(s.ToString().find(n), std::string::npos) << "'" << n << "' not in: " << s.ToString();
  EXPECT_EQ(s.ToString().find('\n'), std::string::npos) << "one line: " << s.ToString();
}
template <typename T>
void ExpectError(const Result<T>& r, std::initializer_list<std::string> needles) {
  ExpectError(r.status(), needles);
}

// ---------------------------------------------------------------------------------------------
// Config parsing

TEST(Config, LlamaFields) {
  auto c = Parse(LlamaJson());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 688);
  EXPECT_EQ(c->num_layers, 6);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 64);  // hidden_size / num_attention_heads
  EXPECT_EQ(c->q_dim(), 256);
  EXPECT_EQ(c->kv_dim(), 128);
  EXPECT_EQ(c->vocab_size, 4096);
  EXPECT_EQ(c->max_position, 2048);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.0f);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->bos_token_id, 4092);
  EXPECT_EQ(c->eos_token_ids, std::vector<int>{4093});
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
}

TEST(Config, MistralFields) {
  json j = {{"model_type", "mistral"}, {"hidden_size", 4096}, {"intermediate_size", 14336},
            {"num_hidden_layers", 32}, {"num_attention_heads", 32}, {"num_key_value_heads", 8},
            {"vocab_size", 32768}, {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-5},
            {"rope_theta", 1000000.0}, {"sliding_window", nullptr}, {"tie_word_embeddings", false},
            {"bos_token_id", 1}, {"eos_token_id", 2}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_type, "mistral");
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->kv_dim(), 1024);
  EXPECT_FLOAT_EQ(c->rope_theta, 1e6f);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->tie_word_embeddings);
}

TEST(Config, Qwen2HasAttentionBiasByDefault) {
  json j = {{"model_type", "qwen2"}, {"hidden_size", 896}, {"intermediate_size", 4864},
            {"num_hidden_layers", 24}, {"num_attention_heads", 14}, {"num_key_value_heads", 2},
            {"vocab_size", 151936}, {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-6},
            {"rope_theta", 1000000.0}, {"tie_word_embeddings", true}, {"bos_token_id", 151643},
            {"eos_token_id", 151645}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_kv_heads, 2);
  j["attention_bias"] = false;  // an explicit field wins over the model_type default
  EXPECT_FALSE(Parse(j)->attention_bias);
  json l = LlamaJson();
  l["attention_bias"] = true;
  EXPECT_TRUE(Parse(l)->attention_bias);
}

TEST(Config, ExplicitHeadDimAndDefaultKvHeads) {
  json j = LlamaJson();
  j["head_dim"] = 128;  // != hidden_size / num_attention_heads (Gemma-style)
  j.erase("num_key_value_heads");
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->num_kv_heads, c->num_heads);  // no GQA when the field is absent
  EXPECT_EQ(c->q_dim(), 512);
  EXPECT_EQ(c->kv_dim(), 512);
}

TEST(Config, BosEosIntOrList) {
  json j = LlamaJson();
  j["eos_token_id"] = {128001, 128008, 128009};
  j["bos_token_id"] = {128000};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  j.erase("bos_token_id");
  j.erase("eos_token_id");
  c = Parse(j);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());
}

// transformers' _compute_default_rope_parameters: inv_freq[i] = 1 / theta^(2i/d).
std::vector<double> DefaultInvFreq(double theta, int d) {
  std::vector<double> f;
  for (int i = 0; i < d / 2; ++i) f.push_back(1.0 / std::pow(theta, double(2 * i) / d));
  return f;
}

TEST(Config, RopeScalingLinear) {
  json j = LlamaJson();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
  auto got = c->RopeInvFreq();
  auto want = DefaultInvFreq(10000.0, 64);
  ASSERT_EQ(got.size(), want.size());
  // f32 results of a double computation: relative error <= 2^-24; 1e-6 leaves margin.
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i] / 4.0, 1e-6 * want[i] / 4.0) << i;
}

TEST(Config, RopeScalingLlama3MatchesTransformersFormula) {
  // Llama 3.2 1B's values.
  json j = LlamaJson();
  j["hidden_size"] = 2048;
  j["num_attention_heads"] = 32;
  j["num_key_value_heads"] = 8;
  j["head_dim"] = 64;
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  auto got = c->RopeInvFreq();
  // transformers' _compute_llama3_parameters, written out independently.
  const double factor = 32, low = 1, high = 4, old_ctx = 8192;
  const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
  auto base = DefaultInvFreq(500000.0, 64);
  int n_high = 0, n_low = 0, n_mid = 0;
  ASSERT_EQ(got.size(), base.size());
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelen = 2 * M_PI / base[i];
    double want = wavelen > low_wavelen ? base[i] / factor : base[i];
    const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    if (medium) {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      want = (1 - smooth) * want / factor + smooth * want;
    }
    n_high += wavelen < high_wavelen;
    n_low += wavelen > low_wavelen;
    n_mid += medium;
    EXPECT_NEAR(got[i], want, 1e-5 * want) << "pair " << i << " wavelen " << wavelen;
  }
  // The config exercises all three branches of the rule.
  EXPECT_GT(n_high, 0);
  EXPECT_GT(n_low, 0);
  EXPECT_GT(n_mid, 0);
}

TEST(Config, UnknownModelType) {
  json j = LlamaJson();
  j["model_type"] = "gpt2";
  ExpectError(Parse(j), {"cfg.json", "model_type", "gpt2", "llama"});
  j.erase("model_type");
  ExpectError(Parse(j), {"model_type"});
}

TEST(Config, InvalidJson) {
  ExpectError(ParseModelConfig("{\"model_type\": \"llama\",", "bad.json"), {"bad.json", "invalid JSON"});
  ExpectError(ParseModelConfig("[1, 2]", "arr.json"), {"arr.json", "object"});
}

TEST(Config, MissingFieldIsNamed) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"}) {
    json j = LlamaJson();
    j.erase(field);
    ExpectError(Parse(j), {"cfg.json", field});
  }
}

TEST(Config, WrongTypeIsNamed) {
  struct Case {
    const char* field;
    json value;
  };
  for (auto& c : std::vector<Case>{{"hidden_size", "256"}, {"num_hidden_layers", 6.5}, {"rms_norm_eps", "tiny"},
                                   {"rope_theta", true}, {"tie_word_embeddings", "yes"}, {"eos_token_id", "2"},
                                   {"bos_token_id", json::array({"1"})}, {"attention_bias", 1}, {"model_type", 5},
                                   {"rope_scaling", "linear"}}) {
    json j = LlamaJson();
    j[c.field] = c.value;
    ExpectError(Parse(j), {"cfg.json", c.field});
  }
  json j = LlamaJson();
  j["rope_scaling"] = {{"rope_type", 3}, {"factor", 2.0}};
  ExpectError(Parse(j), {"rope_scaling", "rope_type"});
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", "2"}};
  ExpectError(Parse(j), {"rope_scaling", "factor"});
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 2.0}};
  ExpectError(Parse(j), {"rope_scaling", "yarn"});
}

TEST(Config, InconsistentValuesAreNamed) {
  json j = LlamaJson();
  j["num_key_value_heads"] = 3;
  ExpectError(Parse(j), {"num_attention_heads", "num_key_value_heads"});
  j = LlamaJson();
  j["head_dim"] = 63;
  ExpectError(Parse(j), {"head_dim"});
  j = LlamaJson();
  j["hidden_size"] = -256;
  ExpectError(Parse(j), {"hidden_size"});
  j = LlamaJson();
  j["rms_norm_eps"] = 0;
  ExpectError(Parse(j), {"rms_norm_eps"});
}

// ---------------------------------------------------------------------------------------------
// Malformed safetensors files

// Writes a safetensors file from a header object and a data section, byte for byte as given.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  testing::WriteString(path, bytes + header + data);
}

Status OpenStatus(const std::string& path) {
  auto st = SafeTensors::Open(path);
  return st.ok() ? Status::Ok() : st.status();
}

TEST(SafeTensorsBad, ValidFileOpens) {  // the baseline the malformed cases below deviate from
  testing::TempDir d("st_ok");
  WriteRaw(d / "a.safetensors", R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", std::string(16, '\0'));
  auto st = SafeTensors::Open(d / "a.safetensors");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ASSERT_NE((*st)->Find("a"), nullptr);
  EXPECT_EQ((*st)->Find("a")->shape, (std::vector<int64_t>{2, 2}));
}

TEST(SafeTensorsBad, TruncatedBeforeHeaderLength) {
  testing::TempDir d("st_trunc8");
  testing::WriteString(d / "t.safetensors", "abc");
  ExpectError(OpenStatus(d / "t.safetensors"), {"t.safetensors", "truncated"});
}

TEST(SafeTensorsBad, HeaderLongerThanFile) {
  testing::TempDir d("st_hlen");
  uint64_t n = 1000;
  testing::WriteString(d / "t.safetensors", std::string(reinterpret_cast<const char*>(&n), 8) + "{}");
  ExpectError(OpenStatus(d / "t.safetensors"), {"t.safetensors", "header length 1000", "exceeds"});
}

TEST(SafeTensorsBad, TruncatedDataSection) {
  testing::TempDir d("st_truncdata");
  // The header promises 64 bytes; the file was cut after 40.
  WriteRaw(d / "t.safetensors", R"({"w":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}})", std::string(40, '\0'));
  ExpectError(OpenStatus(d / "t.safetensors"), {"t.safetensors", "'w'", "[0, 64)", "40-byte", "truncated"});
}

TEST(SafeTensorsBad, OffsetsBeyondFile) {
  testing::TempDir d("st_lie");
  WriteRaw(d / "t.safetensors",
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4096,4104]}})",
           std::string(8, '\0'));
  ExpectError(OpenStatus(d / "t.safetensors"), {"'b'", "[4096, 4104)", "outside"});
  WriteRaw(d / "r.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, '\0'));
  ExpectError(OpenStatus(d / "r.safetensors"), {"'a'", "data_offsets"});
}

TEST(SafeTensorsBad, SpanDisagreesWithShape) {
  testing::TempDir d("st_span");
  WriteRaw(d / "t.safetensors", R"({"a":{"dtype":"BF16","shape":[3,4],"data_offsets":[0,12]}})", std::string(12, '\0'));
  ExpectError(OpenStatus(d / "t.safetensors"), {"'a'", "span 12 bytes", "[3, 4]", "needs 24"});
}

TEST(SafeTensorsBad, HeaderNotJsonOrFieldsMissing) {
  testing::TempDir d("st_json");
  WriteRaw(d / "t.safetensors", "{not json", "");
  ExpectError(OpenStatus(d / "t.safetensors"), {"t.safetensors", "header is not a JSON object"});
  WriteRaw(d / "s.safetensors", R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", std::string(4, '\0'));
  ExpectError(OpenStatus(d / "s.safetensors"), {"'a'", "shape"});
  WriteRaw(d / "o.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", std::string(4, '\0'));
  ExpectError(OpenStatus(d / "o.safetensors"), {"'a'", "data_offsets"});
  WriteRaw(d / "n.safetensors", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  ExpectError(OpenStatus(d / "n.safetensors"), {"'a'", "shape"});
}

TEST(SafeTensorsBad, UnsupportedDtypeIsNamed) {
  testing::TempDir d("st_dtype");
  WriteRaw(d / "t.safetensors", R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", std::string(16, '\0'));
  ExpectError(OpenStatus(d / "t.safetensors"), {"'ids'", "I64", "F32, F16, BF16"});
}

TEST(SafeTensorsBad, MissingFileOrDirectory) {
  testing::TempDir d("st_missing");
  EXPECT_FALSE(OpenStatus(d / "nope.safetensors").ok());
  ExpectError(OpenStatus(d.path()), {d.path(), "model.safetensors"});
}

// ---------------------------------------------------------------------------------------------
// Malformed model directories (from the tiny random-weight model)

class ModelDirBad : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    base_ = new testing::TempDir("tiny_base");
    Status s = WriteTestModel("tiny", base_->path(), DType::kF32, 7);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() {
    delete base_;
    base_ = nullptr;
  }

  // A copy of the tiny model in `dir` whose tensors went through `edit` (rename, reshape, drop).
  static void CopyWith(const std::string& dir, const std::function<void(std::vector<TensorToWrite>*)>& edit) {
    auto st = SafeTensors::Open(base_->path());
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    std::vector<TensorToWrite> ts;
    for (auto& [name, t] : (*st)->tensors()) ts.push_back({name, t.dtype, t.shape, t.data});
    edit(&ts);
    Status w = WriteSafeTensors(dir + "/model.safetensors", ts);
    ASSERT_TRUE(w.ok()) << w.ToString();
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
      std::filesystem::copy_file(base_->path() + "/" + f, dir + "/" + f);
  }

  static Status LoadStatus(const std::string& dir) {
    auto m = LlamaModel::Load(dir);
    return m.ok() ? Status::Ok() : m.status();
  }

  static testing::TempDir* base_;
};
testing::TempDir* ModelDirBad::base_ = nullptr;

TEST_F(ModelDirBad, UnmodifiedCopyLoads) {
  testing::TempDir d("copy");
  ASSERT_NO_FATAL_FAILURE(CopyWith(d.path(), [](auto*) {}));
  EXPECT_TRUE(LoadStatus(d.path()).ok()) << LoadStatus(d.path()).ToString();
}

TEST_F(ModelDirBad, WrongTensorShape) {
  testing::TempDir d("shape");
  ASSERT_NO_FATAL_FAILURE(CopyWith(d.path(), [](std::vector<TensorToWrite>* ts) {
    for (auto& t : *ts)
      if (t.name == "model.layers.1.mlp.gate_proj.weight") t.shape = {t.shape[1], t.shape[0]};  // transposed
  }));
  ExpectError(LoadStatus(d.path()), {"model.layers.1.mlp.gate_proj.weight", "[64, 160]", "[160, 64]"});
}

TEST_F(ModelDirBad, MissingTensor) {
  testing::TempDir d("missing");
  ASSERT_NO_FATAL_FAILURE(CopyWith(d.path(), [](std::vector<TensorToWrite>* ts) {
    std::erase_if(*ts, [](const TensorToWrite& t) { return t.name == "model.layers.0.self_attn.v_proj.weight"; });
  }));
  ExpectError(LoadStatus(d.path()), {d.path(), "missing tensor", "model.layers.0.self_attn.v_proj.weight"});
}

TEST_F(ModelDirBad, UntiedModelWithoutLmHead) {
  testing::TempDir d("nohead");
  ASSERT_NO_FATAL_FAILURE(CopyWith(d.path(), [](std::vector<TensorToWrite>* ts) {
    std::erase_if(*ts, [](const TensorToWrite& t) { return t.name == "lm_head.weight"; });
  }));
  ExpectError(LoadStatus(d.path()), {"lm_head.weight"});
}

TEST_F(ModelDirBad, UnknownModelTypeInConfig) {
  testing::TempDir d("mtype");
  ASSERT_NO_FATAL_FAILURE(CopyWith(d.path(), [](auto*) {}));
  json cfg = json::parse(testing::Slurp(d / "config.json"));
  cfg["model_type"] = "falcon";
  testing::WriteString(d / "config.json", cfg.dump());
  ExpectError(LoadStatus(d.path()), {"config.json", "model_type", "falcon"});
}

TEST_F(ModelDirBad, InvalidJsonConfig) {
  testing::TempDir d("badjson");
  ASSERT_NO_FATAL_FAILURE(CopyWith(d.path(), [](auto*) {}));
  testing::WriteString(d / "config.json", "{\"model_type\": \"llama\", \"hidden_size\": }");
  ExpectError(LoadStatus(d.path()), {"config.json", "invalid JSON"});
}

TEST_F(ModelDirBad, TruncatedWeights) {
  testing::TempDir d("truncw");
  ASSERT_NO_FATAL_FAILURE(CopyWith(d.path(), [](auto*) {}));
  const auto size = std::filesystem::file_size(d / "model.safetensors");
  std::filesystem::resize_file(d / "model.safetensors", size - 1000);
  ExpectError(LoadStatus(d.path()), {"model.safetensors", "outside", "truncated"});
}

TEST_F(ModelDirBad, NotADirectory) {
  ExpectError(LoadStatus(base_->path() + "/does-not-exist"), {"does-not-exist", "not a model directory"});
}

TEST_F(ModelDirBad, ShardIndexProblems) {
  testing::TempDir d("index");
  std::filesystem::copy_file(base_->path() + "/config.json", d / "config.json");
  testing::WriteString(d / "model.safetensors.index.json", R"({"weight_map": {"a": "../../etc/x.safetensors"}})");
  ExpectError(LoadStatus(d.path()), {"model.safetensors.index.json", "../../etc/x.safetensors", "leaves"});
  testing::WriteString(d / "model.safetensors.index.json", R"({"weight_map": {"a": "model-00009.safetensors"}})");
  ExpectError(LoadStatus(d.path()), {"model-00009.safetensors"});
  testing::WriteString(d / "model.safetensors.index.json", R"({"no_map": 1})");
  ExpectError(LoadStatus(d.path()), {"model.safetensors.index.json", "weight_map"});
}

// ---------------------------------------------------------------------------------------------
// Bad requests to the engine

class EngineBad : public ModelDirBad {
 protected:
  void SetUp() override {
    auto m = LlamaModel::Load(base_->path());
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(m).value();
    auto t = Tokenizer::LoadFromDir(base_->path());
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    tok_ = std::move(t).value();
    auto kv = ParseKvPolicy("dense");
    ASSERT_TRUE(kv.ok());
    kv_ = kv.value();
  }
  Status Gen(const std::vector<int32_t>& ids, const GenerateOptions& opt) {
    auto r = Generate(*model_, *tok_, *kv_, ids, opt, nullptr);
    return r.ok() ? Status::Ok() : r.status();
  }
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tok_;
  std::shared_ptr<KvPolicyFactory> kv_;
};

TEST_F(EngineBad, EmptyPrompt) {
  GenerateOptions opt;
  opt.max_tokens = 2;
  ExpectError(Gen({}, opt), {"prompt is empty"});
  EXPECT_TRUE(Gen({256, 72}, opt).ok());
}

TEST_F(EngineBad, PromptLongerThanContext) {
  GenerateOptions opt;
  opt.max_tokens = 2;
  opt.context = 8;
  std::vector<int32_t> ids(20, 65);
  ExpectError(Gen(ids, opt), {"20 tokens", "context of 8"});
  ids.resize(8);  // exactly the context: no room for a generated token
  ExpectError(Gen(ids, opt), {"8 tokens", "context of 8"});
  ids.resize(5);  // fits; generation stops when prompt + generated tokens fill the context
  opt.max_tokens = 100;
  opt.stop_at_eos = false;
  opt.sampling.temperature = 0;
  auto r = Generate(*model_, *tok_, *kv_, ids, opt, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->prompt_ids.size() + r->token_ids.size(), 8u);
  EXPECT_EQ(r->finish_reason, "length");
}

TEST_F(EngineBad, TokenOutsideVocabulary) {
  GenerateOptions opt;
  opt.max_tokens = 1;
  ExpectError(Gen({256, 300}, opt), {"token id 300", "vocabulary"});
  ExpectError(Gen({256, -1}, opt), {"token id -1"});
}

TEST_F(EngineBad, BadSamplingParameters) {
  GenerateOptions opt;
  opt.sampling.top_p = 0;
  ExpectError(Gen({256}, opt), {"top_p"});
  opt = GenerateOptions();
  opt.max_tokens = -1;
  ExpectError(Gen({256}, opt), {"max_tokens"});
  opt = GenerateOptions();
  opt.stop = {""};
  ExpectError(Gen({256}, opt), {"stop"});
}

TEST(KvSpecBad, UnknownPolicyListsValidOnes) {
  auto r = ParseKvPolicy("bogus");
  ExpectError(r, {"bogus", "valid policies", "dense", "atp"});
}

TEST(KvSpecBad, UnknownKeyListsValidKeys) {
  ExpectError(ParseKvPolicy("dense:bits=4"), {"'bits'", "valid keys", "dtype"});
  ExpectError(ParseKvPolicy("dense:dtype=q4"), {"dtype=q4", "f32"});
  ExpectError(ParseKvPolicy("dense:dtype"), {"key=value"});
  ExpectError(ParseKvPolicy(":dtype=f32"), {"missing policy name"});
  ExpectError(ParseKvPolicy("atp:block=0"), {"block"});
  EXPECT_TRUE(ParseKvPolicy("dense:dtype=bf16").ok());
}

}  // namespace
}  // namespace atp
