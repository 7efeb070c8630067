// Chat templates: the Jinja subset that Hugging Face tokenizer_config.json templates use (Llama-3,
// Qwen2, Mistral and the like), rendered the way transformers does (trim_blocks, lstrip_blocks, loop
// controls, tools=None). Refuses macros, call/filter blocks, includes and Python beyond a few str/dict methods.
// Templates and messages are untrusted input: Parse and Render never throw, and bound their nesting,
// work and string sizes (the limits are stated in chat_template.cpp); going past one is an error.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace atp {

namespace jinja {
struct Program;
}

class ChatTemplate {
 public:
  // Used when a model ships no template: the BOS token, then ChatML turns
  // ("<|im_start|>role\ncontent<|im_end|>\n"), then "<|im_start|>assistant\n" for the generation prompt.
  static const char* const kDefaultSource;

  // Parses a template; errors name the line. bos/eos are what `bos_token`/`eos_token` render as.
  static Result<ChatTemplate> Parse(const std::string& source, const std::string& bos_token,
                                    const std::string& eos_token);
  // dir/chat_template.jinja if present, else tokenizer_config.json's `chat_template` (a string, or the
  // entry named "default" of a list), else kDefaultSource; bos/eos from tokenizer_config.json.
  static Result<ChatTemplate> LoadFromDir(const std::string& dir);
  // The template of a parsed tokenizer_config.json object (as LoadFromDir without the .jinja file);
  // `where` names the source in errors.
  static Result<ChatTemplate> FromTokenizerConfig(const nlohmann::json& cfg, const std::string& where);

  // messages: [{"role": ..., "content": ...}, ...]; further fields are visible to the template.
  // A template's raise_exception(msg) comes back as InvalidArgument(msg).
  Result<std::string> Render(const nlohmann::ordered_json& messages, bool add_generation_prompt) const;

  bool is_default() const { return is_default_; }

 private:
  std::shared_ptr<const jinja::Program> program_;
  std::string bos_, eos_;
  bool is_default_ = false;
};

}  // namespace atp
