// GGUF (versions 2 and 3) reader: header, metadata key/values of every type and tensor infos, parsed
// from bytes (a memory map or a fuzzer's buffer). Every count, length, offset and extent is checked
// against the bytes available before it is used; tensor types other than GgmlType's are refused by name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"
#include "core/status.h"

namespace atp::gguf {

// Metadata value types, numbered as in the file.
enum class ValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};
std::string_view ValueTypeName(ValueType t);

// Tensor element types this engine reads (ggml numbering), each stored as it is in the DType of the
// same name (block layouts: core/quant.h, core/kquant.h). Other ggml types are refused by name.
enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ2_K = 10, kQ3_K = 11,
  kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kIQ4_NL = 20, kIQ4_XS = 23, kBF16 = 30,
};
std::string_view GgmlTypeName(GgmlType t);  // ggml's name: "F32", "Q4_K", "IQ4_XS", ...
DType DTypeOfGgml(GgmlType t);              // the engine dtype holding its bytes as they are
GgmlType GgmlOfDType(DType t);              // and back (every DType is a ggml type)
int64_t GgmlBlockElems(GgmlType t);         // elements per block (1 for the float types)
int64_t GgmlBlockBytes(GgmlType t);         // bytes per block

// One metadata value. Scalars use exactly one of u/i/f (bool in u); arrays hold items of `elem`.
struct Value {
  ValueType type = ValueType::kU8;
  uint64_t u = 0;           // kU8, kU16, kU32, kU64, kBool
  int64_t i = 0;            // kI8, kI16, kI32, kI64
  double f = 0;             // kF32, kF64
  std::string str;          // kString
  ValueType elem = ValueType::kU8;  // kArray: type of every item
  std::vector<Value> items;         // kArray

  static Value U32(uint32_t v) { Value x; x.type = ValueType::kU32; x.u = v; return x; }
  static Value I32(int32_t v) { Value x; x.type = ValueType::kI32; x.i = v; return x; }
  static Value F32(float v) { Value x; x.type = ValueType::kF32; x.f = v; return x; }
  static Value Bool(bool v) { Value x; x.type = ValueType::kBool; x.u = v; return x; }
  static Value Str(std::string v) { Value x; x.type = ValueType::kString; x.str = std::move(v); return x; }
  static Value Array(ValueType elem, std::vector<Value> items) {
    Value x; x.type = ValueType::kArray; x.elem = elem; x.items = std::move(items); return x;
  }

  bool is_integer() const;  // any of the 8 integer types
  bool is_number() const { return is_integer() || type == ValueType::kF32 || type == ValueType::kF64; }
  // The value as an integer / a double (valid only when is_integer() / is_number()).
  bool AsInt(int64_t* out) const;  // false when a u64 exceeds INT64_MAX
  double AsDouble() const;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> ne;   // ggml order: ne[0] is the contiguous dimension (PyTorch shape reversed)
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;       // from the start of the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the parsed bytes
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps `path` and parses it; tensor data stays in the mapping, which the GgufFile keeps alive.
  static Result<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses `size` bytes at `data` (the caller keeps them alive as long as the tensors' data is used).
  // `where` names the source in errors.
  static Result<std::unique_ptr<GgufFile>> Parse(const uint8_t* data, size_t size, const std::string& where);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& where() const { return where_; }
  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* Find(std::string_view key) const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* FindTensor(std::string_view name) const;

  // Typed metadata getters: a missing key leaves *out unchanged (required: an error naming the key);
  // a present key of the wrong type is an error naming the key and both types.
  Status GetString(std::string_view key, std::string* out, bool required = false) const;
  Status GetInt(std::string_view key, int64_t* out, bool required = false) const;
  Status GetFloat(std::string_view key, double* out, bool required = false) const;
  Status GetBool(std::string_view key, bool* out) const;
  // An array whose items have type `elem` (null when the key is absent).
  Result<const std::vector<Value>*> GetArray(std::string_view key, ValueType elem) const;

 private:
  GgufFile() = default;
  std::shared_ptr<MappedFile> file_;  // set by Open
  std::string where_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// True when `path` names a GGUF file (a regular file whose first 4 bytes are "GGUF").
bool IsGgufFile(const std::string& path);

}  // namespace atp::gguf
