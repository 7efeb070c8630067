// Safetensors model directory -> one GGUF file that runs alone: config as `{arch}.*` metadata, the
// tokenizer as tokenizer.* metadata, weights in the chosen type (1-D tensors stay F32, as llama.cpp
// keeps them) and llama-arch Q/K rows in llama.cpp's interleaved order. And back: GGUF -> directory.
#pragma once
#include <string>

#include "core/status.h"
#include "model/gguf.h"

namespace atp {

// "f32", "f16", "bf16", "q8_0", "q4_0".
bool ParseGgufOutType(const std::string& name, gguf::GgmlType* out);

Status ConvertToGguf(const std::string& model_dir, const std::string& out_path, gguf::GgmlType type);

// A GGUF file -> a Hugging Face directory (config.json, model.safetensors with the file's tensor
// types, tokenizer.json and tokenizer_config.json when the file has a tokenizer). Refuses what
// config.json cannot state (rope_freqs factors) and tensors without a Hugging Face name.
Status ConvertFromGguf(const std::string& gguf_path, const std::string& out_dir);

}  // namespace atp
