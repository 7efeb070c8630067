// The low-rank evidence: singular-value spectra of each layer's input X and post-RoPE keys over
// windows of a text, as mean cumulative-energy curves (energy captured by the top r directions).
#pragma once
#include <functional>
#include <vector>

#include "model/llama.h"

namespace atp {

struct SpectraOptions {
  int window = 128;      // tokens per analysed window (rows of X)
  int max_windows = 16;
};

struct LayerSpectrum {
  std::vector<double> input_energy;  // [r-1]: mean fraction of ||X||_F^2 in the top r singular values
  std::vector<double> key_energy;    // same for post-RoPE keys per KV head, averaged over heads
};

Result<std::vector<LayerSpectrum>> AnalyzeSpectra(LlamaModel& model, const std::vector<int32_t>& stream,
                                                  const SpectraOptions& opt, const std::function<void(int, int)>& progress);

// Smallest rank whose energy reaches `fraction`.
int RankForEnergy(const std::vector<double>& energy, double fraction);

}  // namespace atp
