// libFuzzer target: a chat template through ChatTemplate::Parse and Render over a fixed small
// conversation (system, user, assistant with a tool call, user; unicode, quotes, newlines), with and
// without the generation prompt. An input that parses as a JSON object is a tokenizer_config.json
// instead, read by ChatTemplate::FromTokenizerConfig (its chat_template string or list, bos/eos tokens).
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "tokenizer/chat_template.h"

namespace {

const nlohmann::ordered_json& Conversation() {
  static const auto* kMessages = new nlohmann::ordered_json(nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "Be brief. Answer in \"quotes\" if asked."},
    {"role": "user", "content": "Hello, w\u00f6rld! \u4f60\u597d {{ not a tag }}\n<|im_end|>"},
    {"role": "assistant", "content": "Hi. It's 2+2=4.", "tool_calls": [{"type": "function",
      "function": {"name": "add", "arguments": {"a": 2, "b": [2, 2.5, null, true]}}}]},
    {"role": "tool", "content": "4"},
    {"role": "user", "content": [{"type": "text", "text": "  and\tthen?  "}]}
  ])"));
  return *kMessages;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const auto cfg = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
  auto t = cfg.is_object() ? atp::ChatTemplate::FromTokenizerConfig(cfg, "fuzz")
                           : atp::ChatTemplate::Parse(input, "<s>", "</s>");
  if (!t.ok()) return 0;
  for (bool gen : {true, false}) t->Render(Conversation(), gen);
  return 0;
}
