#include "eval/calibrate.h"

#include "eval/recorder.h"
#include "kv/linalg.h"

namespace atp {

Result<KvBasis> Calibrate(LlamaModel& model, const std::vector<int32_t>& stream, const CalibrateOptions& opt,
                          const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config();
  const int L = c.num_layers, H = c.num_kv_heads, d = c.head_dim;
  // Second moments per (layer, head): (d x d) in double, summed over every recorded row.
  std::vector<std::vector<double>> gk(size_t(L * H), std::vector<double>(size_t(d * d))), gv = gk;
  auto record = [&](int layer, int64_t T, const float*, const float* K, const float* V) {
    for (int h = 0; h < H; ++h) {
      auto& a = gk[size_t(layer * H + h)];
      auto& b = gv[size_t(layer * H + h)];
      for (int64_t t = 0; t < T; ++t) {
        const float* k = K + t * c.kv_dim() + h * d;
        const float* v = V + t * c.kv_dim() + h * d;
        for (int i = 0; i < d; ++i)
          for (int j = 0; j < d; ++j) {
            a[size_t(i * d + j)] += double(k[i]) * k[j];
            b[size_t(i * d + j)] += double(v[i]) * v[j];
          }
      }
    }
  };
  auto run = RecordWindows(model, stream, opt.window, opt.max_windows, "calibrate", record, [&](int done, int total) {
    if (progress) progress(done, total);
    return Status::Ok();
  });
  if (!run.ok()) return run.status();
  KvBasis basis;
  basis.layers = L;
  basis.kv_heads = H;
  basis.head_dim = d;
  std::vector<float> g(size_t(d * d)), vecs, vals;
  for (int l = 0; l < L; ++l) {
    basis.k.emplace_back(size_t(H * d * d));
    basis.v.emplace_back(size_t(H * d * d));
    for (int h = 0; h < H; ++h) {
      for (int which = 0; which < 2; ++which) {
        auto& src = (which ? gv : gk)[size_t(l * H + h)];
        for (size_t i = 0; i < g.size(); ++i) g[i] = float(src[i]);
        ATP_RETURN_IF_ERROR(SymmetricEigen(g, d, &vecs, &vals));
        std::copy(vecs.begin(), vecs.end(), (which ? basis.v : basis.k)[size_t(l)].begin() + size_t(h * d * d));
      }
    }
  }
  return basis;
}

}  // namespace atp
