// The GGUF reader and writer: a round trip of every metadata type and tensor type, and malformed files
// built byte by byte by an encoder independent of the writer (truncation at every offset, bad magic,
// lying counts and offsets, huge lengths, unknown types), each of which must be a one-line error.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "format/gguf.h"
#include "format/gguf_writer.h"
#include "model/gguf_model.h"
#include "test_util.h"

namespace atp {
namespace {

using gguf::GgmlType;
using gguf::GgufFile;
using gguf::Value;
using gguf::ValueType;

// A little-endian byte builder for hand-made files.
struct Bytes {
  std::string b;
  template <typename T>
  Bytes& Put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& Str(const std::string& s) {
    Put(uint64_t(s.size()));
    b += s;
    return *this;
  }
  Bytes& Pad(size_t align) {
    while (b.size() % align) b += '\0';
    return *this;
  }
};

// The parsed tensors point into s: keep it alive while their data is read.
Result<std::unique_ptr<GgufFile>> ParseBytes(const std::string& s) {
  return GgufFile::Parse(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "t.gguf");
}

void ExpectError(const Status& s, const std::string& needle) {
  ASSERT_FALSE(s.ok()) << "expected an error mentioning '" << needle << "'";
  EXPECT_NE(s.ToString().find(needle), std::string::npos) << s.ToString();
  EXPECT_NE(s.ToString().find("t.gguf"), std::string::npos) << "names the file: " << s.ToString();
  EXPECT_EQ(s.ToString().find('\n'), std::string::npos) << s.ToString();
}

// A valid v3 file: 2 metadata (a string, a u32 array), 2 tensors (F32 [4], F16 [2, 3]).
std::string ValidFile() {
  Bytes f;
  f.b = "GGUF";
  f.Put(uint32_t(3)).Put(uint64_t(2)).Put(uint64_t(2));
  f.Str("general.architecture").Put(uint32_t(8)).Str("llama");
  f.Str("list").Put(uint32_t(9)).Put(uint32_t(4)).Put(uint64_t(3)).Put(uint32_t(7)).Put(uint32_t(8)).Put(uint32_t(9));
  f.Str("a").Put(uint32_t(1)).Put(uint64_t(4)).Put(uint32_t(0)).Put(uint64_t(0));
  f.Str("b").Put(uint32_t(2)).Put(uint64_t(3)).Put(uint64_t(2)).Put(uint32_t(1)).Put(uint64_t(32));
  f.Pad(32);
  for (int i = 0; i < 4; ++i) f.Put(float(i) + 0.5f);
  f.Pad(32);
  for (int i = 0; i < 6; ++i) f.Put(F32ToF16(float(i)));
  return f.b;
}

TEST(Gguf, ParsesAHandMadeFile) {
  const std::string bytes = ValidFile();  // tensor views point into these bytes
  auto g = ParseBytes(bytes);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->version(), 3u);
  std::string arch;
  ASSERT_TRUE((*g)->GetString("general.architecture", &arch).ok());
  EXPECT_EQ(arch, "llama");
  auto list = (*g)->GetArray("list", ValueType::kU32);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ((*list)->size(), 3u);
  EXPECT_EQ((**list)[2].u, 9u);
  const gguf::TensorInfo* b = (*g)->FindTensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->ne, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(b->nbytes, 12u);
  EXPECT_EQ(F16ToF32(reinterpret_cast<const uint16_t*>(b->data)[5]), 5.0f);
  EXPECT_EQ(reinterpret_cast<const float*>((*g)->FindTensor("a")->data)[3], 3.5f);
  // A wrongly typed read names the key and both types.
  int64_t x;
  ExpectError((*g)->GetInt("general.architecture", &x).WithContext("t.gguf: "), "is string, expected an integer");
}

TEST(Gguf, WriterRoundTripsEveryValueTypeAndTensorType) {
  testing::TempDir dir("gguf_rt");
  std::vector<std::pair<std::string, Value>> md;
  auto scalar = [](ValueType t, uint64_t u, int64_t i, double f) {
    Value v;
    v.type = t, v.u = u, v.i = i, v.f = f;
    return v;
  };
  md.emplace_back("u8", scalar(ValueType::kU8, 255, 0, 0));
  md.emplace_back("i8", scalar(ValueType::kI8, 0, -128, 0));
  md.emplace_back("u16", scalar(ValueType::kU16, 65535, 0, 0));
  md.emplace_back("i16", scalar(ValueType::kI16, 0, -32768, 0));
  md.emplace_back("u32", Value::U32(4000000000u));
  md.emplace_back("i32", Value::I32(-7));
  md.emplace_back("f32", Value::F32(0.1f));
  md.emplace_back("bool", Value::Bool(true));
  md.emplace_back("str", Value::Str(std::string("a\0b", 3)));
  md.emplace_back("u64", scalar(ValueType::kU64, ~uint64_t(0), 0, 0));
  md.emplace_back("i64", scalar(ValueType::kI64, 0, INT64_MIN, 0));
  md.emplace_back("f64", scalar(ValueType::kF64, 0, 0, 1e300));
  md.emplace_back("strs", Value::Array(ValueType::kString, {Value::Str("x"), Value::Str("")}));
  md.emplace_back("nested", Value::Array(ValueType::kArray, {Value::Array(ValueType::kI32, {Value::I32(1)}),
                                                             Value::Array(ValueType::kBool, {})}));
  std::vector<float> data(64);
  for (size_t i = 0; i < data.size(); ++i) data[i] = float(i) * 0.25f - 3;
  std::vector<gguf::TensorToWrite> ts;
  for (GgmlType t : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16}) {
    const DType dt = t == GgmlType::kF32 ? DType::kF32 : t == GgmlType::kF16 ? DType::kF16 : DType::kBF16;
    ts.push_back({"t" + std::string(gguf::GgmlTypeName(t)), {16, 4}, t, [&data, dt](uint8_t* dst) {
                    FromF32(dt, data.data(), dst, data.size());
                    return Status::Ok();
                  }});
  }
  ts.push_back({"odd", {3}, GgmlType::kF32, [](uint8_t* dst) {
                  const float v[3] = {1, 2, 3};
                  std::memcpy(dst, v, sizeof(v));
                  return Status::Ok();
                }});
  const std::string path = dir / "rt.gguf";
  ASSERT_TRUE(gguf::WriteGguf(path, md, ts, /*alignment=*/64).ok());
  auto g = GgufFile::Open(path);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->alignment(), 64u);
  ASSERT_EQ((*g)->metadata().size(), md.size() + 1);  // + general.alignment
  for (size_t k = 0; k < md.size(); ++k) {
    const auto& [key, want] = md[k];
    const Value* got = (*g)->Find(key);
    ASSERT_NE(got, nullptr) << key;
    EXPECT_EQ(got->type, want.type) << key;
    EXPECT_EQ(got->u, want.u) << key;
    EXPECT_EQ(got->i, want.i) << key;
    EXPECT_EQ(got->str, want.str) << key;
    EXPECT_EQ(got->items.size(), want.items.size()) << key;
  }
  EXPECT_FLOAT_EQ(float((*g)->Find("f32")->f), 0.1f);
  EXPECT_EQ((*g)->Find("f64")->f, 1e300);
  const Value* nested = (*g)->Find("nested");
  EXPECT_EQ(nested->elem, ValueType::kArray);
  EXPECT_EQ(nested->items[0].elem, ValueType::kI32);
  EXPECT_EQ(nested->items[0].items[0].i, 1);
  ASSERT_EQ((*g)->tensors().size(), 4u);
  for (const auto& ti : (*g)->tensors()) {
    EXPECT_EQ(ti.offset % 64, 0u) << ti.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(ti.data) % 64, 0u) << "tensor data aligned in the mapping: " << ti.name;
    if (ti.name == "odd") continue;
    EXPECT_EQ(ti.ne, (std::vector<int64_t>{16, 4}));
    std::vector<float> back(64);
    const DType dt = ti.type == GgmlType::kF32 ? DType::kF32 : ti.type == GgmlType::kF16 ? DType::kF16 : DType::kBF16;
    ToF32(dt, ti.data, back.data(), back.size());
    EXPECT_EQ(back, data) << ti.name << " (multiples of 0.25 in [-3, 13) are exact in all three types)";
  }
}

