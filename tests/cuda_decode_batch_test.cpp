// Batched decode on the GPU (cuda/decode_batch.h, cuda/attention.h's PlanDecodeBatches and
// RunDecodeBatch) against the per-item path it replaces (compiled only with ATP_CUDA; every test
// skips, saying why, without a usable GPU): the kernels batch against alone, the policies' planned
// steps against their own Append/Attend, and a forward pass of many sequences batched against the
// same sequences through the per-item path and one at a time.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/attention.h"
#include "cuda/backend.h"
#include "cuda/check.h"
#include "cuda/decode_batch.h"
#include "engine/sequence.h"
#include "kv/kv_policy.h"
#include "model/llama.h"
#include "cuda_test_util.h"
#include "test_util.h"

namespace atp {
namespace {

using cuda::DeviceArray;

// The rows each sequence of a batch sees at its decode step: short ones (one split), around a chunk
// boundary (64 rows: the smallest chunk), and long ones (many splits).
const std::vector<int> kLengths = {1, 63, 64, 65, 1000, 5000};

// Batched and alone differ only where their chunks do: each split's max, exp(s - m) sums and weighted
// outputs are f32 sums in another grouping (~1e-6 on outputs of size ~1, as decode against the CPU
// in cuda_backend_test.cpp); 1e-4 keeps that margin, while a wrong task, split, head or causal bound
// moves outputs by ~1e-1 or more.
constexpr double kTol = 1e-4;

std::vector<float> Gaussian(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

template <typename T>
DeviceArray<T> Upload(const std::vector<T>& h) {
  DeviceArray<T> d;
  EXPECT_TRUE(d.Grow(h.size()).ok());
  EXPECT_EQ(cudaMemcpy(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}
template <typename T>
std::vector<T> Download(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = a.size() == b.size() ? 0 : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::isnan(a[i]) || std::isnan(b[i]) ? INFINITY : std::fabs(double(a[i]) - b[i]));
  return worst;
}

// Runs a planned batch: descriptors uploaded, a workspace, RunDecodeBatch; synchronizes.
void RunBatch(const cuda::DecodeBatch& b) {
  auto tasks = Upload(b.tasks);
  auto work = Upload(b.work);
  DeviceArray<float> ws;
  ASSERT_TRUE(ws.Grow(size_t(b.ws_floats)).ok());
  cuda::RunDecodeBatch(b, tasks.get(), work.get(), ws.get(), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_TRUE(cuda::LastLaunch("decode batch").ok());
}

// The plan alone (host code: it needs no GPU, whose occupancy it reads as one block per SM when
// there is none): queries of three storage forms, dense rows and ATP-, KIVI- and streaming-style
// visibility, become one batch per form in first-seen order; each task's splits cover its principal
// and exact rows in chunks of the batch's chunk (a multiple of 32 in [64, 32768]); the work list holds
// every (task, split) once, principal ones first; partial results do not overlap and fill ws_floats.
TEST(CudaDecodePlan, TasksAndWorkCoverEveryChunkOnce) {
  const cuda::AttnShape a{32, 8, 64};
  cuda::DeviceRows f32{cuda::KvFormat::kF32}, bf16{cuda::KvFormat::kBF16}, kivi{cuda::KvFormat::kKivi2};
  for (auto* r : {&f32, &bf16, &kivi}) r->dim = 64, r->n_kv = 8;
  std::vector<cuda::DecodeQuery> qs;
  for (int L : kLengths) {
    cuda::DecodeQuery dense;  // rows 0 .. L - 1
    dense.k = dense.v = f32, dense.pos = L - 1;
    cuda::DecodeQuery atp = dense;  // blocks of 16 seen through 4 rows each past a window of 16
    atp.vis.block = 16, atp.vis.window = 16, atp.vis.pk = atp.vis.pv = f32;
    atp.vis.last_pre = cuda::CompressedBlocks(16, 16, L - 1) * 4;
    atp.vis.first = cuda::CompressedBlocks(16, 16, L - 1) * 16 / 2;  // older exact rows dropped
    cuda::DecodeQuery packed = atp;  // KIVI: packed groups of 32, residual 32
    packed.vis.block = 32, packed.vis.window = 31, packed.vis.rows_per_block = 32;
    packed.vis.pk = packed.vis.pv = kivi;
    packed.vis.last_pre = cuda::CompressedBlocks(32, 31, L - 1) * 32, packed.vis.first = 0;
    cuda::DecodeQuery half = dense;
    half.k = half.v = bf16;
    for (const auto& q : {dense, packed, atp, half}) qs.push_back(q);
  }
  for (int forced : {0, 96}) {
    const auto batches = cuda::PlanDecodeBatches(a, qs.data(), qs.size(), 132, forced);
    ASSERT_EQ(batches.size(), 3u);
    EXPECT_EQ(batches[0].f, cuda::KvFormat::kF32);
    EXPECT_EQ(batches[0].p, cuda::KvFormat::kF32);
    EXPECT_EQ(batches[1].p, cuda::KvFormat::kKivi2);
    EXPECT_EQ(batches[2].f, cuda::KvFormat::kBF16);
    EXPECT_EQ(batches[0].tasks.size(), 2 * kLengths.size());  // dense and ATP-style share a form
    for (const cuda::DecodeBatch& b : batches) {
      const int c = b.chunk;
      EXPECT_TRUE(forced ? c == forced : c % 32 == 0 && c >= 64 && c <= 32768) << c;
      std::vector<std::vector<int>> seen(b.tasks.size());
      for (size_t w = 0; w < b.work.size(); ++w) {
        const cuda::DecodeWork& u = b.work[w];
        ASSERT_LT(size_t(u.task), b.tasks.size());
        EXPECT_EQ(u.split < b.tasks[size_t(u.task)].pre_splits, int(w) < b.work_pre) << "principal chunks first";
        seen[size_t(u.task)].push_back(u.split);
      }
      int64_t part = 0;
      for (size_t t = 0; t < b.tasks.size(); ++t) {
        const cuda::DecodeTask& task = b.tasks[t];
        const int64_t pre = (task.pre_rows + c - 1) / c, exact = (task.end - task.begin + c - 1) / c;
        EXPECT_GE(task.end, task.begin);
        EXPECT_EQ(task.pre_splits, pre);
        EXPECT_EQ(task.splits, pre + exact);
        EXPECT_LE(task.splits, b.max_splits);
        std::sort(seen[t].begin(), seen[t].end());
        std::vector<int> all(size_t(task.splits));
        for (int i = 0; i < task.splits; ++i) all[size_t(i)] = i;
        EXPECT_EQ(seen[t], all) << "task " << t;
        EXPECT_EQ(task.part, part);
        part += int64_t(a.n_heads) * task.splits * (a.head_dim + 2);
      }
      EXPECT_EQ(b.ws_floats, part);
      if (forced) continue;
      // One wave: the blocks fit 132 SMs at the most an SM holds (16 of 128 threads), unless the
      // chunk is the longest; and a chunk 32 rows shorter would not fit at the least (one per SM).
      const auto blocks_at = [&](int chunk) {
        int64_t n = 0;
        for (const cuda::DecodeTask& t : b.tasks)
          n += (t.pre_rows + chunk - 1) / chunk + (t.end - t.begin + chunk - 1) / chunk;
        return n * a.n_kv;
      };
      EXPECT_TRUE(c == 32768 || blocks_at(c) <= 132 * 16) << c;
      if (c > 64) {
        EXPECT_GT(blocks_at(c - 32), 132) << c;
      }
    }
    // Rows seen: the dense query at L - 1 reads rows [0, L); the ATP-style one its principal rows
    // and positions from the last compressed block's end, as row indices past `first`.
    const cuda::DecodeTask& dense = batches[0].tasks[0];
    EXPECT_EQ(dense.begin, 0);
    EXPECT_EQ(dense.end, 1);
    const cuda::DecodeTask& atp = batches[0].tasks[1 + 2 * (kLengths.size() - 1)];  // L = 5000
    const int64_t nb = cuda::CompressedBlocks(16, 16, 4999);
    EXPECT_EQ(atp.pre_rows, nb * 4);
    EXPECT_EQ(atp.begin, nb * 16 - nb * 16 / 2);
    EXPECT_EQ(atp.end, 5000 - nb * 16 / 2);
  }
}

// The kernels alone: sequences of kLengths rows in one form, their queries batched (one launch, the
// chunk sized for the batch) against each query alone at the batch's chunk (bit for bit: the same
// kernel does the same arithmetic) and against Attend (the per-item path, its own chunk: kTol).
// Two shapes: llama-3.2-1b's attention (4 query heads per KV head) and head_dim 128 with 8.
TEST(CudaDecodeBatch, KernelsMatchAloneAndAttend) {
  ATP_SKIP_WITHOUT_GPU();
  for (const cuda::AttnShape a : {cuda::AttnShape{32, 8, 64}, cuda::AttnShape{8, 1, 128}}) {
    for (cuda::KvFormat f : {cuda::KvFormat::kF32, cuda::KvFormat::kBF16, cuda::KvFormat::kMxFp8E4M3}) {
      const int kvd = a.n_kv * a.head_dim, qd = a.n_heads * a.head_dim;
      std::vector<DeviceArray<uint8_t>> bufs;
      std::vector<cuda::DecodeQuery> queries;
      DeviceArray<float> q, o;
      ASSERT_TRUE(q.Grow(kLengths.size() * size_t(qd)).ok() && o.Grow(kLengths.size() * size_t(qd)).ok());
      const auto hq = Gaussian(kLengths.size() * size_t(qd), 5);
      ASSERT_EQ(cudaMemcpy(q.get(), hq.data(), hq.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      for (size_t i = 0; i < kLengths.size(); ++i) {
        const int64_t L = kLengths[i];
        const int64_t eb = cuda::TokenElemBytes(f, a.head_dim, a.n_kv);
        const int64_t bytes = L * (eb + cuda::TokenScaleBytes(f, a.head_dim, a.n_kv));
        cuda::DeviceRows rows[2];
        for (auto& r : rows) {
          bufs.emplace_back();
          ASSERT_TRUE(bufs.back().Grow(size_t(bytes)).ok());
          r = {f, bufs.back().get(), cuda::IsMx(f) ? bufs.back().get() + L * eb : nullptr, a.head_dim, a.n_kv};
        }
        auto src = Upload(Gaussian(size_t(L) * kvd * 2, uint32_t(i) + 11));
        cuda::StoreKv(rows[0], rows[1], 0, src.get(), src.get() + L * kvd, L, nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        cuda::DecodeQuery dq;
        dq.k = rows[0], dq.v = rows[1], dq.pos = L - 1, dq.q = q.get() + i * qd, dq.o = o.get() + i * qd;
        queries.push_back(dq);
      }
      const std::string what = "shape " + std::to_string(a.n_heads) + "/" + std::to_string(a.n_kv) + "/" +
                               std::to_string(a.head_dim) + " form " + std::to_string(int(f));
      auto batches = cuda::PlanDecodeBatches(a, queries.data(), queries.size(), cuda::SmCount());
      ASSERT_EQ(batches.size(), 1u) << what;  // one form: one launch
      RunBatch(batches[0]);
      const auto batched = Download(o.get(), kLengths.size() * size_t(qd));

      DeviceArray<float> ws;
      for (size_t i = 0; i < queries.size(); ++i) {
        auto alone = cuda::PlanDecodeBatches(a, &queries[i], 1, cuda::SmCount(), batches[0].chunk);
        RunBatch(alone[0]);
        const auto got = Download(queries[i].o, size_t(qd));
        EXPECT_EQ(std::memcmp(got.data(), &batched[i * qd], size_t(qd) * 4), 0)
            << what << ": length " << kLengths[i] << " alone at chunk " << batches[0].chunk
            << " differs from the batch";

        ASSERT_TRUE(ws.Grow(size_t(cuda::AttendWorkspaceFloats(a, kLengths[i], cuda::SmCount()))).ok());
        cuda::Attend(a, queries[i].k, queries[i].v, {}, queries[i].q, 1, queries[i].pos, queries[i].o, ws.get(),
                     cuda::SmCount(), nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const auto per_item = Download(queries[i].o, size_t(qd));
        const std::vector<float> mine(batched.begin() + long(i * qd), batched.begin() + long((i + 1) * qd));
        EXPECT_LE(MaxAbsDiff(mine, per_item), kTol) << what << ": length " << kLengths[i];
      }
      std::cerr << "[cuda] decode batch " << what << ": chunk " << batches[0].chunk << ", " << batches[0].work.size()
                << " work units\n";
    }
  }
}

// Policies whose steps are planned: every spec's sequences of kLengths rows (after a prefill of all
// but the last) in one BatchedDecode, 20 steps, against twins of the same spec fed the same rows
// through Append/Attend/Update. 20 steps cross block and group ends (ATP block 16: background
// compressions, seen 16 steps later; basis=input and basis=key, with and without keep='s kept rows;
// KIVI group 16 and 32, residual 32 and 0) and streaming's window.
// Outputs agree within kTol each step; afterwards both twins hold the same rows bit for bit: one more
// step through Append/Attend on each gives identical outputs, and Bytes() and Length() agree.
TEST(CudaDecodeBatch, PlannedPoliciesMatchPerItemTwins) {
  ATP_SKIP_WITHOUT_GPU();
  const KvShape shape{0, 256, 4, 2, 64};  // ref-5m's attention
  const std::vector<std::string> specs = {"dense", "dense:dtype=bf16", "mx:fmt=fp8_e4m3", "mx:fmt=nvfp4",
                                          "atp:block=16,rank=4,window=16", "atp:block=16,tau=0.9,window=0",
                                          "atp:block=16,rank=4,window=16,basis=key", "atp:block=16,rank=4,window=16,keep=3",
                                          "atp:block=16,rank=4,window=16,basis=key,keep=2",
                                          "kivi:bits=4,group=16,residual=32", "kivi:bits=2,group=32,residual=0",
                                          "streaming:budget=64,sinks=4", "snapkv:budget=48,window=8,pool=5",
                                          "h2o:budget=48,recent=16+mx:fmt=fp8_e4m3"};
  const int qd = shape.q_dim(), kvd = shape.kv_dim(), d = shape.d_model, steps = 20;
  struct Seq {
    std::string spec;
    std::unique_ptr<KvPolicy> alone, batched;
    KvPolicy* kv = nullptr;  // batched.get(), for ForwardItem's span
    int32_t pos = 0;
  };
  std::vector<Seq> seqs;
  for (const std::string& spec : specs) {
    auto f = ParseCudaKvPolicy(spec);
    ASSERT_TRUE(f.ok()) << spec << ": " << f.status().ToString();
    for (int L : kLengths) {
      Seq s{spec, (*f)->Create(shape), (*f)->Create(shape)};
      s.kv = s.batched.get();
      // The prefill: L - 1 tokens in chunks of up to 1024, the same rows into both twins.
      for (int p = 0; p < L - 1;) {
        const int n = std::min(1024, L - 1 - p);
        std::vector<int32_t> ps(static_cast<size_t>(n));
        for (int j = 0; j < n; ++j) ps[size_t(j)] = p + j;
        const auto k = Gaussian(size_t(n) * kvd, uint32_t(p) + 1), v = Gaussian(size_t(n) * kvd, uint32_t(p) + 2);
        const auto x = Gaussian(size_t(n) * d, uint32_t(p) + 3), q = Gaussian(size_t(n) * qd, uint32_t(p) + 4);
        std::vector<float> out(q.size());
        for (KvPolicy* kv : {s.alone.get(), s.batched.get()}) {
          ASSERT_TRUE(kv->Append(ps, x.data(), k.data(), v.data()).ok()) << spec;
          ASSERT_TRUE(kv->Attend(ps, q.data(), out.data()).ok()) << spec;
          ASSERT_TRUE(kv->Update().ok()) << spec;
        }
        p += n;
      }
      s.pos = L - 1;
      seqs.push_back(std::move(s));
    }
  }
  const size_t N = seqs.size();
  DeviceArray<float> dk, dv, dx, dq, dout;
  for (auto [buf, n] : {std::pair{&dk, N * kvd}, {&dv, N * kvd}, {&dx, N * d}, {&dq, N * qd}, {&dout, N * qd}})
    ASSERT_TRUE(buf->Grow(size_t(n)).ok());
  cuda::BatchedDecode batch;
  double worst = 0;
  for (int step = 0; step <= steps; ++step) {
    const auto k = Gaussian(N * kvd, 100 + step), v = Gaussian(N * kvd, 200 + step);
    const auto x = Gaussian(N * d, 300 + step), q = Gaussian(N * qd, 400 + step);
    // Twins through Append/Attend/Update (host buffers, staged by the policy).
    std::vector<float> want(N * qd);
    for (size_t i = 0; i < N; ++i) {
      const int32_t p = seqs[i].pos;
      std::span<const int32_t> ps(&p, 1);
      ASSERT_TRUE(seqs[i].alone->Append(ps, &x[i * d], &k[i * kvd], &v[i * kvd]).ok());
      ASSERT_TRUE(seqs[i].alone->Attend(ps, &q[i * qd], &want[i * qd]).ok());
      ASSERT_TRUE(seqs[i].alone->Update().ok());
    }
    std::vector<float> got(N * qd);
    if (step < steps) {  // batched
      for (auto [buf, h] : {std::pair{dk.get(), &k}, {dv.get(), &v}, {dx.get(), &x}, {dq.get(), &q}})
        ASSERT_EQ(cudaMemcpy(buf, h->data(), h->size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      std::vector<int32_t> tokens(N, 0);
      std::vector<ForwardItem> items;
      std::vector<int64_t> rows;
      for (size_t i = 0; i < N; ++i) {
        items.push_back(
            {std::span<KvPolicy* const>(&seqs[i].kv, 1), std::span<const int32_t>(&tokens[i], 1), seqs[i].pos});
        rows.push_back(int64_t(i));
      }
      ASSERT_TRUE(batch.Plan(items, rows, {dk.get(), dv.get(), dx.get(), dq.get(), dout.get(), kvd, d, qd},
                             {shape.n_heads, shape.n_kv_heads, shape.head_dim}, 1).ok());
      for (size_t i = 0; i < N; ++i) ASSERT_TRUE(batch.Batched(i)) << seqs[i].spec;
      ASSERT_TRUE(batch.RunLayer(0).ok());
      for (size_t i = 0; i < N; ++i) ASSERT_TRUE(seqs[i].batched->Update().ok());  // as the forward pass, after it
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      got = Download(dout.get(), N * qd);
    } else {  // the last step through Append/Attend on both: the same rows give the same bits
      for (size_t i = 0; i < N; ++i) {
        const int32_t p = seqs[i].pos;
        std::span<const int32_t> ps(&p, 1);
        ASSERT_TRUE(seqs[i].batched->Append(ps, &x[i * d], &k[i * kvd], &v[i * kvd]).ok());
        ASSERT_TRUE(seqs[i].batched->Attend(ps, &q[i * qd], &got[i * qd]).ok());
        ASSERT_TRUE(seqs[i].batched->Update().ok());
      }
    }
    for (size_t i = 0; i < N; ++i) {
      const std::vector<float> g(got.begin() + long(i * qd), got.begin() + long((i + 1) * qd));
      const std::vector<float> w(want.begin() + long(i * qd), want.begin() + long((i + 1) * qd));
      const std::string what =
          seqs[i].spec + " at position " + std::to_string(seqs[i].pos) + ", step " + std::to_string(step);
      if (step < steps) {
        const double diff = MaxAbsDiff(g, w);
        worst = std::max(worst, diff);
        EXPECT_LE(diff, kTol) << what;
      } else {
        EXPECT_EQ(std::memcmp(g.data(), w.data(), size_t(qd) * 4), 0) << what << ": the twins' rows differ";
        EXPECT_EQ(seqs[i].batched->Bytes(), seqs[i].alone->Bytes()) << what;
        EXPECT_EQ(seqs[i].batched->Length(), seqs[i].alone->Length()) << what;
      }
      ++seqs[i].pos;
    }
  }
  std::cerr << "[cuda] planned policies, " << N << " sequences batched: max abs err " << worst << " against per-item\n";
}

// A KvPolicy that forwards every call and is no DecodePlanner: the forward pass runs it per item.
class PerItem : public KvPolicy {
 public:
  explicit PerItem(KvPolicy* p) : p_(p) {}
  Status Append(std::span<const int32_t> ps, const float* X, const float* K, const float* V) override {
    return p_->Append(ps, X, K, V);
  }
  Status Attend(std::span<const int32_t> ps, const float* Q, float* O) override { return p_->Attend(ps, Q, O); }
  Status Update() override { return p_->Update(); }
  bool ReadsInput() const override { return p_->ReadsInput(); }
  size_t Bytes() const override { return p_->Bytes(); }
  int64_t Length() const override { return p_->Length(); }

 private:
  KvPolicy* p_;
};

// ref-5m on the GPU, sequences of several policies and prompt lengths decoding together: every step
// of all of them in one Forward (batched attention) against (a) the same batches with each policy
// behind PerItem (the per-item path, the same GEMMs: logits differ only through the attention's
// summation order, ~1e-6 on its outputs, but those and every later activation are rounded to bf16
// before a GEMM, where such a difference now and then flips a rounding (2^-9 relative) and the flips
// spread; a third of the GPU pass's whole bf16 budget, 0.05, bounds that, while a wrong row, item or
// head moves logits by more than 1) and (b) each sequence alone, one Forward per step (N = 1 takes
// the GEMV path, other summation orders and roundings: kGpuTol as cuda_backend_test.cpp's GPU against
// the CPU, and the same greedy token wherever the top two differ by more). The tokens fed are fixed,
// so that all three see the same inputs.
TEST(CudaModel, BatchedDecodeMatchesPerItemAndAlone) {
  ATP_SKIP_WITHOUT_GPU();
  ATP_SKIP_WITHOUT_SHARED();
  auto m = LlamaModel::Load(testing::kRefModel);
  ASSERT_TRUE(m.ok());
  auto backend = MakeCudaBackend(**m);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  (*m)->SetBackend(std::move(backend).value());
  LlamaModel& model = **m;
  const int V = model.config().vocab_size, steps = 12;
  constexpr double kPathTol = 0.05, kGpuTol = 0.15;
  const std::vector<std::pair<std::string, int>> seq_specs = {
      {"dense", 1}, {"dense", 63}, {"dense:dtype=bf16", 64}, {"mx:fmt=fp8_e4m3", 65},
      {"atp:block=16,rank=8,window=16", 300}, {"kivi:bits=4,group=16,residual=32", 200},
      {"streaming:budget=64,sinks=4", 150}, {"dense", 1000},
      // residual= runs per item beside the batch (DecodePlanner::Batches), its old tokens rebuilt per call.
      {"atp:block=32,rank=4,window=64,basis=key,residual=kivi2,dtype=bf16,rope=pre", 300}};
  struct Run3 {
    std::unique_ptr<Sequence> batched, per_item, alone;
    std::vector<std::unique_ptr<KvPolicy>> wrappers;
    std::vector<KvPolicy*> wrapped;
    std::vector<int32_t> tokens;
  };
  std::vector<Run3> runs;
  std::mt19937 rng(9);
  for (const auto& [spec, len] : seq_specs) {
    auto f = ParseCudaKvPolicy(spec);
    ASSERT_TRUE(f.ok()) << spec;
    Run3 r{std::make_unique<Sequence>(model, **f), std::make_unique<Sequence>(model, **f),
           std::make_unique<Sequence>(model, **f), {}, {}, {}};
    for (KvPolicy* p : r.per_item->kv()) r.wrappers.push_back(std::make_unique<PerItem>(p));
    for (auto& w : r.wrappers) r.wrapped.push_back(w.get());
    for (int i = 0; i < len + steps; ++i) r.tokens.push_back(int32_t(rng() % uint32_t(V)));
    std::vector<float> logits;
    for (Sequence* s : {r.batched.get(), r.per_item.get(), r.alone.get()})
      ASSERT_TRUE(RunChunk(model, *s, std::span<const int32_t>(r.tokens.data(), size_t(len)), false, &logits).ok());
    runs.push_back(std::move(r));
  }
  double worst_path = 0, worst_alone = 0;
  for (int step = 0; step < steps; ++step) {
    std::vector<ForwardItem> batched, per_item;
    for (auto& r : runs) {
      const int32_t p = r.batched->length();
      const std::span<const int32_t> tok(&r.tokens[size_t(p)], 1);
      batched.push_back({r.batched->kv(), tok, p});
      per_item.push_back({std::span<KvPolicy* const>(r.wrapped), tok, p});
    }
    std::vector<float> got, path;
    ASSERT_TRUE(model.Forward(batched, &got).ok());
    ASSERT_TRUE(model.Forward(per_item, &path).ok());
    for (size_t i = 0; i < runs.size(); ++i) {
      Run3& r = runs[i];
      r.batched->Advance(1), r.per_item->Advance(1);
      std::vector<float> alone;
      ASSERT_TRUE(RunChunk(model, *r.alone, std::span<const int32_t>(&r.tokens[size_t(r.alone->length())], 1), false,
                           &alone).ok());
      const std::vector<float> g(got.begin() + long(i) * V, got.begin() + long(i + 1) * V);
      const std::vector<float> w(path.begin() + long(i) * V, path.begin() + long(i + 1) * V);
      const double dp = MaxAbsDiff(g, w), da = MaxAbsDiff(g, alone);
      worst_path = std::max(worst_path, dp), worst_alone = std::max(worst_alone, da);
      const std::string what = seq_specs[i].first + " prompt " + std::to_string(seq_specs[i].second) + " step " +
                               std::to_string(step);
      EXPECT_LE(dp, kPathTol) << what << " against the per-item path";
      EXPECT_LE(da, kGpuTol) << what << " against the sequence alone";
      const int ag = int(std::max_element(g.begin(), g.end()) - g.begin());
      const int aa = int(std::max_element(alone.begin(), alone.end()) - alone.begin());
      if (ag != aa) {
        EXPECT_LE(alone[size_t(aa)] - alone[size_t(ag)], kGpuTol) << what << ": greedy token differs";
      }
    }
  }
  std::cerr << "[cuda] forward of " << runs.size() << " sequences batched: max abs logit err " << worst_path
            << " against the per-item path, " << worst_alone << " against each alone\n";
}

}  // namespace
}  // namespace atp
