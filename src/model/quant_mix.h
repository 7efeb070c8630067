// The weight formats `atp convert --type` writes, and the ggml type each tensor gets in them, as
// llama.cpp's llama-quantize chooses it (src/llama-quant.cpp: llama_tensor_get_type and
// tensor_type_fallback, for a dense llama/qwen2 model without an importance matrix).
//   - A plain type name (f32 ... q8_0, q4_k, q6_k, iq4_xs): every matrix in that type, like
//     llama-quantize --pure.
//   - q4_k_m / q5_k_m: llama.cpp's "_M" mixes. Matrices are Q4_K / Q5_K except: output.weight (or
//     token_embd.weight when the embeddings are tied and there is no output.weight) is Q6_K (Q8_0 when
//     its rows are not whole 256-blocks); attn_v.weight and ffn_down.weight are Q6_K in the layers
//     where use_more_bits(i, n) holds: the first n/8 layers, the last n/8 and every third layer
//     between (i - n/8) % 3 == 2. (llama.cpp's further rules for MoE, Falcon, 70B models and
//     grouped-query ratios >= 4 only touch the _S/IQ formats or other architectures.)
// Fallback: a matrix whose rows are not whole blocks of the chosen type gets llama.cpp's fallback
// type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, IQ4_XS -> IQ4_NL); when even
// that does not fit, the matrix keeps the checkpoint's own type (llama.cpp writes F16 there; keeping
// the stored type is lossless and is what `--weights` does at load). Vectors stay F32.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "format/gguf.h"

namespace atp {

struct GgufWeightFormat {
  std::string name;         // as given to --type: "q4_k_m", "q6_k", ...
  gguf::GgmlType base;      // the type of every matrix the rules do not single out
  bool mix = false;         // q4_k_m / q5_k_m rules
  uint32_t file_type = 0;   // llama.cpp's general.file_type (llama_ftype) for the file
};

// Names: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs,
// q4_k_m, q5_k_m. False for anything else.
bool ParseGgufWeightFormat(std::string_view name, GgufWeightFormat* out);
// The names above, comma-separated (for help and errors).
std::string GgufWeightFormatNames();

struct TensorTypeChoice {
  gguf::GgmlType type;
  std::string fallback;  // non-empty when the rows forced a fallback: what and why, for the log
};
// The type of matrix `gguf_name` ("blk.3.attn_v.weight", "output.weight", ...) with rows of `cols`
// elements, stored as `stored`, in a model of n_layers layers; `has_output`: the file has its own
// output.weight (untied embeddings).
TensorTypeChoice ChooseTensorType(const GgufWeightFormat& f, std::string_view gguf_name, int64_t cols, DType stored,
                                  int n_layers, bool has_output);

}  // namespace atp