TEST(Gguf, TruncationAtEveryOffsetIsAnError) {
  const std::string f = ValidFile();
  for (size_t n = 0; n < f.size(); ++n) {
    auto g = ParseBytes(f.substr(0, n));
    ASSERT_FALSE(g.ok()) << "truncated to " << n << " bytes";
    const std::string m = g.status().ToString();
    EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("beyond end of file") != std::string::npos ||
                m.find("absurd") != std::string::npos || m.find("exceeds") != std::string::npos ||
                m.find("cannot fit") != std::string::npos)
        << n << ": " << m;
  }
  EXPECT_TRUE(ParseBytes(f).ok());
}

TEST(Gguf, MalformedHeadersNameTheProblem) {
  const std::string f = ValidFile();
  auto with = [&](size_t at, auto v) {
    std::string s = f;
    std::memcpy(&s[at], &v, sizeof(v));
    return s;
  };
  ExpectError(ParseBytes("GGML" + f.substr(4)).status(), "bad magic");
  ExpectError(ParseBytes(with(4, uint32_t(1))).status(), "unsupported GGUF version 1");
  ExpectError(ParseBytes(with(4, uint32_t(0x03000000))).status(), "big-endian");
  ExpectError(ParseBytes(with(8, uint64_t(1) << 60)).status(), "tensor count");
  ExpectError(ParseBytes(with(16, uint64_t(1) << 40)).status(), "metadata count");
  ExpectError(ParseBytes(with(24, uint64_t(1) << 62)).status(), "string length");  // first key's length
  // Offsets of the fields below, counted in ValidFile(): key "general.architecture" (8 + 20), type at 52.
  ExpectError(ParseBytes(with(52, uint32_t(13))).status(), "unknown value type 13");
  // The "list" array: key at 69 (8 + 4), type at 81, item type at 85, count at 89.
  ExpectError(ParseBytes(with(85, uint32_t(99))).status(), "unknown array item type");
  ExpectError(ParseBytes(with(89, uint64_t(1) << 50)).status(), "array count");
  // Tensor "a": name at 109 (8 + 1), n_dims at 118, ne[0] at 122, type at 130, offset at 134.
  ExpectError(ParseBytes(with(118, uint32_t(5))).status(), "5 dimensions");
  ExpectError(ParseBytes(with(122, uint64_t(0))).status(), "is zero or makes the tensor absurdly large");
  // A ggml type this engine does not read is refused by number and name.
  ExpectError(ParseBytes(with(130, uint32_t(16))).status(), "unsupported ggml type 16 (IQ2_XXS)");
  ExpectError(ParseBytes(with(130, uint32_t(99))).status(), "unsupported ggml type 99 (unknown)");
  ExpectError(ParseBytes(with(134, uint64_t(64))).status(), "beyond end of file");
  ExpectError(ParseBytes(with(134, uint64_t(4))).status(), "not a multiple of the alignment");
  ExpectError(ParseBytes(with(134, ~uint64_t(0) - 31)).status(), "beyond end of file");
  // Tensor "b": name at 142, so its name "b" (at 150) renamed to "a" duplicates.
  ExpectError(ParseBytes(with(150, 'a')).status(), "duplicate tensor name 'a'");
  // Q8_0 rows must be whole 32-element blocks: "a" has 4 elements.
  ExpectError(ParseBytes(with(130, uint32_t(8))).status(), "not whole blocks");
  ExpectError(ParseBytes(with(130, uint32_t(12))).status(), "Q4_K rows of 4 elements are not whole blocks of 256");
}

