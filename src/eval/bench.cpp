#include "eval/bench.h"

#include <cblas.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <thread>

#include "core/thread_pool.h"
#include "engine/sequence.h"
#include "kernels/simd.h"

namespace atp {

namespace {
double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Wraps a policy to time its calls (the KV share of decode).
class TimedPolicy : public KvPolicy {
 public:
  TimedPolicy(std::unique_ptr<KvPolicy> p, double* acc) : p_(std::move(p)), acc_(acc) {}
  Status Append(std::span<const int32_t> pos, const float* X, const float* K, const float* V) override {
    double t = Now();
    Status s = p_->Append(pos, X, K, V);
    *acc_ += Now() - t;
    return s;
  }
  Status InputBases(std::span<const int32_t> pos, const float* X, std::span<InputBasis*> out) override {
    double t = Now();
    Status s = p_->InputBases(pos, X, out);
    *acc_ += Now() - t;
    return s;
  }
  Status Attend(std::span<const int32_t> pos, const float* Q, float* O) override {
    double t = Now();
    Status s = p_->Attend(pos, Q, O);
    *acc_ += Now() - t;
    return s;
  }
  Status Update() override {
    double t = Now();
    Status s = p_->Update();
    *acc_ += Now() - t;
    return s;
  }
  size_t Bytes() const override { return p_->Bytes(); }
  size_t StepLeaseBytes(int64_t tokens) const override { return p_->StepLeaseBytes(tokens); }
  int64_t Length() const override { return p_->Length(); }
  bool ReadsInput() const override { return p_->ReadsInput(); }

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
  bool NeedsWholePrompt() const override { return f_.NeedsWholePrompt(); }

