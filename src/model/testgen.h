// Random-weight checkpoints with the shapes of real models, for speed work and tests.
// The weights are random: the text such a model generates means nothing.
#pragma once
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace atp {

std::vector<std::string> TestShapeNames();  // "llama-3.2-1b", "qwen2.5-0.5b", "tinyllama-1.1b", "tiny"
// Writes config.json, model.safetensors and a byte-level tokenizer.json/tokenizer_config.json to `dir`.
Status WriteTestModel(const std::string& shape, const std::string& dir, DType dtype, uint64_t seed);

}  // namespace atp
