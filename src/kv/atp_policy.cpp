// Blocks of B tokens; once a block is complete its principal rows U_r^T K_b and U_r^T V_b are
// computed from a thin SVD of the block's layer input (basis=input) or of its keys (basis=key).
// A query at position i sees block b as principal rows iff (b+1)*B + W <= i, exactly otherwise;
// exact rows are dropped once no future query can see them exactly. With proj=lowrank the tokens of
// block b get block b-1's top input directions V_r as their Q basis (InputBases; block 0 stays exact).
#include "kv/atp_policy.h"

#include <algorithm>

#include "kv/attend.h"
#include "kv/exact_rows.h"
#include "kv/linalg.h"

namespace atp {

namespace {

struct AtpParams {
  int block = 64;
  int rank = 16;
  double tau = 0;       // > 0: rank by energy fraction instead
  int window = 64;      // exact window W, a multiple of block
  bool key_basis = false;
  bool proj_lowrank = false;  // hand out Q bases (InputBases)
  DType dtype = DType::kF32;
};

// The thin SVD X_b = U S V^T of one complete block's layer input, kept while it is needed: U
// compresses the block (basis=input), V_r^T is the Q basis of the next block's tokens (proj=lowrank).
struct BlockInput {
  int64_t block = 0;
  int k = 0, r = 0;         // k = min(B, d_model) singular triplets, r of them kept
  std::vector<float> x;     // (B, d_model) X_b: lets Append reuse an SVD InputBases computed ahead
  std::vector<float> u;     // (B, k) U, the first r columns sign-fixed (basis=input)
  InputBasis basis;         // V_r^T, rank r (proj=lowrank); sign-free: only V_r V_r^T matters
};

class AtpPolicy : public KvPolicy {
 public:
  AtpPolicy(const KvShape& s, const AtpParams& p) : s_(s), p_(p), exact_(p.dtype, s.kv_dim()) {
    for (int h = 0; h < s.n_kv_heads; ++h) principal_.emplace_back(p.dtype, s.head_dim);
    block_rows_.resize(size_t(s.n_kv_heads));
  }

  Status Append(std::span<const int32_t> positions, const float* X, const float* K, const float* V) override {
    if (positions.empty()) return Status::Ok();
    ATP_RETURN_IF_ERROR(CheckContinues(positions[0]));
    DropUnread(positions[0]);
    const int64_t T = int64_t(positions.size());
    exact_.Append(K, V, T);
    for (int64_t i = 0; i < T; ++i) {
      if (KeepsInput()) x_fill_.insert(x_fill_.end(), X + i * s_.d_model, X + (i + 1) * s_.d_model);
      ++length_;
      if (length_ % p_.block == 0) {
        const int64_t b = length_ / p_.block - 1;
        BlockInput* in = nullptr;
        if (KeepsInput()) {
          ATP_ASSIGN_OR_RETURN(in, Input(b, x_fill_));
        }
        ATP_RETURN_IF_ERROR(CompressBlock(b, in));
        x_fill_.clear();
        // Keep only block b's Q basis (the filling block's) and what InputBases computed ahead.
        std::erase_if(inputs_, [&](const auto& e) { return e->block < b || (e->block == b && !p_.proj_lowrank); });
        if (in && p_.proj_lowrank) {  // compressed: only the basis is still needed
          in->x = {};
          in->u = {};
        }
      }
    }
    return Status::Ok();
  }

  Status InputBases(std::span<const int32_t> positions, const float* X, std::span<InputBasis*> out) override {
    std::fill(out.begin(), out.end(), nullptr);
    if (!p_.proj_lowrank || positions.empty()) return Status::Ok();
    ATP_RETURN_IF_ERROR(CheckContinues(positions[0]));
    // Forget SVDs computed ahead by an earlier call that Append did not follow: X may differ now.
    const int64_t filling = length_ / p_.block;
    std::erase_if(inputs_, [&](const auto& e) { return e->block >= filling; });
    BlockInput* in = nullptr;
    for (size_t t = 0; t < positions.size(); ++t) {
      const int64_t src = positions[t] / p_.block - 1;  // the block before the token's own; block 0 has none
      if (src < 0) continue;
      if (!in || in->block != src) {
        ATP_ASSIGN_OR_RETURN(in, SourceBlock(src, X));
      }
      out[t] = &in->basis;
    }
    return Status::Ok();
  }

