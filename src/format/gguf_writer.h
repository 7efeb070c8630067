// Writes GGUF version 3 files (for `atp convert` and tests): metadata in the order given, tensor infos,
// then each tensor's bytes at the alignment. Tensor bytes come from a callback, one tensor at a time,
// so a conversion holds one converted tensor in memory, never the whole model.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "format/gguf.h"

namespace atp::gguf {

struct TensorToWrite {
  std::string name;
  std::vector<int64_t> ne;  // ggml order (ne[0] contiguous)
  GgmlType type = GgmlType::kF32;
  // Fills exactly nbytes (GgmlBlockBytes(type) * numel / GgmlBlockElems(type)) at dst.
  std::function<Status(uint8_t* dst)> fill;
};

// `metadata` may not contain general.alignment (the writer adds it when `alignment` is not 32).
Status WriteGguf(const std::string& path, const std::vector<std::pair<std::string, Value>>& metadata,
                 const std::vector<TensorToWrite>& tensors, uint64_t alignment = 32);

}  // namespace atp::gguf
