#include "model/weights.h"

namespace atp {

namespace {

Status Bind(const SafeTensors& st, const std::string& name, std::vector<int64_t> shape, TensorView* out) {
  const TensorView* t = st.Find(name);
  if (!t) return Status::NotFound("missing tensor '" + name + "'");
  TensorView want;
  want.shape = shape;
  if (t->shape != shape)
    return Status::InvalidArgument("tensor '" + name + "' has shape " + t->ShapeString() + ", config implies " +
                                   want.ShapeString());
  // A Q8_0/Q4_0 tensor stores each row as whole 32-element blocks; kernels index rows by that.
  if (Status s = CheckDTypeCount(t->dtype, shape.back()); !s.ok())
    return Status::InvalidArgument("tensor '" + name + "' " + want.ShapeString() + ": " + s.message());
  *out = *t;
  return Status::Ok();
}

std::vector<float> BiasF32(const TensorView& t) {
  std::vector<float> b(size_t(t.numel()));
  ToF32(t.dtype, t.data, b.data(), b.size());
  return b;
}

}  // namespace

Result<ModelWeights> BindWeights(const ModelConfig& c, const SafeTensors& st) {
  ModelWeights w;
  const int64_t d = c.hidden_size, V = c.vocab_size, ffn = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim();
  ATP_RETURN_IF_ERROR(Bind(st, "model.embed_tokens.weight", {V, d}, &w.embed));
  ATP_RETURN_IF_ERROR(Bind(st, "model.norm.weight", {d}, &w.final_norm));
  if (c.tie_word_embeddings && !st.Find("lm_head.weight")) {
    w.lm_head = w.embed;
  } else {
    ATP_RETURN_IF_ERROR(Bind(st, "lm_head.weight", {V, d}, &w.lm_head));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    // One layer at a time: a config claiming more layers than the file holds (up to 2^30) fails on the
    // first missing tensor instead of allocating for all of them first.
    LayerWeights& L = w.layers.emplace_back();
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ATP_RETURN_IF_ERROR(Bind(st, p + "input_layernorm.weight", {d}, &L.attn_norm));
    ATP_RETURN_IF_ERROR(Bind(st, p + "self_attn.q_proj.weight", {qd, d}, &L.wq));
    ATP_RETURN_IF_ERROR(Bind(st, p + "self_attn.k_proj.weight", {kvd, d}, &L.wk));
    ATP_RETURN_IF_ERROR(Bind(st, p + "self_attn.v_proj.weight", {kvd, d}, &L.wv));
    ATP_RETURN_IF_ERROR(Bind(st, p + "self_attn.o_proj.weight", {d, qd}, &L.wo));
    ATP_RETURN_IF_ERROR(Bind(st, p + "post_attention_layernorm.weight", {d}, &L.mlp_norm));
    ATP_RETURN_IF_ERROR(Bind(st, p + "mlp.gate_proj.weight", {ffn, d}, &L.w_gate));
    ATP_RETURN_IF_ERROR(Bind(st, p + "mlp.up_proj.weight", {ffn, d}, &L.w_up));
    ATP_RETURN_IF_ERROR(Bind(st, p + "mlp.down_proj.weight", {d, ffn}, &L.w_down));
    if (c.attention_bias) {
      ATP_RETURN_IF_ERROR(Bind(st, p + "self_attn.q_proj.bias", {qd}, &L.bq));
      ATP_RETURN_IF_ERROR(Bind(st, p + "self_attn.k_proj.bias", {kvd}, &L.bk));
      ATP_RETURN_IF_ERROR(Bind(st, p + "self_attn.v_proj.bias", {kvd}, &L.bv));
      w.bias_q.push_back(BiasF32(L.bq));
      w.bias_k.push_back(BiasF32(L.bk));
      w.bias_v.push_back(BiasF32(L.bv));
    }
  }
  return w;
}

}  // namespace atp
