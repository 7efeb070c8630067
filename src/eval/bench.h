// Speed measurements: machine limits (memory bandwidth, sgemm throughput) and the model's prefill
// and decode rates, so decode is reported against the bandwidth roofline and prefill against GEMM.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "kv/kv_policy.h"
#include "model/llama.h"

namespace atp {

// Read bandwidth (bytes/s) of all pool threads streaming a buffer much larger than the caches; median of runs.
double MeasureReadBandwidth(size_t bytes = size_t(1) << 30, int runs = 5);
// sgemm throughput (FLOP/s) at an (m x k) . (k x n) shape through OpenBLAS; median of runs.
double MeasureSgemm(int m, int n, int k, int runs = 3);

struct BenchOptions {
  int prompt_tokens = 512;   // prefill length
  int context = 512;         // tokens in the cache before the timed decode steps
  int decode_tokens = 16;    // timed decode steps
  int repeats = 3;           // median over repeats
};

struct BenchResult {
  double prefill_tok_s = 0, prefill_flop_s = 0;
  double decode_tok_s = 0, decode_ms_per_token = 0;
  double attention_ms_per_token = 0;  // time inside the KV policies (Append + Attend) per decode token
  double kv_bytes_per_token = 0;      // Bytes()/Length() of the sequence after the decode steps
  double bytes_per_decode_token = 0;  // weights + KV read per decode token
};

// progress: one line per phase on stderr when non-null.
Result<BenchResult> BenchModel(LlamaModel& model, const KvPolicyFactory& kv, const BenchOptions& opt,
                               const std::function<void(const std::string&)>& progress);

}  // namespace atp