  Status Attend(std::span<const int32_t> positions, const float* Q, float* O) override {
    const int hd = s_.head_dim;
    AttendSegments(s_, int64_t(positions.size()), Q, O, [&](int64_t t, int kvh, std::vector<KvSegment>* out) {
      const int64_t p = positions[size_t(t)];
      const int64_t nb = CompressedBlocks(p);
      const int64_t np = nb > 0 ? block_rows_[size_t(kvh)][size_t(nb - 1)] : 0;
      if (np > 0) out->push_back({principal_[size_t(kvh)].Keys(0, hd, 0, np), principal_[size_t(kvh)].Values(0, hd, 0, np)});
      const int64_t first = nb * p_.block - exact_begin_;  // >= 0: Append only drops what positions[0] sees compressed
      out->push_back({exact_.Keys(kvh, hd, first, p - nb * p_.block + 1), exact_.Values(kvh, hd, first, p - nb * p_.block + 1)});
    });
    return Status::Ok();
  }

  size_t Bytes() const override {
    size_t n = exact_.Bytes() + x_fill_.size() * sizeof(float);
    for (const auto& e : inputs_) n += (e->x.size() + e->u.size() + e->basis.vt.size() + e->basis.projected.size()) * sizeof(float);
    for (size_t h = 0; h < principal_.size(); ++h)
      n += principal_[h].Bytes() + block_rows_[h].size() * sizeof(int64_t);
    return n;
  }
  int64_t Length() const override { return length_; }

  Status Update() override {
    DropUnread(length_);
    return Status::Ok();
  }

 private:
  // Blocks a query at position p sees compressed: the b with (b+1)*B + W <= p.
  int64_t CompressedBlocks(int64_t p) const { return p >= p_.window ? (p - p_.window) / p_.block : 0; }

  // No query from position `next` on sees blocks below its first uncompressed one exactly: drop their rows.
  void DropUnread(int64_t next) {
    const int64_t drop_to = CompressedBlocks(next) * p_.block;
    if (drop_to > exact_begin_) {
      exact_.DropFront(drop_to - exact_begin_);
      exact_begin_ = drop_to;
    }
  }

  Status CheckContinues(int64_t first) const {
    if (first == length_) return Status::Ok();
    return Status::InvalidArgument("atp: position " + std::to_string(first) + " appended after " + std::to_string(length_) + " tokens");
  }

  // The layer input is the basis source of compression (basis=input) and of Q bases (proj=lowrank).
  bool KeepsInput() const { return !p_.key_basis || p_.proj_lowrank; }

  BlockInput* Find(int64_t b) {
    for (auto& e : inputs_)
      if (e->block == b) return e.get();
    return nullptr;
  }

  // Block b's input SVD for its rows xs (B, d_model): the one already computed from the same rows, or a new one.
  Result<BlockInput*> Input(int64_t b, const std::vector<float>& xs) {
    if (BlockInput* e = Find(b); e && e->x == xs) return e;
    std::erase_if(inputs_, [&](const auto& e) { return e->block == b; });
    auto e = std::make_unique<BlockInput>();
    const int B = p_.block, d = s_.d_model;
    std::vector<float> S, Vt;
    // proj=lowrank needs V's first r rows; with an energy threshold r is known only after the SVD.
    const int vt_rows = !p_.proj_lowrank ? 0 : p_.tau > 0 ? std::min(B, d) : std::min({p_.rank, B, d});
    ATP_RETURN_IF_ERROR(BlockSvd(xs.data(), B, d, &e->u, &S, vt_rows, &Vt));
    e->block = b;
    e->x = xs;
    e->k = std::min(B, d);
    e->r = ChooseRank(S, p_.rank, p_.tau);
    FixColumnSigns(e->u.data(), B, e->k, e->r);
    if (p_.proj_lowrank) {
      e->basis.rank = e->r;
      e->basis.vt.assign(Vt.begin(), Vt.begin() + int64_t(e->r) * d);
    }
    inputs_.push_back(std::move(e));
    return inputs_.back().get();
  }

