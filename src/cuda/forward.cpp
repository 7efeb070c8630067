// The Llama forward pass on the GPU, step for step the CPU pass of model/llama.cpp: projections
// through cuBLAS with bf16 operands and f32 accumulation (tensor cores), the residual add folded
// into the Wo and Wdown GEMMs (beta = 1), attention handed to each item's KV policies with device
// pointers (decode items whose policies plan their steps: each layer's KV stores and attention batched
// across sequences, cuda/decode_batch.h). A decode step (one row) runs our persistent GEMV instead
// (cuda/ops.h), which forms its input (RMSNorm, SiLU-gate, bf16 rounding) itself and starts streaming
// weights before the kernel before it has ended (cuda/pdl.cuh). Everything runs on the legacy
// default stream; only the host copies per call (positions in, the batched decode's descriptors in,
// logits out) synchronize. Without a logits vector the logits stay on the device and ChooseTokens
// picks tokens there (cuda/sample.h): queries in, ids and the logprobs asked for out, one copy each way.
#include <cublas_v2.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/interleave.h"
#include "cuda/backend.h"
#include "cuda/check.h"
#include "cuda/decode_batch.h"
#include "cuda/ops.h"
#include "cuda/sample.h"

namespace atp {

namespace {

using cuda::bf16;
using cuda::DeviceArray;

Status FromCublas(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return Status::IOError(std::string("cublas: ") + what + ": status " + std::to_string(int(s)));
}

struct DeviceLayer {
  DeviceArray<bf16> wqkv;  // (qd + 2 kvd, d): Wq, Wk, Wv stacked, one GEMM for all three
  DeviceArray<bf16> wo;    // (d, qd)
  DeviceArray<bf16> wgu;   // (2 ffn, d): Wgate, Wup stacked
  DeviceArray<bf16> wdown; // (d, ffn)
  DeviceArray<float> attn_norm, mlp_norm;  // (d)
  DeviceArray<float> bqkv;                 // (qd + 2 kvd) with attention_bias, else empty
};

class CudaForward : public ForwardBackend {
 public:
  explicit CudaForward(const LlamaModel& m) : m_(m) {}
  ~CudaForward() override {
    if (blas_) cublasDestroy(blas_);
  }

