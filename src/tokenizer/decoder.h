// tokenizer.json "decoder": ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip and Sequence.
// Others (WordPiece, CTC, BPEDecoder, ...) are refused at load time.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace atp {

// One token's text on its way through the decoder chain.
struct DecodePiece {
  std::string text;
  bool added = false;  // an added token: ByteLevel passes it through verbatim instead of un-mapping bytes
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the pieces; the decoded text is their concatenation afterwards.
  virtual void Apply(std::vector<DecodePiece>& pieces) const = 0;
};

Result<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& j, const std::string& path);

}  // namespace atp