 private:
  const KvPolicyFactory& f_;
  double* acc_;
};
}  // namespace

double MeasureReadBandwidth(size_t bytes, int runs) {
  auto rates = ReadBandwidthRuns(bytes, runs);
  return rates.empty() ? 0 : *std::max_element(rates.begin(), rates.end());
}

// The sum of n floats at p (n a multiple of kReadStep) through 8 vector sums held in registers (the
// tight loop) or, Paced, in memory: each vector read then waits on its sum's store and reload. The
// paced loop has fewer loads in flight, yet on 2026-12-07's Xeon VM it read faster: 18.9 against
// 15.5 GB/s on one core, 38 against 30 on two (the hardware prefetchers then have the line-fill
// buffers to themselves, we suppose). The probe runs both, so the roofline is the machine's fastest
// read whichever loop gets it; until then `--roofline` divided by the tight loop's rate alone.
constexpr int64_t kReadStep = 128;  // floats a step: 8 AVX-512 vectors, 16 AVX2 ones
template <bool Paced>
float SumFloats(const float* p, int64_t n) {
#if defined(ATP_SIMD_WIDTH)
  using namespace simd;
  constexpr int kSums = 8;
  alignas(64) float mem[kSums * kLanes] = {};
  Vec a[kSums];
  for (Vec& v : a) v = Zero();
  for (int64_t i = 0; i < n; i += kSums * kLanes) {
    if constexpr (Paced) {
#pragma GCC unroll 1
      for (int j = 0; j < kSums; ++j) {
        Store(mem + j * kLanes, Add(Load(mem + j * kLanes), Load(p + i + j * kLanes)));
        asm volatile("" : : "r"(mem) : "memory");  // the sum stays in memory
      }
    } else {
      for (int j = 0; j < kSums; ++j) a[j] = Add(a[j], Load(p + i + j * kLanes));
    }
  }
  Vec s = Zero();
  for (int j = 0; j < kSums; ++j) s = Add(s, Add(a[j], Load(mem + j * kLanes)));
  return ReduceAdd(s);
#else
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
#endif
}

float ProbeSum(const float* p, int64_t n, bool paced) { return paced ? SumFloats<true>(p, n) : SumFloats<false>(p, n); }

std::vector<double> ReadBandwidthRuns(size_t bytes, int runs) {
  const size_t n = bytes / sizeof(float) / kReadStep * kReadStep;
  // Anonymous memory on transparent huge pages, like the resident weights decode streams: the
  // fastest reads this machine offers, so the roofline is the honest upper bound.
  void* mem = ::mmap(nullptr, n * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return {};
  ::madvise(mem, n * sizeof(float), MADV_HUGEPAGE);
  std::unique_ptr<float, std::function<void(float*)>> buf(static_cast<float*>(mem),
                                                          [n](float* p) { ::munmap(p, n * sizeof(float)); });
  float* const data = buf.get();
  ThreadPool& pool = ThreadPool::Global();
  pool.ParallelFor(int64_t(n), [&](int64_t b, int64_t e, int) {  // first touch by the reading thread
    for (int64_t i = b; i < e; ++i) data[size_t(i)] = float(i & 7);
  });
  std::vector<double> rates;
  std::vector<float> sinks(static_cast<size_t>(pool.size()));
  auto pass = [&](auto sum) {  // bytes per second of one pass over the buffer, every thread its share
    const double t = Now();
    pool.ParallelFor(int64_t(n) / kReadStep, [&](int64_t b, int64_t e, int th) {
      sinks[size_t(th)] += sum(data + b * kReadStep, (e - b) * kReadStep);
    });
    return double(n * sizeof(float)) / (Now() - t);
  };
  for (int r = 0; r < runs; ++r)  // each run the faster of the two loops
    rates.push_back(std::max(pass(SumFloats<false>), pass(SumFloats<true>)));
  volatile float keep = sinks[0];  // the sums must not be optimized away
  (void)keep;
  return rates;
}

double MeasureSgemm(int m, int n, int k, int runs) {
  // The machine's sgemm: OpenBLAS threaded over every core of the pool, on one call of the full shape.
  // (GemmRows runs OpenBLAS single-threaded per pool thread; restore that afterwards.)
  const int saved_threads = openblas_get_num_threads();
  openblas_set_num_threads(ThreadPool::Global().size());
  std::vector<float> a(size_t(m) * k, 0.5f), b(size_t(n) * k, 0.25f), c(size_t(m) * n);
  std::vector<double> rates;
  for (int r = 0; r < runs + 1; ++r) {
    double t = Now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, c.data(), n);
    if (r > 0) rates.push_back(2.0 * m * n * k / (Now() - t));  // the first run warms up
  }
  openblas_set_num_threads(saved_threads);
  // OpenBLAS's workers keep spinning (sched_yield) for a while after a threaded call; let them go
  // idle so they do not steal cores from whatever is timed next.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return *std::max_element(rates.begin(), rates.end());
}

namespace {

// BenchOptions::random_fill: `n` tokens of N(0,1) layer inputs and keys/values appended to every
// layer's policy, in chunks of bounded memory, as if the model had prefilled them.
Status FillRandom(const LlamaModel& model, Sequence& seq, int n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int chunk = 1024;
  for (int b = 0; b < n; b += chunk) {
    const int t = std::min(chunk, n - b);
    std::vector<int32_t> pos(static_cast<size_t>(t));
    std::iota(pos.begin(), pos.end(), b);
    for (size_t layer = 0; layer < seq.kv().size(); ++layer) {
      const KvShape s = model.kv_shape(int(layer));
      std::vector<float> x(size_t(t) * s.d_model), k(size_t(t) * s.kv_dim()), v(k.size());
      for (auto* buf : {&x, &k, &v})
        for (float& e : *buf) e = normal(rng);
      ATP_RETURN_IF_ERROR(seq.kv()[layer]->Append(pos, x.data(), k.data(), v.data()));
      ATP_RETURN_IF_ERROR(seq.kv()[layer]->Update());
    }
    seq.Advance(t);
  }
  return Status::Ok();
}

}  // namespace

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

