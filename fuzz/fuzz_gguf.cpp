// libFuzzer target: a GGUF file through everything that reads one: the parser (every tensor view must
// lie inside the input: the target reads its first and last byte), the model config and Hugging
// Face tensor binding (Q/K un-permutation included), the dequantizer of every tensor's type on its
// first row (up to 4096 elements: any bytes must decode without undefined behaviour), and the
// tokenizer derived from the metadata, which then encodes and decodes a fixed text.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/gguf.h"
#include "model/gguf_model.h"
#include "model/gguf_tokenizer.h"
#include "model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = atp::gguf::GgufFile::Parse(data, size, "input.gguf");
  if (!parsed.ok()) return 0;
  std::shared_ptr<const atp::gguf::GgufFile> g = std::move(parsed).value();
  volatile uint8_t sink = 0;
  std::vector<float> row;
  for (const auto& t : g->tensors()) {
    if (t.nbytes) sink = sink ^ t.data[0] ^ t.data[t.nbytes - 1];
    // ne[0] is whole blocks (the parser checks), and so is 4096 for every type.
    const int64_t n = t.ne.empty() ? 0 : std::min<int64_t>(t.ne[0], 4096);
    row.resize(size_t(n));
    atp::ToF32(atp::gguf::DTypeOfGgml(t.type), t.data, row.data(), size_t(n));
    if (n) sink = sink ^ uint8_t(row[0] == row[0]);
  }
  auto cfg = atp::ConfigFromGguf(*g);
  if (cfg.ok()) {
    auto st = atp::TensorsFromGguf(g, *cfg);
    if (st.ok()) {
      auto w = atp::BindWeights(*cfg, **st);
      if (w.ok()) sink = sink ^ static_cast<const uint8_t*>(w->embed.data)[w->embed.nbytes() - 1];
    }
  }
  auto tok = atp::LoadGgufTokenizer(*g);
  if (tok.ok()) {
    const auto ids = (*tok)->Encode("Hello world, it's 2024! \xC3\xA9\xE2\x96\x81 <s>", true);
    sink = sink ^ uint8_t((*tok)->Decode(ids).size());
  }
  return 0;
}
