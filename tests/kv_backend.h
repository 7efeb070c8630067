// The backends a policy family's tests run on (issue 16: one test per family, parameterised over the
// backends). "host" is always here; "cuda" is registered by tests/cuda_kv_backend_test.cpp, which only
// a build with the CUDA backend compiles, and is usable only where a GPU is. A test suite derives its
// fixture from KvOnBackend and instantiates it with ATP_KV_BACKENDS(Suite): on a backend that this
// build or machine lacks, every test of the suite skips saying why.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/status.h"
#include "kv/kv_policy.h"
#include "kv_test_util.h"

namespace atp::kvtest {

struct KvBackend {
  KvPolicyParser parse;
  std::function<Status()> available;  // Ok where it can run here
  // How far its outputs may be from a test's double-precision reference beyond what the host allows:
  // outputs of multi-token chunks (the GPU's prefill rounds Q, K, V and probabilities to bf16, ~4e-3
  // relative on outputs up to ~4: 5e-2), and of one-token steps (f32, other summation order: 1e-4).
  double prefill_tol = 0, decode_tol = 0;
};

inline std::map<std::string, KvBackend>& KvBackends() {
  static std::map<std::string, KvBackend> backends = {
      {"host",
       {[](const std::string& spec, const std::string& dir) { return ParseKvPolicy(spec, dir); }, [] { return Status::Ok(); }}}};
  return backends;
}

// Registers a backend at static initialization (tests/cuda_kv_backend_test.cpp).
struct RegisterKvBackend {
  RegisterKvBackend(const std::string& name, KvBackend b) { KvBackends()[name] = std::move(b); }
};

class KvOnBackend : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto it = KvBackends().find(GetParam());
    if (it == KvBackends().end()) GTEST_SKIP() << "this build has no " << GetParam() << " backend";
    const Status s = it->second.available();
    if (!s.ok()) GTEST_SKIP() << "backend " << GetParam() << " cannot run here: " << s.ToString();
    backend_ = &it->second;
  }
  bool host() const { return GetParam() == "host"; }
  const KvBackend& backend() const { return *backend_; }
  // The policy of `spec` on this backend for layers of `shape` (a failed parse fails the test).
  std::unique_ptr<KvPolicy> Make(const std::string& spec, const KvShape& shape) const {
    auto f = backend_->parse(spec, "");
    EXPECT_TRUE(f.ok()) << spec << " on " << GetParam() << ": " << f.status().ToString();
    if (!f.ok()) return nullptr;
    EXPECT_TRUE((*f)->CheckShape(shape).ok()) << spec << " on " << GetParam();
    return (*f)->Create(shape);
  }
  std::unique_ptr<KvPolicy> Make(const std::string& spec) const { return Make(spec, kShape); }
  // Whether this backend serves `spec` on `shape`. The host serves every valid string (else the test
  // fails); another backend may refuse one as Unsupported, a property its factory names, which the
  // caller skips (tests count what ran, so a backend refusing everything fails them).
  bool Serves(const std::string& spec, const KvShape& shape = kShape) const {
    auto f = backend_->parse(spec, "");
    Status s = f.ok() ? (*f)->CheckShape(shape) : f.status();
    if (s.ok()) return true;
    EXPECT_TRUE(!host() && s.code() == Status::Code::kUnsupported) << spec << " on " << GetParam() << ": " << s.ToString();
    return false;
  }
  // Tolerance of outputs against a reference the host meets within `host_tol`.
  double Tol(double host_tol, bool prefill) const {
    return std::max(host_tol, prefill ? backend_->prefill_tol : backend_->decode_tol);
  }
  // got (T, kQd) against want, token by token: within Tol(host_tol, whether its chunk under `chunks`
  // had more than one token).
  void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, const std::vector<int>& chunks,
                  double host_tol, const std::string& what) const {
    ASSERT_EQ(got.size(), want.size()) << what;
    const int T = int(got.size() / kQd);
    const std::vector<char> prefill = PrefillTokens(T, chunks);
    for (int t = 0; t < T; ++t) {
      double d = 0;
      for (int i = 0; i < kQd; ++i) {
        const double e = std::fabs(double(got[size_t(t) * kQd + i]) - want[size_t(t) * kQd + i]);
        d = std::max(d, std::isnan(e) ? INFINITY : e);
      }
      const double tol = Tol(host_tol, prefill[size_t(t)]);
      if (d > tol) {
        ADD_FAILURE() << what << " on " << GetParam() << ": token " << t << " off by " << d << " > " << tol;
        return;
      }
    }
  }
  // Outputs of two chunkings of the same inputs: bit for bit on the host (every form is chunk-invariant
  // there), within the prefill tolerance elsewhere (a chunk's prefill rounds differently than decode).
  void ExpectChunkInvariant(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) const {
    if (host()) {
      EXPECT_EQ(a, b) << what << ": chunking changed the result";
      return;
    }
    EXPECT_LE(MaxDiff(a, b), Tol(0, true)) << what << " on " << GetParam() << ": chunking changed the result";
  }
  // Outputs that are equal bit for bit on the host (e.g. a policy that keeps every row against dense):
  // elsewhere within Tol(0, ...) per token, the kernels' summation order being free to differ.
  void ExpectSame(const std::vector<float>& got, const std::vector<float>& want, const std::vector<int>& chunks,
                  const std::string& what) const {
    if (host()) {
      EXPECT_EQ(got, want) << what;
      return;
    }
    ExpectNear(got, want, chunks, 0, what);
  }
  // `spec`'s outputs on `in`, appended in each of `chunkings` (RunChunks), against `want` (ExpectNear).
  void ExpectMatches(const std::string& spec, const Inputs& in, const std::vector<float>& want,
                     std::initializer_list<std::vector<int>> chunkings, double host_tol, const std::string& what,
                     const KvShape& shape = kShape) const {
    for (const std::vector<int>& chunks : chunkings) {
      auto p = Make(spec, shape);
      ASSERT_TRUE(p) << what;
      ExpectNear(RunChunks(*p, in, chunks), want, chunks, host_tol, what + " first chunk " + std::to_string(chunks[0]));
    }
  }
  // Causal with a whole prompt and with decode steps (ExpectCausal), and the same outputs on `in` for
  // one prompt and for chunks of 1, 5 and 11 (ExpectChunkInvariant).
  void ExpectCausalAndChunkInvariant(const std::string& spec, const Inputs& in, const KvShape& shape = kShape) const {
    ExpectCausal(spec, {90}, shape);
    ExpectCausal(spec, {7, 1}, shape);
    auto a = Make(spec, shape), b = Make(spec, shape);
    ASSERT_TRUE(a && b) << spec;
    ExpectChunkInvariant(RunChunks(*a, in, {90}), RunChunks(*b, in, {1, 5, 11}), spec);
  }
  // kvtest::ExpectCausal through this backend.
  void ExpectCausal(const std::string& spec, const std::vector<int>& chunks, const KvShape& shape = kShape) const {
    kvtest::ExpectCausal(spec, chunks, 90, 50, shape, [this, &shape](const std::string& s) { return Make(s, shape); });
  }

 private:
  const KvBackend* backend_ = nullptr;
};

#define ATP_KV_BACKENDS(Suite)                                                                  \
  INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::Values(std::string("host"), std::string("cuda")), \
                           [](const ::testing::TestParamInfo<std::string>& i) { return i.param; })

}  // namespace atp::kvtest
