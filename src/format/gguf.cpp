// GGUF parsing. A Cursor reads little-endian fields and refuses to step past the end; every length or
// count is compared with the bytes left before anything of that size is allocated or read.
#include "format/gguf.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <limits>

namespace atp::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr int kMaxArrayDepth = 8;        // arrays of arrays are legal; deeper nesting is an attack
constexpr int kMaxDims = 4;              // GGML_MAX_DIMS
constexpr uint64_t kMaxAlignment = 1u << 20;
// Each parsed value costs ~100 bytes of memory against as little as 1 byte of file: a cap on the values
// of all metadata arrays keeps a small hostile file from claiming gigabytes. Real files hold a few
// arrays of vocabulary size (at most ~1M values together).
constexpr uint64_t kMaxArrayValues = 1u << 22;

class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }
  template <typename T>
  bool Read(T* out) {
    if (left() < sizeof(T)) return false;
    std::memcpy(out, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool ReadBytes(size_t len, std::string* out) {
    if (left() < len) return false;
    out->assign(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return true;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
};

Status Truncated(const std::string& what, size_t at) {
  return Status::Corruption("truncated file: " + what + " at byte " + std::to_string(at) + " runs past the end");
}

Status ReadString(Cursor& c, const std::string& what, std::string* out) {
  const size_t at = c.pos();
  uint64_t len;
  if (!c.Read(&len)) return Truncated(what + " length", at);
  if (len > c.left())
    return Status::Corruption(what + " at byte " + std::to_string(at) + ": string length " + std::to_string(len) +
                              " exceeds the " + std::to_string(c.left()) + " bytes left in the file");
  c.ReadBytes(size_t(len), out);
  return Status::Ok();
}

// Smallest encoding of one value of type t: bounds an array's count by the bytes left.
uint64_t MinBytes(ValueType t) {
  switch (t) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kBool: return 1;
    case ValueType::kU16: case ValueType::kI16: return 2;
    case ValueType::kU32: case ValueType::kI32: case ValueType::kF32: return 4;
    case ValueType::kU64: case ValueType::kI64: case ValueType::kF64: case ValueType::kString: return 8;
    case ValueType::kArray: return 12;
  }
  return 1;
}

bool KnownType(uint32_t t) { return t <= uint32_t(ValueType::kF64); }

Status ReadValue(Cursor& c, ValueType t, const std::string& what, int depth, uint64_t* budget, Value* v) {
  v->type = t;
  const size_t at = c.pos();
  auto scalar = [&](auto tag) -> Status {
    decltype(tag) x;
    if (!c.Read(&x)) return Truncated(what, at);
    using X = decltype(x);
    if constexpr (std::is_floating_point_v<X>) v->f = double(x);
    else if constexpr (std::is_signed_v<X>) v->i = int64_t(x);
    else v->u = uint64_t(x);
    return Status::Ok();
  };
  switch (t) {
    case ValueType::kU8: return scalar(uint8_t());
    case ValueType::kI8: return scalar(int8_t());
    case ValueType::kU16: return scalar(uint16_t());
    case ValueType::kI16: return scalar(int16_t());
    case ValueType::kU32: return scalar(uint32_t());
    case ValueType::kI32: return scalar(int32_t());
    case ValueType::kF32: return scalar(float());
    case ValueType::kU64: return scalar(uint64_t());
    case ValueType::kI64: return scalar(int64_t());
    case ValueType::kF64: return scalar(double());
    case ValueType::kBool: {
      uint8_t b;
      if (!c.Read(&b)) return Truncated(what, at);
      if (b > 1) return Status::Corruption(what + ": bool value " + std::to_string(b) + " is neither 0 nor 1");
      v->u = b;
      return Status::Ok();
    }
    case ValueType::kString: return ReadString(c, what, &v->str);
    case ValueType::kArray: {
      if (depth >= kMaxArrayDepth)
        return Status::Corruption(what + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
      uint32_t et;
      uint64_t n;
      if (!c.Read(&et) || !c.Read(&n)) return Truncated(what + " array header", at);
      if (!KnownType(et)) return Status::Corruption(what + ": unknown array item type " + std::to_string(et));
      v->elem = ValueType(et);
      if (n > c.left() / MinBytes(v->elem))
        return Status::Corruption(what + ": array count " + std::to_string(n) + " cannot fit in the " +
                                  std::to_string(c.left()) + " bytes left");
      if (n > *budget)
        return Status::ResourceExhausted(what + ": metadata arrays hold more than " + std::to_string(kMaxArrayValues) +
                                         " values in all");
      *budget -= n;
      v->items.resize(size_t(n));
      for (uint64_t k = 0; k < n; ++k)
        ATP_RETURN_IF_ERROR(ReadValue(c, v->elem, what + "[" + std::to_string(k) + "]", depth + 1, budget, &v->items[k]));
      return Status::Ok();
    }
  }
  return Status::Corruption(what + ": unknown value type " + std::to_string(uint32_t(t)));
}

struct TypeRow {
  GgmlType type;
  std::string_view name;
  DType dtype;
};
constexpr TypeRow kTypes[] = {
    {GgmlType::kF32, "F32", DType::kF32},         {GgmlType::kF16, "F16", DType::kF16},
    {GgmlType::kQ4_0, "Q4_0", DType::kQ4_0},      {GgmlType::kQ4_1, "Q4_1", DType::kQ4_1},
    {GgmlType::kQ5_0, "Q5_0", DType::kQ5_0},      {GgmlType::kQ5_1, "Q5_1", DType::kQ5_1},
    {GgmlType::kQ8_0, "Q8_0", DType::kQ8_0},      {GgmlType::kQ2_K, "Q2_K", DType::kQ2_K},
    {GgmlType::kQ3_K, "Q3_K", DType::kQ3_K},      {GgmlType::kQ4_K, "Q4_K", DType::kQ4_K},
    {GgmlType::kQ5_K, "Q5_K", DType::kQ5_K},      {GgmlType::kQ6_K, "Q6_K", DType::kQ6_K},
    {GgmlType::kIQ4_NL, "IQ4_NL", DType::kIQ4_NL}, {GgmlType::kIQ4_XS, "IQ4_XS", DType::kIQ4_XS},
    {GgmlType::kBF16, "BF16", DType::kBF16},
};
// ggml's other types, named in the refusal (their numbers are never reused).
constexpr std::pair<uint32_t, std::string_view> kRefused[] = {
    {4, "Q4_2 (removed from ggml)"}, {5, "Q4_3 (removed from ggml)"}, {9, "Q8_1"}, {15, "Q8_K"},
    {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"}, {21, "IQ3_S"}, {22, "IQ2_S"},
    {24, "I8"}, {25, "I16"}, {26, "I32"}, {27, "I64"}, {28, "F64"}, {29, "IQ1_M"},
    {31, "Q4_0_4_4 (removed from GGUF)"}, {32, "Q4_0_4_8 (removed from GGUF)"}, {33, "Q4_0_8_8 (removed from GGUF)"},
    {34, "TQ1_0"}, {35, "TQ2_0"}, {36, "IQ4_NL_4_4 (removed from GGUF)"}, {37, "IQ4_NL_4_8 (removed from GGUF)"},
    {38, "IQ4_NL_8_8 (removed from GGUF)"}, {39, "MXFP4"}, {40, "NVFP4"}, {41, "Q1_0"}, {42, "Q2_0"},
};

const TypeRow* FindType(uint32_t t) {
  for (const TypeRow& r : kTypes)
    if (uint32_t(r.type) == t) return &r;
  return nullptr;
}

// "unsupported ggml type 16 (IQ2_XXS); supported: F32, F16, ..." for a type outside kTypes.
Status RefuseType(const std::string& what, uint32_t t) {
  std::string name = "unknown";
  for (const auto& [n, s] : kRefused)
    if (n == t) name = s;
  std::string supported;
  for (const TypeRow& r : kTypes) supported += (supported.empty() ? "" : ", ") + std::string(r.name);
  return Status::Unsupported(what + ": unsupported ggml type " + std::to_string(t) + " (" + name + "); supported: " +
                             supported);
}

}  // namespace

std::string_view ValueTypeName(ValueType t) {
  static const char* const kNames[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32", "float32",
                                       "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return uint32_t(t) <= 12 ? kNames[uint32_t(t)] : "unknown";
}

std::string_view GgmlTypeName(GgmlType t) {
  const TypeRow* r = FindType(uint32_t(t));
  return r ? r->name : "unknown";
}

DType DTypeOfGgml(GgmlType t) {
  const TypeRow* r = FindType(uint32_t(t));
  return r ? r->dtype : DType::kF32;  // every GgmlType value has a row
}

GgmlType GgmlOfDType(DType t) {
  for (const TypeRow& r : kTypes)
    if (r.dtype == t) return r.type;
  return GgmlType::kF32;  // every DType has a row
}

int64_t GgmlBlockElems(GgmlType t) { return DTypeBlockElems(DTypeOfGgml(t)); }

int64_t GgmlBlockBytes(GgmlType t) {
  const DType d = DTypeOfGgml(t);
  return int64_t(DTypeBytes(d, DTypeBlockElems(d)));
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kU16: case ValueType::kI16:
    case ValueType::kU32: case ValueType::kI32: case ValueType::kU64: case ValueType::kI64: return true;
    default: return false;
  }
}

bool Value::AsInt(int64_t* out) const {
  switch (type) {
    case ValueType::kU8: case ValueType::kU16: case ValueType::kU32: case ValueType::kU64:
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) return false;
      *out = int64_t(u);
      return true;
    case ValueType::kI8: case ValueType::kI16: case ValueType::kI32: case ValueType::kI64:
      *out = i;
      return true;
    default: return false;
  }
}

double Value::AsDouble() const {
  if (type == ValueType::kF32 || type == ValueType::kF64) return f;
  int64_t x = 0;
  if (AsInt(&x)) return double(x);
  return double(u);
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

Result<std::unique_ptr<GgufFile>> GgufFile::Parse(const uint8_t* data, size_t size, const std::string& where) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->where_ = where;
  Cursor c(data, size);
  auto fail = [&](const Status& s) { return s.WithContext(where + ": "); };

  uint32_t magic, version;
  uint64_t n_tensors, n_kv;
  if (!c.Read(&magic)) return fail(Truncated("magic", 0));
  if (magic != kMagic) return fail(Status::Corruption("bad magic (not a GGUF file: the first 4 bytes are not \"GGUF\")"));
  if (!c.Read(&version)) return fail(Truncated("version", c.pos()));
  if (version != 2 && version != 3)
    return fail(Status::Unsupported("unsupported GGUF version " + std::to_string(version) +
                                    (version == 1 ? " (supported: 2, 3)" : " (supported: 2, 3; a big-endian file?)")));
  g->version_ = version;
  if (!c.Read(&n_tensors) || !c.Read(&n_kv)) return fail(Truncated("header counts", c.pos()));
  // Each tensor info takes at least 24 bytes, each key/value at least 13: absurd counts end here.
  if (n_tensors > c.left() / 24)
    return fail(Status::Corruption("tensor count " + std::to_string(n_tensors) + " is absurd for a " +
                                   std::to_string(size) + "-byte file"));
  if (n_kv > c.left() / 13)
    return fail(Status::Corruption("metadata count " + std::to_string(n_kv) + " is absurd for a " +
                                   std::to_string(size) + "-byte file"));

  uint64_t budget = kMaxArrayValues;
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    ATP_RETURN_IF_ERROR(fail(ReadString(c, "metadata key #" + std::to_string(k), &key)));
    uint32_t t;
    if (!c.Read(&t)) return fail(Truncated("type of metadata '" + key + "'", c.pos()));
    if (!KnownType(t))
      return fail(Status::Corruption("metadata '" + key + "': unknown value type " + std::to_string(t)));
    Value v;
    ATP_RETURN_IF_ERROR(fail(ReadValue(c, ValueType(t), "metadata '" + key + "'", 0, &budget, &v)));
    if (!g->kv_index_.emplace(key, g->kv_.size()).second)
      return fail(Status::Corruption("duplicate metadata key '" + key + "'"));
    g->kv_.emplace_back(std::move(key), std::move(v));
  }
  if (const Value* a = g->Find("general.alignment")) {
    int64_t x = 0;
    if (a->type != ValueType::kU32 || !a->AsInt(&x) || x == 0 || (x & (x - 1)) != 0 || uint64_t(x) > kMaxAlignment)
      return fail(Status::Corruption("general.alignment must be a uint32 power of two up to " +
                                     std::to_string(kMaxAlignment)));
    g->alignment_ = uint64_t(x);
  }

  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorInfo ti;
    ATP_RETURN_IF_ERROR(fail(ReadString(c, "tensor name #" + std::to_string(k), &ti.name)));
    const std::string what = "tensor '" + ti.name + "'";
    uint32_t n_dims;
    if (!c.Read(&n_dims)) return fail(Truncated(what + " dimension count", c.pos()));
    if (n_dims == 0 || n_dims > kMaxDims)
      return fail(Status::Corruption(what + ": " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)"));
    // The product of dimensions stays below 2^62 elements, so byte counts below fit in uint64.
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t x;
      if (!c.Read(&x)) return fail(Truncated(what + " dimensions", c.pos()));
      if (x == 0 || x > (uint64_t(1) << 62) / numel)
        return fail(Status::Corruption(what + ": dimension " + std::to_string(d) + " = " + std::to_string(x) +
                                       " is zero or makes the tensor absurdly large"));
      numel *= x;
      ti.ne.push_back(int64_t(x));
    }
    uint32_t type;
    if (!c.Read(&type) || !c.Read(&ti.offset)) return fail(Truncated(what + " type and offset", c.pos()));
    if (!FindType(type)) return fail(RefuseType(what, type));
    ti.type = GgmlType(type);
    const uint64_t be = uint64_t(GgmlBlockElems(ti.type));
    if (uint64_t(ti.ne[0]) % be != 0)
      return fail(Status::Corruption(what + ": " + std::string(GgmlTypeName(ti.type)) + " rows of " +
                                     std::to_string(ti.ne[0]) + " elements are not whole blocks of " +
                                     std::to_string(be)));
    ti.nbytes = numel / be * uint64_t(GgmlBlockBytes(ti.type));
    if (ti.offset % g->alignment_ != 0)
      return fail(Status::Corruption(what + ": data offset " + std::to_string(ti.offset) +
                                     " is not a multiple of the alignment " + std::to_string(g->alignment_)));
    if (!g->tensor_index_.emplace(ti.name, g->tensors_.size()).second)
      return fail(Status::Corruption("duplicate tensor name '" + ti.name + "'"));
    g->tensors_.push_back(std::move(ti));
  }

  // The data section starts at the next multiple of the alignment; with no tensors it may be absent.
  const uint64_t info_end = c.pos();
  const uint64_t data_start = (info_end + g->alignment_ - 1) / g->alignment_ * g->alignment_;
  const uint64_t data_size = data_start <= size ? size - data_start : 0;
  for (TensorInfo& ti : g->tensors_) {
    if (ti.offset > data_size || ti.nbytes > data_size - ti.offset)
      return fail(Status::Corruption("tensor '" + ti.name + "': data [" + std::to_string(ti.offset) + ", +" +
                                     std::to_string(ti.nbytes) + ") beyond end of file (data section holds " +
                                     std::to_string(data_size) + " bytes)"));
    ti.data = data + data_start + ti.offset;
  }
  return g;
}

