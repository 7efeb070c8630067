// atp's keep=E (exact rows kept per compressed block) and residual=CODEC (GEAR: each summarized
// token's residual after projection, quantized) against references: keep=B and full rank are dense,
// keep=E against a brute-force second implementation (sgesvd instead of the Gram route, the residual
// energy from V_r instead of U S), an 8-bit residual close to dense, bytes by hand, causality and
// chunk invariance, and the parser.
#include <gtest/gtest.h>
#include <lapacke.h>

#include <numeric>

#include "kv/atp_policy.h"
#include "kv/kv_policy.h"
#include "kv_backend.h"
#include "kv_test_util.h"

namespace atp {
namespace {

using namespace kvtest;  // a directive: kv_policy_test.cpp, built in the same unit, has its own kD...

// Thin SVD of rows (m, n) by sgesvd: U (m, k) row-major with column signs fixed by column sum, S, Vt (k, n).
void Svd(std::vector<float> a, int m, int n, std::vector<float>* U, std::vector<float>* S, std::vector<float>* Vt) {
  const int k = std::min(m, n);
  U->assign(size_t(m) * size_t(k), 0);
  S->assign(size_t(k), 0);
  Vt->assign(size_t(k) * size_t(n), 0);
  std::vector<float> sup(static_cast<size_t>(k));
  ASSERT_EQ(LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'S', 'S', m, n, a.data(), n, S->data(), U->data(), k, Vt->data(), n, sup.data()), 0);
  for (int c = 0; c < k; ++c) {
    double sum = 0;
    for (int i = 0; i < m; ++i) sum += (*U)[size_t(i) * size_t(k) + size_t(c)];
    if (sum < 0)
      for (int i = 0; i < m; ++i) (*U)[size_t(i) * size_t(k) + size_t(c)] *= -1;
  }
}

// The ranks a block keeps: r, or with tau= the fewest leading singular values holding that fraction of
// the energy (sum of squares).
int RefRank(const std::vector<float>& S, int r, double tau) {
  const int k = int(S.size());
  if (tau <= 0) return std::min(r, k);
  double total = 0, acc = 0;
  for (float s : S) total += double(s) * s;
  for (int c = 0; c < k; ++c)
    if ((acc += double(S[size_t(c)]) * S[size_t(c)]) >= tau * total) return c + 1;
  return k;
}

// An atp string of the parameters the reference below takes.
struct AtpCase {
  int B, r;
  double tau;
  int W, E;
  bool key;
  std::string Spec() const {
    std::string s = "atp:block=" + std::to_string(B) + (tau > 0 ? ",tau=" + std::to_string(tau).substr(0, 3) : ",rank=" + std::to_string(r)) +
                    ",window=" + std::to_string(W);
    if (key) s += ",basis=key";
    if (E > 0) s += ",keep=" + std::to_string(E);
    return s;
  }
};

// atp:block=B,rank=r|tau=,window=W,keep=E,basis=input|key written out: per complete block and basis (the
// block's input X_b, or each KV head's keys), the E rows with the largest ||x - x V_r V_r^T||^2 stay
// exact; the principal rows U'^T K and U'^T V of the others come from the SVD of their own rows (sgesvd,
// columns signed by their sum). A query sees a block as principal + kept rows iff (b+1)B + W <= t.
std::vector<float> AtpRef(const Inputs& in, const AtpCase& a) {
  const int B = a.B, nblocks = in.T / B, n = B - a.E, width = a.key ? kHd : kD;
  // [block * kKV + head]: the rows a query of that KV head reads for the block compressed, (rows, kKvd).
  std::vector<std::vector<float>> K(size_t(nblocks) * kKV), V(K.size());
  auto add = [&](int b, int h, const float* k, const float* v) {
    for (auto [dst, src] : {std::pair{&K, k}, {&V, v}}) {
      std::vector<float>& rows = (*dst)[size_t(b * kKV + h)];
      rows.resize(rows.size() + kKvd, 0.f);
      std::copy_n(src, kHd, rows.end() - kKvd + h * kHd);
    }
  };
  for (int b = 0; b < nblocks; ++b)
    for (int g = 0; g < (a.key ? kKV : 1); ++g) {
      std::vector<float> x;  // (B, width): the basis source
      for (int i = 0; i < B; ++i) {
        const float* row = a.key ? &in.K[size_t((b * B + i) * kKvd + g * kHd)] : &in.X[size_t((b * B + i) * kD)];
        x.insert(x.end(), row, row + width);
      }
      std::vector<float> U, S, Vt;
      Svd(x, B, width, &U, &S, &Vt);
      const int r = RefRank(S, a.r, a.tau);
      std::vector<double> lost(static_cast<size_t>(B));
      for (int i = 0; i < B; ++i) {
        const float* xi = &x[size_t(i) * size_t(width)];
        std::vector<double> proj(size_t(width), 0.0);
        for (int c = 0; c < r; ++c) {
          double dot = 0;
          for (int j = 0; j < width; ++j) dot += double(xi[j]) * Vt[size_t(c) * size_t(width) + size_t(j)];
          for (int j = 0; j < width; ++j) proj[size_t(j)] += dot * Vt[size_t(c) * size_t(width) + size_t(j)];
        }
        for (int j = 0; j < width; ++j) lost[size_t(i)] += (xi[j] - proj[size_t(j)]) * (xi[j] - proj[size_t(j)]);
      }
      std::vector<int> order(static_cast<size_t>(B));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int p, int q) { return lost[size_t(p)] > lost[size_t(q)]; });
      const std::vector<int> kept(order.begin(), order.begin() + a.E);
      std::vector<int> rest(order.begin() + a.E, order.end());
      std::sort(rest.begin(), rest.end());
      int k = std::min(B, width), rr = r;
      if (a.E > 0 && n > 0) {
        std::vector<float> xr;
        for (int i : rest) xr.insert(xr.end(), x.begin() + i * width, x.begin() + (i + 1) * width);
        Svd(xr, n, width, &U, &S, &Vt);
        k = std::min(n, width), rr = RefRank(S, a.r, a.tau);
      }
      for (int h = a.key ? g : 0; h < (a.key ? g + 1 : kKV); ++h) {
        for (int c = 0; c < rr && n > 0; ++c) {
          std::vector<float> kc(kHd, 0), vc(kHd, 0);
          for (int i = 0; i < n; ++i)
            for (int j = 0; j < kHd; ++j) {
              const float u = U[size_t(i) * size_t(k) + size_t(c)];
              kc[size_t(j)] += u * in.K[size_t((b * B + rest[size_t(i)]) * kKvd + h * kHd + j)];
              vc[size_t(j)] += u * in.V[size_t((b * B + rest[size_t(i)]) * kKvd + h * kHd + j)];
            }
          add(b, h, kc.data(), vc.data());
        }
        for (int i : kept) add(b, h, &in.K[size_t((b * B + i) * kKvd + h * kHd)], &in.V[size_t((b * B + i) * kKvd + h * kHd)]);
      }
    }
  std::vector<float> O(size_t(in.T) * kQd);
  for (int t = 0; t < in.T; ++t)
    for (int h = 0; h < kH; ++h) {
      const int g = h / (kH / kKV);
      std::vector<float> Ks, Vs;  // the rows this query sees, (rows, kKvd), attended with kvtest::AttendRef
      for (int b = 0; b * B <= t; ++b) {
        if ((b + 1) * B + a.W <= t) {
          const std::vector<float>&k = K[size_t(b * kKV + g)], &v = V[size_t(b * kKV + g)];
          Ks.insert(Ks.end(), k.begin(), k.end());
          Vs.insert(Vs.end(), v.begin(), v.end());
        } else {
          Ks.insert(Ks.end(), in.K.begin() + b * B * kKvd, in.K.begin() + std::min((b + 1) * B, t + 1) * kKvd);
          Vs.insert(Vs.end(), in.V.begin() + b * B * kKvd, in.V.begin() + std::min((b + 1) * B, t + 1) * kKvd);
        }
      }
      std::vector<int> idx(Ks.size() / kKvd);
      std::iota(idx.begin(), idx.end(), 0);
      kvtest::AttendRef(&in.Q[size_t(t * kQd + h * kHd)], Ks, Vs, g, idx, &O[size_t(t * kQd + h * kHd)]);
    }
  return O;
}

