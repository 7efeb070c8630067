// model/quant_mix: the per-tensor types of llama.cpp's Q4_K_M/Q5_K_M files and the fallbacks for
// rows that are not whole blocks, checked on a 32-layer model (Llama-2-7B's shape: the layers
// llama.cpp's use_more_bits picks are worked out by hand below).
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "model/quant_mix.h"

namespace atp {
namespace {

using gguf::GgmlType;

GgufWeightFormat Format(const std::string& name) {
  GgufWeightFormat f;
  EXPECT_TRUE(ParseGgufWeightFormat(name, &f)) << name;
  return f;
}

TEST(QuantMix, Q4_K_MOnA32LayerModel) {
  const GgufWeightFormat f = Format("q4_k_m");
  EXPECT_EQ(f.file_type, 15u);
  // use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2, i.e. 6, 9, ..., 27.
  std::set<int> more = {0, 1, 2, 3, 28, 29, 30, 31};
  for (int i = 6; i < 28; i += 3) more.insert(i);
  for (int i = 0; i < 32; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const GgmlType hi = more.count(i) ? GgmlType::kQ6_K : GgmlType::kQ4_K;
    EXPECT_EQ(ChooseTensorType(f, b + "attn_v.weight", 4096, DType::kF16, 32, true).type, hi) << i;
    EXPECT_EQ(ChooseTensorType(f, b + "ffn_down.weight", 11008, DType::kF16, 32, true).type, hi) << i;
    EXPECT_EQ(ChooseTensorType(f, b + "attn_k.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ4_K) << i;
    EXPECT_EQ(ChooseTensorType(f, b + "ffn_gate.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ4_K) << i;
  }
  EXPECT_EQ(ChooseTensorType(f, "output.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ6_K);
  EXPECT_EQ(ChooseTensorType(f, "token_embd.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ4_K);
  // Tied embeddings: the embedding table is the LM head and gets the output's type.
  EXPECT_EQ(ChooseTensorType(f, "token_embd.weight", 4096, DType::kF16, 32, false).type, GgmlType::kQ6_K);
  // An output whose rows are not whole 256-blocks is Q8_0 (llama.cpp's rule for the output).
  EXPECT_EQ(ChooseTensorType(f, "output.weight", 4160, DType::kF16, 32, true).type, GgmlType::kQ8_0);
}

TEST(QuantMix, Q5_K_MAndPureFormats) {
  const GgufWeightFormat m = Format("q5_k_m");
  EXPECT_EQ(ChooseTensorType(m, "blk.0.attn_v.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ6_K);
  EXPECT_EQ(ChooseTensorType(m, "blk.4.attn_v.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ5_K);
  EXPECT_EQ(ChooseTensorType(m, "blk.4.attn_q.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ5_K);
  // Plain names are one type for every matrix (llama-quantize --pure), output included.
  const GgufWeightFormat p = Format("q4_k");
  EXPECT_EQ(ChooseTensorType(p, "blk.0.attn_v.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ4_K);
  EXPECT_EQ(ChooseTensorType(p, "output.weight", 4096, DType::kF16, 32, true).type, GgmlType::kQ4_K);
  GgufWeightFormat f;
  EXPECT_FALSE(ParseGgufWeightFormat("q4_k_s", &f));
  EXPECT_FALSE(ParseGgufWeightFormat("Q4_K_M", &f));
  EXPECT_NE(GgufWeightFormatNames().find("q5_k_m"), std::string::npos);
}

// llama.cpp's fallbacks for rows that are not whole 256-blocks, then the stored type when not even
// 32-blocks fit; each fallback is reported.
TEST(QuantMix, FallbacksForRowsThatAreNotWholeBlocks) {
  const std::pair<const char*, GgmlType> cases[] = {{"q2_k", GgmlType::kQ4_0}, {"q3_k", GgmlType::kQ4_0},
                                                    {"q4_k", GgmlType::kQ5_0}, {"q5_k", GgmlType::kQ5_1},
                                                    {"q6_k", GgmlType::kQ8_0}, {"iq4_xs", GgmlType::kIQ4_NL}};
  for (auto [name, want] : cases) {
    const TensorTypeChoice c = ChooseTensorType(Format(name), "blk.0.attn_q.weight", 384, DType::kBF16, 8, false);
    EXPECT_EQ(c.type, want) << name;
    EXPECT_NE(c.fallback.find("rows of 384 elements are not whole"), std::string::npos) << c.fallback;
    EXPECT_NE(c.fallback.find("llama.cpp's fallback"), std::string::npos) << c.fallback;
  }
  const TensorTypeChoice c = ChooseTensorType(Format("q4_k_m"), "blk.0.ffn_down.weight", 688, DType::kBF16, 6, false);
  EXPECT_EQ(c.type, GgmlType::kBF16);
  EXPECT_NE(c.fallback.find("the checkpoint's type"), std::string::npos) << c.fallback;
  const TensorTypeChoice q8 = ChooseTensorType(Format("q8_0"), "blk.0.ffn_down.weight", 688, DType::kF32, 6, false);
  EXPECT_EQ(q8.type, GgmlType::kF32);
  EXPECT_TRUE(ChooseTensorType(Format("q4_k"), "blk.0.attn_q.weight", 512, DType::kBF16, 8, false).fallback.empty());
}

}  // namespace
}  // namespace atp
