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

// atp:block=B,rank=r,window=W,keep=E (basis=input) written out: per complete block, the E rows of X_b
// with the largest ||x - x V_r V_r^T||^2 stay exact; the principal rows U'^T K of the others come from
// the SVD of their own inputs. A query sees a block as principal + kept rows iff (b+1)B + W <= t.
std::vector<float> BruteForceKeep(const Inputs& in, int B, int r, int W, int E) {
  const int nblocks = in.T / B, n = B - E;
  std::vector<std::vector<std::vector<float>>> pk(static_cast<size_t>(nblocks)), pv(static_cast<size_t>(nblocks));  // [block][row] (kKvd)
  std::vector<std::vector<int>> kept(static_cast<size_t>(nblocks));
  for (int b = 0; b < nblocks; ++b) {
    std::vector<float> x(in.X.begin() + b * B * kD, in.X.begin() + (b + 1) * B * kD), U, S, Vt;
    Svd(x, B, kD, &U, &S, &Vt);
    std::vector<double> lost(static_cast<size_t>(B));
    for (int i = 0; i < B; ++i) {
      const float* xi = &x[size_t(i) * kD];
      std::vector<double> proj(kD, 0.0);
      for (int c = 0; c < r; ++c) {
        double dot = 0;
        for (int j = 0; j < kD; ++j) dot += double(xi[j]) * Vt[size_t(c) * kD + size_t(j)];
        for (int j = 0; j < kD; ++j) proj[size_t(j)] += dot * Vt[size_t(c) * kD + size_t(j)];
      }
      for (int j = 0; j < kD; ++j) lost[size_t(i)] += (xi[j] - proj[size_t(j)]) * (xi[j] - proj[size_t(j)]);
    }
    std::vector<int> order(static_cast<size_t>(B));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return lost[size_t(a)] > lost[size_t(c)]; });
    kept[size_t(b)].assign(order.begin(), order.begin() + E);
    std::vector<int> rest(order.begin() + E, order.end());
    std::sort(rest.begin(), rest.end());
    if (n == 0) continue;
    std::vector<float> xr;
    for (int i : rest) xr.insert(xr.end(), x.begin() + i * kD, x.begin() + (i + 1) * kD);
    Svd(xr, n, kD, &U, &S, &Vt);
    const int k = std::min(n, kD), rr = std::min(r, k);
    for (int c = 0; c < rr; ++c) {
      std::vector<float> kc(kKvd, 0), vc(kKvd, 0);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < kKvd; ++j) {
          const float u = U[size_t(i) * size_t(k) + size_t(c)];
          kc[size_t(j)] += u * in.K[size_t((b * B + rest[size_t(i)]) * kKvd + j)];
          vc[size_t(j)] += u * in.V[size_t((b * B + rest[size_t(i)]) * kKvd + j)];
        }
      pk[size_t(b)].push_back(kc);
      pv[size_t(b)].push_back(vc);
    }
  }
  std::vector<float> O(size_t(in.T) * kQd);
  for (int t = 0; t < in.T; ++t)
    for (int h = 0; h < kH; ++h) {
      const int g = h / (kH / kKV);
      std::vector<float> K, V;  // the rows this query sees, (rows, kKvd), attended with kvtest::AttendRef
      std::vector<int> idx;
      auto add = [&](const float* k, const float* v) {
        K.insert(K.end(), k, k + kKvd);
        V.insert(V.end(), v, v + kKvd);
        idx.push_back(int(idx.size()));
      };
      for (int b = 0; b * B <= t; ++b) {
        if ((b + 1) * B + W <= t) {
          for (size_t c = 0; c < pk[size_t(b)].size(); ++c) add(pk[size_t(b)][c].data(), pv[size_t(b)][c].data());
          for (int i : kept[size_t(b)]) add(&in.K[size_t((b * B + i) * kKvd)], &in.V[size_t((b * B + i) * kKvd)]);
        } else {
          for (int j = b * B; j < std::min((b + 1) * B, t + 1); ++j) add(&in.K[size_t(j * kKvd)], &in.V[size_t(j * kKvd)]);
        }
      }
      kvtest::AttendRef(&in.Q[size_t(t * kQd + h * kHd)], K, V, g, idx, &O[size_t(t * kQd + h * kHd)]);
    }
  return O;
}

TEST(AtpKeep, MatchesBruteForce) {
  Inputs in = RandomInputs(100, 21);
  for (auto [B, r, W, E] : {std::tuple{16, 4, 16, 3}, {16, 8, 0, 1}, {8, 2, 24, 5}}) {
    const std::string spec = "atp:block=" + std::to_string(B) + ",rank=" + std::to_string(r) + ",window=" + std::to_string(W) +
                             ",keep=" + std::to_string(E);
    auto p = Make(spec);
    ASSERT_TRUE(p);
    // 1e-4 as AtpPolicy.MatchesBruteForceFormula: two f32 SVD routes (Gram + eigensolver, sgesvd) on random
    // blocks with separated singular values; attention sums in f32 over <= 100 rows.
    EXPECT_LT(MaxDiff(RunChunks(*p, in, {1, 7, 30}), BruteForceKeep(in, B, r, W, E)), 1e-4) << spec;
  }
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
TEST(AtpResidual, FullRankIsDense) {
  Inputs in = RandomInputs(90, 23);
  auto d = Make("dense");
  const std::vector<float> want = RunChunks(*d, in, {90});
  for (std::string spec : {"atp:block=16,rank=16,window=16,residual=kivi2", "atp:block=16,rank=16,window=0,residual=mx_fp4",
                           "atp:block=16,rank=16,window=16,basis=key,keep=2,residual=kivi4"}) {
    auto p = Make(spec);
    ASSERT_TRUE(p);
    // 1e-4: the rebuilt rows differ from the exact ones by f32 rounding of U U^T K (|K| ~ 1, 16 terms),
    // plus the codec's error on a residual of that size.
    EXPECT_LT(MaxDiff(RunChunks(*p, in, {5, 40}), want), 1e-4) << spec;
  }
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

TEST(AtpKeepResidual, CausalAndChunkInvariant) {
  for (std::string spec : {"atp:block=16,rank=4,window=16,keep=3", "atp:block=8,tau=0.8,window=0,keep=2",
                           "atp:block=16,rank=4,window=16,residual=kivi2", "atp:block=16,rank=4,window=32,keep=4,residual=kivi4",
                           "atp:block=16,rank=4,window=16,basis=key,keep=2,residual=mx_fp4,dtype=bf16",
                           "atp:block=16,rank=4,window=16,proj=lowrank,keep=1,residual=kivi8"}) {
    kvtest::ExpectCausal(spec, {90});
    Inputs in = RandomInputs(90, 25);
    auto a = Make(spec), b = Make(spec);
    ASSERT_TRUE(a && b);
    EXPECT_LT(MaxDiff(RunChunks(*a, in, {90}), RunChunks(*b, in, {1, 5, 11})), 1e-5) << spec << ": chunking changed the result";
  }
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
