// A read-only memory map of a whole file: weights are used in place, never copied.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"

namespace atp {

class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* d, size_t n) : path_(std::move(path)), data_(d), size_(n) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

// Reads a whole (small) file into a string: configs, tokenizers, JSON.
Result<std::string> ReadFile(const std::string& path);
// Writes text as the whole content of path (created or truncated); IOError if any byte fails.
Status WriteFile(const std::string& path, const std::string& text);

}  // namespace atp
