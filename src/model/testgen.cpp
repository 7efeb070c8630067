#include "model/testgen.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "format/safetensors.h"

namespace atp {

using nlohmann::json;

namespace {

struct Shape {
  const char* name;
  json config;
};

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> kShapes = {
      {"llama-3.2-1b",
       {{"model_type", "llama"}, {"hidden_size", 2048}, {"intermediate_size", 8192}, {"num_hidden_layers", 16},
        {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"head_dim", 64}, {"vocab_size", 128256},
        {"max_position_embeddings", 131072}, {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0},
        {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}}},
        {"tie_word_embeddings", true}, {"bos_token_id", 128000}, {"eos_token_id", {128001, 128008, 128009}}}},
      {"qwen2.5-0.5b",
       {{"model_type", "qwen2"}, {"hidden_size", 896}, {"intermediate_size", 4864}, {"num_hidden_layers", 24},
        {"num_attention_heads", 14}, {"num_key_value_heads", 2}, {"vocab_size", 151936},
        {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0},
        {"tie_word_embeddings", true}, {"bos_token_id", 151643}, {"eos_token_id", 151645}}},
      {"tinyllama-1.1b",
       {{"model_type", "llama"}, {"hidden_size", 2048}, {"intermediate_size", 5632}, {"num_hidden_layers", 22},
        {"num_attention_heads", 32}, {"num_key_value_heads", 4}, {"vocab_size", 32000},
        {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
        {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}}},
      {"tiny",
       {{"model_type", "llama"}, {"hidden_size", 64}, {"intermediate_size", 160}, {"num_hidden_layers", 2},
        {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 300},
        {"max_position_embeddings", 1024}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
        {"tie_word_embeddings", false}, {"bos_token_id", 256}, {"eos_token_id", 257}}},
  };
  return kShapes;
}

// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards.
std::string ByteToUnicode(int b) {
  bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x) n += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255));
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) s += char(cp);
  else {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

// A byte-level BPE tokenizer with no merges: every byte is a token (ids 0..255), plus BOS/EOS.
json ByteTokenizer(int bos, int eos) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToUnicode(b)] = b;
  json added = json::array();
  for (auto [id, text] : {std::pair{bos, "<|begin_of_text|>"}, {eos, "<|end_of_text|>"}})
    added.push_back({{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  return {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}, {"normalizer", nullptr},
          {"pre_tokenizer", bl},
          {"post_processor", {{"type", "TemplateProcessing"},
                              {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                              {"pair", {{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
                              {"special_tokens", {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {bos}}, {"tokens", {"<|begin_of_text|>"}}}}}}}},
          {"decoder", bl},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
                     {"merges", json::array()}}}};
}

}  // namespace

std::vector<std::string> TestShapeNames() {
  std::vector<std::string> n;
  for (auto& s : Shapes()) n.push_back(s.name);
  return n;
}

