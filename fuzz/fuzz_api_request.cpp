// libFuzzer target: a POST body through ParseApiRequest as both /v1/completions and
// /v1/chat/completions and through the /tokenize and /detokenize parsers, errors rendered as the
// server sends them, and an accepted chat request's
// messages rendered by the chat templates the server would use (the default one and, when the npm
// tokenizer packages are present, Llama-3's and Qwen3's).
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "server/api_request.h"
#include "server/api_response.h"
#include "tokenizer/chat_template.h"

namespace {
std::vector<atp::ChatTemplate> g_templates;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto def = atp::ChatTemplate::Parse(atp::ChatTemplate::kDefaultSource, "<s>", "</s>");
  if (!def.ok()) std::abort();
  g_templates.push_back(std::move(def).value());
  for (const char* pkg : {"tokenizer-llama3", "tokenizer-qwen3"}) {
    const std::string dir = atp::fuzz::kNpmTokenizers + "/" + pkg + "/models";
    if (!std::filesystem::exists(dir + "/tokenizer_config.json")) continue;
    auto t = atp::ChatTemplate::LoadFromDir(dir);
    if (!t.ok()) std::abort();  // a real template that no longer parses is a regression too
    g_templates.push_back(std::move(t).value());
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (bool chat : {false, true}) {
    atp::ApiRequest r;
    if (auto err = atp::ParseApiRequest(body, chat, &r)) {
      atp::ResponseBuilder::Dump(err->ToJson());
      continue;
    }
    if (!chat) continue;
    for (const atp::ChatTemplate& t : g_templates) t.Render(r.messages, /*add_generation_prompt=*/true);
  }
  atp::TokenizeRequest t;
  if (auto err = atp::ParseTokenizeRequest(body, &t)) atp::ResponseBuilder::Dump(err->ToJson());
  atp::DetokenizeRequest d;
  if (auto err = atp::ParseDetokenizeRequest(body, &d)) atp::ResponseBuilder::Dump(err->ToJson());
  return 0;
}
