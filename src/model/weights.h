// The tensors of a Llama-family checkpoint, bound by Hugging Face name and checked against the config.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "format/safetensors.h"
#include "model/config.h"

namespace atp {

struct LayerWeights {
  TensorView attn_norm;            // (d)
  TensorView wq, wk, wv, wo;       // (q_dim, d), (kv_dim, d), (kv_dim, d), (d, q_dim)
  TensorView bq, bk, bv;           // (q_dim), (kv_dim), (kv_dim) — only with attention_bias
  TensorView mlp_norm;             // (d)
  TensorView w_gate, w_up, w_down; // (ffn, d), (ffn, d), (d, ffn)
};

struct ModelWeights {
  TensorView embed;     // (vocab, d)
  TensorView lm_head;   // (vocab, d): the embedding when tied
  TensorView final_norm;
  std::vector<LayerWeights> layers;
  // Biases converted to f32 once (they are tiny); indexed like layers.
  std::vector<std::vector<float>> bias_q, bias_k, bias_v;
};

// Binds every tensor the config implies; a missing tensor or a wrong shape is an error naming it.
Result<ModelWeights> BindWeights(const ModelConfig& cfg, const SafeTensors& st);

}  // namespace atp
