// The KvPolicy interface: what one sequence keeps of one layer's keys and values, and how its
// queries attend to it. The forward pass only calls Append then Attend; a policy never reaches
// into the model. Thread-safety: a policy belongs to one sequence; calls on it are serialized.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace atp {

// Geometry of one layer's attention, fixed for the model.
struct KvShape {
  int layer = 0;
  int d_model = 0;      // width of the layer input X
  int n_heads = 0;      // query heads
  int n_kv_heads = 0;   // key/value heads (grouped-query attention)
  int head_dim = 0;
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;

  // New tokens at `positions` (ascending, continuing what was appended before):
  // X (T, d_model) the layer input after the input RMSNorm, K and V (T, kv_dim) post-RoPE.
  // The policy copies what it keeps; the buffers are the caller's.
  virtual Status Append(std::span<const int32_t> positions, const float* X, const float* K, const float* V) = 0;

  // O (T, q_dim) = attention of post-RoPE queries Q (T, q_dim), causal: a query at position p
  // uses only what was appended for positions <= p. All `positions` must have been appended.
  virtual void Attend(std::span<const int32_t> positions, const float* Q, float* O) = 0;

  // Exact bytes held for this sequence and layer (data plus per-block metadata).
  virtual size_t Bytes() const = 0;
  // Number of tokens appended so far.
  virtual int64_t Length() const = 0;
};

// Builds one policy per layer of a sequence from a parsed policy string.
class KvPolicyFactory {
 public:
  virtual ~KvPolicyFactory() = default;
  virtual std::unique_ptr<KvPolicy> Create(const KvShape& shape) const = 0;
  // Whether this policy can serve a layer of this shape (e.g. calibrated bases match the model).
  virtual Status CheckShape(const KvShape& shape) const { return Status::Ok(); }
  // The canonical policy string, e.g. "dense:dtype=f32" (for reports).
  virtual std::string Describe() const = 0;
};

// Parses a policy string such as "dense", "dense:dtype=bf16" or "A+B". Errors list valid names and keys.
// `model_dir` lets policies find files stored beside the model (calibrated bases); may be empty.
Result<std::shared_ptr<KvPolicyFactory>> ParseKvPolicy(const std::string& spec, const std::string& model_dir = "");

}  // namespace atp