TEST(Gguf, MalformedMetadataNamesTheProblem) {
  auto file = [](const std::function<void(Bytes&)>& kv, uint64_t n_kv = 1) {
    Bytes f;
    f.b = "GGUF";
    f.Put(uint32_t(3)).Put(uint64_t(0)).Put(n_kv);
    kv(f);
    return f.b;
  };
  ExpectError(ParseBytes(file([](Bytes& f) { f.Str("k").Put(uint32_t(7)).Put(uint8_t(2)); })).status(),
              "neither 0 nor 1");
  ExpectError(ParseBytes(file([](Bytes& f) {
                f.Str("k").Put(uint32_t(8)).Str("v");
                f.Str("k").Put(uint32_t(8)).Str("w");
              }, 2)).status(),
              "duplicate metadata key 'k'");
  ExpectError(ParseBytes(file([](Bytes& f) { f.Str("general.alignment").Put(uint32_t(4)).Put(uint32_t(24)); })).status(),
              "general.alignment");
  ExpectError(ParseBytes(file([](Bytes& f) { f.Str("general.alignment").Put(uint32_t(10)).Put(uint64_t(32)); })).status(),
              "general.alignment");
  // Arrays of arrays nest up to 8 deep; a file nesting deeper (a stack-depth attack) is refused.
  ExpectError(ParseBytes(file([](Bytes& f) {
                f.Str("deep").Put(uint32_t(9));
                for (int d = 0; d < 100; ++d) f.Put(uint32_t(9)).Put(uint64_t(1));
              })).status(),
              "nested deeper");
  // A small file whose arrays claim millions of 1-byte items is refused before allocating them.
  ExpectError(ParseBytes(file([](Bytes& f) {
                f.Str("big").Put(uint32_t(9)).Put(uint32_t(0)).Put(uint64_t(5u << 20));
                f.b.append(size_t(5u << 20), '\0');
              })).status(),
              "values in all");
  // A file with only metadata (no tensors, no data section) is valid.
  EXPECT_TRUE(ParseBytes(file([](Bytes& f) { f.Str("k").Put(uint32_t(6)).Put(1.5f); })).ok());
}

