// cuda/mma.cuh's fragment layouts on one warp (tests/cuda_mma_check.cu) against host products:
// small integer matrices, so that every input, product and sum is exact in bf16 and f32 and the
// results must match bit for bit. A wrong lane, register or half in any layout moves entries.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "cuda_mma_check.h"
#include "cuda_test_util.h"

namespace atp {
namespace {

std::vector<float> Product(const std::vector<float>& x, const std::vector<float>& y) {
  std::vector<float> z(256, 0.f);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j)
      for (int k = 0; k < 16; ++k) z[i * 16 + j] += x[i * 16 + k] * y[k * 16 + j];
  return z;
}

TEST(CudaMma, FragmentLayoutsMatchHostProducts) {
  ATP_SKIP_WITHOUT_GPU();
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> d(-3, 3);
  std::vector<float> a(256), b(256), c(256);
  for (auto* m : {&a, &b, &c})
    for (auto& x : *m) x = float(d(rng));
  // |A B| <= 16 * 9 = 144, an integer and so exact in bf16 (8 significant bits: every integer to 256);
  // |(A B) C| <= 16 * 144 * 3, exact in f32.
  const std::vector<float> ab = Product(a, b), abc_ref = Product(ab, c);
  std::vector<float> ab_t(256), ab_n(256), abc(256);
  ASSERT_TRUE(cuda::MmaFragmentCheck(a.data(), b.data(), c.data(), ab_t.data(), ab_n.data(), abc.data()).ok());
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(ab_t[i], ab[i]) << "A B (B k-major, ldmatrix.trans) at row " << i / 16 << " col " << i % 16;
    EXPECT_EQ(ab_n[i], ab[i]) << "A B (B n-major, ldmatrix) at row " << i / 16 << " col " << i % 16;
    EXPECT_EQ(abc[i], abc_ref[i]) << "(A B) C (C fragments repacked as A) at row " << i / 16 << " col " << i % 16;
  }
}

}  // namespace
}  // namespace atp
