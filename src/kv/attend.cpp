#include "kv/attend.h"

#include <cmath>
#include <cstring>

#include "core/thread_pool.h"
#include "kernels/ops.h"

namespace atp {

void AttendSegments(const KvShape& shape, int64_t T, const float* Q, float* O, const SegmentFn& segments) {
  const int group = shape.n_heads / shape.n_kv_heads;
  const int hd = shape.head_dim;
  const float scale = 1.0f / std::sqrt(float(hd));
  // One task per (token, KV head): the query heads of a group share the segment lookup.
  ThreadPool::Global().ParallelFor(T * shape.n_kv_heads, [&](int64_t b, int64_t e, int) {
    std::vector<KvSegment> segs;
    std::vector<float> scores;
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
          AttnScores(q, hd, s.k, scale, scores.data() + off);
          if (s.logit_bias)
            for (int64_t j = 0; j < s.k.count; ++j) scores[size_t(off + j)] += s.logit_bias[j];
          off += s.k.count;
        }
        Softmax(scores.data(), n);
        std::memset(o, 0, sizeof(float) * size_t(hd));
        off = 0;
        for (auto& s : segs) {
          AttnAccumulate(scores.data() + off, s.v, hd, o);
          off += s.k.count;
        }
      }
    }
  });
}

}  // namespace atp