  // The input SVD of block src, for InputBases of a chunk whose layer input is X (from position length_ on).
  Result<BlockInput*> SourceBlock(int64_t src, const float* X) {
    const int64_t B = p_.block, d = s_.d_model;
    if (src < length_ / B) {  // complete before this chunk: Append kept its basis
      if (BlockInput* e = Find(src)) return e;
      return Status::InvalidArgument("atp: internal: no input basis kept for block " + std::to_string(src));
    }
    // Completes inside this chunk: its rows are the filling ones (x_fill_), then X's.
    const int64_t from_fill = std::max<int64_t>(0, length_ - src * B);
    std::vector<float> xs(x_fill_.begin(), x_fill_.begin() + from_fill * d);  // (B, d_model)
    const float* first = X + (src * B + from_fill - length_) * d;
    xs.insert(xs.end(), first, first + (B - from_fill) * d);
    return Input(src, xs);
  }

  // `in`: block b's input SVD (null with basis=key and proj=dense).
  Status CompressBlock(int64_t b, const BlockInput* in) {
    const int B = p_.block, hd = s_.head_dim, kvd = s_.kv_dim();
    // The block's exact keys and values in f32: (B, kv_dim).
    std::vector<float> kb(size_t(B) * size_t(kvd)), vb(size_t(B) * size_t(kvd));
    const int64_t first = b * B - exact_begin_;
    for (int h = 0; h < s_.n_kv_heads; ++h) {
      KvRows kr = exact_.Keys(h, hd, first, B), vr = exact_.Values(h, hd, first, B);
      for (int i = 0; i < B; ++i) {
        ToF32(kr.dtype, static_cast<const uint8_t*>(kr.data) + size_t(i) * size_t(kr.stride) * DTypeSize(kr.dtype),
              &kb[size_t(i) * size_t(kvd) + size_t(h) * size_t(hd)], size_t(hd));
        ToF32(vr.dtype, static_cast<const uint8_t*>(vr.data) + size_t(i) * size_t(vr.stride) * DTypeSize(vr.dtype),
              &vb[size_t(i) * size_t(kvd) + size_t(h) * size_t(hd)], size_t(hd));
      }
    }
    std::vector<float> key_u, S, Vt;
    const std::vector<float>* U = nullptr;
    int k = 0, r = 0;
    if (!p_.key_basis) U = &in->u, k = in->k, r = in->r;
    std::vector<float> pk, pv;
    for (int h = 0; h < s_.n_kv_heads; ++h) {
      if (p_.key_basis) {  // this head's keys (B, hd)
        std::vector<float> a(size_t(B) * size_t(hd));
        for (int i = 0; i < B; ++i) std::copy_n(&kb[size_t(i) * size_t(kvd) + size_t(h) * size_t(hd)], hd, &a[size_t(i) * size_t(hd)]);
        ATP_RETURN_IF_ERROR(BlockSvd(a.data(), B, hd, &key_u, &S, 0, &Vt));
        U = &key_u, k = std::min(B, hd), r = ChooseRank(S, p_.rank, p_.tau);
        FixColumnSigns(key_u.data(), B, k, r);
      }
      // Principal rows U_r^T K_b and U_r^T V_b for this head: (r, hd) each.
      pk.assign(size_t(r) * size_t(hd), 0.f);
      pv.assign(size_t(r) * size_t(hd), 0.f);
      for (int c = 0; c < r; ++c)
        for (int i = 0; i < B; ++i) {
          const float u = (*U)[size_t(i) * size_t(k) + size_t(c)];
          const float* kr = &kb[size_t(i) * size_t(kvd) + size_t(h) * size_t(hd)];
          const float* vr = &vb[size_t(i) * size_t(kvd) + size_t(h) * size_t(hd)];
          for (int j = 0; j < hd; ++j) {
            pk[size_t(c) * size_t(hd) + size_t(j)] += u * kr[j];
            pv[size_t(c) * size_t(hd) + size_t(j)] += u * vr[j];
          }
        }
      principal_[size_t(h)].Append(pk.data(), pv.data(), r);
      block_rows_[size_t(h)].push_back(principal_[size_t(h)].size());
    }
    return Status::Ok();
  }

