// format/basis_file.h: calibrated KV bases survive a write and read bit for bit, and a file that is not
// what `atp calibrate` writes is refused with an error naming the file and the layer.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "format/basis_file.h"
#include "format/safetensors.h"
#include "test_util.h"

namespace atp {
namespace {

using testing::TempDir;

KvBasis Numbered(int layers, int heads, int d) {
  KvBasis b;
  b.layers = layers, b.kv_heads = heads, b.head_dim = d;
  float x = 0.5f;
  for (int l = 0; l < layers; ++l) {
    b.k.emplace_back(size_t(heads * d * d));
    b.v.emplace_back(size_t(heads * d * d));
    for (auto& e : b.k.back()) e = (x += 1.25f);
    for (auto& e : b.v.back()) e = -(x += 0.75f);
  }
  return b;
}

TEST(BasisFile, WriteThenReadIsBitForBit) {
  TempDir dir("basis");
  const KvBasis b = Numbered(3, 2, 4);
  ASSERT_TRUE(WriteKvBasis(dir / "b.safetensors", b).ok());
  auto r = ReadKvBasis(dir / "b.safetensors");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->layers, 3);
  EXPECT_EQ(r->kv_heads, 2);
  EXPECT_EQ(r->head_dim, 4);
  EXPECT_EQ(r->k, b.k);
  EXPECT_EQ(r->v, b.v);
}

TEST(BasisFile, DefaultPathIsBesideTheModel) {
  TempDir dir("basis");
  EXPECT_EQ(DefaultKvBasisPath(dir.path()), dir.path() + "/kv_basis.safetensors");
  testing::WriteString(dir / "m.gguf", "GGUF");
  EXPECT_EQ(DefaultKvBasisPath(dir / "m.gguf"), dir / "m.gguf.kv_basis.safetensors");
}

// Each malformed file: its tensors and a part of the expected message.
TEST(BasisFile, RefusesWhatCalibrateDoesNotWrite) {
  TempDir dir("basis");
  const std::vector<float> f(2 * 4 * 4, 1.0f);     // enough for any shape below, as F32
  const std::vector<uint16_t> h(2 * 4 * 4, 0x3c00);  // 1.0 as F16
  struct Case {
    const char* what;
    std::vector<TensorToWrite> tensors;
    const char* message;
  };
  const std::vector<int64_t> s = {2, 4, 4};
  const std::vector<Case> cases = {
      {"no layer 0", {{"layers.1.k_basis", DType::kF32, s, f.data()}, {"layers.1.v_basis", DType::kF32, s, f.data()}},
       "no layers.N.k_basis / v_basis tensors"},
      {"keys in F16", {{"layers.0.k_basis", DType::kF16, s, h.data()}, {"layers.0.v_basis", DType::kF32, s, f.data()}},
       "layer 0 bases must be F32"},
      // Read as F32, values in F16 would be read twice past their bytes.
      {"values in F16", {{"layers.0.k_basis", DType::kF32, s, f.data()}, {"layers.0.v_basis", DType::kF16, s, h.data()}},
       "layer 0 bases must be F32"},
      {"not square", {{"layers.0.k_basis", DType::kF32, {2, 4, 2}, f.data()}, {"layers.0.v_basis", DType::kF32, {2, 4, 2}, f.data()}},
       "layer 0 bases must be F32"},
      {"values of another shape", {{"layers.0.k_basis", DType::kF32, s, f.data()}, {"layers.0.v_basis", DType::kF32, {1, 4, 4}, f.data()}},
       "layer 0 bases must be F32"},
      {"layer 1 of another shape",
       {{"layers.0.k_basis", DType::kF32, s, f.data()}, {"layers.0.v_basis", DType::kF32, s, f.data()},
        {"layers.1.k_basis", DType::kF32, {1, 4, 4}, f.data()}, {"layers.1.v_basis", DType::kF32, {1, 4, 4}, f.data()}},
       "layer 1 basis shape differs from layer 0"},
  };
  for (const Case& c : cases) {
    const std::string path = dir / "bad.safetensors";
    ASSERT_TRUE(WriteSafeTensors(path, c.tensors).ok()) << c.what;
    auto r = ReadKvBasis(path);
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.status().code(), Status::Code::kCorruption) << c.what;
    EXPECT_NE(r.status().message().find(path + ": " + c.message), std::string::npos) << c.what << ": " << r.status().message();
  }
  EXPECT_FALSE(ReadKvBasis(dir / "absent.safetensors").ok());
}

}  // namespace
}  // namespace atp
