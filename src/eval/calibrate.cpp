#include "eval/calibrate.h"

#include "engine/sequence.h"
#include "eval/recorder.h"
#include "kv/linalg.h"

namespace atp {

Result<KvBasis> Calibrate(LlamaModel& model, const std::vector<int32_t>& stream, const CalibrateOptions& opt,
                          const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config();
  const int L = c.num_layers, H = c.num_kv_heads, d = c.head_dim;
  if (opt.window < 2 || opt.window > c.max_position) return Status::InvalidArgument("calibrate: window out of range");
  int windows = int(stream.size() / size_t(opt.window));
  if (opt.max_windows > 0) windows = std::min(windows, opt.max_windows);
  if (windows == 0) return Status::InvalidArgument("calibrate: text shorter than one window of " + std::to_string(opt.window) + " tokens");
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
  ATP_ASSIGN_OR_RETURN(auto dense, ParseKvPolicy("dense"));
  auto rec = MakeRecordingFactory(dense, record);
  std::vector<float> logits;
  for (int w = 0; w < windows; ++w) {
    Sequence seq(model, *rec);
    ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(stream.data() + size_t(w) * size_t(opt.window), size_t(opt.window)), false, &logits));
    if (progress) progress(w + 1, windows);
  }
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
