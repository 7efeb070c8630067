#include "eval/bench.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>

#include "core/thread_pool.h"
#include "engine/sequence.h"

namespace atp {

namespace {
double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Wraps a policy to time its Attend calls (the attention share of decode).
class TimedPolicy : public KvPolicy {
 public:
  TimedPolicy(std::unique_ptr<KvPolicy> p, double* acc) : p_(std::move(p)), acc_(acc) {}
  Status Append(std::span<const int32_t> pos, const float* X, const float* K, const float* V) override {
    double t = Now();
    Status s = p_->Append(pos, X, K, V);
    *acc_ += Now() - t;
    return s;
  }
  void Attend(std::span<const int32_t> pos, const float* Q, float* O) override {
    double t = Now();
    p_->Attend(pos, Q, O);
    *acc_ += Now() - t;
  }
  size_t Bytes() const override { return p_->Bytes(); }
  int64_t Length() const override { return p_->Length(); }

 private:
  std::unique_ptr<KvPolicy> p_;
  double* acc_;
};

class TimedFactory : public KvPolicyFactory {
 public:
  TimedFactory(const KvPolicyFactory& f, double* acc) : f_(f), acc_(acc) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override {
    return std::make_unique<TimedPolicy>(f_.Create(s), acc_);
  }
  std::string Describe() const override { return f_.Describe(); }

 private:
  const KvPolicyFactory& f_;
  double* acc_;
};
}  // namespace

double MeasureReadBandwidth(size_t bytes, int runs) {
  const size_t n = bytes / sizeof(float);
  std::unique_ptr<float[]> buf(new float[n]);
  ThreadPool& pool = ThreadPool::Global();
  pool.ParallelFor(int64_t(n), [&](int64_t b, int64_t e, int) {  // first touch by the reading thread
    for (int64_t i = b; i < e; ++i) buf[size_t(i)] = float(i & 7);
  });
  std::vector<double> rates;
  std::vector<float> sinks(static_cast<size_t>(pool.size()));
  for (int r = 0; r < runs; ++r) {
    double t = Now();
    pool.ParallelFor(int64_t(n / 64), [&](int64_t b, int64_t e, int th) {
#if defined(__AVX512F__)
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t i = b * 64; i < e * 64; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(&buf[size_t(i)]));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(&buf[size_t(i + 16)]));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(&buf[size_t(i + 32)]));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(&buf[size_t(i + 48)]));
      }
      sinks[size_t(th)] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#else
      float s = 0;
      for (int64_t i = b * 64; i < e * 64; ++i) s += buf[size_t(i)];
      sinks[size_t(th)] = s;
#endif
    });
    rates.push_back(double(n / 64 * 64 * sizeof(float)) / (Now() - t));
  }
  volatile float keep = sinks[0];  // the sums must not be optimized away
  (void)keep;
  return Median(rates);
}

double MeasureSgemm(int m, int n, int k, int runs) {
  std::vector<float> a(size_t(m) * k, 0.5f), b(size_t(n) * k, 0.25f), c(size_t(m) * n);
  std::vector<double> rates;
  for (int r = 0; r < runs + 1; ++r) {
    double t = Now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
    if (r > 0) rates.push_back(2.0 * m * n * k / (Now() - t));  // the first run warms up
  }
  return Median(rates);
}

Result<BenchResult> BenchModel(LlamaModel& model, const KvPolicyFactory& kv, const BenchOptions& opt,
                               const std::function<void(const std::string&)>& progress) {
  const ModelConfig& c = model.config();
  if (opt.prompt_tokens < 1 || opt.context < 1 || opt.decode_tokens < 1 || opt.repeats < 1)
    return Status::InvalidArgument("bench: token counts and repeats must be >= 1");
  if (std::max(opt.prompt_tokens, opt.context + opt.decode_tokens) > c.max_position)
    return Status::InvalidArgument("bench: context + decode tokens exceed max_position_embeddings " + std::to_string(c.max_position));
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> tok(0, c.vocab_size - 1);
  auto random_tokens = [&](int n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& x : t) x = tok(rng);
    return t;
  };
  BenchResult res;
  std::vector<float> logits;

  // Prefill: one chunk of prompt_tokens, median over repeats.
  std::vector<double> times;
  for (int r = 0; r < opt.repeats; ++r) {
    if (progress) progress("prefill " + std::to_string(opt.prompt_tokens) + " tokens, run " + std::to_string(r + 1));
    Sequence seq(model, kv);
    auto toks = random_tokens(opt.prompt_tokens);
    double t = Now();
    ATP_RETURN_IF_ERROR(RunChunk(model, seq, toks, false, &logits));
    times.push_back(Now() - t);
  }
  double tp = Median(times);
  res.prefill_tok_s = opt.prompt_tokens / tp;
  // Matmul FLOPs per token: 2 per weight of the projections and MLP; the LM head runs on one row only.
  double per_tok = 0;
  for (auto& L : model.weights().layers)
    for (const TensorView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) per_tok += 2.0 * double(w->numel());
  res.prefill_flop_s = per_tok * opt.prompt_tokens / tp;

  // Decode: fill the cache to `context`, then time single-token steps.
  double attn = 0;
  TimedFactory timed(kv, &attn);
  std::vector<double> steps, attn_steps;
  for (int r = 0; r < opt.repeats; ++r) {
    if (progress) progress("decode at context " + std::to_string(opt.context) + ", run " + std::to_string(r + 1));
    Sequence seq(model, timed);
    auto ctx = random_tokens(opt.context);
    for (int64_t b = 0; b < opt.context; b += 1024) {  // chunked: bounded activation memory
      int64_t n = std::min<int64_t>(1024, opt.context - b);
      ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(ctx.data() + b, size_t(n)), false, &logits));
    }
    for (int i = 0; i < opt.decode_tokens; ++i) {
      int32_t t1 = tok(rng);
      attn = 0;
      double t = Now();
      ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(&t1, 1), false, &logits));
      steps.push_back(Now() - t);
      attn_steps.push_back(attn);
    }
    res.kv_bytes_per_token = double(seq.kv_bytes()) / seq.length();
    res.bytes_per_decode_token = double(model.weight_bytes()) + double(seq.kv_bytes());
  }
  double td = Median(steps);
  res.decode_tok_s = 1.0 / td;
  res.decode_ms_per_token = td * 1e3;
  res.attention_ms_per_token = Median(attn_steps) * 1e3;
  return res;
}

}  // namespace atp