  // Prefill: one chunk of prompt_tokens, median over repeats. With roofline, each run is paired with
  // an sgemm measurement taken just before it (same shape class: the MLP's), and the reported
  // fraction is the median of the per-run fractions: work and limit under the same machine load.
  double per_tok = 0;  // matmul FLOPs per token: 2 per projection/MLP weight (the LM head runs on one row)
  for (auto& L : model.weights().layers)
    for (const TensorView* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) per_tok += 2.0 * double(w->numel());
  std::vector<double> times, sgemm_rates, prefill_fractions;
  for (int r = 0; r < opt.repeats; ++r) {
    double sg = 0;
    if (opt.roofline) {
      if (progress) progress("measuring sgemm throughput");
      sg = MeasureSgemm(opt.prompt_tokens, c.intermediate_size, c.hidden_size, 1);
      sgemm_rates.push_back(sg);
    }
    if (progress) progress("prefill " + std::to_string(opt.prompt_tokens) + " tokens, run " + std::to_string(r + 1));
    Sequence seq(model, kv);
    auto toks = random_tokens(opt.prompt_tokens);
    double t = Now();
    ATP_RETURN_IF_ERROR(RunChunk(model, seq, toks, false, &logits));
    times.push_back(Now() - t);
    if (opt.roofline) prefill_fractions.push_back(per_tok * opt.prompt_tokens / times.back() / sg);
  }
  double tp = Median(times);
  res.prefill_tok_s = opt.prompt_tokens / tp;
  res.prefill_flop_s = per_tok * opt.prompt_tokens / tp;

  // Decode: fill the cache to `context`, then time single-token steps. With roofline, the read
  // bandwidth is measured just before and just after each run's steps, as the median of 5 passes
  // over 512 MiB (the same statistic as the decode steps': a best-of would compare a short burst
  // with a sustained rate); the mean of the two bounds that run.
  double attn = 0;
  TimedFactory timed(kv, &attn);
  std::vector<double> steps, attn_steps, bandwidths, decode_fractions;
  auto bandwidth = [&] {
    if (progress) progress("measuring memory bandwidth");
    return Median(ReadBandwidthRuns(size_t(512) << 20, 5));
  };
  for (int r = 0; r < opt.repeats; ++r) {
    if (progress) progress("decode at context " + std::to_string(opt.context) + ", run " + std::to_string(r + 1));
    Sequence seq(model, timed);
    if (opt.random_fill) {
      ATP_RETURN_IF_ERROR(FillRandom(model, seq, opt.context, rng));
    } else {
      auto ctx = random_tokens(opt.context);
      for (int64_t b = 0; b < opt.context; b += 1024) {  // chunked: bounded activation memory
        int64_t n = std::min<int64_t>(1024, opt.context - b);
        ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(ctx.data() + b, size_t(n)), false, &logits));
      }
    }
    const double bw_before = opt.roofline ? bandwidth() : 0;
    std::vector<double> run_steps;
    for (int i = 0; i < opt.decode_tokens; ++i) {
      int32_t t1 = tok(rng);
      attn = 0;
      double t = Now();
      ATP_RETURN_IF_ERROR(RunChunk(model, seq, std::span<const int32_t>(&t1, 1), false, &logits));
      run_steps.push_back(Now() - t);
      attn_steps.push_back(attn);
    }
    steps.insert(steps.end(), run_steps.begin(), run_steps.end());
    res.kv_bytes_per_token = double(seq.kv_bytes()) / seq.length();
    res.bytes_per_decode_token = double(model.weight_bytes()) + double(seq.kv_bytes());
    if (opt.roofline) {
      const double bw = 0.5 * (bw_before + bandwidth());
      bandwidths.push_back(bw);
      decode_fractions.push_back(res.bytes_per_decode_token / Median(run_steps) / bw);
    }
  }
  double td = Median(steps);
  res.decode_tok_s = 1.0 / td;
  res.decode_ms_per_token = td * 1e3;
  double sum = 0;
  for (double t : steps) sum += t;
  res.decode_ms_per_token_mean = steps.empty() ? 0 : sum / double(steps.size()) * 1e3;
  res.attention_ms_per_token = Median(attn_steps) * 1e3;
  if (opt.roofline) {
    res.bandwidth_bytes_s = Median(bandwidths);
    res.sgemm_flop_s = Median(sgemm_rates);
    res.roofline_fraction = Median(decode_fractions);
    res.prefill_sgemm_fraction = Median(prefill_fractions);
  }
  return res;
}

}  // namespace atp
