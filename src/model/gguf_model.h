// A Llama-family model in a GGUF file, in Hugging Face terms: the config from `{arch}.*` metadata and
// the tensors under Hugging Face names and shapes, Q/K rows restored for llama-arch files (whose
// converter interleaves RoPE pairs). Also the name and row mappings that `atp convert` writes with.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/config.h"

namespace atp {

// The config that the metadata describes, validated like config.json; vocab_size from
// `{arch}.vocab_size`, else the rows of token_embd.weight; tied when output.weight is absent.
Result<ModelConfig> ConfigFromGguf(const gguf::GgufFile& g);

// Views of every tensor under Hugging Face names (model.layers.N.self_attn.q_proj.weight, ...) and
// PyTorch shapes; tensors of unknown names keep their GGUF name. Llama-arch Q/K weights (and biases)
// are copied with their rows un-permuted; everything else points into the file.
Result<std::unique_ptr<SafeTensors>> TensorsFromGguf(std::shared_ptr<const gguf::GgufFile> g,
                                                     const ModelConfig& cfg);

// The engine dtype of a ggml tensor type and back (format/gguf.h).
using gguf::DTypeOfGgml;
using gguf::GgmlOfDType;

// "model.layers.3.mlp.up_proj.weight" <-> "blk.3.ffn_up.weight"; "" when the name has no counterpart.
std::string HfToGgufName(std::string_view hf);
std::string GgufToHfName(std::string_view gguf);

// llama.cpp's converter reorders each head's Q/K rows from rotate-half pairs (i, i + hd/2) to
// interleaved pairs (2i, 2i+1) for architectures whose RoPE it runs in "normal" mode (llama, mistral).
bool GgufArchPermutesQK(std::string_view arch);
// Reorders `rows` rows of `row_bytes` bytes, heads of head_dim rows each: to_gguf applies the
// converter's permutation, otherwise its inverse.
void PermuteQKRows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int head_dim, bool to_gguf);

}  // namespace atp
