#include "kv/lowrank_policy.h"

#include <algorithm>

#include "kv/attend.h"
#include "kv/composite.h"
#include "kv/exact_rows.h"
#include "kv/linalg.h"

namespace atp {

namespace {

// One basis of one KV head, and where the coefficients of the tokens expressed in it start in the head's
// store. The basis lives in the policy: a calibrated one in its copy of the model's, an online block's
// in a page row (LowRankPolicy).
struct BasisBlock {
  const float* pk = nullptr;   // (head_dim, rk): q_map
  const float* pvt = nullptr;  // (rv, head_dim): out_map = P_v^T
  int64_t first = 0;           // its first coefficient row
};

std::vector<float> Transpose(const float* M, int rows, int cols) {
  std::vector<float> t(size_t(rows) * size_t(cols));
  for (int i = 0; i < rows; ++i)
    for (int c = 0; c < cols; ++c) t[size_t(c) * size_t(rows) + size_t(i)] = M[size_t(i) * size_t(cols) + size_t(c)];
  return t;
}
// coef (n, r) = rows (n, d; stride) . P (d, r)
void Project(const float* rows, int64_t n, int stride, const float* P, int d, int r, float* coef) {
  for (int64_t j = 0; j < n; ++j)
    for (int c = 0; c < r; ++c) {
      float s = 0;
      for (int i = 0; i < d; ++i) s += rows[j * stride + i] * P[size_t(i) * size_t(r) + size_t(c)];
      coef[j * r + c] = s;
    }
}

class LowRankPolicy : public KvPolicy {
 public:
  LowRankPolicy(const KvShape& s, const LowRankParams& p) : s_(s), p_(p), exact_(s.store(), p.dtype, s.kv_dim()) {
    blocks_.resize(size_t(s.n_kv_heads));
    const int d = s.head_dim;
    const std::shared_ptr<const RowCodec> codec = MakeRowCodec(p.codec.value_or(ExactForm{p.dtype}));
    for (int h = 0; h < s.n_kv_heads; ++h) {
      coef_.push_back(codec->NewStore(s.store(), p.rk, p.rv));
      if (p.online) {  // a page row per block: (d, rk) P_k, then (rv, d) P_v^T
        bases_.emplace_back(s.store(), size_t(d) * size_t(p.rk + p.rv) * sizeof(float), PagedRows::RowsPerPageFor(p.block));
        continue;
      }
      const float* kb = p.basis->k[size_t(s.layer)].data() + size_t(h) * size_t(d) * size_t(d);
      const float* vb = p.basis->v[size_t(s.layer)].data() + size_t(h) * size_t(d) * size_t(d);
      calib_.push_back(FirstBasisColumns(kb, d, p.rk));
      calib_.push_back(Transpose(FirstBasisColumns(vb, d, p.rv).data(), d, p.rv));
      blocks_[size_t(h)].push_back({calib_[calib_.size() - 2].data(), calib_.back().data(), 0});
    }
  }

