// libFuzzer target: a --kv / "kv" policy string through ParseKvPolicy, then the policy it builds run
// for a short sequence on a small GQA layer, so parameter combinations the parser accepts are used too.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kv/kv_policy.h"

namespace {

constexpr int kD = 32, kH = 4, kKV = 2, kHd = 64;  // layer width, query heads, KV heads, head_dim
constexpr int kPrompt = 37, kTokens = 70;          // a prompt, then single decode steps past one 64-token block
// With a model's RoPE frequencies (theta 10000), so that atp rope=pre runs rather than being refused.
const atp::KvShape kShape = [] {
  atp::KvShape s{0, kD, kH, kKV, kHd};
  for (int i = 0; i < kHd / 2; ++i) s.rope_inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / kHd)));
  return s;
}();

struct Layer {
  std::vector<float> X, K, V, Q;  // (kTokens, kD), (kTokens, kKV*kHd) twice, (kTokens, kH*kHd)
  Layer() {
    std::mt19937 rng(7);
    std::normal_distribution<float> n(0, 1);
    X.resize(size_t(kTokens) * kD);
    K.resize(size_t(kTokens) * kKV * kHd);
    V.resize(K.size());
    Q.resize(size_t(kTokens) * kH * kHd);
    for (auto* v : {&X, &K, &V, &Q})
      for (float& x : *v) x = n(rng);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Layer in;
  auto f = atp::ParseKvPolicy(std::string(reinterpret_cast<const char*>(data), size), "");
  if (!f.ok()) return 0;
  (*f)->Describe();
  if (!(*f)->CheckShape(kShape).ok()) return 0;
  auto p = (*f)->Create(kShape);
  std::vector<float> O(size_t(kTokens) * kH * kHd);  // (kTokens, kH*kHd)
  for (int pos = 0; pos < kTokens;) {
    const int n = pos == 0 ? kPrompt : 1;
    std::vector<int32_t> ps(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ps[size_t(i)] = pos + i;
    const size_t kvd = size_t(kKV) * kHd;
    if (!p->Append(ps, &in.X[size_t(pos) * kD], &in.K[size_t(pos) * kvd], &in.V[size_t(pos) * kvd]).ok()) return 0;
    if (!p->Attend(ps, &in.Q[size_t(pos) * kH * kHd], &O[size_t(pos) * kH * kHd]).ok()) return 0;
    pos += n;
  }
  p->Bytes();
  return 0;
}
