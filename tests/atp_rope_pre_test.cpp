// atp's rope=pre (keys compressed before RoPE, each rebuilt key rotated at its own position) against
// references: a brute-force second implementation (sgesvd, the residual through the same codec by hand,
// the model's own ApplyRope, then dense attention), full rank is dense, keys that are low rank before
// RoPE come back exactly (where rope=post loses them), causality, chunk invariance, bytes by hand, the
// parser's refusals, and the rotation helpers against ApplyRope.
#include <gtest/gtest.h>
#include <lapacke.h>

#include <cmath>
#include <numeric>

#include "kernels/ops.h"
#include "kv/kivi_codec.h"
#include "kv/kv_policy.h"
#include "kv/rope_rows.h"
#include "kv_backend.h"
#include "kv_test_util.h"

namespace atp {
namespace {

using namespace kvtest;

// kShape with a model's RoPE: theta 10000 over head_dim 64, as Llama 2 and atp-40m.
KvShape RopeShape() {
  KvShape s = kShape;
  for (int i = 0; i < kHd / 2; ++i) s.rope_inv_freq.push_back(float(1.0 / std::pow(10000.0, 2.0 * i / kHd)));
  return s;
}

// Random inputs whose keys are `pre` (T, kKvd) rotated at their positions, as the forward pass appends them.
Inputs Rotated(Inputs in, const std::vector<float>& pre) {
  std::vector<int32_t> pos(static_cast<size_t>(in.T));
  std::iota(pos.begin(), pos.end(), 0);
  in.K = pre;
  ApplyRope(in.K.data(), in.T, kKV, kHd, pos.data(), RopeShape().rope_inv_freq.data());
  return in;
}

// Thin SVD of rows (m, n) by sgesvd: U (m, k) row-major with column signs fixed by column sum.
std::vector<float> LeftVectors(std::vector<float> a, int m, int n) {
  const int k = std::min(m, n);
  std::vector<float> U(size_t(m) * size_t(k)), S(static_cast<size_t>(k)), Vt(size_t(k) * size_t(n)), sup(static_cast<size_t>(k));
  EXPECT_EQ(LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'S', 'S', m, n, a.data(), n, S.data(), U.data(), k, Vt.data(), n, sup.data()), 0);
  for (int c = 0; c < k; ++c) {
    double sum = 0;
    for (int i = 0; i < m; ++i) sum += U[size_t(i) * size_t(k) + size_t(c)];
    if (sum < 0)
      for (int i = 0; i < m; ++i) U[size_t(i) * size_t(k) + size_t(c)] *= -1;
  }
  return U;
}

// atp:block=B,rank=r,window=W,residual=FORM,rope=pre written out (keep=0): per complete block and KV
// head, U_r from the block's input (or the head's pre-RoPE keys), principal rows P = U_r^T K_pre and
// U_r^T V, residuals through the codec of `form` (KIVI with group B, what the policy picks for B <= 32,
// and no exact rows), each key rebuilt
// as U_r P + residual and rotated by ApplyRope at its position. A query sees a block rebuilt iff
// (b+1)B + W <= t, exactly (as appended) otherwise. rotate=false: rope=post, the keys as appended (pre
// is then in.K) compressed and rebuilt with no rotation.
std::vector<float> BruteForceResidual(const Inputs& in, const std::vector<float>& pre, int B, int r, int W, bool key_basis,
                                      bool rotate, RowForm form = KiviParams{8, 32, 0}) {
  if (auto* kivi = std::get_if<KiviParams>(&form)) kivi->group = B, kivi->residual = 0;
  auto codec = MakeRowCodec(form);
  const std::vector<float> inv = RopeShape().rope_inv_freq;
  std::vector<float> RK(in.K.size()), RV(in.V.size());  // rebuilt rows of complete blocks, (T, kKvd)
  for (int b = 0; b < in.T / B; ++b)
    for (int h = 0; h < kKV; ++h) {
      std::vector<float> src;
      if (key_basis) {
        for (int i = 0; i < B; ++i) src.insert(src.end(), &pre[size_t((b * B + i) * kKvd + h * kHd)], &pre[size_t((b * B + i) * kKvd + (h + 1) * kHd)]);
      } else {
        src.assign(in.X.begin() + b * B * kD, in.X.begin() + (b + 1) * B * kD);
      }
      const int width = key_basis ? kHd : kD, k = std::min(B, width), rr = std::min(r, k);
      const std::vector<float> U = LeftVectors(src, B, width);
      auto kpre = [&](int i, int j) { return pre[size_t((b * B + i) * kKvd + h * kHd + j)]; };
      auto v = [&](int i, int j) { return in.V[size_t((b * B + i) * kKvd + h * kHd + j)]; };
      std::vector<float> pk(size_t(rr) * kHd, 0), pv(pk.size(), 0), lk(size_t(B) * kHd), lv(lk.size()), rk(lk.size()), rv(lk.size());
      for (int c = 0; c < rr; ++c)
        for (int i = 0; i < B; ++i)
          for (int j = 0; j < kHd; ++j) {
            pk[size_t(c * kHd + j)] += U[size_t(i * k + c)] * kpre(i, j);
            pv[size_t(c * kHd + j)] += U[size_t(i * k + c)] * v(i, j);
          }
      for (int i = 0; i < B; ++i)
        for (int j = 0; j < kHd; ++j) {
          float ak = 0, av = 0;
          for (int c = 0; c < rr; ++c) ak += U[size_t(i * k + c)] * pk[size_t(c * kHd + j)], av += U[size_t(i * k + c)] * pv[size_t(c * kHd + j)];
          lk[size_t(i * kHd + j)] = ak, lv[size_t(i * kHd + j)] = av;
          rk[size_t(i * kHd + j)] = kpre(i, j) - ak, rv[size_t(i * kHd + j)] = v(i, j) - av;
        }
      auto store = codec->NewStore(PageStore::Process(), kHd, kHd);
      EXPECT_TRUE(store->Append(rk.data(), kHd, rv.data(), kHd, B).ok());
      DecodeRows(*store, 0, B, kHd, kHd, rk.data(), rv.data());
      for (int i = 0; i < B; ++i) {
        float* key = &RK[size_t((b * B + i) * kKvd + h * kHd)];
        for (int j = 0; j < kHd; ++j) {
          key[j] = lk[size_t(i * kHd + j)] + rk[size_t(i * kHd + j)];
          RV[size_t((b * B + i) * kKvd + h * kHd + j)] = lv[size_t(i * kHd + j)] + rv[size_t(i * kHd + j)];
        }
        const int32_t pos = b * B + i;
        if (rotate) ApplyRope(key, 1, 1, kHd, &pos, inv.data());
      }
    }
  std::vector<float> O(size_t(in.T) * kQd);
  for (int t = 0; t < in.T; ++t)
    for (int h = 0; h < kH; ++h) {
      std::vector<int> idx;
      std::vector<float> K, V;  // the rows this query sees, (rows, kKvd)
      for (int j = 0; j <= t; ++j) {
        const bool rebuilt = (j / B + 1) * B + W <= t;
        const std::vector<float>&ks = rebuilt ? RK : in.K, &vs = rebuilt ? RV : in.V;
        K.insert(K.end(), ks.begin() + j * kKvd, ks.begin() + (j + 1) * kKvd);
        V.insert(V.end(), vs.begin() + j * kKvd, vs.begin() + (j + 1) * kKvd);
        idx.push_back(j);
      }
      AttendRef(&in.Q[size_t(t * kQd + h * kHd)], K, V, h / (kH / kKV), idx, &O[size_t(t * kQd + h * kHd)]);
    }
  return O;
}

class AtpRopePreFamily : public KvOnBackend {};
ATP_KV_BACKENDS(AtpRopePreFamily);

// rope=pre, and rope=post's residual path too (Attend reads both without forming the rows it can leave
// factored: KvSegment::adds_to), with KIVI-8 and FP8 (E4M3) residuals.
TEST_P(AtpRopePreFamily, MatchesBruteForce) {
  const Inputs base = RandomInputs(100, 31);
  const Inputs in = Rotated(base, base.K);
  int ran = 0;
  for (auto [B, r, W, key, pre, mx] : {std::tuple{16, 4, 16, false, true, false}, {16, 2, 0, true, true, false},
                                       {8, 3, 24, false, true, false}, {16, 4, 16, false, false, false},
                                       {8, 2, 0, true, false, false}, {16, 4, 16, false, true, true}, {8, 2, 8, true, false, true}}) {
    const std::string spec = "atp:block=" + std::to_string(B) + ",rank=" + std::to_string(r) + ",window=" + std::to_string(W) +
                             ",basis=" + (key ? "key" : "input") + (mx ? ",residual=mx_fp8_e4m3" : ",residual=kivi8") +
                             (pre ? ",rope=pre" : "");
    if (!Serves(spec, RopeShape())) continue;
    const RowForm form = mx ? RowForm{MxForm{MxFormat::kFp8E4M3}} : RowForm{KiviParams{8, 32, 0}};
    const std::vector<float> want = BruteForceResidual(in, pre ? base.K : in.K, B, r, W, key, pre, form);
    // Host: 5e-3 (measured 1.7e-4, 1.1e-3, 3.2e-4; rope=post 1.8e-4, 1.3e-4): the two SVD routes (Gram +
    // eigensolver, sgesvd) agree to ~1e-6, which can move a KIVI-8 residual code across a rounding
    // boundary: one quantum (range/255, ~0.03 for these residuals) on one key element moves a score by
    // <= |q_j| 0.03 / 8 (|q_j| <~ 3) and an output by that times the row's weight and |v - o|. The rotations
    // (angle addition in the policy, ApplyRope here) differ by ~1e-5 rad at these positions. An FP8
    // (E4M3) step is 1/16 of an element near its own size, so one flipped code of a residual ~1 moves a
    // score by <= 3 * 0.06 / 8 and an output by that times the row's weight: 0.02 (measured 6.4e-3 where
    // one flipped, block=8 basis=key). A key rotated at a wrong position, or not at all, misses by
    // O(0.1-1). Elsewhere the residuals come from other arithmetic (the GPU's bases from Jacobi in
    // double, fused multiply-adds, CUDA's cosf/sinf), and a code flips wherever that rounding puts a
    // residual on a boundary: 0.05 bounds a few such flips and still fails a wrong rotation.
    const double tol = !host() ? 0.05 : mx ? 0.02 : 5e-3;
    ExpectMatches(spec, in, want, {{1, 7, 30}, {100}}, tol, spec, RopeShape());
    ++ran;
  }
  EXPECT_GE(ran, 7);
}

// At full rank the residual is rounding noise: turning keys back, rebuilding and turning them again is dense.
TEST_P(AtpRopePreFamily, FullRankIsDense) {
  const Inputs base = RandomInputs(90, 32);
  const Inputs in = Rotated(base, base.K);
  auto d = kvtest::Make("dense");
  const std::vector<float> want = RunChunks(*d, in, {90});
  for (std::string spec : {"atp:block=16,rank=16,window=16,residual=kivi2,rope=pre",
                           "atp:block=16,rank=16,window=0,basis=key,keep=3,residual=mx_fp4,rope=pre"}) {
    // 1e-4 as AtpFamily.FullRankResidualIsDense, plus two f32 rotations of |k| ~ 8 (~1e-6 each).
    ExpectMatches(spec, in, want, {{5, 40}, {1}}, 1e-4, spec, RopeShape());
  }
}

// Keys and values that are rank r in each block before RoPE (K = X_b W_k, V = X_b W_v with the block's
// input of rank r) are rebuilt exactly by rope=pre at rank r (zero residuals), while after RoPE each
// position turns its key differently and rank r no longer holds the keys: rope=post leaves its 2-bit
// key residual a real error.
TEST_P(AtpRopePreFamily, LowRankBeforeRopeIsExact) {
  const int T = 96, B = 16, r = 3;
  Inputs base = RandomInputs(T, 33);
  std::mt19937 rng(34);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> Wk(size_t(kD) * kKvd), Wv(Wk.size()), pre(size_t(T) * kKvd, 0.f);
  for (auto* w : {&Wk, &Wv})
    for (float& x : *w) x = n(rng) / std::sqrt(float(kD));
  for (int b = 0; b < T / B; ++b) {  // X_b = C_b M_b: rank r
    std::vector<float> C(size_t(B) * r), M(size_t(r) * kD);
    for (float& c : C) c = n(rng);
    for (float& m : M) m = n(rng);
    for (int i = 0; i < B; ++i)
      for (int j = 0; j < kD; ++j) {
        float x = 0;
        for (int c = 0; c < r; ++c) x += C[size_t(i * r + c)] * M[size_t(c * kD + j)];
        base.X[size_t((b * B + i) * kD + j)] = x;
      }
  }
  std::fill(base.V.begin(), base.V.end(), 0.f);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < kD; ++j)
      for (int c = 0; c < kKvd; ++c) {
        pre[size_t(t * kKvd + c)] += base.X[size_t(t * kD + j)] * Wk[size_t(j * kKvd + c)];
        base.V[size_t(t * kKvd + c)] += base.X[size_t(t * kD + j)] * Wv[size_t(j * kKvd + c)];
      }
  const Inputs in = Rotated(base, pre);
  auto d = kvtest::Make("dense");
  const std::vector<float> want = RunChunks(*d, in, {T});
  auto p = Make("atp:block=16,rank=3,window=16,residual=kivi2,rope=pre", RopeShape());
  auto q = Make("atp:block=16,rank=3,window=16,residual=kivi2", RopeShape());
  ASSERT_TRUE(p && q);
  // Decode steps on the GPU (its f32 path: the bf16 prefill would hide the effect measured here).
  const std::vector<int> chunks = host() ? std::vector<int>{T} : std::vector<int>{1};
  const double pre_err = MaxDiff(RunChunks(*p, in, chunks), want), post_err = MaxDiff(RunChunks(*q, in, chunks), want);
  // 1e-3: the residual is f32 rounding of K - U_r U_r^T K (|K| ~ 3), which KIVI-2 keeps within its own
  // range, plus the rotations' rounding; post-RoPE the same budget misses by a visible amount.
  EXPECT_LT(pre_err, 1e-3) << GetParam();
  EXPECT_GT(post_err, 20 * pre_err) << "rope=post " << post_err << ", rope=pre " << pre_err;
}

