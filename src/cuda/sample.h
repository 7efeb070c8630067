// Token choice on the GPU: the rules of sampling/rules.h over logit rows in device memory, one block
// per query (launcher; kernels in sample.cu). cuda/forward.cpp fills the queries from TokenQuery and
// copies the results back in one copy; only ids and the logprobs asked for leave the device.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace atp::cuda {

constexpr int kSampleMaxTop = 20;  // = kMaxTopLogprobs (sampling/params.h, C++20, which nvcc does not see)

// One query as the kernel reads it.
struct SampleQuery {
  int32_t row = 0;                   // logit row
  int32_t top_k = 0;
  float temperature = 0, top_p = 1, min_p = 0, penalty = 1;
  int32_t top_n = -1;                // top logprobs: -1 none, else the chosen token's and the n best
  int32_t hist_begin = 0, hist_len = 0;  // its history in `history` (read only with penalty != 1)
  uint64_t seed = 0, draw = 0;
};

struct SampleResult {
  int32_t id;
  float logprob;                     // with top_n >= 0
  int32_t top_ids[kSampleMaxTop];    // the top_n best, in rank order
  float top_logprobs[kSampleMaxTop];
};

// Words of `seen` scratch a query needs: a bitmap of its history over the vocabulary.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline int64_t SampleSeenWords(int vocab) { return (int64_t(vocab) + 31) / 32; }

// results[q] for queries[q], q < n, over logits (rows, vocab) f32; seen: n * SampleSeenWords(vocab)
// words of scratch. The caller has checked rows, top_n <= kSampleMaxTop and the parameters.
void ChooseTokens(const float* logits, int vocab, const SampleQuery* queries, int n, const int32_t* history,
                  uint32_t* seen, SampleResult* results, cudaStream_t s);

}  // namespace atp::cuda
