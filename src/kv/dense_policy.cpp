#include "kv/dense_policy.h"

#include "kv/attend.h"
#include "kv/exact_rows.h"
#include "kv/policy_config.h"

namespace atp {

namespace {

class DensePolicy : public KvPolicy {
 public:
  DensePolicy(const KvShape& shape, DType dtype) : shape_(shape), rows_(shape.store(), dtype, shape.kv_dim()) {}

  Status Append(std::span<const int32_t> positions, const float*, const float* K, const float* V) override {
    if (!positions.empty() && positions[0] != rows_.size())
      return Status::InvalidArgument("dense: position " + std::to_string(positions[0]) + " appended after " +
                                     std::to_string(rows_.size()) + " tokens");
    return rows_.Append(K, V, int64_t(positions.size()));
  }

  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    const int hd = shape_.head_dim;
    AttendSegments(shape_, int64_t(positions.size()), Q, O, [&](int64_t t, int kvh, std::vector<KvSegment>* out) {
      const int64_t n = positions[size_t(t)] + 1;  // causal: keys 0..p
      rows_.View(kvh * hd, 0, n, out);
    });
    return Status::Ok();
  }

  size_t Bytes() const override { return rows_.Bytes(); }
  int64_t Length() const override { return rows_.size(); }
  size_t StepLeaseBytes(int64_t tokens) const override { return rows_.GrowBytes(tokens); }
  bool SharePages(int64_t b, BlockPages* out) override { return rows_.SharePages(b, out), true; }
  void AdoptPages(std::span<const BlockPages> blocks) override { rows_.Adopt(blocks, 0); }

 private:
  KvShape shape_;
  ExactRows rows_;
};

class DenseFactory : public KvPolicyFactory {
 public:
  explicit DenseFactory(DType dtype) : dtype_(dtype) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& shape) const override {
    return std::make_unique<DensePolicy>(shape, dtype_);
  }
  std::string Describe() const override { return DescribeRowForm(ExactForm{dtype_}); }

 private:
  DType dtype_;
};

}  // namespace

std::shared_ptr<KvPolicyFactory> MakeDenseFactory(DType dtype) { return std::make_shared<DenseFactory>(dtype); }

}  // namespace atp