  Status Append(std::span<const int32_t> positions, const float*, const float* K, const float* V) override {
    if (positions.empty()) return Status::Ok();
    if (positions[0] != length_)
      return Status::InvalidArgument("lowrank: position " + std::to_string(positions[0]) + " appended after " +
                                     std::to_string(length_) + " tokens");
    const int64_t T = int64_t(positions.size());
    const int d = s_.head_dim, kvd = s_.kv_dim();
    if (!p_.online) {  // every token goes straight to coefficients in the calibrated basis
      std::vector<float> c(size_t(T) * size_t(p_.rk)), e(size_t(T) * size_t(p_.rv));
      for (int h = 0; h < s_.n_kv_heads; ++h) {
        BasisBlock& bb = blocks_[size_t(h)][0];
        Project(K + h * d, T, kvd, bb.pk, d, p_.rk, c.data());
        Project(V + h * d, T, kvd, Transpose(bb.pvt, p_.rv, d).data(), d, p_.rv, e.data());
        ATP_RETURN_IF_ERROR(coef_[size_t(h)]->Append(c.data(), p_.rk, e.data(), p_.rv, T));
      }
      length_ += T;
      return Status::Ok();
    }
    // Online: tokens stay exact until their block completes; then the block also gets coefficients
    // in its own basis. Queries see a block as coefficients only from position (b+1)*B on, so its
    // exact rows are dropped once positions[0] reaches that point.
    DropUnread(positions[0]);
    ATP_RETURN_IF_ERROR(exact_.Append(K, V, T));
    length_ += T;
    while (int64_t(blocks_[0].size()) < length_ / p_.block) ATP_RETURN_IF_ERROR(CompressBlock(int64_t(blocks_[0].size())));
    return Status::Ok();
  }

  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    const int d = s_.head_dim;
    AttendSegments(s_, int64_t(positions.size()), Q, O, [&](int64_t t, int kvh, std::vector<KvSegment>* out) {
      const int64_t p = positions[size_t(t)];
      if (!p_.online) {  // one basis; every token p' <= p is a coefficient row
        Coefficients(kvh, blocks_[size_t(kvh)][0], p + 1, out);
        return;
      }
      const int64_t nb = p / p_.block;  // blocks b with (b+1)*B <= p
      for (int64_t b = 0; b < nb; ++b) {
        Coefficients(kvh, blocks_[size_t(kvh)][size_t(b)], p_.block, out);
      }
      const int64_t first = nb * p_.block - exact_begin_;  // >= 0: Append only drops what positions[0] sees compressed
      exact_.View(kvh * d, first, p - nb * p_.block + 1, out);
    });
    return Status::Ok();
  }

  size_t Bytes() const override {
    size_t n = exact_.Bytes();
    for (auto& c : coef_) n += c->Bytes();
    for (auto& b : bases_) n += size_t(b.size()) * b.row_bytes();  // online; calibrated bases belong to the model
    return n;
  }
  int64_t Length() const override { return length_; }
  // Calibrated: a coefficient row per token. Online: the exact rows, and for each block the step
  // completes a page row of bases and B coefficient rows per KV head.
  size_t StepLeaseBytes(int64_t tokens) const override {
    const int64_t blocks = p_.online ? (length_ + tokens) / p_.block - int64_t(blocks_[0].size()) : 0;
    size_t n = p_.online ? exact_.GrowBytes(tokens) : 0;
    for (size_t h = 0; h < coef_.size(); ++h) {
      n += coef_[h]->AppendBytes(p_.online ? blocks * p_.block : tokens);
      if (p_.online) n += bases_[h].GrowBytes(blocks);
    }
    return n;
  }

  Status Update() override {
    if (p_.online) DropUnread(length_);
    return Status::Ok();
  }

 private:
  // Exact rows of the blocks that queries from position `next` on see as coefficients only.
  void DropUnread(int64_t next) {
    const int64_t drop_to = (next / p_.block) * p_.block;
    if (drop_to > exact_begin_) {
      exact_.DropFront(drop_to - exact_begin_);
      exact_begin_ = drop_to;
    }
  }

  // Segments of basis bb's first n coefficient rows (in the codec's form) of KV head h, read through its bases.
  void Coefficients(int h, const BasisBlock& bb, int64_t n, std::vector<KvSegment>* out) const {
    const size_t first = out->size();
    coef_[size_t(h)]->View(bb.first, bb.first + n, bb.first + n, out);
    for (size_t i = first; i < out->size(); ++i) {
      KvSegment& s = (*out)[i];
      s.q_map = bb.pk;
      s.k_dim = p_.rk;
      s.out_map = bb.pvt;
      s.v_dim = p_.rv;
    }
  }

  // Online mode: SVD of each head's block keys and values gives the block's bases.
  Status CompressBlock(int64_t b) {
    const int B = p_.block, d = s_.head_dim;
    std::vector<float> kb(size_t(B) * size_t(d)), vb(size_t(B) * size_t(d));
    std::vector<float> c(size_t(B) * size_t(p_.rk)), e(size_t(B) * size_t(p_.rv));
    for (int h = 0; h < s_.n_kv_heads; ++h) {
      exact_.SliceToF32(h * d, d, b * B - exact_begin_, B, kb.data(), vb.data());
      PagedRows& bases = bases_[size_t(h)];
      ATP_RETURN_IF_ERROR(bases.Grow(1));
      float* pk = reinterpret_cast<float*>(bases.Row(bases.size() - 1));  // (d, rk)
      float* pvt = pk + size_t(d) * size_t(p_.rk);                          // (rv, d)
      ATP_RETURN_IF_ERROR(OnlineBlockBases(kb.data(), vb.data(), B, d, p_.rk, p_.rv, pk, pvt, c.data(), e.data()));
      blocks_[size_t(h)].push_back({pk, pvt, coef_[size_t(h)]->size()});
      ATP_RETURN_IF_ERROR(coef_[size_t(h)]->Append(c.data(), p_.rk, e.data(), p_.rv, B));
    }
    return Status::Ok();
  }

