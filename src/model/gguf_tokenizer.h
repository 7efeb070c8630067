// Tokenizers in GGUF metadata (tokenizer.ggml.*) <-> Hugging Face tokenizer.json/tokenizer_config.json.
// Reading builds the equivalent JSON texts for src/tokenizer's loader (one tokenizer implementation
// serves both formats); writing derives the metadata llama.cpp's converter would write.
// Supported: "gpt2" (byte-level BPE; pre-tokenizers gpt-2, llama-bpe, qwen2) and "llama" (SentencePiece-style BPE).
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "format/gguf.h"
#include "tokenizer/tokenizer.h"

namespace atp {

struct TokenizerJsonTexts {
  std::string tokenizer_json;         // tokenizer.json
  std::string tokenizer_config_json;  // tokenizer_config.json: bos/eos/unk/pad names, chat_template
};

// NotFound when the file has no tokenizer.ggml.model; other errors name the metadata key at fault.
Result<TokenizerJsonTexts> TokenizerJsonFromGguf(const gguf::GgufFile& g);
bool GgufHasTokenizer(const gguf::GgufFile& g);
// The tokenizer those texts describe, loaded by Tokenizer::LoadFromJson. config_json (optional)
// receives the tokenizer_config.json text (the chat template's source), so nothing derives it twice.
Result<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const gguf::GgufFile& g, std::string* config_json = nullptr);

// The tokenizer.* metadata for a tokenizer.json (+ config, may be empty) whose ids run below
// vocab_size (the model's; missing ids become unused "[PAD<id>]" tokens).
Result<std::vector<std::pair<std::string, gguf::Value>>> TokenizerToGguf(const std::string& tokenizer_json,
                                                                         const std::string& config_json,
                                                                         int vocab_size);

}  // namespace atp
