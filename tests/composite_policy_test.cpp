// `dense`, `kivi` and `mx` as policies (every token through the codec), and `A+B` compositions: on
// every backend (tests/kv_backend.h) attention over the rows the codec keeps, causality, chunk
// invariance and bytes by hand; on the host the exact residual of KIVI, closeness to dense at 8 bits,
// and the parser's errors for pairs that do not compose.
#include <gtest/gtest.h>

#include <lapacke.h>

#include <filesystem>

#include "format/basis_file.h"
#include "kernels/packed_attention.h"
#include "kv/policy_config.h"
#include "kv_backend.h"
#include "kv_test_util.h"

namespace atp {
namespace {

using namespace kvtest;

const char* kCodecPolicies[] = {"kivi:bits=2,group=16,residual=16", "kivi:bits=4,group=32,residual=0",
                                "kivi:bits=8,group=24,residual=40", "kivi:bits=4,group=16,residual=8,dtype=bf16",
                                "mx:fmt=fp8_e4m3", "mx:fmt=fp8_e5m2", "mx:fmt=fp6_e2m3", "mx:fmt=fp6_e3m2",
                                "mx:fmt=fp4", "mx:fmt=int8", "mx:fmt=nvfp4"};

class CodecPolicies : public KvOnBackend {};
ATP_KV_BACKENDS(CodecPolicies);

TEST_P(CodecPolicies, CausalAndChunkInvariant) {
  Inputs in = RandomInputs(90, 11);
  int ran = 0;
  for (std::string spec : kCodecPolicies) {
    if (!Serves(spec)) continue;  // the GPU's KIVI groups must divide head_dim
    ExpectCausal(spec, {90});
    ExpectCausal(spec, {7, 1});
    auto a = Make(spec), b = Make(spec), c = Make(spec);
    std::vector<float> oa = RunChunks(*a, in, {90}), ob = RunChunks(*b, in, {1}), oc = RunChunks(*c, in, {5, 11, 32});
    // A row's form depends only on the query's horizon, so every chunking reads the same bytes.
    ExpectChunkInvariant(oa, ob, spec);
    ExpectChunkInvariant(oa, oc, spec);
    ++ran;
  }
  EXPECT_GE(ran, 10);
}

// Each form's policy against attention in double over what its codec keeps, read as each query reads
// it (CodecRowsRef: the host codec's rows decoded per horizon). On the host 1e-5 (f32 against double
// over <= 90 rows of N(0,1) data); the GPU encodes the same codes (MX bit for bit, KIVI's f16
// parameters and codes, f16/bf16 rounding), so only its arithmetic differs (kv_backend.h's bounds).
// A code off by one quantum moves an output by ~1e-2 at 8 bits and more below.
TEST_P(CodecPolicies, MatchAttentionOverTheCodecsRows) {
  Inputs in = RandomInputs(90, 16);
  int ran = 0;
  for (std::string spec : {"dense", "dense:dtype=bf16", "dense:dtype=f16", "mx:fmt=fp8_e4m3", "mx:fmt=fp8_e5m2",
                           "mx:fmt=fp6_e2m3", "mx:fmt=fp6_e3m2", "mx:fmt=fp4", "mx:fmt=int8", "mx:fmt=nvfp4",
                           "kivi:bits=2,group=16,residual=16", "kivi:bits=4,group=32,residual=0",
                           "kivi:bits=8,group=32,residual=40,dtype=bf16"}) {
    if (!Serves(spec)) continue;
    auto config = ParseKvConfig(spec);
    ASSERT_TRUE(config.ok()) << spec;
    ExpectMatches(spec, in, CodecRowsRef(in, std::get<RowsParams>(config->params).form), {{90}, {37, 1}, {1}}, 1e-5, spec);
    ++ran;
  }
  EXPECT_EQ(ran, 13);
}

TEST(Kivi, NewestResidualRowsStayExact) {
  // group 16, residual 16: a query at p reads token groups packed only when all their rows lie
  // before p + 1 - 16, so positions 0..30 see only exact rows and equal dense bit for bit; at
  // p = 31 group 0 turns packed and the output changes.
  Inputs in = RandomInputs(48, 12);
  auto d = Make("dense"), k = Make("kivi:bits=2,group=16,residual=16");
  std::vector<float> od = RunChunks(*d, in, {48}), ok = RunChunks(*k, in, {3, 1});
  const long n31 = long(31 * kQd);
  EXPECT_EQ(std::vector<float>(od.begin(), od.begin() + n31), std::vector<float>(ok.begin(), ok.begin() + n31));
  EXPECT_NE(std::vector<float>(od.begin() + n31, od.begin() + n31 + kQd), std::vector<float>(ok.begin() + n31, ok.begin() + n31 + kQd));
}

// Max and rms error of a policy's outputs against dense, relative rms to the outputs' rms.
std::pair<double, double> ErrorVsDense(const std::string& spec, const Inputs& in, const std::vector<float>& want) {
  auto p = Make(spec);
  const std::vector<float> o = RunChunks(*p, in, {in.T});
  double mx = 0, e2 = 0, w2 = 0;
  for (size_t i = 0; i < o.size(); ++i) {
    const double e = std::fabs(double(o[i]) - want[i]);
    mx = std::max(mx, e);
    e2 += e * e;
    w2 += double(want[i]) * want[i];
  }
  return {mx, std::sqrt(e2 / w2)};
}

TEST(CodecForms, EightBitCloseToDense) {
  Inputs in = RandomInputs(128, 13);
  auto d = Make("dense");
  const std::vector<float> want = RunChunks(*d, in, {128});
  // N(0,1) keys and values, 128 rows, outputs of rms ~0.28 (8192 of them).
  // KIVI 8-bit: a key channel over 32 tokens (or a value group of 32 channels) spans ~5, so the
  // step is ~0.02 and each element is off by <= 0.01; an output, a convex combination of values,
  // moves by about that plus the score perturbation q.dk/8 (~0.003 rms). Measured: max 0.008,
  // relative rms 0.3%. Tolerance: max 0.02, relative rms 1%.
  auto [k_max, k_rel] = ErrorVsDense("kivi:bits=8,group=32,residual=0", in, want);
  EXPECT_LT(k_max, 0.02);
  EXPECT_LT(k_rel, 0.01);
  // MX INT8: 6 fraction bits under a power-of-two scale 2^X <= amax < 2^(X+1); blocks of 32 N(0,1)
  // have amax up to ~4, so element errors reach 2^X/128 = 1/32 at worst, ~0.01 typically. Measured:
  // max 0.023, relative rms 1.1%. Tolerance: max 0.05, relative rms 2%.
  auto [m_max, m_rel] = ErrorVsDense("mx:fmt=int8", in, want);
  EXPECT_LT(m_max, 0.05);
  EXPECT_LT(m_rel, 0.02);
  // A broken codec (wrong scale, sign, code order) gives errors of order 1; and fewer bits must
  // be worse (the sweep's ordering): relative rms 2-bit > 4-bit > 8-bit, each by 2x at least.
  EXPECT_GT(k_max, 0.0);
  EXPECT_GT(m_max, 0.0);
  const double r4 = ErrorVsDense("kivi:bits=4,group=32,residual=0", in, want).second;
  const double r2 = ErrorVsDense("kivi:bits=2,group=32,residual=0", in, want).second;
  EXPECT_GT(r4, 2 * k_rel);
  EXPECT_GT(r2, 2 * r4);
}

TEST_P(CodecPolicies, BytesMatchHandCount) {
  Inputs in = RandomInputs(100, 14);
  // kivi bits 4, G 32, R 16, decoded token by token: a group forms once 48 rows wait beyond the
  // last group, so after 100 tokens 2 groups (64 rows) are packed. The last Append (position 99)
  // kept exact rows from cum[k(100)] = 64 (k = 2 groups end at or before 100 - 16): 36 exact rows.
  // Per group and head: f16 scale + zero per key channel (2 * 64 * 2), 32 key code rows of 32 bytes,
  // 32 value rows of 2 groups * 4 bytes of f16 scale/zero + 32 code bytes.
  auto k = Make("kivi:bits=4,group=32,residual=16");
  RunChunks(*k, in, {1});
  const size_t group = 2 * 64 * 2 + 32 * 32 + 32 * (2 * 4 + 32);
  EXPECT_EQ(k->Bytes(), size_t(kKV) * (2 * group + 36 * 2 * kHd * 4));
  // In one chunk of 100 the exact copies stay until the next Append (the chunk's early queries read them).
  auto k1 = Make("kivi:bits=4,group=32,residual=16");
  RunChunks(*k1, in, {100});
  EXPECT_EQ(k1->Bytes(), size_t(kKV) * (2 * group + 100 * 2 * kHd * 4));
  // mx: per row of 64, ceil(64/32) E8M0 bytes + elements; NVFP4: 4-byte row scale + 4 E4M3 + 32.
  for (auto [spec, rb] : {std::pair{"mx:fmt=fp8_e4m3", 2 + 64}, {"mx:fmt=fp6_e3m2", 2 + 48}, {"mx:fmt=fp4", 2 + 32},
                          {"mx:fmt=int8", 2 + 64}, {"mx:fmt=nvfp4", 4 + 4 + 32}}) {
    auto m = Make(spec);
    RunChunks(*m, in, {30, 1});
    EXPECT_EQ(m->Bytes(), size_t(100 * kKV * 2 * rb)) << spec;
  }
}

TEST(Composite, NoEvictionEqualsTheCodecAlone) {
  Inputs in = RandomInputs(80, 15);
  for (auto [composite, alone] : {std::pair{"snapkv:budget=128+mx:fmt=fp8_e4m3", "mx:fmt=fp8_e4m3"},
                                  {"streaming:budget=200+kivi:bits=4,residual=16", "kivi:bits=4,residual=16"},
                                  {"h2o:budget=80+kivi:bits=2,group=16,residual=8", "kivi:bits=2,group=16,residual=8"},
                                  {"snapkv:budget=100+dense:dtype=bf16", "dense:dtype=bf16"}}) {
    auto a = Make(composite), b = Make(alone);
    EXPECT_EQ(RunChunks(*a, in, {40, 1}), RunChunks(*b, in, {80})) << composite;
  }
}

TEST(Composite, LowRankCoefficientsThroughACodec) {
  const std::string basis = WriteRandomBasis("atp_composite_test_basis.safetensors", kKV, kHd, 17);
  Inputs in = RandomInputs(96, 16);
  auto d = Make("dense");
  const std::vector<float> want = RunChunks(*d, in, {96});
  // Full rank (64 of 64) only rotates keys and values, so lowrank alone matches dense to f32
  // rounding, and with 8-bit KIVI on the coefficients it is as close as kivi:bits=8 on the rows
  // (same tolerance argument as EightBitCloseToDense: max 0.02).
  const std::string lr = "lowrank:rk=64,rv=64,file=" + basis;
  auto plain = Make(lr), q8 = Make(lr + "+kivi:bits=8,group=32,residual=16");
  EXPECT_LT(MaxDiff(RunChunks(*plain, in, {96}), want), 1e-4);
  const std::vector<float> o8 = RunChunks(*q8, in, {20, 1});
  EXPECT_LT(MaxDiff(o8, want), 0.02);
  EXPECT_GT(MaxDiff(o8, want), 1e-4);  // the codec is really in the path
  ExpectCausal(lr + "+kivi:bits=4,group=16,residual=8", {30, 1});
  ExpectCausal("lowrank:rk=16,rv=32,file=" + basis + "+mx:fmt=fp4", {90});
  // Bytes: 96 tokens of rk=16 / rv=32 coefficients per head in MX fp8 rows (1 scale byte each).
  auto m = Make("lowrank:rk=16,rv=32,file=" + basis + "+mx:fmt=fp8_e4m3");
  RunChunks(*m, in, {96});
  EXPECT_EQ(m->Bytes(), size_t(96 * kKV * ((1 + 16) + (1 + 32))));
  auto desc = ParseKvPolicy("lowrank:rk=16,file=" + basis + "+kivi:bits=4");
  ASSERT_TRUE(desc.ok()) << desc.status().ToString();
  EXPECT_EQ(desc.value()->Describe(), "lowrank:rk=16,rv=32,mode=calib,dtype=f32+kivi:bits=4,group=32,residual=128,dtype=f32");
  auto online = ParseKvPolicy("lowrank:mode=online+kivi:bits=4");
  ASSERT_FALSE(online.ok());
  EXPECT_NE(online.status().message().find("mode=calib"), std::string::npos);
}

TEST(Composite, DescribeAndErrors) {
  auto c = ParseKvPolicy("snapkv:budget=128+mx:fmt=fp8_e4m3");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c.value()->Describe(), "snapkv:budget=128,window=32,pool=7+mx:fmt=fp8_e4m3");
  auto k = ParseKvPolicy("kivi:bits=4");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k.value()->Describe(), "kivi:bits=4,group=32,residual=128,dtype=f32");
  for (auto [spec, needle] : {std::pair{"atp+kivi", "left of '+'"}, {"kivi:bits=4+mx", "left of '+'"},
                              {"dense+mx", "left of '+'"}, {"snapkv+h2o", "right side"}, {"snapkv+atp", "right side"},
                              {"snapkv+mx+kivi", "one '+'"}, {"mx:fmt=fp5", "nvfp4"}, {"kivi:bits=3", "bits"},
                              {"snapkv+mx:fmt=fp5", "fmt"}, {"nosuch+mx", "valid policies"}}) {
    auto r = ParseKvPolicy(spec);
    ASSERT_FALSE(r.ok()) << spec;
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << spec << ": " << r.status().message();
  }
}

}  // namespace
}  // namespace atp
