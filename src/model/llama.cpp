#include "model/llama.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "core/interleave.h"
#include "core/thread_pool.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/gguf_model.h"

namespace atp {

Result<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir, const LoadOptions& opt) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->dir_ = dir;
  if (gguf::IsGgufFile(dir)) {
    ATP_ASSIGN_OR_RETURN(std::shared_ptr<const gguf::GgufFile> g, gguf::GgufFile::Open(dir));
    ATP_ASSIGN_OR_RETURN(m->cfg_, ConfigFromGguf(*g));
    ATP_ASSIGN_OR_RETURN(m->st_, TensorsFromGguf(g, m->cfg_));
  } else {
    if (!std::filesystem::is_directory(dir))
      return Status::NotFound(dir + ": not a model directory or a .gguf file");
    ATP_ASSIGN_OR_RETURN(m->cfg_, LoadModelConfig(dir + "/config.json"));
    ATP_ASSIGN_OR_RETURN(m->st_, SafeTensors::Open(dir));
  }
  auto w = BindWeights(m->cfg_, *m->st_);
  if (!w.ok()) return w.status().WithContext(dir + ": ");
  m->w_ = std::move(w).value();
  m->inv_freq_ = m->cfg_.RopeInvFreq();
  if (opt.resident_weights || opt.weights_dtype)
    ATP_RETURN_IF_ERROR(m->MakeResident(opt.weights_dtype, opt.interleave_rows).WithContext(dir + ": "));
  return m;
}

LlamaModel::~LlamaModel() {
  if (resident_) ::munmap(resident_, resident_bytes_);
}

Status LlamaModel::MakeResident(std::optional<DType> matrices, bool interleave_rows) {
  // Every tensor a decode step reads; the input embedding only when it is also the LM head (untied,
  // it is read one row per token and stays in the mapping) or when the matrices change dtype.
  std::vector<TensorView*> views = {&w_.lm_head, &w_.final_norm};
  for (auto& L : w_.layers)
    for (TensorView* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.mlp_norm, &L.w_gate, &L.w_up, &L.w_down})
      views.push_back(t);
  const bool tied = w_.embed.data == w_.lm_head.data;
  if (matrices && !tied) views.push_back(&w_.embed);
  struct Copy {
    TensorView from;
    DType to;
    size_t offset;  // in the arena
    bool interleave;  // rows in groups of 8 for the decode GEMV (LoadOptions::interleave_rows)
  };
  std::map<const void*, Copy> copies;  // by source address: tied tensors are copied once
  size_t total = 0;
  for (TensorView* t : views) {
    if (copies.count(t->data)) continue;
    // A matrix whose rows do not fill whole 32-element blocks keeps its dtype (see LoadOptions).
    const bool convert = matrices && t->shape.size() == 2 && CheckDTypeCount(*matrices, t->cols()).ok();
    const DType to = convert ? *matrices : t->dtype;
    // Only the matrices MatMul reads (an untied input embedding is read by the row).
    const bool interleave = interleave_rows && t != &w_.embed && t->shape.size() == 2 && CanInterleave(to) &&
                            t->rows() >= kInterleaveRows;
    copies[t->data] = {*t, to, total, interleave};
    total += (DTypeBytes(to, t->numel()) + 63) & ~size_t(63);  // 64-byte aligned rows start
  }
  const size_t kHuge = size_t(2) << 20;
  resident_bytes_ = (total + kHuge - 1) / kHuge * kHuge;
  void* p = ::mmap(nullptr, resident_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    resident_bytes_ = 0;
    return Status::ResourceExhausted("cannot allocate " + std::to_string(total) + " bytes for resident weights");
  }
  resident_ = p;
  ::madvise(p, resident_bytes_, MADV_HUGEPAGE);  // best effort: without THP the copy still works
  auto* base = static_cast<uint8_t*>(p);
  std::vector<const Copy*> jobs;
  for (auto& [src, c] : copies) jobs.push_back(&c);
  // Copy (or convert) in parallel: each thread first-touches (and so places) the pages it writes.
  ThreadPool::Global().ParallelFor(int64_t(jobs.size()), [&](int64_t b, int64_t e, int) {
    std::vector<float> row;  // (cols) f32, a conversion's staging row
    std::vector<uint8_t> staging;  // a converted matrix before it is interleaved
    for (int64_t i = b; i < e; ++i) {
      const Copy& c = *jobs[size_t(i)];
      uint8_t* dst = base + c.offset;
      if (c.to == c.from.dtype && !c.interleave) {
        std::memcpy(dst, c.from.data, c.from.nbytes());
        continue;
      }
      const int64_t cols = c.from.cols();
      const auto* src = static_cast<const uint8_t*>(c.from.data);
      if (c.to != c.from.dtype) {  // converted rows go straight to dst, or to staging to be interleaved from
        staging.resize(c.interleave ? DTypeBytes(c.to, c.from.numel()) : 0);
        uint8_t* to = c.interleave ? staging.data() : dst;
        row.resize(size_t(cols));
        for (int64_t r = 0; r < c.from.rows(); ++r) {
          ToF32(c.from.dtype, src + DTypeBytes(c.from.dtype, r * cols), row.data(), size_t(cols));
          FromF32(c.to, row.data(), to + DTypeBytes(c.to, r * cols), size_t(cols));
        }
        src = to;
      }
      if (c.interleave) InterleaveRows(c.to, src, c.from.rows(), cols, dst);
    }
  });
  for (TensorView* t : views) {
    const Copy& c = copies.at(t->data);
    t->data = base + c.offset;
    t->dtype = c.to;
    t->interleaved = c.interleave;
  }
  if (tied) w_.embed = w_.lm_head;
  return Status::Ok();
}

