#include "model/llama.h"

#include <filesystem>

#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace atp {

Result<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->dir_ = dir;
  if (!std::filesystem::is_directory(dir)) return Status::NotFound(dir + ": not a model directory");
  ATP_ASSIGN_OR_RETURN(m->cfg_, LoadModelConfig(dir + "/config.json"));
  ATP_ASSIGN_OR_RETURN(m->st_, SafeTensors::Open(dir));
  auto w = BindWeights(m->cfg_, *m->st_);
  if (!w.ok()) return w.status().WithContext(dir + ": ");
  m->w_ = std::move(w).value();
  m->inv_freq_ = m->cfg_.RopeInvFreq();
  return m;
}

KvShape LlamaModel::kv_shape(int layer) const {
  return {layer, cfg_.hidden_size, cfg_.num_heads, cfg_.num_kv_heads, cfg_.head_dim};
}

size_t LlamaModel::weight_bytes() const {
  size_t n = w_.lm_head.nbytes() + w_.final_norm.nbytes();
  for (auto& L : w_.layers)
    for (const TensorView* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.mlp_norm, &L.w_gate, &L.w_up, &L.w_down})
      n += t->nbytes();
  return n;
}

Status LlamaModel::Forward(std::span<const ForwardItem> items, std::vector<float>* logits) {
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
  std::vector<int32_t> pos(static_cast<size_t>(N));
  std::vector<float> x(static_cast<size_t>(N * d));  // (N, d) residual stream
  {
    int64_t r = 0;
    const size_t row_bytes = size_t(d) * DTypeSize(w_.embed.dtype);
    for (auto& it : items) {
      for (size_t i = 0; i < it.tokens.size(); ++i, ++r) {
        int32_t tok = it.tokens[i];
        if (tok < 0 || tok >= V) return Status::InvalidArgument("forward: token id " + std::to_string(tok) + " outside vocabulary");
        pos[size_t(r)] = it.start_pos + int32_t(i);
        ToF32(w_.embed.dtype, static_cast<const uint8_t*>(w_.embed.data) + size_t(tok) * row_bytes, &x[size_t(r * d)], size_t(d));
      }
    }
  }

  std::vector<float> xb(static_cast<size_t>(N * d));        // (N, d) normed input of a sub-block
  std::vector<float> q(static_cast<size_t>(N * qd));        // (N, n_heads*hd)
  std::vector<float> k(static_cast<size_t>(N * kvd));       // (N, n_kv*hd)
  std::vector<float> v(static_cast<size_t>(N * kvd));       // (N, n_kv*hd)
  std::vector<float> att(static_cast<size_t>(N * qd));      // (N, n_heads*hd) attention output
  std::vector<float> gate(static_cast<size_t>(N * ffn));    // (N, ffn)
  std::vector<float> up(static_cast<size_t>(N * ffn));      // (N, ffn)
  std::vector<float> tmp(static_cast<size_t>(N * d));       // (N, d) projection output before the residual add

  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = w_.layers[size_t(l)];
    const bool bias = c.attention_bias;

    // Attention: x += Wo . attn(rope(Wq xb), rope(Wk xb), Wv xb)
    RmsNorm(x.data(), N, d, L.attn_norm, c.rms_norm_eps, xb.data());
    MatMul(xb.data(), N, L.wq, bias ? w_.bias_q[size_t(l)].data() : nullptr, q.data());
    MatMul(xb.data(), N, L.wk, bias ? w_.bias_k[size_t(l)].data() : nullptr, k.data());
    MatMul(xb.data(), N, L.wv, bias ? w_.bias_v[size_t(l)].data() : nullptr, v.data());
    ApplyRope(q.data(), N, c.num_heads, c.head_dim, pos.data(), inv_freq_.data());
    ApplyRope(k.data(), N, c.num_kv_heads, c.head_dim, pos.data(), inv_freq_.data());
    int64_t r = 0;
    for (auto& it : items) {
      KvPolicy* kv = it.kv[size_t(l)];
      std::span<const int32_t> p(pos.data() + r, it.tokens.size());
      ATP_RETURN_IF_ERROR(kv->Append(p, &xb[size_t(r * d)], &k[size_t(r * kvd)], &v[size_t(r * kvd)]));
      kv->Attend(p, &q[size_t(r * qd)], &att[size_t(r * qd)]);
      r += int64_t(it.tokens.size());
    }
    MatMul(att.data(), N, L.wo, nullptr, tmp.data());
    AddInPlace(x.data(), tmp.data(), N * d);

    // MLP: x += Wdown (silu(Wgate xb) * Wup xb)
    RmsNorm(x.data(), N, d, L.mlp_norm, c.rms_norm_eps, xb.data());
    MatMul(xb.data(), N, L.w_gate, nullptr, gate.data());
    MatMul(xb.data(), N, L.w_up, nullptr, up.data());
    SiluMul(gate.data(), up.data(), N * ffn);
    MatMul(gate.data(), N, L.w_down, nullptr, tmp.data());
    AddInPlace(x.data(), tmp.data(), N * d);
  }

  // Final norm and LM head, only on the rows whose logits were asked for.
  std::vector<float> sel(static_cast<size_t>(n_logit_rows * d));
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
  logits->resize(size_t(n_logit_rows * V));
  MatMul(sel.data(), n_logit_rows, w_.lm_head, nullptr, logits->data());
  return Status::Ok();
}

}  // namespace atp
