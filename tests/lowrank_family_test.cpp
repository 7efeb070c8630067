// lowrank (calibrated and online) on every backend (tests/kv_backend.h): against attention in double
// over the rows projected onto the bases, at full rank against dense, causality and chunk invariance.
#include <gtest/gtest.h>

#include <numeric>

#include "format/basis_file.h"
#include "kv/lowrank_policy.h"
#include "kv_backend.h"
#include "kv_test_util.h"

namespace atp {
namespace {

using namespace kvtest;

class LowRankFamily : public KvOnBackend {
 protected:
  static const std::string& BasisFile() {
    static const std::string file = WriteRandomBasis("lowrank_family_test_basis.safetensors", kKV, kHd, 41);
    return file;
  }
  static std::string Spec(int rk, int rv) {
    return "lowrank:rk=" + std::to_string(rk) + ",rv=" + std::to_string(rv) + ",file=" + BasisFile();
  }
};
ATP_KV_BACKENDS(LowRankFamily);

// Attention in double over K P_k P_k^T and V P_v P_v^T, per KV head, with P the first rk (rv) columns of
// the head's basis: what a policy keeping coefficients c = k P_k, e = v P_v reads.
std::vector<float> ProjectedRef(const Inputs& in, const KvBasis& basis, int rk, int rv) {
  std::vector<float> K(in.K.size()), V(in.V.size());
  for (int h = 0; h < kKV; ++h) {
    const std::vector<float> pk = FirstBasisColumns(basis.k[0].data() + size_t(h) * kHd * kHd, kHd, rk);
    const std::vector<float> pv = FirstBasisColumns(basis.v[0].data() + size_t(h) * kHd * kHd, kHd, rv);
    for (int t = 0; t < in.T; ++t)
      for (auto [src, dst, P, r] : {std::tuple{&in.K, &K, &pk, rk}, {&in.V, &V, &pv, rv}}) {
        const float* x = &(*src)[size_t(t) * kKvd + size_t(h) * kHd];
        for (int i = 0; i < kHd; ++i) {
          double y = 0;
          for (int c = 0; c < r; ++c) {
            double coef = 0;
            for (int j = 0; j < kHd; ++j) coef += double(x[j]) * (*P)[size_t(j) * size_t(r) + size_t(c)];
            y += coef * (*P)[size_t(i) * size_t(r) + size_t(c)];
          }
          (*dst)[size_t(t) * kKvd + size_t(h) * kHd + size_t(i)] = float(y);
        }
      }
  }
  std::vector<float> O(size_t(in.T) * kQd);
  for (int t = 0; t < in.T; ++t) {
    std::vector<int> idx(size_t(t) + 1);
    std::iota(idx.begin(), idx.end(), 0);
    for (int h = 0; h < kH; ++h) AttendRef(&in.Q[size_t(t) * kQd + size_t(h) * kHd], K, V, h / (kH / kKV), idx, &O[size_t(t) * kQd + size_t(h) * kHd]);
  }
  return O;
}

// Ranks 16, 32 and 64 of 64 (rows of width 16 take their own prefill tiles on the GPU), and keys and
// values at different ranks. 1e-4 on the host: the projections in f32 against double (~1e-6 per
// coefficient) and attention in f32 over <= 80 rows; the GPU's coefficients are the same products up to
// summation order, read in f32 in decode (kv_backend.h's bounds). A wrong basis column, transposed basis
// or head moves outputs by ~0.1 to 1.
TEST_P(LowRankFamily, MatchesAttentionOverProjectedRows) {
  const Inputs in = RandomInputs(80, 42);
  auto basis = ReadKvBasis(BasisFile());
  ASSERT_TRUE(basis.ok()) << basis.status().ToString();
  int ran = 0;
  for (auto [rk, rv] : {std::pair{16, 16}, {32, 32}, {64, 64}, {8, 24}}) {
    const std::string spec = Spec(rk, rv);
    if (!Serves(spec)) continue;  // the GPU: rk = rv in 16, 32, 64, 128
    ExpectMatches(spec, in, ProjectedRef(in, *basis, rk, rv), {{1, 13}, {80}}, 1e-4,
                  "rk=" + std::to_string(rk) + " rv=" + std::to_string(rv));
    ++ran;
  }
  EXPECT_GE(ran, 3);
}

// At full rank an orthonormal change of basis changes nothing: calibrated, and online (each completed
// block's own basis). 1e-4 as above.
TEST_P(LowRankFamily, FullRankIsDense) {
  const Inputs in = RandomInputs(80, 43);
  auto d = kvtest::Make("dense");
  const std::vector<float> want = RunChunks(*d, in, {80});
  int ran = 0;
  for (const std::string& spec : {Spec(kHd, kHd), std::string("lowrank:rk=64,rv=64,mode=online,block=16")}) {
    if (!Serves(spec)) continue;
    ExpectMatches(spec, in, want, {{3, 17}, {1}}, 1e-4, spec);
    ++ran;
  }
  EXPECT_EQ(ran, 2);  // both backends serve both
}

TEST_P(LowRankFamily, CausalAndChunkInvariant) {
  const Inputs in = RandomInputs(90, 44);
  int ran = 0;
  for (const std::string& spec : {Spec(16, 16), Spec(8, 24), std::string("lowrank:rk=8,rv=16,mode=online,block=16"),
                                  Spec(16, 16) + "+mx:fmt=fp8_e4m3"}) {
    if (!Serves(spec)) continue;  // the GPU: calibrated rk = rv only, no codec after '+'
    ExpectCausalAndChunkInvariant(spec, in);
    ++ran;
  }
  EXPECT_GE(ran, 2);
}

}  // namespace
}  // namespace atp
