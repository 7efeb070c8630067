// `lowrank`: token-preserving low-rank keys and values (Palu / Loki style). Each token keeps
// coefficients c = k P_k (r_k) and e = v P_v (r_v) per KV head; scores are (q P_k).c and the output
// (sum_j a_j e_j) P_v^T is reconstructed once per head. Bases come from `atp calibrate`
// (mode=calib, a file beside the model) or from each completed block's own keys (mode=online).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "format/basis_file.h"
#include "kv/kv_policy.h"
#include "kv/policy_config.h"

namespace atp {

// The first r columns of one head's (d x d) basis M: (d x r) row-major.
std::vector<float> FirstBasisColumns(const float* M, int d, int r);

// mode=online's rule for one complete block of one KV head, on both backends: K and V (B, d) f32 give
// P_k (d, rk), the keys' top right singular vectors as columns, and P_v^T (rv, d), the values' as rows
// (zeros beyond min(B, d) directions), and the block's coefficients c = K P_k (B, rk) and e = V P_v (B, rv).
Status OnlineBlockBases(const float* K, const float* V, int B, int d, int rk, int rv, float* pk, float* pvt, float* c,
                        float* e);

std::shared_ptr<KvPolicyFactory> MakeLowRankFactory(const LowRankParams& p);

}  // namespace atp
