#include "format/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace atp {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {
// A header larger than this is not a real checkpoint; refuse before parsing it.
constexpr uint64_t kMaxHeader = 100ull << 20;
}

Status SafeTensors::ParseFile(std::shared_ptr<MappedFile> file, std::map<std::string, TensorView>* out) {
  const std::string& where = file->path();
  if (file->size() < 8) return Status::Corruption(where + ": truncated (no 8-byte header length)");
  uint64_t hlen;
  std::memcpy(&hlen, file->data(), 8);
  if (hlen > kMaxHeader || hlen > file->size() - 8)
    return Status::Corruption(where + ": header length " + std::to_string(hlen) + " exceeds file size " +
                              std::to_string(file->size()));
  json h = json::parse(file->data() + 8, file->data() + 8 + hlen, nullptr, false);
  if (h.is_discarded() || !h.is_object()) return Status::Corruption(where + ": header is not a JSON object");
  const uint64_t data_size = file->size() - 8 - hlen;
  const uint8_t* base = file->data() + 8 + hlen;
  for (auto& [name, info] : h.items()) {
    if (name == "__metadata__") continue;
    // A named reference: clang before 16 cannot capture a structured binding in a lambda.
    const std::string& tensor = name;
    auto bad = [&](const std::string& why) { return Status::Corruption(where + ": tensor '" + tensor + "': " + why); };
    if (!info.is_object()) return bad("entry is not an object");
    auto dt = info.find("dtype");
    auto sh = info.find("shape");
    auto off = info.find("data_offsets");
    if (dt == info.end() || !dt->is_string()) return bad("missing dtype");
    if (sh == info.end() || !sh->is_array()) return bad("missing shape");
    if (off == info.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      return bad("data_offsets must be two unsigned integers");
    TensorView v;
    // Q8_0/Q4_0 are GGUF's block types, not safetensors dtypes: a header naming them is refused too.
    if (!ParseDType(dt->get<std::string>(), &v.dtype) || IsBlockDType(v.dtype))
      return Status::Unsupported(where + ": tensor '" + name + "': dtype " + dt->get<std::string>() + " (supported: F32, F16, BF16)");
    uint64_t numel = 1;
    for (auto& d : *sh) {
      if (!d.is_number_unsigned()) return bad("shape entries must be unsigned integers");
      uint64_t x = d.get<uint64_t>();
      if (x != 0 && numel > (uint64_t(1) << 48) / x) return bad("shape too large");
      numel *= x;
      v.shape.push_back(int64_t(x));
    }
    uint64_t b = (*off)[0].get<uint64_t>(), e = (*off)[1].get<uint64_t>();
    if (b > e || e > data_size)
      return bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + ") outside the " +
                 std::to_string(data_size) + "-byte data section (file truncated or header lies)");
    if (e - b != numel * DTypeSize(v.dtype))
      return bad("data_offsets span " + std::to_string(e - b) + " bytes but shape " + v.ShapeString() + " needs " +
                 std::to_string(numel * DTypeSize(v.dtype)));
    v.data = base + b;
    if (!out->emplace(name, v).second) return bad("duplicate tensor name");
  }
  return Status::Ok();
}

Result<std::unique_ptr<SafeTensors>> SafeTensors::Open(const std::string& path) {
  auto st = std::unique_ptr<SafeTensors>(new SafeTensors());
  std::vector<std::string> shard_paths;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    fs::path single = fs::path(path) / "model.safetensors";
    fs::path index = fs::path(path) / "model.safetensors.index.json";
    if (fs::exists(single)) {
      shard_paths.push_back(single.string());
    } else if (fs::exists(index)) {
      ATP_ASSIGN_OR_RETURN(std::string text, ReadFile(index.string()));
      json j = json::parse(text, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        return Status::Corruption(index.string() + ": invalid JSON or missing 'weight_map'");
      std::set<std::string> files;
      for (auto& [name, file] : j["weight_map"].items()) {
        if (!file.is_string()) return Status::Corruption(index.string() + ": weight_map['" + name + "'] is not a string");
        std::string f = file.get<std::string>();
        if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
          return Status::Corruption(index.string() + ": shard name '" + f + "' leaves the model directory");
        files.insert(f);
      }
      for (auto& f : files) shard_paths.push_back((fs::path(path) / f).string());
    } else {
      return Status::NotFound(path + ": no model.safetensors or model.safetensors.index.json");
    }
  } else {
    shard_paths.push_back(path);
  }
  for (auto& p : shard_paths) {
    ATP_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mf, MappedFile::Open(p));
    std::shared_ptr<MappedFile> f = std::move(mf);
    std::map<std::string, TensorView> part;
    ATP_RETURN_IF_ERROR(ParseFile(f, &part));
    for (auto& [n, v] : part)
      if (!st->tensors_.emplace(n, v).second) return Status::Corruption(p + ": tensor '" + n + "' appears in two shards");
    st->files_.push_back(f);
  }
  return st;
}

std::unique_ptr<SafeTensors> SafeTensors::FromViews(std::map<std::string, TensorView> views,
                                                    std::vector<std::shared_ptr<const void>> owners) {
  auto st = std::unique_ptr<SafeTensors>(new SafeTensors());
  st->tensors_ = std::move(views);
  st->owners_ = std::move(owners);
  return st;
}

const TensorView* SafeTensors::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Status WriteSafeTensors(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  json h = json::object();
  uint64_t off = 0;
  for (auto& t : tensors) {
    if (IsBlockDType(t.dtype))
      return Status::Unsupported(path + ": tensor '" + t.name + "': safetensors has no " + std::string(DTypeName(t.dtype)) + " dtype");
    uint64_t n = DTypeSize(t.dtype);
    for (auto d : t.shape) n *= uint64_t(d);
    std::string dt = t.dtype == DType::kF32 ? "F32" : t.dtype == DType::kF16 ? "F16" : "BF16";
    h[t.name] = {{"dtype", dt}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs += ' ';  // keep tensor data 8-byte aligned
  std::ofstream f(path, std::ios::binary);
  if (!f) return Status::IOError(path + ": cannot create");
  uint64_t hlen = hs.size();
  f.write(reinterpret_cast<const char*>(&hlen), 8);
  f.write(hs.data(), std::streamsize(hs.size()));
  for (auto& t : tensors) {
    uint64_t n = DTypeSize(t.dtype);
    for (auto d : t.shape) n *= uint64_t(d);
    f.write(static_cast<const char*>(t.data), std::streamsize(n));
  }
  if (!f) return Status::IOError(path + ": write failed");
  return Status::Ok();
}

}  // namespace atp
