#include "eval/spectra.h"

#include "eval/recorder.h"
#include "kv/linalg.h"

namespace atp {

namespace {
// Adds the cumulative energy fractions of A's singular values to acc (resized to min(m, n)).
Status AccumulateEnergy(const float* A, int m, int n, int lda, std::vector<double>* acc) {
  std::vector<float> a(size_t(m) * size_t(n)), U, S, Vt;
  for (int i = 0; i < m; ++i) std::copy(A + size_t(i) * size_t(lda), A + size_t(i) * size_t(lda) + n, &a[size_t(i) * size_t(n)]);
  ATP_RETURN_IF_ERROR(ThinSvd(a.data(), m, n, &U, &S, &Vt));
  double total = 0;
  for (float s : S) total += double(s) * s;
  acc->resize(S.size(), 0.0);
  double c = 0;
  for (size_t i = 0; i < S.size(); ++i) {
    c += double(S[i]) * S[i];
    (*acc)[i] += total > 0 ? c / total : 1.0;
  }
  return Status::Ok();
}
}  // namespace

Result<std::vector<LayerSpectrum>> AnalyzeSpectra(LlamaModel& model, const std::vector<int32_t>& stream,
                                                  const SpectraOptions& opt, const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config();
  std::vector<LayerSpectrum> out(size_t(c.num_layers));
  Status err;
  auto record = [&](int layer, int64_t T, const float* X, const float* K, const float*) {
    if (!err.ok()) return;
    err = AccumulateEnergy(X, int(T), c.hidden_size, c.hidden_size, &out[size_t(layer)].input_energy);
    for (int h = 0; h < c.num_kv_heads && err.ok(); ++h)
      err = AccumulateEnergy(K + h * c.head_dim, int(T), c.head_dim, c.kv_dim(), &out[size_t(layer)].key_energy);
  };
  ATP_ASSIGN_OR_RETURN(const int windows, RecordWindows(model, stream, opt.window, opt.max_windows, "analyze", record,
                                                        [&](int done, int total) {
                                                          if (err.ok() && progress) progress(done, total);
                                                          return err;
                                                        }));
  for (auto& l : out) {
    for (auto& e : l.input_energy) e /= windows;
    for (auto& e : l.key_energy) e /= double(windows) * c.num_kv_heads;
  }
  return out;
}

int RankForEnergy(const std::vector<double>& energy, double fraction) {
  for (size_t i = 0; i < energy.size(); ++i)
    if (energy[i] >= fraction) return int(i) + 1;
  return int(energy.size());
}

}  // namespace atp