TEST_P(AtpRopePreFamily, CausalAndChunkInvariant) {
  const KvShape shape = RopeShape();
  int ran = 0;
  for (std::string spec : {"atp:block=16,rank=4,window=16,residual=kivi2,rope=pre",
                           "atp:block=8,tau=0.8,window=0,basis=key,residual=kivi4,rope=pre",
                           "atp:block=16,rank=4,window=32,keep=3,residual=mx_fp4,dtype=bf16,rope=pre",
                           "atp:block=16,rank=4,window=16,proj=lowrank,basis=key,keep=2,residual=kivi8,rope=pre"}) {
    if (!Serves(spec, shape)) continue;  // the GPU: no tau= with basis=key, no proj=lowrank
    ExpectCausalAndChunkInvariant(spec, RandomInputs(90, 35), shape);
    ++ran;
  }
  EXPECT_GE(ran, 2);
}

TEST(AtpRopePre, BytesMatchHandCount) {
  Inputs in = RandomInputs(100, 36);
  // keep=0: the offsets are implicit, so rope=pre holds exactly what rope=post holds.
  auto post = Make("atp:block=16,rank=4,window=16,residual=kivi4", RopeShape());
  auto pre = Make("atp:block=16,rank=4,window=16,residual=kivi4,rope=pre", RopeShape());
  ASSERT_TRUE(post && pre);
  RunChunks(*post, in, {100});
  RunChunks(*pre, in, {100});
  ASSERT_TRUE(post->Update().ok() && pre->Update().ok());
  EXPECT_EQ(pre->Bytes(), post->Bytes());
  // keep=2: AtpKeepResidual.BytesMatchHandCount's count plus each summarized token's offset in its
  // block (int32), 14 per block for the 6 compressed blocks, one list for basis=input.
  auto p = Make("atp:block=16,rank=4,window=16,keep=2,residual=kivi4,rope=pre", RopeShape());
  ASSERT_TRUE(p);
  RunChunks(*p, in, {100});
  ASSERT_TRUE(p->Update().ok());
  const size_t exact = 20 * 2 * kKvd * 4, fill = 4 * kD * 4;
  const size_t principal = 6 * kKV * (4 * 2 * kHd * 4 + 8), kept = 6 * kKV * 2 * 2 * kHd * 4;
  const size_t coef = 6 * 14 * 4 * 4, offsets = 6 * 14 * 4;
  const size_t residual = 6 * kKV * (kHd * 2 * 2 + 14 * 32 + 14 * (5 * 2 * 2 + 32));
  EXPECT_EQ(p->Bytes(), exact + fill + principal + kept + coef + offsets + residual);
}

