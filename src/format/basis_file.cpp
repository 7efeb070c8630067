#include "format/basis_file.h"

#include <filesystem>
#include <memory>

#include "format/safetensors.h"

namespace atp {

std::string DefaultKvBasisPath(const std::string& model) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(model, ec)) return model + "." + kKvBasisFile;
  return model + "/" + kKvBasisFile;
}

Status WriteKvBasis(const std::string& path, const KvBasis& b) {
  std::vector<TensorToWrite> t;
  const int64_t H = b.kv_heads, d = b.head_dim;
  for (int l = 0; l < b.layers; ++l) {
    t.push_back({"layers." + std::to_string(l) + ".k_basis", DType::kF32, {H, d, d}, b.k[size_t(l)].data()});
    t.push_back({"layers." + std::to_string(l) + ".v_basis", DType::kF32, {H, d, d}, b.v[size_t(l)].data()});
  }
  return WriteSafeTensors(path, t);
}

Result<KvBasis> ReadKvBasis(const std::string& path) {
  ATP_ASSIGN_OR_RETURN(std::unique_ptr<SafeTensors> st, SafeTensors::Open(path));
  KvBasis b;
  for (int l = 0;; ++l) {
    const TensorView* k = st->Find("layers." + std::to_string(l) + ".k_basis");
    const TensorView* v = st->Find("layers." + std::to_string(l) + ".v_basis");
    if (!k || !v) break;
    if (k->dtype != DType::kF32 || v->dtype != DType::kF32 || k->shape.size() != 3 || k->shape[1] != k->shape[2] ||
        v->shape != k->shape)
      return Status::Corruption(path + ": layer " + std::to_string(l) + " bases must be F32 [kv_heads, head_dim, head_dim]");
    if (l > 0 && (k->shape[0] != b.kv_heads || k->shape[1] != b.head_dim))
      return Status::Corruption(path + ": layer " + std::to_string(l) + " basis shape differs from layer 0");
    b.kv_heads = int(k->shape[0]);
    b.head_dim = int(k->shape[1]);
    b.k.emplace_back(static_cast<const float*>(k->data), static_cast<const float*>(k->data) + k->numel());
    b.v.emplace_back(static_cast<const float*>(v->data), static_cast<const float*>(v->data) + v->numel());
    b.layers = l + 1;
  }
  if (b.layers == 0) return Status::Corruption(path + ": no layers.N.k_basis / v_basis tensors");
  return b;
}

}  // namespace atp
