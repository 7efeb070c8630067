#include "kv/attend.h"

#include <cmath>
#include <cstring>

#include "core/thread_pool.h"
#include "kernels/ops.h"

namespace atp {

namespace {
// y (cols) = x (rows) . M (rows x cols, row-major)
void VecMat(const float* x, const float* M, int rows, int cols, float* y) {
  std::memset(y, 0, sizeof(float) * size_t(cols));
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) y[c] += x[i] * M[size_t(i) * size_t(cols) + size_t(c)];
}
}  // namespace

void AttendSegments(const KvShape& shape, int64_t T, const float* Q, float* O, const SegmentFn& segments) {
  const int group = shape.n_heads / shape.n_kv_heads;
  const int hd = shape.head_dim;
  const float scale = 1.0f / std::sqrt(float(hd));
  // One task per (token, KV head): the query heads of a group share the segment lookup.
  ThreadPool::Global().ParallelFor(T * shape.n_kv_heads, [&](int64_t b, int64_t e, int) {
    std::vector<KvSegment> segs;
    std::vector<float> scores, qr, orr;
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / shape.n_kv_heads;
      const int kvh = int(task % shape.n_kv_heads);
      segs.clear();
      segments(t, kvh, &segs);
      int64_t n = 0;
      for (auto& s : segs) n += s.k.count;
      scores.resize(size_t(n));
      for (int g = 0; g < group; ++g) {
        const int h = kvh * group + g;
        const float* q = Q + (t * shape.n_heads + h) * hd;
        float* o = O + (t * shape.n_heads + h) * hd;
        int64_t off = 0;
        for (auto& s : segs) {
          if (s.q_map) {
            qr.resize(size_t(s.k_dim));
            VecMat(q, s.q_map, hd, s.k_dim, qr.data());
            AttnScores(qr.data(), s.k_dim, s.k, scale, scores.data() + off);
          } else {
            AttnScores(q, hd, s.k, scale, scores.data() + off);
          }
          off += s.k.count;
        }
        Softmax(scores.data(), n);
        std::memset(o, 0, sizeof(float) * size_t(hd));
        off = 0;
        for (auto& s : segs) {
          if (s.out_map) {
            orr.assign(size_t(s.v_dim), 0.f);
            AttnAccumulate(scores.data() + off, s.v, s.v_dim, orr.data());
            for (int c = 0; c < s.v_dim; ++c)
              for (int i = 0; i < hd; ++i) o[i] += orr[size_t(c)] * s.out_map[size_t(c) * size_t(hd) + size_t(i)];
          } else {
            AttnAccumulate(scores.data() + off, s.v, hd, o);
          }
          off += s.k.count;
        }
      }
    }
  });
}

}  // namespace atp
