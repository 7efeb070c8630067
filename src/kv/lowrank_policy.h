// `lowrank`: token-preserving low-rank keys and values (Palu / Loki style). Each token keeps
// coefficients c = k P_k (r_k) and e = v P_v (r_v) per KV head; scores are (q P_k).c and the output
// (sum_j a_j e_j) P_v^T is reconstructed once per head. Bases come from `atp calibrate`
// (mode=calib, a file beside the model) or from each completed block's own keys (mode=online).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kv/kv_policy.h"
#include "kv/policy_spec.h"

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
// The first r columns of one head's (d x d) basis M: (d x r) row-major.
std::vector<float> FirstBasisColumns(const float* M, int d, int r);
Status WriteKvBasis(const std::string& path, const KvBasis& b);
Result<KvBasis> ReadKvBasis(const std::string& path);

class RowCodec;
// `codec` (B of `lowrank+B`, calib mode only; null: exact rows in `dtype`) stores the coefficient rows.
Result<std::shared_ptr<KvPolicyFactory>> MakeLowRankFactory(const PolicySpec& spec, const std::string& model_dir,
                                                            std::shared_ptr<const RowCodec> codec = nullptr);

}  // namespace atp