  KvShape s_;
  AtpParams p_;
  int64_t length_ = 0;
  ExactRows exact_;                // positions [exact_begin_, length_), all KV heads
  int64_t exact_begin_ = 0;
  std::vector<float> x_fill_;      // (tokens of the filling block, d_model): the basis source
  std::vector<std::unique_ptr<BlockInput>> inputs_;  // the newest complete block's, and any computed ahead
  std::vector<ExactRows> principal_;              // per KV head: principal K/V rows, (rows, hd)
  std::vector<std::vector<int64_t>> block_rows_;  // per KV head: principal rows after block b
};

class AtpFactory : public KvPolicyFactory {
 public:
  explicit AtpFactory(const AtpParams& p) : p_(p) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<AtpPolicy>(s, p_); }
  std::string Describe() const override {
    std::string d = "atp:block=" + std::to_string(p_.block);
    d += p_.tau > 0 ? ",tau=" + std::to_string(p_.tau) : ",rank=" + std::to_string(p_.rank);
    d += ",window=" + std::to_string(p_.window) + ",basis=" + (p_.key_basis ? "key" : "input");
    d += std::string(",proj=") + (p_.proj_lowrank ? "lowrank" : "dense");
    return d + ",dtype=" + std::string(DTypeName(p_.dtype));
  }

 private:
  AtpParams p_;
};

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> MakeAtpFactory(const PolicySpec& spec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"block", "block size B in tokens, default 64"},
                                      {"rank", "principal rows r per block, default 16"},
                                      {"tau", "energy fraction in (0,1]; chooses r per block instead of rank"},
                                      {"window", "exact window W in tokens, a multiple of block, default 64"},
                                      {"basis", "input (the paper's, from the layer input) or key"},
                                      {"proj", "dense, or lowrank: Q of block b's tokens in rank r on block b-1's input basis"},
                                      {"dtype", "storage type f32|f16|bf16, default f32"}}));
  AtpParams p;
  ATP_ASSIGN_OR_RETURN(p.block, spec.Int("block", 64, 1, 1 << 16));
  ATP_ASSIGN_OR_RETURN(p.rank, spec.Int("rank", 16, 1, 1 << 16));
  ATP_ASSIGN_OR_RETURN(p.tau, spec.Float("tau", 0, 0, 1));
  if (spec.Has("tau") && p.tau <= 0) return Status::InvalidArgument("kv policy 'atp': tau must be in (0, 1]");
  if (spec.Has("tau") && spec.Has("rank")) return Status::InvalidArgument("kv policy 'atp': give rank or tau, not both");
  ATP_ASSIGN_OR_RETURN(p.window, spec.Int("window", p.block, 0, 1 << 24));
  if (p.window % p.block != 0)
    return Status::InvalidArgument("kv policy 'atp': window=" + std::to_string(p.window) + " must be a multiple of block=" +
                                   std::to_string(p.block));
  ATP_ASSIGN_OR_RETURN(std::string basis, spec.Choice("basis", "input", {"input", "key"}));
  p.key_basis = basis == "key";
  ATP_ASSIGN_OR_RETURN(std::string proj, spec.Choice("proj", "dense", {"dense", "lowrank"}));
  p.proj_lowrank = proj == "lowrank";
  ATP_ASSIGN_OR_RETURN(p.dtype, spec.Dtype("dtype", DType::kF32));
  return std::shared_ptr<KvPolicyFactory>(std::make_shared<AtpFactory>(p));
}

}  // namespace atp