// Why the converter permutes: llama.cpp's "normal" RoPE rotates pairs (2i, 2i+1); Hugging Face's
// rotate_half rotates (i, i + d/2). Permuting Q's rows turns one into the other: rope_normal(P q) ==
// P rope_neox(q) for every position, which is what makes a permuted llama-arch file compute the same.
TEST(Gguf, QKPermutationMapsRotateHalfRopeToInterleavedRope) {
  const int hd = 8, heads = 2, half = hd / 2;
  std::vector<float> q(heads * hd);
  for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(float(i) + 1);
  auto perm = [&](const std::vector<float>& v, bool to_gguf) {
    std::vector<float> out(v.size());
    PermuteQKRows(reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<uint8_t*>(out.data()), heads * hd,
                  sizeof(float), hd, to_gguf);
    return out;
  };
  const float pos = 3;
  auto rope = [&](std::vector<float> v, bool neox) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < half; ++i) {
        const float th = pos * std::pow(10000.0f, -2.0f * i / hd), c = std::cos(th), s = std::sin(th);
        const int a = h * hd + (neox ? i : 2 * i), b = h * hd + (neox ? i + half : 2 * i + 1);
        const float x = v[a], y = v[b];
        v[a] = x * c - y * s, v[b] = x * s + y * c;
      }
    return v;
  };
  const auto lhs = rope(perm(q, true), /*neox=*/false), rhs = perm(rope(q, /*neox=*/true), true);
  for (size_t i = 0; i < q.size(); ++i) EXPECT_NEAR(lhs[i], rhs[i], 1e-6) << i;  // same float ops, reordered
  EXPECT_EQ(perm(perm(q, true), false), q);
  EXPECT_NE(perm(q, true), q);
}

TEST(Gguf, TensorNamesMapBothWays) {
  for (const char* hf : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                         "model.layers.11.self_attn.k_proj.bias", "model.layers.0.mlp.down_proj.weight",
                         "model.layers.3.post_attention_layernorm.weight"})
    EXPECT_EQ(GgufToHfName(HfToGgufName(hf)), hf) << hf;
  EXPECT_EQ(HfToGgufName("model.layers.2.self_attn.o_proj.weight"), "blk.2.attn_output.weight");
  EXPECT_EQ(HfToGgufName("model.layers.x.mlp.up_proj.weight"), "");
  EXPECT_EQ(GgufToHfName("rope_freqs.weight"), "");
}

}  // namespace
}  // namespace atp