class AtpFamily : public KvOnBackend {};
ATP_KV_BACKENDS(AtpFamily);

// Fixed ranks and an energy threshold, bases from the layer input and per KV head from its keys, with and
// without keep=E, against AtpRef: prefill chunks and decode steps, blocks completed inside and across
// chunks. Host: 1e-4, two f32 SVD routes (the policy's Gram + eigensolver or sgesdd, sgesvd here) on
// random blocks with separated singular values; attention sums in f32 over <= 100 rows. The GPU's bases
// (Jacobi rotations in double) meet the same bound in decode, and its prefill its bf16 bound
// (kv_backend.h). A wrong rank, window, block, kept token or sign moves outputs by ~0.1 to 1.
TEST_P(AtpFamily, MatchesReference) {
  const Inputs in = RandomInputs(100, 21);
  int ran = 0;
  for (const AtpCase& a : {AtpCase{16, 4, 0, 16, 0, false}, {16, 8, 0, 0, 0, false}, {8, 2, 0, 24, 0, false},
                           {32, 8, 0, 32, 0, false}, {16, 0, 0.9, 0, 0, false}, {32, 8, 0, 32, 0, true},
                           {16, 4, 0, 16, 3, false}, {16, 8, 0, 0, 1, false}, {8, 2, 0, 24, 5, false},
                           {16, 4, 0, 16, 2, true}, {8, 0, 0.8, 0, 2, false}, {16, 0, 0.9, 16, 0, true}}) {
    const std::string spec = a.Spec();
    if (!Serves(spec)) continue;  // the GPU takes no energy threshold with basis=key
    ExpectMatches(spec, in, AtpRef(in, a), {{1, 7, 30}, {100}}, 1e-4, spec);
    ++ran;
  }
  EXPECT_GE(ran, 11);
}

