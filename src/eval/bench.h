// Speed measurements: machine limits (memory bandwidth, sgemm throughput) and the model's prefill
// and decode rates, so decode is reported against the bandwidth roofline and prefill against GEMM.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "kv/kv_policy.h"
#include "model/llama.h"

namespace atp {

// Read bandwidth (bytes/s) of all pool threads streaming a buffer much larger than the caches (on
// huge pages, like resident weights); the best of runs: a limit is what the machine can reach.
double MeasureReadBandwidth(size_t bytes = size_t(512) << 20, int runs = 8);
// The rate (bytes/s) of each of `runs` runs of the same measurement, each the faster of two read
// loops over the buffer (ProbeSum's).
std::vector<double> ReadBandwidthRuns(size_t bytes, int runs);
// The probe's read loops: the sum of n floats at p (n a multiple of 128), its vector sums in
// registers, or `paced` in memory (bench.cpp says why both). Exposed for its test.
float ProbeSum(const float* p, int64_t n, bool paced);
// sgemm throughput (FLOP/s) at an (m x k) . (k x n) shape through OpenBLAS threaded over the pool's
// cores; the best of runs, for the same reason.
double MeasureSgemm(int m, int n, int k, int runs = 3);

struct BenchOptions {
  int prompt_tokens = 512;   // prefill length
  int context = 512;         // tokens in the cache before the timed decode steps
  int decode_tokens = 16;    // timed decode steps
  int repeats = 3;           // median over repeats
  // Fill the decode cache by appending random rows (X, K, V) straight to each layer's policy instead
  // of running the model over `context` tokens. Decode time depends on what a representation holds
  // and reads, not on the values, and filling through the model costs a full prefill (minutes per
  // policy at 32k tokens of a 1B model on a few cores), which would bar long contexts from the
  // benchmark. Policies that choose rows by attention (h2o, snapkv) see random scores then.
  bool random_fill = false;
  // Also measure the machine's limits (read bandwidth, sgemm at the prefill's MLP shape) next to
  // each timed run and report fractions run by run (their median): on a shared machine (other
  // tenants on the same cores and memory) a limit measured minutes apart from the run it bounds
  // varies by up to 2x and makes the fraction meaningless.
  bool roofline = false;
};

struct BenchResult {
  double prefill_tok_s = 0, prefill_flop_s = 0;
  double decode_tok_s = 0, decode_ms_per_token = 0;
  double decode_ms_per_token_mean = 0;  // includes the rare slow steps the median hides (ATP's block compressions)
  double attention_ms_per_token = 0;  // time inside the KV policies (Append + Attend) per decode token
  double kv_bytes_per_token = 0;      // Bytes()/Length() of the sequence after the decode steps
  double bytes_per_decode_token = 0;  // weights + KV read per decode token
  // With roofline: medians over runs of the read bandwidth (bytes/s) and sgemm rate (FLOP/s)
  // measured next to each run, and the medians of the per-run fractions decode bytes/s over
  // bandwidth and prefill FLOP/s over sgemm FLOP/s.
  double bandwidth_bytes_s = 0, sgemm_flop_s = 0;
  double roofline_fraction = 0, prefill_sgemm_fraction = 0;
};

// progress: one line per phase on stderr when non-null.
Result<BenchResult> BenchModel(LlamaModel& model, const KvPolicyFactory& kv, const BenchOptions& opt,
                               const std::function<void(const std::string&)>& progress);

}  // namespace atp