namespace {

// q, k, v (rows, out) = xb W^T (+ bias) for every row of xb (N, d), except that a row whose policy
// gave an input basis V (atp proj=lowrank, docs/design.md section 4) gets its Q as (xb V)(W_q V)^T:
// r*(d + q_dim) flops instead of d*q_dim, plus W_q V once per basis (cached in the basis). K and V
// always see the exact input: the policy's keys, exact window and principal keys stay what they were.
void ProjectQkv(const float* xb, int64_t N, int64_t d, std::span<InputBasis* const> basis, std::span<const MatMulJob, 3> qkv,
                std::vector<float>* coef) {
  if (std::none_of(basis.begin(), basis.end(), [](const InputBasis* b) { return b != nullptr; })) {
    MatMulShared(xb, N, qkv);
    return;
  }
  MatMulShared(xb, N, qkv.subspan<1>());
  const MatMulJob& q = qkv[0];
  const int64_t qd = q.w->rows();
  for (int64_t a = 0, e = 0; a < N; a = e) {  // runs of rows [a, e) sharing one basis
    for (e = a + 1; e < N && basis[size_t(e)] == basis[size_t(a)]; ++e) {
    }
    InputBasis* B = basis[size_t(a)];
    if (!B) {
      MatMul(xb + a * d, e - a, *q.w, q.bias, q.y + a * qd);
      continue;
    }
    const int64_t r = B->rank;
    if (B->projected.empty()) {
      std::vector<float> t(size_t(r * qd));  // (r, q_dim) = V^T W_q^T
      MatMul(B->vt.data(), r, *q.w, nullptr, t.data());
      B->projected.resize(t.size());         // (q_dim, r) = W_q V
      for (int64_t i = 0; i < r; ++i)
        for (int64_t o = 0; o < qd; ++o) B->projected[size_t(o * r + i)] = t[size_t(i * qd + o)];
    }
    coef->resize(size_t((e - a) * r));  // (rows, r) = xb V
    MatMul(xb + a * d, e - a, TensorView{DType::kF32, {r, d}, B->vt.data()}, nullptr, coef->data());
    MatMul(coef->data(), e - a, TensorView{DType::kF32, {qd, r}, B->projected.data()}, q.bias, q.y + a * qd);
  }
}

}  // namespace