// keep=B leaves no token to summarize: every row a query sees is exact, as in dense attention.
TEST(AtpKeep, WholeBlockKeptIsDense) {
  Inputs in = RandomInputs(90, 22);
  auto d = Make("dense");
  const std::vector<float> want = RunChunks(*d, in, {90});
  for (std::string spec : {"atp:block=16,rank=4,window=16,keep=16", "atp:block=8,rank=2,window=0,basis=key,keep=8",
                           "atp:block=16,rank=4,window=16,keep=16,residual=kivi2"}) {
    auto p = Make(spec);
    ASSERT_TRUE(p);
    // 1e-6: the same rows in the same order, only split into more segments.
    EXPECT_LT(MaxDiff(RunChunks(*p, in, {1, 7, 30}), want), 1e-6) << spec;
  }
}

// At full rank the residual is rounding noise, which any codec keeps to within its own rounding of it.
TEST_P(AtpFamily, FullRankResidualIsDense) {
  Inputs in = RandomInputs(90, 23);
  auto d = kvtest::Make("dense");
  const std::vector<float> want = RunChunks(*d, in, {90});
  int ran = 0;
  for (std::string spec : {"atp:block=16,rank=16,window=16,residual=kivi2", "atp:block=16,rank=16,window=0,residual=mx_fp4",
                           "atp:block=16,rank=16,window=16,basis=key,keep=2,residual=kivi4"}) {
    if (!Serves(spec)) continue;  // the GPU's KIVI groups (14 tokens here) must be a multiple of 8
    // 1e-4: the rebuilt rows differ from the exact ones by f32 rounding of U U^T K (|K| ~ 1, 16 terms),
    // plus the codec's error on a residual of that size.
    ExpectMatches(spec, in, want, {{5, 40}, {1}}, 1e-4, spec);
    ++ran;
  }
  EXPECT_GE(ran, 2);
}

// An 8-bit residual is close to dense, and any residual is closer than the principal rows alone.
TEST(AtpResidual, EightBitsCloseToDense) {
  Inputs in = RandomInputs(100, 24);
  auto d = Make("dense");
  const std::vector<float> dense = RunChunks(*d, in, {100});
  auto plain = Make("atp:block=16,rank=4,window=16");
  const double without = MaxDiff(RunChunks(*plain, in, {100}), dense);
  auto p = Make("atp:block=16,rank=4,window=16,residual=kivi8");
  ASSERT_TRUE(p);
  // 0.02: KIVI-8 rounds each residual element to within range/510 (~0.01 for N(0,1) residuals over a
  // 16-token group); a score moves by |q| |dk| / 8 and the output by about that times max |v| (~3).
  // Measured 0.0045; the principal rows alone miss by 1.15.
  EXPECT_LT(MaxDiff(RunChunks(*p, in, {3, 50}), dense), 0.02);
  // E4M3 keeps 3 mantissa bits (each element within 1/16 of itself: measured 0.086); any 2-4 bit
  // residual still does better than the principal rows alone.
  for (std::string res : {"mx_fp8_e4m3", "kivi4", "kivi2", "mx_fp4"}) {
    auto q = Make("atp:block=16,rank=4,window=16,residual=" + res);
    ASSERT_TRUE(q);
    EXPECT_LT(MaxDiff(RunChunks(*q, in, {100}), dense), res == "mx_fp8_e4m3" ? without / 10 : without) << res;
  }
}