Status WriteTestModel(const std::string& shape, const std::string& dir, DType dtype, uint64_t seed) {
  if (IsBlockDType(dtype))
    return Status::Unsupported("testgen: safetensors has no " + std::string(DTypeName(dtype)) + " dtype");
  const Shape* sh = nullptr;
  for (auto& s : Shapes())
    if (shape == s.name) sh = &s;
  if (!sh) {
    std::string names;
    for (auto& n : TestShapeNames()) names += (names.empty() ? "" : ", ") + n;
    return Status::InvalidArgument("unknown shape '" + shape + "'; valid shapes: " + names);
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError(dir + ": " + ec.message());
  json cfg = sh->config;
  cfg["architectures"] = {cfg["model_type"] == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  cfg["torch_dtype"] = dtype == DType::kF32 ? "float32" : dtype == DType::kF16 ? "float16" : "bfloat16";
  const int64_t d = cfg["hidden_size"], ffn = cfg["intermediate_size"], L = cfg["num_hidden_layers"],
                H = cfg["num_attention_heads"], KV = cfg["num_key_value_heads"], V = cfg["vocab_size"];
  const int64_t hd = cfg.value("head_dim", d / H);
  const bool bias = cfg["model_type"] == "qwen2";

  // Tensor list in HF names; projections are uniform in +-1/sqrt(fan_in), norms are 1.
  struct Spec { std::string name; std::vector<int64_t> shape; bool ones; };
  std::vector<Spec> specs = {{"model.embed_tokens.weight", {V, d}, false}, {"model.norm.weight", {d}, true}};
  if (!cfg["tie_word_embeddings"].get<bool>()) specs.push_back({"lm_head.weight", {V, d}, false});
  for (int64_t l = 0; l < L; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    specs.push_back({p + "input_layernorm.weight", {d}, true});
    specs.push_back({p + "self_attn.q_proj.weight", {H * hd, d}, false});
    specs.push_back({p + "self_attn.k_proj.weight", {KV * hd, d}, false});
    specs.push_back({p + "self_attn.v_proj.weight", {KV * hd, d}, false});
    specs.push_back({p + "self_attn.o_proj.weight", {d, H * hd}, false});
    if (bias) {
      specs.push_back({p + "self_attn.q_proj.bias", {H * hd}, false});
      specs.push_back({p + "self_attn.k_proj.bias", {KV * hd}, false});
      specs.push_back({p + "self_attn.v_proj.bias", {KV * hd}, false});
    }
    specs.push_back({p + "post_attention_layernorm.weight", {d}, true});
    specs.push_back({p + "mlp.gate_proj.weight", {ffn, d}, false});
    specs.push_back({p + "mlp.up_proj.weight", {ffn, d}, false});
    specs.push_back({p + "mlp.down_proj.weight", {d, ffn}, false});
  }
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<TensorToWrite> out;
  const size_t es = DTypeSize(dtype);
  uint64_t stream = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& s : specs) {
    int64_t n = 1;
    for (auto x : s.shape) n *= x;
    bufs.emplace_back(size_t(n) * es);
    uint8_t* dst = bufs.back().data();
    const float scale = s.ones ? 0.0f : 1.0f / std::sqrt(float(s.shape.back()));
    const uint64_t base = stream++;
    // A counter-based generator so threads fill disjoint ranges deterministically.
    ThreadPool::Global().ParallelFor(n / 1024 + 1, [&](int64_t b, int64_t e, int) {
      float tmp[1024];
      for (int64_t c = b; c < e; ++c) {
        int64_t i0 = c * 1024, cnt = std::min<int64_t>(1024, n - i0);
        if (cnt <= 0) continue;
        for (int64_t i = 0; i < cnt; ++i) {
          uint64_t z = (base << 40) ^ uint64_t(i0 + i);
          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
          z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
          z ^= z >> 31;
          tmp[i] = s.ones ? 1.0f : scale * (float(z >> 40) / float(1 << 23) - 1.0f);
        }
        FromF32(dtype, tmp, dst + size_t(i0) * es, size_t(cnt));
      }
    });
    out.push_back({s.name, dtype, s.shape, dst});
  }
  ATP_RETURN_IF_ERROR(WriteSafeTensors(dir + "/model.safetensors", out));
  ATP_RETURN_IF_ERROR(WriteFile(dir + "/config.json", cfg.dump(1)));
  int bos = cfg["bos_token_id"];
  int eos = cfg["eos_token_id"].is_array() ? cfg["eos_token_id"][0].get<int>() : cfg["eos_token_id"].get<int>();
  ATP_RETURN_IF_ERROR(WriteFile(dir + "/tokenizer.json", ByteTokenizer(bos, eos).dump()));
  json tc = {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}, {"add_bos_token", true},
             {"tokenizer_class", "PreTrainedTokenizerFast"}};
  return WriteFile(dir + "/tokenizer_config.json", tc.dump(1));
}

}  // namespace atp
