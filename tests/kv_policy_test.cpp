// KV policies against simple references: a brute-force second implementation of the ATP formula,
// dense attention for lowrank at full rank, causality and chunking invariance for every policy,
// and bytes() against hand-computed sizes.
#include <gtest/gtest.h>
#include <lapacke.h>

#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>

#include "format/basis_file.h"
#include "format/safetensors.h"
#include "kv/kv_policy.h"
#include "kv_test_util.h"

namespace atp {
namespace {

constexpr int kD = 24, kH = 4, kKV = 2, kHd = 8;
const KvShape kShape{0, kD, kH, kKV, kHd};

struct Inputs {
  int T;
  std::vector<float> X, K, V, Q;  // (T, d), (T, kv), (T, kv), (T, q)
};

Inputs RandomInputs(int T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  Inputs in{T, {}, {}, {}, {}};
  for (auto* v : {&in.X, &in.K, &in.V, &in.Q}) v->resize(0);
  in.X.resize(size_t(T * kD));
  in.K.resize(size_t(T * kKV * kHd));
  in.V.resize(size_t(T * kKV * kHd));
  in.Q.resize(size_t(T * kH * kHd));
  for (auto* v : {&in.X, &in.K, &in.V, &in.Q})
    for (auto& x : *v) x = n(rng);
  return in;
}

// Appends and attends in chunks of the given sizes (cycled); returns O (T, q_dim).
std::vector<float> RunPolicy(KvPolicy& p, const Inputs& in, std::vector<int> chunks) {
  std::vector<float> O(size_t(in.T * kH * kHd));
  int pos = 0, c = 0;
  while (pos < in.T) {
    int n = std::min(chunks[size_t(c++) % chunks.size()], in.T - pos);
    std::vector<int32_t> ps(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ps[size_t(i)] = pos + i;
    EXPECT_TRUE(p.Append(ps, &in.X[size_t(pos * kD)], &in.K[size_t(pos * kKV * kHd)], &in.V[size_t(pos * kKV * kHd)]).ok());
    EXPECT_TRUE(p.Attend(ps, &in.Q[size_t(pos * kH * kHd)], &O[size_t(pos * kH * kHd)]).ok());
    pos += n;
  }
  return O;
}

std::unique_ptr<KvPolicy> Make(const std::string& spec) {
  auto f = ParseKvPolicy(spec, "");
  EXPECT_TRUE(f.ok()) << spec << ": " << f.status().ToString();
  return f.value()->Create(kShape);
}

double MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

// Softmax attention of one query over explicit rows, in double.
void AttendRows(const float* q, const std::vector<std::vector<double>>& keys, const std::vector<std::vector<double>>& vals,
                float* o) {
  std::vector<double> s(keys.size());
  double mx = -1e300;
  for (size_t j = 0; j < keys.size(); ++j) {
    double d = 0;
    for (int i = 0; i < kHd; ++i) d += q[i] * keys[j][size_t(i)];
    s[j] = d / std::sqrt(double(kHd));
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (auto& x : s) sum += x = std::exp(x - mx);
  for (int i = 0; i < kHd; ++i) {
    double acc = 0;
    for (size_t j = 0; j < keys.size(); ++j) acc += s[j] / sum * vals[j][size_t(i)];
    o[i] = float(acc);
  }
}

// The ATP formula written out directly: basis from the eigenvectors of X_b X_b^T (an independent
// route to the left singular vectors), signs fixed by column sum, one softmax over principal and
// exact rows.
std::vector<float> BruteForceAtp(const Inputs& in, int B, int r, int W) {
  const int kvd = kKV * kHd, nblocks = in.T / B;
  std::vector<std::vector<double>> U(static_cast<size_t>(nblocks));  // (B x r) per block, row-major
  for (int b = 0; b < nblocks; ++b) {
    std::vector<float> G(size_t(B * B));
    for (int i = 0; i < B; ++i)
      for (int j = 0; j < B; ++j) {
        double s = 0;
        for (int k = 0; k < kD; ++k) s += double(in.X[size_t((b * B + i) * kD + k)]) * in.X[size_t((b * B + j) * kD + k)];
        G[size_t(i * B + j)] = float(s);
      }
    std::vector<float> w(static_cast<size_t>(B));
    LAPACKE_ssyev(LAPACK_ROW_MAJOR, 'V', 'U', B, G.data(), B, w.data());
    U[size_t(b)].assign(size_t(B * r), 0);
    for (int c = 0; c < r; ++c) {
      int col = B - 1 - c;  // ascending eigenvalues: the largest is last
      double sum = 0;
      for (int i = 0; i < B; ++i) sum += G[size_t(i * B + col)];
      for (int i = 0; i < B; ++i) U[size_t(b)][size_t(i * r + c)] = (sum < 0 ? -1 : 1) * G[size_t(i * B + col)];
    }
  }
  std::vector<float> O(size_t(in.T * kH * kHd));
  for (int t = 0; t < in.T; ++t)
    for (int h = 0; h < kH; ++h) {
      const int g = h / (kH / kKV);
      std::vector<std::vector<double>> keys, vals;
      for (int b = 0; b * B <= t; ++b) {
        if ((b + 1) * B + W <= t) {
          for (int c = 0; c < r; ++c) {
            std::vector<double> k(kHd, 0), v(kHd, 0);
            for (int i = 0; i < B; ++i)
              for (int e = 0; e < kHd; ++e) {
                k[size_t(e)] += U[size_t(b)][size_t(i * r + c)] * in.K[size_t((b * B + i) * kvd + g * kHd + e)];
                v[size_t(e)] += U[size_t(b)][size_t(i * r + c)] * in.V[size_t((b * B + i) * kvd + g * kHd + e)];
              }
            keys.push_back(k);
            vals.push_back(v);
          }
        } else {
          for (int j = b * B; j < std::min((b + 1) * B, t + 1); ++j) {
            keys.emplace_back(in.K.begin() + (j * kvd + g * kHd), in.K.begin() + (j * kvd + g * kHd + kHd));
            vals.emplace_back(in.V.begin() + (j * kvd + g * kHd), in.V.begin() + (j * kvd + g * kHd + kHd));
          }
        }
      }
      AttendRows(&in.Q[size_t((t * kH + h) * kHd)], keys, vals, &O[size_t((t * kH + h) * kHd)]);
    }
  return O;
}

TEST(AtpPolicy, MatchesBruteForceFormula) {
  Inputs in = RandomInputs(100, 1);
  for (auto [B, r, W] : {std::tuple{16, 4, 16}, {16, 8, 0}, {8, 2, 24}}) {
    auto p = Make("atp:block=" + std::to_string(B) + ",rank=" + std::to_string(r) + ",window=" + std::to_string(W));
    std::vector<float> got = RunPolicy(*p, in, {1, 7, 30});
    // 1e-4: f32 SVD (sgesdd) against f32 eigenvectors of the Gram matrix, both well separated on
    // random data; attention sums in f32 over <= 100 rows.
    EXPECT_LT(MaxDiff(got, BruteForceAtp(in, B, r, W)), 1e-4) << "B=" << B << " r=" << r << " W=" << W;
  }
}

TEST(AtpPolicy, FullRankWithHugeWindowEqualsDense) {
  Inputs in = RandomInputs(64, 2);
  auto d = Make("dense");
  auto a = Make("atp:block=16,rank=4,window=4096");
  EXPECT_LT(MaxDiff(RunPolicy(*a, in, {5}), RunPolicy(*d, in, {64})), 1e-6);
}

TEST(AtpPolicy, BytesMatchHandCount) {
  Inputs in = RandomInputs(100, 3);
  auto p = Make("atp:block=16,rank=4,window=32");
  RunPolicy(*p, in, {100});
  // After appending 100 tokens in one chunk nothing was dropped yet (drops happen at the next
  // append), so: exact 100 rows; principal rows for the 6 complete blocks; X of the 4 filling tokens.
  const size_t kv_row = 2 * kKV * kHd * 4;
  size_t want = 100 * kv_row + 6 * 4 * 2 * kHd * 4 * kKV + 4 * kD * 4 + 6 * kKV * 8;
  EXPECT_EQ(p->Bytes(), want);
  // One more token at position 100: blocks b with (b+1)*16 + 32 <= 100 (b = 0..3) leave the exact
  // store; the new token adds one exact row and one row of X.
  std::vector<int32_t> pos{100};
  ASSERT_TRUE(p->Append(pos, in.X.data(), in.K.data(), in.V.data()).ok());
  EXPECT_EQ(p->Bytes(), want - 64 * kv_row + kv_row + kD * 4);
  // proj=lowrank also keeps the newest complete block's Q basis V_r^T: (r, d) floats.
  auto q = Make("atp:block=16,rank=4,window=32,proj=lowrank");
  RunPolicy(*q, in, {100});
  EXPECT_EQ(q->Bytes(), want + 4 * kD * 4);
}

// proj=lowrank: tokens of block 0 get no basis, those of block b the top right singular vectors of
// block b-1's input, whatever an earlier InputBases call without its Append saw.
TEST(AtpPolicy, InputBasesComeFromThePreviousBlock) {
  Inputs in = RandomInputs(31, 10), other = RandomInputs(31, 11);
  auto p = Make("atp:block=8,rank=3,window=8,proj=lowrank");
  std::vector<int32_t> pos(30);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<InputBasis*> out(30);
  ASSERT_TRUE(p->InputBases(pos, other.X.data(), out).ok());  // forgotten: Append never follows it
  ASSERT_TRUE(p->InputBases(pos, in.X.data(), out).ok());
  for (int t = 0; t < 8; ++t) EXPECT_EQ(out[size_t(t)], nullptr) << t;
  for (int t = 8; t < 30; ++t) {
    ASSERT_NE(out[size_t(t)], nullptr) << t;
    EXPECT_EQ(out[size_t(t)], out[size_t(t / 8 * 8)]) << t;  // one basis per block
    EXPECT_EQ(out[size_t(t)]->rank, 3);
  }
  // Block 2's basis (used by block 3) against the SVD of its 8 input rows: V_r V_r^T agrees.
  std::vector<float> a(in.X.begin() + 16 * kD, in.X.begin() + 24 * kD), S(8), U(8 * 8), Vt(8 * kD), sup(7);
  LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'S', 'S', 8, kD, a.data(), kD, S.data(), U.data(), 8, Vt.data(), kD, sup.data());
  const std::vector<float> got = out[24]->vt;
  ASSERT_TRUE(p->Append(pos, in.X.data(), in.K.data(), in.V.data()).ok());
  std::vector<int32_t> next{30};
  std::vector<InputBasis*> out30(1);
  ASSERT_TRUE(p->InputBases(next, &in.X[30 * kD], out30).ok());
  ASSERT_NE(out30[0], nullptr);
  EXPECT_EQ(out30[0]->vt, got);  // kept by Append, unchanged
  for (int i = 0; i < kD; ++i)
    for (int j = 0; j < kD; ++j) {
      double want = 0, have = 0;
      for (int c = 0; c < 3; ++c) {
        want += double(Vt[size_t(c * kD + i)]) * Vt[size_t(c * kD + j)];
        have += double(got[size_t(c * kD + i)]) * got[size_t(c * kD + j)];
      }
      // 1e-5: two f32 SVD routes (sgesvd, sgesdd) of a random 8 x 24 block with separated singular values.
      EXPECT_NEAR(have, want, 1e-5) << i << "," << j;
    }
}

TEST(DensePolicy, BytesMatchHandCount) {
  Inputs in = RandomInputs(10, 4);
  for (auto [spec, es] : {std::pair{"dense", 4}, {"dense:dtype=bf16", 2}, {"dense:dtype=f16", 2}}) {
    auto p = Make(spec);
    RunPolicy(*p, in, {3});
    EXPECT_EQ(p->Bytes(), size_t(10 * 2 * kKV * kHd * es)) << spec;
  }
}

TEST(LowRankPolicy, FullRankEqualsDense) {
  Inputs in = RandomInputs(80, 5);
  std::string file = kvtest::WriteRandomBasis("atp_kv_policy_test_basis.safetensors", kKV, kHd, 7);
  auto d = Make("dense");
  std::vector<float> want = RunPolicy(*d, in, {80});
  auto p = Make("lowrank:rk=8,rv=8,file=" + file);
  // 1e-4: an orthonormal change of basis in f32 (errors ~1e-6 per product) changes nothing else.
  EXPECT_LT(MaxDiff(RunPolicy(*p, in, {1, 13}), want), 1e-4);
  auto online = Make("lowrank:rk=8,rv=8,mode=online,block=16");
  EXPECT_LT(MaxDiff(RunPolicy(*online, in, {3, 17}), want), 1e-4);
}

TEST(LowRankPolicy, BytesMatchHandCount) {
  Inputs in = RandomInputs(40, 6);
  auto p = Make("lowrank:rk=2,rv=4,file=" + kvtest::WriteRandomBasis("atp_kv_policy_test_basis.safetensors", kKV, kHd, 7));
  RunPolicy(*p, in, {40});
  EXPECT_EQ(p->Bytes(), size_t(40 * kKV * (2 + 4) * 4));
  auto o = Make("lowrank:rk=2,rv=4,mode=online,block=16");
  RunPolicy(*o, in, {40});
  // 2 blocks of coefficients + their bases; all 40 tokens still exact (a block's exact rows are
  // dropped at the first append whose position sees it compressed).
  EXPECT_EQ(o->Bytes(), size_t(2 * kKV * (16 * (2 + 4) + kHd * (2 + 4)) * 4 + 40 * 2 * kKV * kHd * 4));
  std::vector<int32_t> pos{40};
  ASSERT_TRUE(o->Append(pos, in.X.data(), in.K.data(), in.V.data()).ok());
  EXPECT_EQ(o->Bytes(), size_t(2 * kKV * (16 * (2 + 4) + kHd * (2 + 4)) * 4 + 9 * 2 * kKV * kHd * 4));
}

// Every policy: outputs at positions <= i never depend on tokens after i, and chunking changes nothing.
TEST(AllPolicies, CausalAndChunkInvariant) {
  std::string basis = kvtest::WriteRandomBasis("atp_kv_policy_test_basis.safetensors", kKV, kHd, 7);
  for (std::string spec : std::vector<std::string>{"dense", "dense:dtype=bf16", "atp:block=16,rank=4,window=16", "atp:block=8,tau=0.9,window=0",
                           "atp:block=16,rank=4,window=32,basis=key", "lowrank:rk=4,rv=4,file=" + basis,
                           "lowrank:rk=4,rv=8,mode=online,block=16",
                           "atp:block=16,rank=4,window=16,proj=lowrank"}) {
    Inputs a = RandomInputs(90, 8), b = a;
    const int cut = 50;
    Inputs other = RandomInputs(90, 9);
    for (auto [dst, src] : {std::pair{&b.X, &other.X}, {&b.K, &other.K}, {&b.V, &other.V}, {&b.Q, &other.Q}}) {
      size_t w = dst->size() / 90;
      std::copy(src->begin() + long(w * (cut + 1)), src->end(), dst->begin() + long(w * (cut + 1)));
    }
    auto pa = Make(spec), pb = Make(spec), pc = Make(spec);
    std::vector<float> oa = RunPolicy(*pa, a, {90}), ob = RunPolicy(*pb, b, {90}), oc = RunPolicy(*pc, a, {1, 5, 11});
    const size_t keep = size_t((cut + 1) * kH * kHd);
    EXPECT_EQ(std::vector<float>(oa.begin(), oa.begin() + long(keep)), std::vector<float>(ob.begin(), ob.begin() + long(keep))) << spec;
    EXPECT_NE(oa, ob) << spec << ": later tokens changed nothing at all (test is vacuous)";
    EXPECT_LT(MaxDiff(oa, oc), 1e-5) << spec << ": chunking changed the result";
  }
}

TEST(PolicyParser, RejectsBadStringsListingKeys) {
  auto bad = ParseKvPolicy("atp:blok=3");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("valid keys"), std::string::npos);
  EXPECT_NE(bad.status().message().find("block"), std::string::npos);
  auto unknown = ParseKvPolicy("nosuch");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("dense"), std::string::npos);
  EXPECT_FALSE(ParseKvPolicy("atp:block=16,window=8").ok());   // window not a multiple of block
  EXPECT_FALSE(ParseKvPolicy("atp:rank=0").ok());
  auto proj = ParseKvPolicy("atp:proj=sparse");
  ASSERT_FALSE(proj.ok());
  EXPECT_NE(proj.status().message().find("dense, lowrank"), std::string::npos) << proj.status().message();
  EXPECT_NE(bad.status().message().find("proj"), std::string::npos);
  EXPECT_FALSE(ParseKvPolicy("atp:block=16,block=32").ok());
  EXPECT_FALSE(ParseKvPolicy("dense:dtype=f8").ok());
  EXPECT_FALSE(ParseKvPolicy("lowrank:rk=4,file=/nonexistent/basis.safetensors").ok());
  EXPECT_FALSE(ParseKvPolicy(":x=1").ok());
}

// The engine's atp policy against the PyTorch implementation in tools/ (tests/data/atp_reference.*,
// written by tools/make_atp_reference.py in float64 from float32 inputs).
TEST(AtpPolicy, MatchesPyTorchReference) {
  const std::string path = std::string(ATP_SOURCE_DIR) + "/tests/data/atp_reference.safetensors";
  auto st = SafeTensors::Open(path);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto get = [&](const char* name) {
    const TensorView* t = st.value()->Find(name);
    EXPECT_NE(t, nullptr) << name;
    return std::vector<float>(static_cast<const float*>(t->data), static_cast<const float*>(t->data) + t->numel());
  };
  const KvShape shape{0, 64, 4, 2, 16};
  const int T = 200, q_dim = 64, kv_dim = 32;
  std::vector<float> X = get("X"), Q = get("Q"), K = get("K"), V = get("V");
  for (auto [spec, out] : {std::pair{"dense", "O_dense"}, {"atp:block=32,rank=8,window=32", "O_b32_r8_w32"},
                           {"atp:block=16,rank=4,window=0", "O_b16_r4_w0"}}) {
    auto f = ParseKvPolicy(spec);
    ASSERT_TRUE(f.ok());
    auto p = f.value()->Create(shape);
    std::vector<float> O(size_t(T * q_dim));
    for (int t = 0; t < T; t += 25) {  // chunks of 25: prefill and decode agree by construction
      std::vector<int32_t> pos(25);
      for (int i = 0; i < 25; ++i) pos[size_t(i)] = t + i;
      ASSERT_TRUE(p->Append(pos, &X[size_t(t * 64)], &K[size_t(t * kv_dim)], &V[size_t(t * kv_dim)]).ok());
      ASSERT_TRUE(p->Attend(pos, &Q[size_t(t * q_dim)], &O[size_t(t * q_dim)]).ok());
    }
    // 1e-4: the reference is float64; the engine's f32 SVD and sums differ by ~1e-6 relative, and
    // the file's conditioning note shows singular gaps and column sums far from degenerate.
    EXPECT_LT(MaxDiff(O, get(out)), 1e-4) << spec;
  }
}

}  // namespace
}  // namespace atp