Result<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mf, MappedFile::Open(path));
  std::shared_ptr<MappedFile> f = std::move(mf);
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> g, Parse(f->data(), f->size(), path));
  g->file_ = std::move(f);
  return g;
}

const Value* GgufFile::Find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
Status WrongType(std::string_view key, const Value& v, const char* want) {
  return Status::InvalidArgument("metadata '" + std::string(key) + "' is " + std::string(ValueTypeName(v.type)) +
                                 ", expected " + want);
}
Status Missing(std::string_view key) { return Status::InvalidArgument("missing metadata '" + std::string(key) + "'"); }
}  // namespace

Status GgufFile::GetString(std::string_view key, std::string* out, bool required) const {
  const Value* v = Find(key);
  if (!v) return required ? Missing(key) : Status::Ok();
  if (v->type != ValueType::kString) return WrongType(key, *v, "a string");
  *out = v->str;
  return Status::Ok();
}

Status GgufFile::GetInt(std::string_view key, int64_t* out, bool required) const {
  const Value* v = Find(key);
  if (!v) return required ? Missing(key) : Status::Ok();
  if (!v->AsInt(out)) return WrongType(key, *v, "an integer");
  return Status::Ok();
}

Status GgufFile::GetFloat(std::string_view key, double* out, bool required) const {
  const Value* v = Find(key);
  if (!v) return required ? Missing(key) : Status::Ok();
  if (!v->is_number()) return WrongType(key, *v, "a number");
  *out = v->AsDouble();
  return Status::Ok();
}

Status GgufFile::GetBool(std::string_view key, bool* out) const {
  const Value* v = Find(key);
  if (!v) return Status::Ok();
  if (v->type != ValueType::kBool) return WrongType(key, *v, "a bool");
  *out = v->u != 0;
  return Status::Ok();
}

Result<const std::vector<Value>*> GgufFile::GetArray(std::string_view key, ValueType elem) const {
  const Value* v = Find(key);
  if (!v) return static_cast<const std::vector<Value>*>(nullptr);
  if (v->type != ValueType::kArray || v->elem != elem)
    return Status::InvalidArgument("metadata '" + std::string(key) + "' must be an array of " +
                                   std::string(ValueTypeName(elem)));
  return &v->items;
}

bool IsGgufFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return true;
  std::ifstream f(path, std::ios::binary);
  char m[4] = {};
  return f.read(m, 4) && std::memcmp(m, "GGUF", 4) == 0;
}

}  // namespace atp::gguf
