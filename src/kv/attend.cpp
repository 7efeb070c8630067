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

void AttendSegments(const KvShape& shape, int64_t T, const float* Q, float* O, const SegmentFn& segments,
                    const WeightsFn& weights) {
  const int group = shape.n_heads / shape.n_kv_heads;
  const int hd = shape.head_dim;
  const float scale = 1.0f / std::sqrt(float(hd));
  // One task per (token, KV head): the query heads of a group share the segment lookup.
  ThreadPool::Global().ParallelFor(T * shape.n_kv_heads, [&](int64_t b, int64_t e, int thread) {
    std::vector<KvSegment> segs;
    std::vector<float> scores, qr, orr;
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / shape.n_kv_heads;
      const int kvh = int(task % shape.n_kv_heads);
      segs.clear();
      segments(t, kvh, &segs);
      int64_t n = 0;
      for (auto& s : segs) n += s.count();
      scores.resize(size_t(n));
      for (int g = 0; g < group; ++g) {
        const int h = kvh * group + g;
        const float* q = Q + (t * shape.n_heads + h) * hd;
        float* o = O + (t * shape.n_heads + h) * hd;
        int64_t off = 0;
        const float* mapped = nullptr;  // the q_map that qr holds q mapped through (segments of one basis share it)
        for (auto& s : segs) {
          const float* qq = q;
          int qdim = hd;
          if (s.q_map) {
            if (s.q_map != mapped) {
              qr.resize(size_t(s.k_dim));
              VecMat(q, s.q_map, hd, s.k_dim, qr.data());
              mapped = s.q_map;
            }
            qq = qr.data();
            qdim = s.k_dim;
          }
          if (s.pk.layout != PackedLayout::kNone) PackedScores(qq, s.pk, scale, scores.data() + off);
          else AttnScores(qq, qdim, s.k, scale, scores.data() + off);
          off += s.count();
        }
        Softmax(scores.data(), n);
        if (weights) weights(t, h, scores.data(), n, thread);
        std::memset(o, 0, sizeof(float) * size_t(hd));
        off = 0;
        // Consecutive segments with the same out_map sum into orr, mapped back once per run.
        const float* pending = nullptr;
        int pending_dim = 0;
        auto map_back = [&] {
          if (!pending) return;
          for (int c = 0; c < pending_dim; ++c)
            for (int i = 0; i < hd; ++i) o[i] += orr[size_t(c)] * pending[size_t(c) * size_t(hd) + size_t(i)];
          pending = nullptr;
        };
        for (auto& s : segs) {
          // Packed or plain value rows, summed into o directly or into orr for an out_map.
          auto accumulate = [&](int dim, float* dst) {
            if (s.pv.layout != PackedLayout::kNone) PackedAccumulate(scores.data() + off, s.pv, dst);
            else AttnAccumulate(scores.data() + off, s.v, dim, dst);
          };
          if (s.out_map) {
            if (s.out_map != pending) {
              map_back();
              orr.assign(size_t(s.v_dim), 0.f);
              pending = s.out_map;
              pending_dim = s.v_dim;
            }
            accumulate(s.v_dim, orr.data());
          } else {
            map_back();  // keep o's summation order: earlier segments first
            accumulate(hd, o);
          }
          off += s.count();
        }
        map_back();
      }
    }
  });
}

}  // namespace atp
