#include "format/gguf_writer.h"

#include <cstring>
#include <fstream>

namespace atp::gguf {

namespace {

class Out {
 public:
  explicit Out(std::ofstream& f) : f_(f) {}
  template <typename T>
  void Put(T v) {
    f_.write(reinterpret_cast<const char*>(&v), sizeof(T));
    pos_ += sizeof(T);
  }
  void Bytes(const void* p, size_t n) {
    f_.write(static_cast<const char*>(p), std::streamsize(n));
    pos_ += n;
  }
  void String(const std::string& s) {
    Put(uint64_t(s.size()));
    Bytes(s.data(), s.size());
  }
  void Pad(uint64_t align) {
    static const char zeros[64] = {};
    while (pos_ % align) Bytes(zeros, std::min<uint64_t>(64, align - pos_ % align));
  }
  uint64_t pos() const { return pos_; }

 private:
  std::ofstream& f_;
  uint64_t pos_ = 0;
};

void PutValue(Out& o, const Value& v) {
  switch (v.type) {
    case ValueType::kU8: o.Put(uint8_t(v.u)); break;
    case ValueType::kI8: o.Put(int8_t(v.i)); break;
    case ValueType::kU16: o.Put(uint16_t(v.u)); break;
    case ValueType::kI16: o.Put(int16_t(v.i)); break;
    case ValueType::kU32: o.Put(uint32_t(v.u)); break;
    case ValueType::kI32: o.Put(int32_t(v.i)); break;
    case ValueType::kF32: o.Put(float(v.f)); break;
    case ValueType::kBool: o.Put(uint8_t(v.u != 0)); break;
    case ValueType::kString: o.String(v.str); break;
    case ValueType::kU64: o.Put(uint64_t(v.u)); break;
    case ValueType::kI64: o.Put(int64_t(v.i)); break;
    case ValueType::kF64: o.Put(double(v.f)); break;
    case ValueType::kArray:
      o.Put(uint32_t(v.elem));
      o.Put(uint64_t(v.items.size()));
      for (const Value& x : v.items) PutValue(o, x);
      break;
  }
}

uint64_t NBytes(const TensorToWrite& t) {
  uint64_t n = 1;
  for (int64_t d : t.ne) n *= uint64_t(d);
  return n / uint64_t(GgmlBlockElems(t.type)) * uint64_t(GgmlBlockBytes(t.type));
}

}  // namespace

Status WriteGguf(const std::string& path, const std::vector<std::pair<std::string, Value>>& metadata,
                 const std::vector<TensorToWrite>& tensors, uint64_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0)
    return Status::InvalidArgument("GGUF alignment must be a power of two");
  for (const auto& t : tensors)
    if (t.ne.empty() || t.ne.size() > 4 || t.ne[0] % GgmlBlockElems(t.type) != 0)
      return Status::InvalidArgument("tensor '" + t.name + "': " + std::to_string(t.ne.size()) + " dims, ne[0] = " +
                                     std::to_string(t.ne.empty() ? 0 : t.ne[0]) + " cannot be stored as " +
                                     std::string(GgmlTypeName(t.type)));
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return Status::IOError(path + ": cannot create");
  Out o(f);
  o.Bytes("GGUF", 4);
  o.Put(uint32_t(3));
  o.Put(uint64_t(tensors.size()));
  o.Put(uint64_t(metadata.size() + (alignment != 32)));
  if (alignment != 32) {
    o.String("general.alignment");
    o.Put(uint32_t(ValueType::kU32));
    o.Put(uint32_t(alignment));
  }
  for (const auto& [key, v] : metadata) {
    o.String(key);
    o.Put(uint32_t(v.type));
    PutValue(o, v);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    o.String(t.name);
    o.Put(uint32_t(t.ne.size()));
    for (int64_t d : t.ne) o.Put(uint64_t(d));
    o.Put(uint32_t(t.type));
    o.Put(offset);
    offset += (NBytes(t) + alignment - 1) / alignment * alignment;
  }
  o.Pad(alignment);
  std::vector<uint8_t> buf;
  for (const auto& t : tensors) {
    buf.assign(NBytes(t), 0);
    ATP_RETURN_IF_ERROR(t.fill(buf.data()).WithContext(path + ": tensor '" + t.name + "': "));
    o.Bytes(buf.data(), buf.size());
    o.Pad(alignment);
  }
  if (!f.flush()) return Status::IOError(path + ": write failed");
  return Status::Ok();
}

}  // namespace atp::gguf