// The KIVI group residual=kiviN packs a block's summarized tokens in (the GPU twin packs in the same):
// the largest divisor of their count up to KIVI's 32, so that no key group straddles two blocks.
TEST(AtpResidual, GroupIsLargestDivisorUpTo32) {
  const std::vector<std::pair<int, int>> want = {{0, 1},   {1, 1},   {7, 7},   {14, 14}, {16, 16}, {32, 32},
                                                 {48, 24}, {64, 32}, {62, 31}, {66, 22}, {97, 1}};
  for (auto [rows, group] : want) EXPECT_EQ(AtpResidualGroup(rows), group) << rows << " summarized tokens";
}

TEST_P(AtpFamily, CausalAndChunkInvariant) {
  int ran = 0;
  for (std::string spec : {"atp:block=16,rank=4,window=16,keep=3", "atp:block=8,tau=0.8,window=0,keep=2",
                           "atp:block=16,rank=4,window=16,residual=kivi2", "atp:block=16,rank=4,window=32,keep=4,residual=kivi4",
                           "atp:block=16,rank=4,window=16,basis=key,keep=2,residual=mx_fp4,dtype=bf16",
                           "atp:block=16,rank=4,window=16,proj=lowrank,keep=1,residual=kivi8"}) {
    if (!Serves(spec)) continue;  // the GPU: no proj=lowrank
    ExpectCausalAndChunkInvariant(spec, RandomInputs(90, 25));
    ++ran;
  }
  EXPECT_GE(ran, 4);
}

TEST(AtpKeepResidual, BytesMatchHandCount) {
  Inputs in = RandomInputs(100, 26);
  auto p = Make("atp:block=16,rank=4,window=16,keep=2,residual=kivi4");
  ASSERT_TRUE(p);
  RunChunks(*p, in, {100});
  ASSERT_TRUE(p->Update().ok());
  // 100 tokens: blocks 0..5 compressed; a query at 100 sees blocks b with (b+1)*16 + 16 <= 100 (0..4)
  // compressed, so the exact store keeps positions 80..99; X of the 4 tokens of the filling block.
  const size_t exact = 20 * 2 * kKvd * 4, fill = 4 * kD * 4;
  // Per block and KV head: 4 principal rows (K and V, f32), 2 kept rows, one int64 row count.
  const size_t principal = 6 * kKV * (4 * 2 * kHd * 4 + 8), kept = 6 * kKV * 2 * 2 * kHd * 4;
  // basis=input: one U_r per block for both heads, (14 summarized tokens, 4) f32.
  const size_t coef = 6 * 14 * 4 * 4;
  // KIVI-4 with group 14 (the largest divisor of 14 up to 32), one group per block and head: f16 scale
  // and zero per key channel, 14 key rows of 64 4-bit codes, 14 value rows of ceil(64/14) = 5 f16
  // scale/zero pairs and 32 code bytes.
  const size_t residual = 6 * kKV * (kHd * 2 * 2 + 14 * 32 + 14 * (5 * 2 * 2 + 32));
  EXPECT_EQ(p->Bytes(), exact + fill + principal + kept + coef + residual);
}

TEST(AtpKeepResidual, ParserCanonicalAndRefusals) {
  auto f = ParseKvPolicy("atp:block=32,rank=8,window=64,residual=kivi2,keep=2");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const std::string canon = (*f)->Describe();
  EXPECT_EQ(canon, "atp:block=32,rank=8,window=64,basis=input,proj=dense,keep=2,residual=kivi2,dtype=f32");
  auto again = ParseKvPolicy(canon);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Describe(), canon);
  // The defaults leave the canonical string of earlier results unchanged.
  auto defaults = ParseKvPolicy("atp:block=32,rank=8,window=64,keep=0,residual=none");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ((*defaults)->Describe(), "atp:block=32,rank=8,window=64,basis=input,proj=dense,dtype=f32");
  auto too_many = ParseKvPolicy("atp:block=16,keep=17");
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("keep=17"), std::string::npos) << too_many.status().message();
  EXPECT_FALSE(ParseKvPolicy("atp:keep=-1").ok());
  auto codec = ParseKvPolicy("atp:residual=kivi3");
  ASSERT_FALSE(codec.ok());
  EXPECT_NE(codec.status().message().find("kivi2, kivi4, kivi8, mx_FMT"), std::string::npos) << codec.status().message();
  auto mx = ParseKvPolicy("atp:residual=mx_fp5");
  ASSERT_FALSE(mx.ok());
  EXPECT_NE(mx.status().message().find("fp8_e4m3"), std::string::npos) << mx.status().message();
  auto keys = ParseKvPolicy("atp:kep=1");
  ASSERT_FALSE(keys.ok());
  EXPECT_NE(keys.status().message().find("keep"), std::string::npos);
  EXPECT_NE(keys.status().message().find("residual"), std::string::npos);
}

}  // namespace
}  // namespace atp