TEST(AtpRopePre, ParserAndRefusals) {
  auto f = ParseKvPolicy("atp:block=32,rank=4,window=64,rope=pre,residual=kivi2,dtype=bf16");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const std::string canon = (*f)->Describe();
  EXPECT_EQ(canon, "atp:block=32,rank=4,window=64,basis=input,proj=dense,residual=kivi2,rope=pre,dtype=bf16");
  auto again = ParseKvPolicy(canon);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Describe(), canon);
  // rope=post is the default and leaves earlier canonical strings unchanged.
  auto post = ParseKvPolicy("atp:block=32,rank=4,window=64,residual=kivi2,rope=post");
  ASSERT_TRUE(post.ok());
  EXPECT_EQ((*post)->Describe(), "atp:block=32,rank=4,window=64,basis=input,proj=dense,residual=kivi2,dtype=f32");
  // Principal rows alone mix positions: no angle rotates them.
  auto alone = ParseKvPolicy("atp:block=32,rank=4,rope=pre");
  ASSERT_FALSE(alone.ok());
  EXPECT_NE(alone.status().message().find("needs residual="), std::string::npos) << alone.status().message();
  auto bad = ParseKvPolicy("atp:residual=kivi2,rope=before");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("pre"), std::string::npos) << bad.status().message();
  // A layer without the model's RoPE frequencies (a caller that has none) is refused, not guessed.
  EXPECT_TRUE((*f)->CheckShape(RopeShape()).ok());
  const Status st = (*f)->CheckShape(kShape);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("RoPE frequencies"), std::string::npos) << st.message();
  auto p = (*f)->Create(kShape);
  Inputs in = RandomInputs(4, 37);
  const std::vector<int32_t> pos = {0, 1, 2, 3};
  EXPECT_FALSE(p->Append(pos, in.X.data(), in.K.data(), in.V.data()).ok());
}