KvShape LlamaModel::kv_shape(int layer) const {
  return {layer, cfg_.hidden_size, cfg_.num_heads, cfg_.num_kv_heads, cfg_.head_dim, inv_freq_};
}

size_t LlamaModel::weight_bytes() const {
  size_t n = w_.lm_head.nbytes() + w_.final_norm.nbytes();
  for (auto& L : w_.layers)
    for (const TensorView* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.mlp_norm, &L.w_gate, &L.w_up, &L.w_down})
      n += t->nbytes();
  return n;
}

Status LlamaModel::ChooseTokens(std::span<const TokenQuery> queries, std::vector<TokenChoice>* out) {
  for (const TokenQuery& q : queries) ATP_RETURN_IF_ERROR(q.Check(logit_rows_));
  if (backend_) return backend_->ChooseTokens(queries, out);
  const size_t V = size_t(cfg_.vocab_size);
  out->resize(queries.size());
  for (size_t i = 0; i < queries.size(); ++i)
    (*out)[i] = chooser_.Choose(std::span<const float>(scratch_.logits.data() + size_t(queries[i].row) * V, V), queries[i]);
  return Status::Ok();
}

Status LlamaModel::Forward(std::span<const ForwardItem> items, std::vector<float>* logits) {
  logit_rows_ = 0;  // until this call has succeeded
  if (backend_) {
    int64_t rows = 0;
    for (auto& it : items) rows += it.all_logits ? int64_t(it.tokens.size()) : 1;
    ATP_RETURN_IF_ERROR(backend_->Forward(items, logits));
    logit_rows_ = rows;
    return Status::Ok();
  }
  const ModelConfig& c = cfg_;
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.intermediate_size, V = c.vocab_size;

  // Rows of the batch: every item's tokens back to back, with their positions.
  int64_t N = 0, n_logit_rows = 0;
  for (auto& it : items) {
    if (it.tokens.empty()) return Status::InvalidArgument("forward: empty token chunk");
    if (int(it.kv.size()) != c.num_layers) return Status::InvalidArgument("forward: one KV policy per layer needed");
    N += int64_t(it.tokens.size());
    n_logit_rows += it.all_logits ? int64_t(it.tokens.size()) : 1;
  }
  Scratch& S = scratch_;
  S.pos.resize(static_cast<size_t>(N));
  S.x.resize(static_cast<size_t>(N * d));
  std::vector<int32_t>& pos = S.pos;  // (N)
  std::vector<float>& x = S.x;        // (N, d) residual stream
  {
    int64_t r = 0;
    for (auto& it : items) {
      for (size_t i = 0; i < it.tokens.size(); ++i, ++r) {
        int32_t tok = it.tokens[i];
        if (tok < 0 || tok >= V) return Status::InvalidArgument("forward: token id " + std::to_string(tok) + " outside vocabulary");
        pos[size_t(r)] = it.start_pos + int32_t(i);
        RowsToF32(w_.embed, tok, 1, &x[size_t(r * d)]);  // rows are whole blocks (checked at bind)
      }
    }
  }

  for (auto [buf, n] : {std::pair{&S.xb, N * d}, {&S.q, N * qd}, {&S.k, N * kvd}, {&S.v, N * kvd}, {&S.att, N * qd},
                        {&S.gate, N * ffn}, {&S.up, N * ffn}, {&S.tmp, N * d}})
    buf->resize(static_cast<size_t>(n));
  std::vector<float>& xb = S.xb;      // (N, d) normed input of a sub-block
  std::vector<float>& q = S.q;        // (N, n_heads*hd)
  std::vector<float>& k = S.k;        // (N, n_kv*hd)
  std::vector<float>& v = S.v;        // (N, n_kv*hd)
  std::vector<float>& att = S.att;    // (N, n_heads*hd) attention output
  std::vector<float>& gate = S.gate;  // (N, ffn)
  std::vector<float>& up = S.up;      // (N, ffn)
  std::vector<float>& tmp = S.tmp;    // (N, d) projection output before the residual add
  S.basis.resize(static_cast<size_t>(N));
  std::vector<InputBasis*>& basis = S.basis;  // (N) each row's Q input basis, null: exact

  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    const bool bias = c.attention_bias;

    // Attention: x += Wo . attn(rope(Wq xb), rope(Wk xb), Wv xb)
    RmsNorm(x.data(), N, d, L.attn_norm, c.rms_norm_eps, xb.data());
    int64_t r = 0;
    for (auto& it : items) {  // the policies say which rows take a low-rank Q, and on which basis
      std::span<const int32_t> p(pos.data() + r, it.tokens.size());
      ATP_RETURN_IF_ERROR(it.kv[size_t(l)]->InputBases(p, &xb[size_t(r * d)], std::span(basis).subspan(size_t(r), p.size())));
      r += int64_t(it.tokens.size());
    }
    const MatMulJob qkv[3] = {{&L.wq, bias ? w_.bias_q[size_t(l)].data() : nullptr, q.data()},
                              {&L.wk, bias ? w_.bias_k[size_t(l)].data() : nullptr, k.data()},
                              {&L.wv, bias ? w_.bias_v[size_t(l)].data() : nullptr, v.data()}};
    ProjectQkv(xb.data(), N, d, basis, qkv, &S.coef);
    ApplyRope(q.data(), N, c.num_heads, c.head_dim, pos.data(), inv_freq_.data());
    ApplyRope(k.data(), N, c.num_kv_heads, c.head_dim, pos.data(), inv_freq_.data());
    r = 0;
    for (auto& it : items) {
      KvPolicy* kv = it.kv[size_t(l)];
      std::span<const int32_t> p(pos.data() + r, it.tokens.size());
      ATP_RETURN_IF_ERROR(kv->Append(p, &xb[size_t(r * d)], &k[size_t(r * kvd)], &v[size_t(r * kvd)]));
      ATP_RETURN_IF_ERROR(kv->Attend(p, &q[size_t(r * qd)], &att[size_t(r * qd)]));
      ATP_RETURN_IF_ERROR(kv->Update());
      r += int64_t(it.tokens.size());
    }
    MatMul(att.data(), N, L.wo, nullptr, tmp.data());
    AddInPlace(x.data(), tmp.data(), N * d);

    // MLP: x += Wdown (silu(Wgate xb) * Wup xb)
    RmsNorm(x.data(), N, d, L.mlp_norm, c.rms_norm_eps, xb.data());
    const MatMulJob gate_up[2] = {{&L.w_gate, nullptr, gate.data()}, {&L.w_up, nullptr, up.data()}};
    MatMulShared(xb.data(), N, gate_up);
    SiluMul(gate.data(), up.data(), N * ffn);
    MatMul(gate.data(), N, L.w_down, nullptr, tmp.data());
    AddInPlace(x.data(), tmp.data(), N * d);
  }

  // Final norm and LM head, only on the rows whose logits were asked for.
  S.sel.resize(static_cast<size_t>(n_logit_rows * d));
  std::vector<float>& sel = S.sel;  // (n_logit_rows, d)
  {
    int64_t r = 0, s = 0;
    for (auto& it : items) {
      int64_t n = int64_t(it.tokens.size());
      int64_t first = it.all_logits ? r : r + n - 1;
      int64_t count = it.all_logits ? n : 1;
      RmsNorm(&x[size_t(first * d)], count, d, w_.final_norm, c.rms_norm_eps, &sel[size_t(s * d)]);
      s += count;
      r += n;
    }
  }
  S.logits.resize(size_t(n_logit_rows * V));
  MatMul(sel.data(), n_logit_rows, w_.lm_head, nullptr, S.logits.data());
  if (logits) logits->assign(S.logits.begin(), S.logits.end());
  logit_rows_ = n_logit_rows;
  return Status::Ok();
}

}  // namespace atp
