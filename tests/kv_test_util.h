// Helpers shared by the codec, eviction and composite policy tests: random layer inputs, running a
// policy over a sequence in chunks, a double-precision attention reference and a causality check.
#pragma once
#include <gtest/gtest.h>
#include <lapacke.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "format/basis_file.h"
#include "kv/composite.h"
#include "kv/kv_policy.h"

namespace atp::kvtest {

// Shape used by these tests: GQA with 2 query heads per KV head and head_dim 64 (the AVX-512 paths
// see whole 16-lane tiles and two MX blocks per row), like ref-5m's attention.
constexpr int kD = 32, kH = 4, kKV = 2, kHd = 64;
inline const KvShape kShape{0, kD, kH, kKV, kHd};
constexpr int kKvd = kKV * kHd, kQd = kH * kHd;

struct Inputs {
  int T = 0;
  std::vector<float> X, K, V, Q;  // (T, kD), (T, kKvd), (T, kKvd), (T, kQd)
};

inline Inputs RandomInputs(int T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  Inputs in;
  in.T = T;
  in.X.resize(size_t(T) * kD);
  in.K.resize(size_t(T) * kKvd);
  in.V.resize(size_t(T) * kKvd);
  in.Q.resize(size_t(T) * kQd);
  for (auto* v : {&in.X, &in.K, &in.V, &in.Q})
    for (auto& x : *v) x = n(rng);
  return in;
}

// Appends and attends in chunks of the given sizes (the last size repeats); returns O (T, kQd).
inline std::vector<float> RunChunks(KvPolicy& p, const Inputs& in, const std::vector<int>& chunks) {
  std::vector<float> O(size_t(in.T) * kQd);
  int pos = 0;
  size_t c = 0;
  while (pos < in.T) {
    const int n = std::min(chunks[std::min(c++, chunks.size() - 1)], in.T - pos);
    std::vector<int32_t> ps(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ps[size_t(i)] = pos + i;
    EXPECT_TRUE(p.Append(ps, &in.X[size_t(pos) * kD], &in.K[size_t(pos) * kKvd], &in.V[size_t(pos) * kKvd]).ok());
    EXPECT_TRUE(p.Attend(ps, &in.Q[size_t(pos) * kQd], &O[size_t(pos) * kQd]).ok());
    pos += n;
  }
  return O;
}

inline std::unique_ptr<KvPolicy> Make(const std::string& spec, const KvShape& shape = kShape) {
  auto f = ParseKvPolicy(spec, "");
  EXPECT_TRUE(f.ok()) << spec << ": " << f.status().ToString();
  if (!f.ok()) return nullptr;
  return f.value()->Create(shape);
}

inline double MaxDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

// Softmax attention (double) of query q over rows `idx` of K/V for KV head g; optionally returns
// the weights. Rows are (T, kKvd).
inline void AttendRef(const float* q, const std::vector<float>& K, const std::vector<float>& V, int g,
                      const std::vector<int>& idx, float* o, std::vector<double>* w = nullptr) {
  std::vector<double> s(idx.size());
  double mx = -1e300;
  for (size_t j = 0; j < idx.size(); ++j) {
    double d = 0;
    for (int i = 0; i < kHd; ++i) d += double(q[i]) * K[size_t(idx[j]) * kKvd + size_t(g * kHd + i)];
    s[j] = d / std::sqrt(double(kHd));
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (auto& x : s) sum += x = std::exp(x - mx);
  for (auto& x : s) x /= sum;
  for (int i = 0; i < kHd; ++i) {
    double acc = 0;
    for (size_t j = 0; j < idx.size(); ++j) acc += s[j] * V[size_t(idx[j]) * kKvd + size_t(g * kHd + i)];
    o[i] = float(acc);
  }
  if (w) *w = s;
}

// Whether each of T tokens is attended in a chunk of more than one token when appended in `chunks`
// (as RunChunks splits them).
inline std::vector<char> PrefillTokens(int T, const std::vector<int>& chunks) {
  std::vector<char> prefill;
  for (size_t c = 0; int(prefill.size()) < T; ++c) {
    const int n = std::min(chunks[std::min(c, chunks.size() - 1)], T - int(prefill.size()));
    prefill.insert(prefill.end(), size_t(n), n > 1);
  }
  return prefill;
}

// Attention (double) of every query over the rows a policy keeping every token in `form` holds, as that
// query reads them: for each position p, rows 0..p of a store of the form (one per KV head) fed the
// same rows, decoded as a query with horizon p + 1 reads them (DecodeRows). A form may depend on the
// horizon (KIVI's newest rows stay exact) but on nothing else, so this is what any chunking reads.
inline std::vector<float> CodecRowsRef(const Inputs& in, const RowForm& form) {
  std::vector<std::unique_ptr<RowStore>> stores;
  for (int h = 0; h < kKV; ++h) stores.push_back(MakeRowCodec(form)->NewStore(kShape.store(), kHd, kHd));
  std::vector<float> O(size_t(in.T) * kQd), K, V, k(size_t(in.T) * kHd), v(k.size());
  for (int p = 0; p < in.T; ++p) {
    K.assign(size_t(p + 1) * kKvd, 0.f);
    V.assign(K.size(), 0.f);
    for (int h = 0; h < kKV; ++h) {
      EXPECT_TRUE(stores[size_t(h)]->Append(&in.K[size_t(p) * kKvd + h * kHd], kKvd, &in.V[size_t(p) * kKvd + h * kHd], kKvd, 1).ok());
      DecodeRows(*stores[size_t(h)], 0, p + 1, kHd, kHd, k.data(), v.data());
      for (int j = 0; j <= p; ++j)
        for (int i = 0; i < kHd; ++i) {
          K[size_t(j) * kKvd + h * kHd + i] = k[size_t(j) * kHd + i];
          V[size_t(j) * kKvd + h * kHd + i] = v[size_t(j) * kHd + i];
        }
    }
    std::vector<int> idx(size_t(p) + 1);
    std::iota(idx.begin(), idx.end(), 0);
    for (int h = 0; h < kH; ++h)
      AttendRef(&in.Q[size_t(p) * kQd + h * kHd], K, V, h / (kH / kKV), idx, &O[size_t(p) * kQd + h * kHd]);
  }
  return O;
}

// Outputs at positions <= cut must not change when every input after cut changes (same chunking),
// and must change somewhere after it (or the check is vacuous). `make` builds the policy (default: the
// host's, for `shape`).
inline void ExpectCausal(const std::string& spec, const std::vector<int>& chunks, int T = 90, int cut = 50,
                         const KvShape& shape = kShape,
                         const std::function<std::unique_ptr<KvPolicy>(const std::string&)>& make = nullptr) {
  Inputs a = RandomInputs(T, 8), b = a, other = RandomInputs(T, 9);
  for (auto [dst, src] : {std::pair{&b.X, &other.X}, {&b.K, &other.K}, {&b.V, &other.V}, {&b.Q, &other.Q}}) {
    const size_t w = dst->size() / size_t(T);
    std::copy(src->begin() + long(w * size_t(cut + 1)), src->end(), dst->begin() + long(w * size_t(cut + 1)));
  }
  auto pa = make ? make(spec) : Make(spec, shape), pb = make ? make(spec) : Make(spec, shape);
  ASSERT_TRUE(pa && pb);
  std::vector<float> oa = RunChunks(*pa, a, chunks), ob = RunChunks(*pb, b, chunks);
  const long keep = long(size_t(cut + 1) * kQd);
  EXPECT_EQ(std::vector<float>(oa.begin(), oa.begin() + keep), std::vector<float>(ob.begin(), ob.begin() + keep)) << spec;
  EXPECT_NE(oa, ob) << spec << ": later tokens changed nothing (vacuous)";
}

// Writes a calibrated-lowrank basis file `name` in the temp directory: one layer, a random orthonormal
// basis per KV head (QR of a Gaussian matrix) for keys and for values. Returns its path.
inline std::string WriteRandomBasis(const std::string& name, int kv_heads, int head_dim, uint32_t seed) {
  const std::string path = (std::filesystem::temp_directory_path() / name).string();
  KvBasis b;
  b.layers = 1;
  b.kv_heads = kv_heads;
  b.head_dim = head_dim;
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0, 1);
  for (auto* dst : {&b.k, &b.v}) {
    std::vector<float> all;
    for (int h = 0; h < kv_heads; ++h) {
      std::vector<float> a(size_t(head_dim * head_dim)), tau(static_cast<size_t>(head_dim));
      for (auto& x : a) x = n(rng);
      LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, head_dim, head_dim, a.data(), head_dim, tau.data());
      LAPACKE_sorgqr(LAPACK_ROW_MAJOR, head_dim, head_dim, head_dim, a.data(), head_dim, tau.data());
      all.insert(all.end(), a.begin(), a.end());
    }
    dst->push_back(all);
  }
  // Written under a name of this process's and renamed into place (atomic): tests that run at once
  // (ctest -j) write the same file, and one must never read another's half-written copy.
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  EXPECT_TRUE(WriteKvBasis(tmp, b).ok());
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  EXPECT_FALSE(ec) << "rename " << tmp << " to " << path << ": " << ec.message();
  return path;
}

}  // namespace atp::kvtest