// The rotation helpers against the model's ApplyRope: UnapplyRope undoes it, BlockRope rotates like it.
TEST(AtpRopePre, RotationHelpersMatchApplyRope) {
  const std::vector<float> inv = RopeShape().rope_inv_freq;
  Inputs in = RandomInputs(64, 38);
  std::vector<int32_t> pos(64);
  for (int i = 0; i < 64; ++i) pos[size_t(i)] = 1900 + i;  // far positions: the angles' rounding is largest
  std::vector<float> x = in.K;
  ApplyRope(x.data(), 64, kKV, kHd, pos.data(), inv.data());
  UnapplyRope(x.data(), 64, kKV, kHd, pos.data(), inv.data());
  // 1e-5: two f32 rotations of elements ~N(0,1) by the same angle.
  EXPECT_LT(MaxDiff(x, in.K), 1e-5);
  std::vector<float> want = in.K, got = in.K;
  ApplyRope(want.data(), 64, kKV, kHd, pos.data(), inv.data());
  BlockRope rope(inv, 32);
  // KV head 0's rows (stride kKvd): block 0 with explicit offsets 0..31, block 1 with implicit ones.
  std::vector<int32_t> offsets(32);
  std::iota(offsets.begin(), offsets.end(), 0);
  rope.Rotate(got.data(), 32, kKvd, 1900, offsets.data());
  rope.Rotate(&got[size_t(32 * kKvd)], 32, kKvd, 1932, nullptr);
  // Some rows of a block, as keep=E leaves them: offsets 2, 9 and 30 of block 1, packed together.
  const std::vector<int32_t> some = {2, 9, 30};
  std::vector<float> packed;
  for (int32_t o : some) packed.insert(packed.end(), &in.K[size_t((32 + o) * kKvd)], &in.K[size_t((32 + o) * kKvd + kHd)]);
  rope.Rotate(packed.data(), 3, kHd, 1932, some.data());
  double worst = 0;
  for (int t = 0; t < 64; ++t)
    for (int j = 0; j < kHd; ++j) worst = std::max(worst, double(std::fabs(got[size_t(t * kKvd + j)] - want[size_t(t * kKvd + j)])));
  for (size_t i = 0; i < some.size(); ++i)
    for (int j = 0; j < kHd; ++j)
      worst = std::max(worst, double(std::fabs(packed[i * kHd + size_t(j)] - want[size_t((32 + some[i]) * kKvd + j)])));
  EXPECT_GT(MaxDiff(got, in.K), 0.1);  // it did rotate
  // 1e-3: angle addition against one f32 angle; both round the angle of position ~1960 to ~1.2e-4 rad
  // at the highest frequency, on elements of |x| <= ~4.
  EXPECT_LT(worst, 1e-3);
}

}  // namespace
}  // namespace atp