  Status Init() {
    ATP_RETURN_IF_ERROR(FromCublas(cublasCreate(&blas_), "create"));
    const ModelConfig& c = m_.config();
    const ModelWeights& w = m_.weights();
    ATP_RETURN_IF_ERROR(UploadBf16({&w.embed}, &embed_));
    if (w.lm_head.data != w.embed.data) ATP_RETURN_IF_ERROR(UploadBf16({&w.lm_head}, &lm_head_));
    ATP_RETURN_IF_ERROR(UploadF32(w.final_norm, &final_norm_));
    layers_.resize(size_t(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      const LayerWeights& L = w.layers[size_t(l)];
      DeviceLayer& D = layers_[size_t(l)];
      ATP_RETURN_IF_ERROR(UploadBf16({&L.wq, &L.wk, &L.wv}, &D.wqkv));
      ATP_RETURN_IF_ERROR(UploadBf16({&L.wo}, &D.wo));
      ATP_RETURN_IF_ERROR(UploadBf16({&L.w_gate, &L.w_up}, &D.wgu));
      ATP_RETURN_IF_ERROR(UploadBf16({&L.w_down}, &D.wdown));
      ATP_RETURN_IF_ERROR(UploadF32(L.attn_norm, &D.attn_norm));
      ATP_RETURN_IF_ERROR(UploadF32(L.mlp_norm, &D.mlp_norm));
      if (c.attention_bias) {
        std::vector<float> b;
        for (auto* part : {&w.bias_q, &w.bias_k, &w.bias_v})
          b.insert(b.end(), (*part)[size_t(l)].begin(), (*part)[size_t(l)].end());
        ATP_RETURN_IF_ERROR(Upload(b, &D.bqkv));
      }
    }
    ATP_RETURN_IF_ERROR(Upload(c.RopeInvFreq(), &inv_freq_));
    ATP_CUDA_RETURN(cudaDeviceSynchronize());
    return cuda::LastLaunch("weight upload");
  }

  Status Forward(std::span<const ForwardItem> items, std::vector<float>* logits) override {
    const ModelConfig& c = m_.config();
    const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.intermediate_size, V = c.vocab_size;
    // Rows of the batch and the rows whose logits are wanted, as in the CPU pass.
    std::vector<int32_t> tokens, pos, logit_rows;
    for (auto& it : items) {
      if (it.tokens.empty()) return Status::InvalidArgument("forward: empty token chunk");
      if (int(it.kv.size()) != c.num_layers) return Status::InvalidArgument("forward: one KV policy per layer needed");
      const int32_t first = int32_t(tokens.size());
      for (size_t i = 0; i < it.tokens.size(); ++i) {
        if (it.tokens[i] < 0 || it.tokens[i] >= V)
          return Status::InvalidArgument("forward: token id " + std::to_string(it.tokens[i]) + " outside vocabulary");
        tokens.push_back(it.tokens[i]);
        pos.push_back(it.start_pos + int32_t(i));
      }
      const int32_t n = int32_t(it.tokens.size());
      for (int32_t r = it.all_logits ? 0 : n - 1; r < n; ++r) logit_rows.push_back(first + r);
    }
    const int64_t N = int64_t(tokens.size()), R = int64_t(logit_rows.size());
    // X (the normed layer input, f32) is formed only for policies that read it (ATP's bases).
    bool wants_x = false;
    for (auto& it : items)
      for (KvPolicy* kv : it.kv) wants_x = wants_x || kv->ReadsInput();
    // A single row (a decode step) takes the fused GEMV path: one launch per projection.
    const bool one_row = N == 1 && std::max({d, qd, ffn}) <= cuda::kGemvMaxIn && d % 8 == 0 && qd % 8 == 0 && ffn % 8 == 0;
    for (auto [buf, n] : {std::pair{&x_, N * d}, {&xf_, wants_x ? N * d : 0}, {&qkv_, N * (qd + 2 * kvd)}, {&q_, N * qd}, {&k_, N * kvd},
                          {&v_, N * kvd}, {&att_, N * qd}, {&gu_, N * 2 * ffn}, {&logits_, R * V}})
      ATP_RETURN_IF_ERROR(buf->Grow(size_t(n)));
    for (auto [buf, n] : {std::pair{&xb_, N * d}, {&attb_, N * qd}, {&h_, N * ffn}, {&sel_, R * d}})
      ATP_RETURN_IF_ERROR(buf->Grow(size_t(n)));
    // tokens | positions | logit rows in one copy (each host-to-device copy waits for the device).
    std::vector<int32_t> meta = tokens;
    meta.insert(meta.end(), pos.begin(), pos.end());
    meta.insert(meta.end(), logit_rows.begin(), logit_rows.end());
    ATP_RETURN_IF_ERROR(meta_.Grow(meta.size()));
    ATP_CUDA_RETURN(cudaMemcpy(meta_.get(), meta.data(), meta.size() * 4, cudaMemcpyHostToDevice));
    const int32_t* d_tokens = meta_.get();      // (N)
    const int32_t* d_pos = d_tokens + N;        // (N)
    const int32_t* d_rows = d_pos + N;          // (R)

    // Decode items whose policies plan their steps run each layer's attention batched (cuda/decode_batch.h).
    std::vector<int64_t> first_row;
    for (int64_t r = 0; auto& it : items) first_row.push_back(std::exchange(r, r + int64_t(it.tokens.size())));
    const cuda::BatchedDecode::Rows rows{k_.get(), v_.get(), wants_x ? xf_.get() : nullptr, q_.get(), att_.get(), kvd, d, qd};
    ATP_RETURN_IF_ERROR(decode_.Plan(items, first_row, rows, {c.num_heads, c.num_kv_heads, c.head_dim}, c.num_layers));

    const cudaStream_t s = nullptr;
    const bf16* lm_head = lm_head_.get() ? lm_head_.get() : embed_.get();
    const float eps = c.rms_norm_eps;
    using In = cuda::GemvInput;
    cuda::EmbedRows(embed_.get(), d_tokens, N, int(d), x_.get(), s);
    for (int l = 0; l < c.num_layers; ++l) {
      const DeviceLayer& L = layers_[size_t(l)];
      // Attention: x += Wo . attn(rope(Wq xb), rope(Wk xb), Wv xb)
      if (one_row) {
        cuda::Gemv(L.wqkv.get(), qd + 2 * kvd, d, {In::kRmsNorm, x_.get(), L.attn_norm.get(), eps}, 0.f, qkv_.get(), s);
      } else {
        cuda::RmsNormBf16(x_.get(), nullptr, N, int(d), L.attn_norm.get(), eps, xb_.get(), s);
        ATP_RETURN_IF_ERROR(Gemm(L.wqkv.get(), qd + 2 * kvd, d, xb_.get(), N, qkv_.get(), 0.f));
      }
      if (wants_x) cuda::RmsNormF32(x_.get(), N, int(d), L.attn_norm.get(), eps, xf_.get(), s);
      cuda::BiasRopeSplit(qkv_.get(), L.bqkv.get(), d_pos, inv_freq_.get(), N, c.num_heads, c.num_kv_heads,
                          c.head_dim, q_.get(), k_.get(), v_.get(), s);
      ATP_RETURN_IF_ERROR(decode_.RunLayer(l));
      for (size_t i = 0; i < items.size(); ++i) {
        if (decode_.Batched(i)) continue;
        KvPolicy* kv = items[i].kv[size_t(l)];
        const int64_t r = first_row[i];
        std::span<const int32_t> p(pos.data() + r, items[i].tokens.size());
        ATP_RETURN_IF_ERROR(kv->Append(p, wants_x ? xf_.get() + r * d : nullptr, k_.get() + r * kvd, v_.get() + r * kvd));
        ATP_RETURN_IF_ERROR(kv->Attend(p, q_.get() + r * qd, att_.get() + r * qd));
      }
      if (one_row) {
        cuda::Gemv(L.wo.get(), d, qd, {In::kF32, att_.get()}, 1.f, x_.get(), s);
      } else {
        cuda::F32ToBf16(att_.get(), N * qd, attb_.get(), s);
        ATP_RETURN_IF_ERROR(Gemm(L.wo.get(), d, qd, attb_.get(), N, x_.get(), 1.f));
      }

      // MLP: x += Wdown (silu(Wgate xb) * Wup xb)
      if (one_row) {
        cuda::Gemv(L.wgu.get(), 2 * ffn, d, {In::kRmsNorm, x_.get(), L.mlp_norm.get(), eps}, 0.f, gu_.get(), s);
        cuda::Gemv(L.wdown.get(), d, ffn, {In::kSiluMul, gu_.get()}, 1.f, x_.get(), s);
      } else {
        cuda::RmsNormBf16(x_.get(), nullptr, N, int(d), L.mlp_norm.get(), eps, xb_.get(), s);
        ATP_RETURN_IF_ERROR(Gemm(L.wgu.get(), 2 * ffn, d, xb_.get(), N, gu_.get(), 0.f));
        cuda::SiluMulBf16(gu_.get(), N, int(ffn), h_.get(), s);
        ATP_RETURN_IF_ERROR(Gemm(L.wdown.get(), d, ffn, h_.get(), N, x_.get(), 1.f));
      }
    }
    if (one_row) {
      cuda::Gemv(lm_head, V, d, {In::kRmsNorm, x_.get(), final_norm_.get(), eps}, 0.f, logits_.get(), s);
    } else {
      cuda::RmsNormBf16(x_.get(), d_rows, R, int(d), final_norm_.get(), eps, sel_.get(), s);
      ATP_RETURN_IF_ERROR(Gemm(lm_head, V, d, sel_.get(), R, logits_.get(), 0.f));
    }
    // The policies' updates once the whole pass is queued, batched items' and per-item ones': an update
    // that needs the host (h2o's votes, read back) then waits for work queued long before, while the card
    // runs the rest, instead of stalling the pass at every layer.
    for (const ForwardItem& it : items)
      for (KvPolicy* kv : it.kv) ATP_RETURN_IF_ERROR(kv->Update());
    ATP_RETURN_IF_ERROR(cuda::LastLaunch("forward"));
    if (!logits) {
      // Waits for the pass, so that it is timed as the forward pass (the scheduler's step metrics) and
      // its errors surface here rather than in the next copy.
      ATP_CUDA_RETURN(cudaStreamSynchronize(s));
      return Status::Ok();
    }
    logits->resize(size_t(R * V));
    ATP_CUDA_RETURN(cudaMemcpy(logits->data(), logits_.get(), size_t(R * V) * sizeof(float), cudaMemcpyDeviceToHost));
    return Status::Ok();
  }

  Status ChooseTokens(std::span<const TokenQuery> queries, std::vector<TokenChoice>* out) override {
    static_assert(cuda::kSampleMaxTop == kMaxTopLogprobs, "the kernel's result holds every top logprob asked for");
    const int V = m_.config().vocab_size;
    const int n = int(queries.size());
    out->resize(queries.size());
    if (n == 0) return Status::Ok();
    // The queries, then the histories of those with a repetition penalty, in one host-to-device copy.
    std::vector<cuda::SampleQuery> qs(static_cast<size_t>(n));
    std::vector<int32_t> hist;
    for (int i = 0; i < n; ++i) {
      const TokenQuery& t = queries[size_t(i)];
      const SamplingParams& p = t.params;
      cuda::SampleQuery& d = qs[size_t(i)];
      d = {t.row, p.top_k, p.temperature, p.top_p, p.min_p, p.repetition_penalty, t.top_logprobs, int32_t(hist.size()), 0,
           p.seed, t.draw};
      if (p.repetition_penalty != 1.0f) {
        if (hist.size() + t.history.size() > size_t(INT32_MAX))
          return Status::InvalidArgument("choose tokens: histories beyond 2^31 tokens in one step");
        d.hist_len = int32_t(t.history.size());
        hist.insert(hist.end(), t.history.begin(), t.history.end());
      }
    }
    const size_t q_bytes = qs.size() * sizeof(cuda::SampleQuery), bytes = q_bytes + hist.size() * sizeof(int32_t);
    staging_in_.resize(bytes);
    std::memcpy(staging_in_.data(), qs.data(), q_bytes);
    if (!hist.empty()) std::memcpy(staging_in_.data() + q_bytes, hist.data(), hist.size() * sizeof(int32_t));
    ATP_RETURN_IF_ERROR(sample_in_.Grow(bytes));
    ATP_RETURN_IF_ERROR(sample_out_.Grow(size_t(n)));
    ATP_RETURN_IF_ERROR(seen_.Grow(size_t(n * cuda::SampleSeenWords(V))));
    ATP_CUDA_RETURN(cudaMemcpy(sample_in_.get(), staging_in_.data(), bytes, cudaMemcpyHostToDevice));
    const auto* d_queries = reinterpret_cast<const cuda::SampleQuery*>(sample_in_.get());
    const auto* d_hist = reinterpret_cast<const int32_t*>(sample_in_.get() + q_bytes);
    cuda::ChooseTokens(logits_.get(), V, d_queries, n, d_hist, seen_.get(), sample_out_.get(), nullptr);
    ATP_RETURN_IF_ERROR(cuda::LastLaunch("choose tokens"));
    results_.resize(size_t(n));
    ATP_CUDA_RETURN(cudaMemcpy(results_.data(), sample_out_.get(), size_t(n) * sizeof(cuda::SampleResult), cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; ++i) {
      const cuda::SampleResult& r = results_[size_t(i)];
      TokenChoice& c = (*out)[size_t(i)];
      c.id = r.id;
      c.logprob = queries[size_t(i)].top_logprobs >= 0 ? r.logprob : 0.f;
      c.top.clear();
      for (int j = 0; j < std::min(queries[size_t(i)].top_logprobs, V); ++j) c.top.emplace_back(r.top_ids[j], r.top_logprobs[j]);
    }
    return Status::Ok();
  }

 private:
  // Y (n, out) f32 = X (n, in) bf16 . W^T + beta * Y, W (out, in) bf16 row-major, through cuBLAS
  // (column-major): Y^T (out x n) = W (as in x out, transposed) . X^T (in x n).
  Status Gemm(const bf16* W, int64_t out, int64_t in, const bf16* X, int64_t n, float* Y, float beta) {
    const float alpha = 1.f;
    return FromCublas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(n), int(in), &alpha, W, CUDA_R_16BF,
                                   int(in), X, CUDA_R_16BF, int(in), &beta, Y, CUDA_R_32F, int(out),
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "gemm");
  }

  // The tensors, stacked row-wise, converted to bf16 on the device (one staging copy each). Tensors of
  // block dtypes (Q8_0, Q4_0, the k-quants, ...) are dequantized to f32 on the host first, whatever
  // their row layout: the GPU pass computes in bf16 either way.
  Status UploadBf16(std::initializer_list<const TensorView*> parts, DeviceArray<bf16>* dst) {
    size_t total = 0, bytes = 0;
    for (auto* t : parts) {  // staging holds one tensor as uploaded: its own bytes, or f32 once dequantized
      total += size_t(t->numel());
      bytes = std::max(bytes, IsBlockDType(t->dtype) ? DTypeBytes(DType::kF32, t->numel()) : t->nbytes());
    }
    ATP_RETURN_IF_ERROR(dst->Grow(total));
    ATP_RETURN_IF_ERROR(staging_.Grow(bytes));
    size_t off = 0;
    std::vector<float> dequantized;
    for (auto* t : parts) {
      DType dt = t->dtype;
      const void* src = t->data;
      if (IsBlockDType(dt)) {
        dequantized.resize(size_t(t->numel()));
        RowsToF32(*t, 0, t->rows(), dequantized.data());  // any row layout (core/interleave.h)
        dt = DType::kF32, src = dequantized.data();
      }
      ATP_CUDA_RETURN(cudaMemcpy(staging_.get(), src, DTypeBytes(dt, t->numel()), cudaMemcpyHostToDevice));
      cuda::ToBf16(dt, staging_.get(), t->numel(), dst->get() + off, nullptr);
      off += size_t(t->numel());
    }
    return cuda::LastLaunch("weight conversion");
  }
  Status UploadF32(const TensorView& t, DeviceArray<float>* dst) {
    std::vector<float> h(size_t(t.numel()));
    ToF32(t.dtype, t.data, h.data(), h.size());
    return Upload(h, dst);
  }
  Status Upload(const std::vector<float>& h, DeviceArray<float>* dst) {
    ATP_RETURN_IF_ERROR(dst->Grow(h.size()));
    ATP_CUDA_RETURN(cudaMemcpy(dst->get(), h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
    return Status::Ok();
  }

  const LlamaModel& m_;
  cublasHandle_t blas_ = nullptr;
  DeviceArray<bf16> embed_, lm_head_;  // lm_head_ empty when tied to the embedding
  DeviceArray<float> final_norm_, inv_freq_;
  std::vector<DeviceLayer> layers_;
  DeviceArray<uint8_t> staging_;  // one weight tensor in its file dtype, during Init

  // Activations of the last call (N rows, R logit rows); grown, never shrunk.
  DeviceArray<int32_t> meta_;                 // (N) tokens, (N) positions, (R) logit rows
  DeviceArray<float> x_;                      // (N, d) residual stream
  DeviceArray<float> xf_;                     // (N, d) normed input of attention, f32, for policies reading X
  DeviceArray<bf16> xb_;                      // (N, d) normed input of a sub-block
  DeviceArray<float> qkv_;                    // (N, qd + 2 kvd)
  DeviceArray<float> q_, k_, v_;              // (N, qd), (N, kvd), (N, kvd) post-RoPE
  DeviceArray<float> att_;                    // (N, qd) attention output
  DeviceArray<bf16> attb_;                    // (N, qd) the same in bf16, Wo's operand
  DeviceArray<float> gu_;                     // (N, 2 ffn) gate | up
  DeviceArray<bf16> h_;                       // (N, ffn) silu(gate) * up
  DeviceArray<bf16> sel_;                     // (R, d) final-normed logit rows
  DeviceArray<float> logits_;                 // (R, vocab)
  cuda::BatchedDecode decode_;                // the step's batched decode items

  // Token choice over logits_ (ChooseTokens): queries | histories in, one result per query out.
  std::vector<uint8_t> staging_in_;
  DeviceArray<uint8_t> sample_in_;
  DeviceArray<uint32_t> seen_;                // (queries, SampleSeenWords) history bitmaps
  DeviceArray<cuda::SampleResult> sample_out_;
  std::vector<cuda::SampleResult> results_;
};

}  // namespace

Result<std::unique_ptr<ForwardBackend>> MakeCudaBackend(const LlamaModel& model) {
  ATP_RETURN_IF_ERROR(CudaDeviceStatus());
  auto f = std::make_unique<CudaForward>(model);
  ATP_RETURN_IF_ERROR(f->Init());
  return std::unique_ptr<ForwardBackend>(std::move(f));
}

}  // namespace atp