  KvShape s_;
  LowRankParams p_;
  int64_t length_ = 0;
  std::vector<std::unique_ptr<RowStore>> coef_;  // per KV head: the coefficient rows of all its bases, in order
  std::vector<std::vector<BasisBlock>> blocks_;  // per KV head: bases in position order
  std::vector<std::vector<float>> calib_;        // calib: per KV head its P_k, then its P_v^T
  std::vector<PagedRows> bases_;                 // online: per KV head, row b: block b's P_k and P_v^T
  ExactRows exact_;                              // online: positions [exact_begin_, length_), all heads
  int64_t exact_begin_ = 0;
};

class LowRankFactory : public KvPolicyFactory {
 public:
  explicit LowRankFactory(const LowRankParams& p) : p_(p) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<LowRankPolicy>(s, p_); }
  Status CheckShape(const KvShape& s) const override {
    // A rank beyond head_dim only adds zero columns that every query still multiplies (fuzz_kv_policy
    // found rv=366 with block=1 running for seconds).
    if (p_.rk > s.head_dim || p_.rv > s.head_dim)
      return Status::InvalidArgument("kv policy 'lowrank': rk and rv must be <= head_dim " + std::to_string(s.head_dim));
    if (p_.online) return Status::Ok();
    if (s.layer >= p_.basis->layers || s.n_kv_heads != p_.basis->kv_heads || s.head_dim != p_.basis->head_dim)
      return Status::InvalidArgument("kv policy 'lowrank': basis file does not match the model (layer " +
                                     std::to_string(s.layer) + "; recalibrate with atp calibrate)");
    return Status::Ok();
  }
  std::string Describe() const override { return KvPolicyConfig{p_}.Describe(); }

 private:
  LowRankParams p_;
};

}  // namespace

std::shared_ptr<KvPolicyFactory> MakeLowRankFactory(const LowRankParams& p) { return std::make_shared<LowRankFactory>(p); }

Status OnlineBlockBases(const float* K, const float* V, int B, int d, int rk, int rv, float* pk, float* pvt, float* c,
                        float* e) {
  std::vector<float> U, S, Vt;
  const int k = std::min(B, d);
  // Right singular vectors (d x k): principal directions of the rows. P_k: the first min(rk, k) columns
  // the top directions of the keys, the rest zeros (a block shorter than rk has only k).
  ATP_RETURN_IF_ERROR(ThinSvd(K, B, d, &U, &S, &Vt));
  std::fill_n(pk, size_t(d) * size_t(rk), 0.f);
  for (int col = 0; col < std::min(rk, k); ++col)
    for (int i = 0; i < d; ++i) pk[size_t(i) * size_t(rk) + size_t(col)] = Vt[size_t(col) * size_t(d) + size_t(i)];
  ATP_RETURN_IF_ERROR(ThinSvd(V, B, d, &U, &S, &Vt));
  std::fill_n(pvt, size_t(rv) * size_t(d), 0.f);
  std::copy(Vt.begin(), Vt.begin() + size_t(std::min(rv, k)) * size_t(d), pvt);
  Project(K, B, d, pk, d, rk, c);
  Project(V, B, d, Transpose(pvt, rv, d).data(), d, rv, e);
  return Status::Ok();
}

std::vector<float> FirstBasisColumns(const float* M, int d, int r) {
  std::vector<float> out(size_t(d) * size_t(r));
  for (int i = 0; i < d; ++i)
    for (int c = 0; c < r; ++c) out[size_t(i) * size_t(r) + size_t(c)] = M[size_t(i) * size_t(d) + size_t(c)];
  return out;
}

}  // namespace atp
