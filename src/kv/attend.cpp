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
  // One task per (token, KV head). The query heads of a group are adjacent in Q and O and share the
  // segments, so plain rows go through the group kernels, which read each key and value row once for
  // all of them: with grouped-query attention (4 query heads per KV head in Llama-3.2-1B) per-head
  // passes would read the cache 4 times, and at long context those bytes are the decode time.
  ThreadPool::Global().ParallelFor(T * shape.n_kv_heads, [&](int64_t b, int64_t e, int thread) {
    std::vector<KvSegment> segs;
    // (group, n), (group, k_dim), (group, v_dim), (group, a part's rows); ob and orb: the odd-row
    // chains of o and orr (kernels/attention.h), added in once their rows are all in.
    std::vector<float> scores, qr, orr, part, ob(size_t(group * hd)), orb;
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / shape.n_kv_heads;
      const int kvh = int(task % shape.n_kv_heads);
      segs.clear();
      segments(t, kvh, &segs);
      int64_t n = 0;
      for (auto& s : segs)
        if (s.adds_to < 0) n += s.count();
      scores.resize(size_t(group * n));
      const float* q = Q + (t * shape.n_heads + kvh * group) * hd;
      float* o = O + (t * shape.n_heads + kvh * group) * hd;
      int64_t off = 0;
      const float* mapped = nullptr;  // the q_map that qr holds the queries mapped through (segments of one basis share it)
      for (auto& s : segs) {
        if (!s.has_keys()) continue;
        const float* qq = q;
        int qdim = hd;
        if (s.q_map) {
          if (s.q_map != mapped) {
            qr.resize(size_t(group * s.k_dim));
            for (int g = 0; g < group; ++g) VecMat(q + g * hd, s.q_map, hd, s.k_dim, qr.data() + g * s.k_dim);
            mapped = s.q_map;
          }
          qq = qr.data();
          qdim = s.k_dim;
        }
        // A part's scores go to `part` first, then add to the rows it is part of.
        const int64_t c = s.count(), ld = s.adds_to >= 0 ? c : n;
        if (s.adds_to >= 0) part.resize(size_t(group * c));
        float* dst = s.adds_to >= 0 ? part.data() : scores.data() + off;
        if (s.pk.layout != PackedLayout::kNone) {
          for (int g = 0; g < group; ++g) PackedScores(qq + g * qdim, s.pk, scale, dst + g * ld);
        } else {
          AttnScoresGroup(qq, group, qdim, s.k, scale, dst, ld);
        }
        if (s.adds_to < 0) {
          off += c;
          continue;
        }
        for (int g = 0; g < group; ++g)
          for (int64_t j = 0; j < c; ++j) scores[size_t(g * n + s.adds_to + j)] += part[size_t(g * c + j)];
      }
      for (int g = 0; g < group; ++g) {
        Softmax(scores.data() + g * n, n);
        if (weights) weights(t, kvh * group + g, scores.data() + g * n, n, thread);
      }
      std::memset(o, 0, sizeof(float) * size_t(group * hd));
      std::fill(ob.begin(), ob.end(), 0.f);
      off = 0;
      // Consecutive segments with the same out_map sum into orr, mapped back once per run.
      const float* pending = nullptr;
      int pending_dim = 0;
      auto map_back = [&] {
        if (!pending) return;
        for (size_t i = 0; i < orr.size(); ++i) orr[i] += orb[i];
        for (int g = 0; g < group; ++g)
          for (int c = 0; c < pending_dim; ++c)
            for (int i = 0; i < hd; ++i)
              o[g * hd + i] += orr[size_t(g * pending_dim + c)] * pending[size_t(c) * size_t(hd) + size_t(i)];
        pending = nullptr;
      };
      for (auto& s : segs) {
        const int64_t at = s.adds_to >= 0 ? s.adds_to : off;  // the weights of this segment's rows
        // Packed or plain value rows, summed into the group's rows of o (stride hd) or of orr (stride
        // dim); plain rows in two chains, dst and dst_odd, whose rows alternate by their index `at + j`
        // in the query's list.
        auto accumulate = [&](int dim, float* dst, float* dst_odd) {
          if (s.pv.layout != PackedLayout::kNone) {
            for (int g = 0; g < group; ++g) PackedAccumulate(scores.data() + g * n + at, s.pv, dst + g * dim);
          } else {
            AttnAccumulateGroup(scores.data() + at, n, group, s.v, dim, dst, dst_odd, at);
          }
        };
        if (s.out_map) {
          if (s.out_map != pending) {
            map_back();
            orr.assign(size_t(group * s.v_dim), 0.f);
            orb.assign(orr.size(), 0.f);
            pending = s.out_map;
            pending_dim = s.v_dim;
          }
          accumulate(s.v_dim, orr.data(), orb.data());
        } else {
          map_back();  // keep o's summation order: earlier segments first
          accumulate(hd, o, ob.data());
        }
        if (s.adds_to < 0) off += s.count();
      }
      map_back();
      for (int i = 0; i < group * hd; ++i) o[i] += ob[size_t(i)];
    }
  });
}

}  // namespace atp
