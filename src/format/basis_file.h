// Calibrated KV bases (`kv_basis.safetensors`): what `atp calibrate` writes and `--kv lowrank` (CPU and
// GPU) reads. A safetensors file with, per layer l, F32 tensors layers.l.k_basis and layers.l.v_basis of
// shape [kv_heads, head_dim, head_dim]; layers are read from 0 until the first missing one.
#pragma once
#include <string>
#include <vector>

#include "core/status.h"

namespace atp {

// The calibration file written beside a model by `atp calibrate`: MODEL/kv_basis.safetensors in a
// model directory, MODEL.kv_basis.safetensors beside a single-file (.gguf) model.
constexpr const char* kKvBasisFile = "kv_basis.safetensors";
std::string DefaultKvBasisPath(const std::string& model);

// Per layer and KV head: full orthonormal bases (head_dim x head_dim), principal direction i in
// column i, most energetic first, for post-RoPE keys and for values.
struct KvBasis {
  int layers = 0, kv_heads = 0, head_dim = 0;
  std::vector<std::vector<float>> k, v;  // [layer] -> (kv_heads, head_dim, head_dim)
};
Status WriteKvBasis(const std::string& path, const KvBasis& b);
// Every layer's two tensors F32 [kv_heads, head_dim, head_dim] with the same shape in every layer, else
// Corruption naming the file and the layer; a file with no layer 0 is Corruption too.
Result<KvBasis> ReadKvBasis(const std::string& path);

}  // namespace atp
