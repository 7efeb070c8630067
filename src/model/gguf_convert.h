// Safetensors model directory -> one GGUF file that runs alone: config as `{arch}.*` metadata, the
// tokenizer as tokenizer.* metadata, weights in the chosen format (1-D tensors stay F32, as llama.cpp
// keeps them) and llama-arch Q/K rows in llama.cpp's interleaved order. And back: GGUF -> directory.
#pragma once
#include <string>
#include <vector>

#include "core/status.h"
#include "format/gguf.h"
#include "model/quant_mix.h"

namespace atp {

// Writes the GGUF with the weight format `format` (model/quant_mix.h: one type for every matrix, or
// llama.cpp's q4_k_m/q5_k_m mixes; quantized by ggml's reference quantizers). `log`, when given,
// receives one line per matrix that fell back to another type because of its row length.
Status ConvertToGguf(const std::string& model_dir, const std::string& out_path, const GgufWeightFormat& format,
                     std::vector<std::string>* log = nullptr);

// A GGUF file -> a Hugging Face directory (config.json, model.safetensors with the file's tensor
// types, tokenizer.json and tokenizer_config.json when the file has a tokenizer). Refuses what
// config.json cannot state (rope_freqs factors) and tensors without a Hugging Face name.
Status ConvertFromGguf(const std::string& gguf_path, const std::string& out_dir);

}  // namespace atp
