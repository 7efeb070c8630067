#include "kv/composite.h"

#include <algorithm>
#include <cstring>

#include "kv/exact_rows.h"
#include "kv/kivi_codec.h"
#include "kv/mx_codec.h"

namespace atp {

namespace {

class ExactStore : public RowStore {
 public:
  ExactStore(PageStore& pages, DType dt, int kw, int vw) : rows_(pages, dt, kw, vw) {}
  Status Append(const float* K, int64_t ks, const float* V, int64_t vs, int64_t n) override { return rows_.Append(K, ks, V, vs, n); }
  Status Retain(const std::vector<char>& keep) override { return rows_.Retain(keep.data()); }
  void View(int64_t begin, int64_t end, int64_t, std::vector<KvSegment>* out) const override {
    rows_.View(0, begin, end - begin, out);
  }
  int64_t size() const override { return rows_.size(); }
  size_t Bytes() const override { return rows_.Bytes(); }
  size_t AppendBytes(int64_t n) const override { return rows_.GrowBytes(n); }
  bool SharePages(int64_t b, BlockPages* out) override { return rows_.SharePages(b, out), true; }
  size_t Adopt(std::span<const BlockPages> blocks, size_t at) override { return rows_.Adopt(blocks, at); }

 private:
  ExactRows rows_;
};

class ExactCodec : public RowCodec {
 public:
  explicit ExactCodec(DType dt) : dt_(dt) {}
  std::unique_ptr<RowStore> NewStore(PageStore& pages, int kw, int vw) const override {
    return std::make_unique<ExactStore>(pages, dt_, kw, vw);
  }

 private:
  DType dt_;
};

class CodecPolicy : public KvPolicy {
 public:
  CodecPolicy(const KvShape& s, const RowCodec& codec) : s_(s) {
    for (int h = 0; h < s.n_kv_heads; ++h) heads_.push_back(codec.NewStore(s.store(), s.head_dim, s.head_dim));
  }

  Status Append(std::span<const int32_t> positions, const float*, const float* K, const float* V) override {
    if (positions.empty()) return Status::Ok();
    if (positions[0] != length_)
      return Status::InvalidArgument("kv policy: position " + std::to_string(positions[0]) + " appended after " +
                                     std::to_string(length_) + " tokens");
    const int64_t T = int64_t(positions.size()), kvd = s_.kv_dim();
    for (int h = 0; h < s_.n_kv_heads; ++h)
      ATP_RETURN_IF_ERROR(heads_[size_t(h)]->Append(K + h * s_.head_dim, kvd, V + h * s_.head_dim, kvd, T));
    length_ += T;
    return Status::Ok();
  }

  Status Update() override {
    for (auto& h : heads_) h->Trim();
    return Status::Ok();
  }

  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    AttendSegments(s_, int64_t(positions.size()), Q, O, [&](int64_t t, int kvh, std::vector<KvSegment>* out) {
      const int64_t n = positions[size_t(t)] + 1;  // causal: rows 0..p
      heads_[size_t(kvh)]->View(0, n, n, out);
    });
    return Status::Ok();
  }

  size_t Bytes() const override {
    size_t n = 0;
    for (auto& h : heads_) n += h->Bytes();
    return n;
  }
  int64_t Length() const override { return length_; }
  size_t StepLeaseBytes(int64_t tokens) const override {
    size_t n = 0;
    for (auto& h : heads_) n += h->AppendBytes(tokens);
    return n;
  }

  // A block's pages are its rows' pages in every head's store, when the codec keeps rows as such.
  bool SharePages(int64_t b, BlockPages* out) override {
    for (auto& h : heads_)
      if (!h->SharePages(b, out)) return false;
    return true;
  }
  void AdoptPages(std::span<const BlockPages> blocks) override {
    size_t at = 0;
    for (auto& h : heads_) at = h->Adopt(blocks, at);
    length_ = int64_t(blocks.size()) * PagedRows::kRowsPerPage;
  }

 private:
  KvShape s_;
  int64_t length_ = 0;
  std::vector<std::unique_ptr<RowStore>> heads_;  // per KV head: rows (tokens, head_dim)
};

class CodecPolicyFactory : public KvPolicyFactory {
 public:
  explicit CodecPolicyFactory(const RowForm& f) : form_(f), codec_(MakeRowCodec(f)) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<CodecPolicy>(s, *codec_); }
  std::string Describe() const override { return DescribeRowForm(form_); }

 private:
  RowForm form_;
  std::shared_ptr<const RowCodec> codec_;
};

}  // namespace

void DecodeRows(const RowStore& store, int64_t begin, int64_t end, int k_width, int v_width, float* K, float* V) {
  std::vector<KvSegment> segs;
  store.View(begin, end, store.size(), &segs);
  // One side of a segment: packed rows decode through the kernels' scalar reference, plain ones convert.
  auto side = [](const PackedRows& packed, const KvRows& plain, int64_t j, int width, float* out) {
    if (packed.layout != PackedLayout::kNone) return DecodePackedRow(packed, j, out);
    ToF32(plain.dtype, static_cast<const uint8_t*>(plain.data) + size_t(j * plain.stride) * DTypeSize(plain.dtype), out,
          size_t(width));
  };
  int64_t row = 0;
  for (const KvSegment& s : segs)
    for (int64_t j = 0; j < s.count(); ++j, ++row) {
      side(s.pk, s.k, j, k_width, K + row * k_width);
      if (V) side(s.pv, s.v, j, v_width, V + row * v_width);
    }
}

std::shared_ptr<const RowCodec> MakeExactCodec(DType dtype) { return std::make_shared<ExactCodec>(dtype); }

std::shared_ptr<const RowCodec> MakeRowCodec(const RowForm& form) {
  if (auto* e = std::get_if<ExactForm>(&form)) return MakeExactCodec(e->dtype);
  if (auto* m = std::get_if<MxForm>(&form)) return MakeMxCodec(m->fmt);
  return MakeKiviCodec(std::get<KiviParams>(form));
}

std::shared_ptr<KvPolicyFactory> MakeCodecPolicyFactory(const RowForm& form) {
  return std::make_shared<CodecPolicyFactory>(form);
}

}  // namespace atp
