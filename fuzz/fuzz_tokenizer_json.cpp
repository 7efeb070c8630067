// libFuzzer target: Tokenizer::LoadFromJson on tokenizer.json [+ separator + tokenizer_config.json],
// then one encode/decode round through whatever pipeline the input described.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto docs = atp::fuzz::SplitDocuments(std::string_view(reinterpret_cast<const char*>(data), size));
  auto tok = atp::Tokenizer::LoadFromJson(docs[0], docs.size() > 1 ? docs[1] : std::string_view(), "fuzz");
  if (!tok.ok()) return 0;
  const atp::Tokenizer& t = **tok;
  // Spaces, digits, an accent to compose, invalid UTF-8 and the special-token look-alikes.
  const std::string text = "Hello  world 123\xC3\xA9 e\xCC\x81 \xFF<s></s><|endoftext|>\n\t\xE2\x96\x81x";
  const auto ids = t.Encode(text, /*add_special=*/true);
  for (int32_t id : ids)
    if (id < 0 || id >= t.vocab_size()) __builtin_trap();  // Encode must stay inside its vocabulary
  t.Decode(ids, /*skip_special=*/false);
  t.Decode(ids, /*skip_special=*/true);
  atp::StreamDecoder stream(t);
  for (int32_t id : ids) stream.Push(id);
  stream.Flush();
  return 0;
}
