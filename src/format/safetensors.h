// Safetensors checkpoints: one file or shards listed in model.safetensors.index.json, memory-mapped.
// Every header offset is checked against the file size and the dtype/shape before a view is handed out.
// A SafeTensors is also the name -> view map other formats bind through (GGUF: FromViews).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/status.h"
#include "core/tensor.h"

namespace atp {

class SafeTensors {
 public:
  // Opens `path` (a .safetensors file) or a directory holding model.safetensors or an index.
  static Result<std::unique_ptr<SafeTensors>> Open(const std::string& path);
  // Parses one mapped file's header into views that point into `file` (the caller keeps it alive).
  static Status ParseFile(std::shared_ptr<MappedFile> file, std::map<std::string, TensorView>* out);

  // Views under Hugging Face names whose memory `owners` keep alive (a mapped GGUF file, tensors
  // rewritten at load).
  static std::unique_ptr<SafeTensors> FromViews(std::map<std::string, TensorView> views,
                                                std::vector<std::shared_ptr<const void>> owners);

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* Find(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::vector<std::shared_ptr<const void>> owners_;
  std::map<std::string, TensorView> tensors_;
};

// Writes tensors to a safetensors file (used by testgen, calibration and tests).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // DTypeSize(dtype) * prod(shape) bytes
};
Status WriteSafeTensors(const std::string& path, const std::vector<TensorToWrite>& tensors);

}  // namespace atp
