// Blocks of B tokens; once a block is complete its principal rows U_r^T K_b and U_r^T V_b are
// computed from a thin SVD of the block's layer input (basis=input) or of its keys (basis=key).
// A query at position i sees block b as principal rows iff (b+1)*B + W <= i, exactly otherwise;
// exact rows are dropped once no future query can see them exactly. With proj=lowrank the tokens of
// block b get block b-1's top input directions V_r as their Q basis (InputBases; block 0 stays exact).
//
// What mixing destroys (issue 19), two options that change what a compressed block holds:
// - keep=E: the E tokens of the block that its top-r directions summarize worst (largest residual
//   energy sum_{c>=r} (U_ic S_c)^2 of the block's SVD, i.e. ||x_i - x_i V_r V_r^T||^2 for basis=input,
//   of the key row for basis=key) stay exact; the principal rows then summarize the other B-E tokens
//   alone (a second SVD of their rows, rank min(r, B-E)), so no token is counted twice. keep=B is dense.
// - residual=CODEC (GEAR): each summarized token's residual K_i - (U_r U_r^T K)_i (and V's) is kept
//   through a kivi or mx row codec, with U_r's rows; a query then reads every summarized token
//   reconstructed, (U_r)_i (U_r^T K) + dequantized residual, instead of the r principal rows. Attend
//   reads them without forming them: scores (q P_k^T) . (U_r)_i plus q . residual on the packed rows, values
//   (sum_i a_i (U_r)_i) P_v plus the packed residuals' weighted sum (Summarize; its f32 copies of the
//   principal rows are a scratch of the call, freed, so Bytes() counts only what is held).
// - rope=pre (Palu, ShadowKV; needs residual=): the keys are compressed before RoPE. Append's keys come
//   rotated at their positions (KvShape::rope_inv_freq gives the angles); CompressBlock turns each back
//   at its own position, so the SVD (basis=key), the principal rows and the residuals see pre-RoPE keys,
//   and a principal key no longer mixes rotations of different positions. Each rebuilt key is rotated
//   at its own position before a query reads it; a principal row stands for many positions and has no
//   angle, hence residual=. Values, kept rows (keep=E, stored as appended) and the window are unchanged.
//   With basis=input this is the paper's own argument made exact: pre-RoPE keys are linear in the input
//   (K = X W_k), so U_r U_r^T K = (X V_r V_r^T) W_k are the keys of the block's rank-r input; after RoPE
//   they are not. With basis=key, U_r U_r^T K = K V_r V_r^T: per head, a rank-r key basis of the block.
#include "kv/atp_policy.h"

#include <algorithm>
#include <numeric>
#include <optional>

#include "kv/attend.h"
#include "kv/block_visibility.h"
#include "kv/composite.h"
#include "kv/exact_rows.h"
#include "kv/kivi_codec.h"
#include "kv/linalg.h"
#include "kv/mx_codec.h"
#include "kv/rope_rows.h"

namespace atp {

namespace {

// The thin SVD X_b = U S V^T of one complete block's layer input, kept while it is needed: U
// compresses the block (basis=input), V_r^T is the Q basis of the next block's tokens (proj=lowrank).
struct BlockInput {
  int64_t block = 0;
  int k = 0, r = 0;         // k = min(B, d_model) singular triplets, r of them kept
  std::vector<float> x;     // (B, d_model) X_b: lets Append reuse an SVD InputBases computed ahead
  std::vector<float> u;     // (B, k) U, the first r columns sign-fixed (basis=input)
  std::vector<float> s;     // (k) singular values (keep=E chooses by them)
  InputBasis basis;         // V_r^T, rank r (proj=lowrank); sign-free: only V_r V_r^T matters
};

// rope=pre turns keys back by the model's RoPE angles, so the layer must come with them.
Status CheckRope(const KvShape& s, const AtpParams& p) {
  if (!p.rope_pre || s.rope_inv_freq.size() * 2 == size_t(s.head_dim)) return Status::Ok();
  return Status::InvalidArgument("kv policy 'atp': rope=pre needs the model's RoPE frequencies (head_dim/2 = " +
                                 std::to_string(s.head_dim / 2) + "), and layer " + std::to_string(s.layer) + " came with " +
                                 std::to_string(s.rope_inv_freq.size()));
}

class AtpPolicy : public KvPolicy {
 public:
  AtpPolicy(const KvShape& s, const AtpParams& p)
      : s_(s), p_(p), exact_(s.store(), p.dtype, s.kv_dim()),
        x_fill_(s.store(), size_t(s.d_model) * sizeof(float), std::min<int64_t>(PagedRows::kRowsPerPage, p.block)) {
    const std::shared_ptr<const RowCodec> codec = p.residual ? MakeRowCodec(*p.residual) : nullptr;
    for (int h = 0; h < s.n_kv_heads; ++h) {
      principal_.emplace_back(s.store(), p.dtype, s.head_dim);
      kept_.emplace_back(s.store(), p.dtype, s.head_dim);
      if (codec) residual_.push_back(codec->NewStore(s.store(), s.head_dim, s.head_dim));
    }
    block_rows_.resize(size_t(s.n_kv_heads));
    // One page row per compressed block: its U_r, (summarized, r_b) f32 with room for the largest r_b, and
    // (rope=pre, keep=E) its summarized tokens' offsets.
    const int n = p.summarized();
    const int64_t per_page = PagedRows::RowsPerPageFor(p.block);
    for (int g = 0; p.residual && n > 0 && g < Groups(); ++g) {
      coef_.emplace_back(s.store(), size_t(n) * size_t(MaxRank()) * sizeof(float), per_page);
      if (p.rope_pre && p.keep > 0) offsets_.emplace_back(s.store(), size_t(n) * sizeof(int32_t), per_page);
    }
  }

  Status Append(std::span<const int32_t> positions, const float* X, const float* K, const float* V) override {
    if (positions.empty()) return Status::Ok();
    ATP_RETURN_IF_ERROR(CheckContinues(positions[0]));
    ATP_RETURN_IF_ERROR(CheckRope(s_, p_));
    DropUnread(positions[0]);
    const int64_t T = int64_t(positions.size());
    ATP_RETURN_IF_ERROR(exact_.Append(K, V, T));
    for (int64_t i = 0; i < T; ++i) {
      if (KeepsInput()) {
        ATP_RETURN_IF_ERROR(x_fill_.Grow(1));
        std::copy_n(X + i * s_.d_model, s_.d_model, reinterpret_cast<float*>(x_fill_.Row(x_fill_.size() - 1)));
      }
      ++length_;
      if (length_ % p_.block == 0) {
        const int64_t b = length_ / p_.block - 1;
        BlockInput* in = nullptr;
        if (KeepsInput()) {
          ATP_ASSIGN_OR_RETURN(in, Input(b, FilledInput(p_.block)));
        }
        ATP_RETURN_IF_ERROR(CompressBlock(b, in));
        x_fill_.Clear();
        // Keep only block b's Q basis (the filling block's) and what InputBases computed ahead.
        std::erase_if(inputs_, [&](const auto& e) { return e->block < b || (e->block == b && !p_.proj_lowrank); });
        if (in && p_.proj_lowrank) {  // compressed: only the basis is still needed
          in->x = {};
          in->u = {};
          in->s = {};
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
    const int hd = s_.head_dim, e = p_.keep;
    int64_t newest = 0;
    for (int32_t p : positions) newest = std::max<int64_t>(newest, p);
    // residual: per KV head, what reads the summarized tokens of the blocks some query here sees compressed.
    std::vector<Summarized> sum(residual_.size());
    for (size_t h = 0; h < residual_.size(); ++h) Summarize(int(h), CompressedBlocks(newest), &sum[h]);
    AttendSegments(s_, int64_t(positions.size()), Q, O, [&](int64_t t, int kvh, std::vector<KvSegment>* out) {
      const int64_t p = positions[size_t(t)];
      const int64_t nb = CompressedBlocks(p);
      const size_t h = size_t(kvh);
      if (p_.residual) {
        out->insert(out->end(), sum[h].parts.begin(), sum[h].parts.begin() + sum[h].block_end[size_t(nb)]);
      } else {
        const int64_t np = nb > 0 ? block_rows_[h][size_t(nb - 1)] : 0;
        principal_[h].View(0, 0, np, out);
      }
      kept_[h].View(0, 0, nb * e, out);
      const int64_t first = nb * p_.block - exact_begin_;  // >= 0: Append only drops what positions[0] sees compressed
      exact_.View(kvh * hd, first, p - nb * p_.block + 1, out);
    });
    return Status::Ok();
  }

  size_t Bytes() const override {
    size_t n = exact_.Bytes() + size_t(x_fill_.size()) * x_fill_.row_bytes();
    for (const auto& e : inputs_)
      n += (e->x.size() + e->u.size() + e->s.size() + e->basis.vt.size() + e->basis.projected.size()) * sizeof(float);
    for (size_t h = 0; h < principal_.size(); ++h)
      n += principal_[h].Bytes() + kept_[h].Bytes() + block_rows_[h].size() * sizeof(int64_t);
    for (const auto& r : residual_) n += r->Bytes();
    for (size_t g = 0; g < coef_.size(); ++g)  // U_r rows: r_b per summarized token of each block
      n += size_t(block_rows_[g].empty() ? 0 : block_rows_[g].back()) * size_t(p_.summarized()) * sizeof(float);
    for (const auto& o : offsets_) n += size_t(o.size()) * o.row_bytes();
    return n;
  }
  int64_t Length() const override { return length_; }
  // The exact rows; the filling block's layer input, up to a whole block before it is compressed and
  // cleared (the most it holds at once); and for each block the step completes, per KV head at most
  // MaxRank() principal rows (fewer where the data has less energy: the bound then is not reached), E
  // kept rows and its summarized tokens' residuals, and per basis a page row of U_r and of offsets.
  size_t StepLeaseBytes(int64_t tokens) const override {
    const int64_t B = p_.block, blocks = (length_ + tokens) / B - length_ / B, fill = length_ % B;
    size_t n = exact_.GrowBytes(tokens);
    if (KeepsInput()) n += x_fill_.GrowBytes(std::min(fill + tokens, B) - fill);
    for (size_t h = 0; h < principal_.size(); ++h) {
      n += principal_[h].GrowBytes(blocks * MaxRank()) + kept_[h].GrowBytes(blocks * p_.keep);
      if (!residual_.empty() && p_.summarized() > 0) n += residual_[h]->AppendBytes(blocks * p_.summarized());
    }
    for (const PagedRows& c : coef_) n += c.GrowBytes(blocks);
    for (const PagedRows& o : offsets_) n += o.GrowBytes(blocks);
    return n;
  }

  Status Update() override {
    DropUnread(length_);
    for (auto& r : residual_) r->Trim();
    return Status::Ok();
  }

 private:
  // Bases per block: one for basis=input (shared by the KV heads), one per KV head for basis=key.
  int Groups() const { return p_.key_basis ? s_.n_kv_heads : 1; }
  // The most principal rows a block can have: r <= k = min(summarized, width of the basis source).
  int MaxRank() const {
    const int k = std::min(p_.summarized(), p_.key_basis ? s_.head_dim : s_.d_model);
    return p_.tau > 0 ? k : std::min(p_.rank, k);
  }
  // The first `rows` rows of the filling block's layer input, (rows, d_model).
  std::vector<float> FilledInput(int64_t rows) const {
    std::vector<float> xs(size_t(rows) * size_t(s_.d_model));
    for (int64_t i = 0; i < rows; ++i)
      std::copy_n(reinterpret_cast<const float*>(x_fill_.Row(i)), s_.d_model, &xs[size_t(i) * size_t(s_.d_model)]);
    return xs;
  }

  // How a query reads KV head h's summarized tokens of blocks [0, nb) (residual=): token i of block b is
  // K~ = (U_r)_i P_k + residual, V~ likewise, read without forming V~ (and, rope=post, K~): per block a
  // segment of U_r's rows whose scores are (q P_k^T) . u_i and whose values sum to (sum_i a_i u_i) P_v,
  // then the block's packed residual rows as a part of it (KvSegment::adds_to), scored and summed as
  // they are stored. With rope=pre each key is formed (its rotation depends on its position) and rotated.
  struct Summarized {
    std::vector<float> kt, v;        // per block (hd, r_b) P_k^T and (r_b, hd) P_v, f32
    std::vector<float> keys;         // rope=pre: (nb * summarized, hd) the rebuilt, rotated keys
    std::vector<KvSegment> parts;    // block 0's segments, then block 1's, ...
    std::vector<size_t> block_end;   // block_end[b]: segments of blocks [0, b) (b = 0..nb)
  };
  void Summarize(int h, int64_t nb, Summarized* out) const {
    const int hd = s_.head_dim, n = p_.summarized();
    if (nb * n == 0) {  // no summarized token to read
      out->block_end.assign(size_t(nb) + 1, 0);
      return;
    }
    out->block_end.assign(1, 0);
    const int64_t rows = block_rows_[size_t(h)][size_t(nb - 1)];  // principal rows of blocks [0, nb)
    std::vector<float> pk(size_t(rows) * size_t(hd));
    out->v.resize(pk.size());
    principal_[size_t(h)].ToF32(0, rows, pk.data(), out->v.data());
    const size_t basis = size_t(p_.key_basis ? h : 0);
    std::optional<BlockRope> rope;
    if (p_.rope_pre) {
      out->keys.resize(size_t(nb) * size_t(n) * size_t(hd));
      DecodeRows(*residual_[size_t(h)], 0, nb * n, hd, hd, out->keys.data(), nullptr);
      rope.emplace(s_.rope_inv_freq, p_.block);
    } else {
      out->kt.resize(pk.size());
    }
    std::vector<KvSegment> residual;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t before = b > 0 ? block_rows_[size_t(h)][size_t(b - 1)] : 0;
      const int r = int(block_rows_[size_t(h)][size_t(b)] - before);
      const float* u = reinterpret_cast<const float*>(coef_[basis].Row(b));  // (n, r): this block's U_r
      KvSegment seg;
      seg.v = KvRows{DType::kF32, u, r, n};
      seg.out_map = &out->v[size_t(before) * size_t(hd)];
      seg.v_dim = r;
      if (p_.rope_pre) {
        float* k = &out->keys[size_t(b) * size_t(n) * size_t(hd)];
        for (int i = 0; i < n; ++i)
          for (int c = 0; c < r; ++c) {
            const float w = u[size_t(i) * size_t(r) + size_t(c)];
            const float* pc = &pk[size_t(before + c) * size_t(hd)];
            for (int j = 0; j < hd; ++j) k[size_t(i) * size_t(hd) + size_t(j)] += w * pc[j];
          }
        const int32_t* offsets = offsets_.empty() ? nullptr : reinterpret_cast<const int32_t*>(offsets_[basis].Row(b));
        rope->Rotate(k, n, hd, b * p_.block, offsets);
        seg.k = KvRows{DType::kF32, k, hd, n};
      } else {
        float* kt = &out->kt[size_t(before) * size_t(hd)];
        for (int c = 0; c < r; ++c)
          for (int j = 0; j < hd; ++j) kt[size_t(j) * size_t(r) + size_t(c)] = pk[size_t(before + c) * size_t(hd) + size_t(j)];
        seg.k = KvRows{DType::kF32, u, r, n};
        seg.q_map = kt;
        seg.k_dim = r;
      }
      out->parts.push_back(seg);
      residual.clear();
      residual_[size_t(h)]->View(b * n, (b + 1) * n, residual_[size_t(h)]->size(), &residual);
      int64_t at = b * n;
      for (KvSegment& part : residual) {
        part.adds_to = at;
        at += part.count();
        if (p_.rope_pre) {  // the keys' residuals are in out->keys already: a part of the values only
          const int64_t c = part.count();
          part.pk = {};
          part.k = KvRows{DType::kF32, nullptr, 0, c};
        }
        out->parts.push_back(part);
      }
      out->block_end.push_back(out->parts.size());
    }
  }

  // Blocks a query at position p sees compressed: the b with (b+1)*B + W <= p.
  int64_t CompressedBlocks(int64_t p) const { return atp::CompressedBlocks(p_.block, p_.window, p); }

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
    e->s = std::move(S);
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
    std::vector<float> xs = FilledInput(from_fill);  // (B, d_model)
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
    exact_.ToF32(first, B, kb.data(), vb.data());
    // rope=pre: the keys the block is compressed from, turned back to before RoPE (kept rows stay as appended).
    std::vector<float> unrotated;
    if (p_.rope_pre) {
      unrotated = kb;
      std::vector<int32_t> pos(static_cast<size_t>(B));
      std::iota(pos.begin(), pos.end(), int32_t(b * B));
      UnapplyRope(unrotated.data(), B, s_.n_kv_heads, hd, pos.data(), s_.rope_inv_freq.data());
    }
    const std::vector<float>& kc = p_.rope_pre ? unrotated : kb;
    const int n = p_.summarized(), e = p_.keep;
    std::vector<float> pk, pv, rk, rv;
    std::vector<uint8_t> round;
    for (int g = 0; g < Groups(); ++g) {
      // The basis source (B, width): the block's layer input, or KV head g's keys; its SVD U (B, k), S.
      std::vector<float> head_keys, U, S, Vt;
      const float* src = nullptr;
      int width = 0;
      if (p_.key_basis) {
        head_keys.resize(size_t(B) * size_t(hd));
        for (int i = 0; i < B; ++i) std::copy_n(&kc[size_t(i) * size_t(kvd) + size_t(g) * size_t(hd)], hd, &head_keys[size_t(i) * size_t(hd)]);
        src = head_keys.data(), width = hd;
        ATP_RETURN_IF_ERROR(BlockSvd(src, B, width, &U, &S, 0, &Vt));
      } else {
        src = in->x.data(), width = s_.d_model;
        U = in->u, S = in->s;
      }
      int k = std::min(B, width), r = ChooseRank(S, p_.rank, p_.tau);
      // The rows the principal rows stand for (ascending); keep=E moves the E worst summarized out.
      std::vector<int> rows(static_cast<size_t>(B)), kept;
      std::iota(rows.begin(), rows.end(), 0);
      if (e > 0) {
        SplitWorstSummarized(U, S, k, r, &rows, &kept);
        U.clear();
        r = 0;
        if (n > 0) {  // the SVD of the remaining rows alone
          std::vector<float> a(size_t(n) * size_t(width));
          for (int i = 0; i < n; ++i) std::copy_n(src + size_t(rows[size_t(i)]) * size_t(width), width, &a[size_t(i) * size_t(width)]);
          ATP_RETURN_IF_ERROR(BlockSvd(a.data(), n, width, &U, &S, 0, &Vt));
          k = std::min(n, width), r = ChooseRank(S, p_.rank, p_.tau);
        }
      }
      if (p_.key_basis || e > 0) FixColumnSigns(U.data(), n, k, r);  // Input() fixed in->u already
      if (!coef_.empty()) {  // U_r's rows: the summarized tokens' coordinates, (n, r)
        if (r > MaxRank()) return Status::InvalidArgument("atp: internal: rank " + std::to_string(r) + " beyond its page row");
        PagedRows& c = coef_[size_t(g)];
        ATP_RETURN_IF_ERROR(c.Grow(1));
        float* u = reinterpret_cast<float*>(c.Row(c.size() - 1));
        for (int i = 0; i < n; ++i) std::copy_n(&U[size_t(i) * size_t(k)], r, u + size_t(i) * size_t(r));
      }
      if (!offsets_.empty()) {
        PagedRows& o = offsets_[size_t(g)];
        ATP_RETURN_IF_ERROR(o.Grow(1));
        std::copy_n(rows.begin(), n, reinterpret_cast<int32_t*>(o.Row(o.size() - 1)));
      }
      for (int h = p_.key_basis ? g : 0; h < (p_.key_basis ? g + 1 : s_.n_kv_heads); ++h) {
        auto key = [&](int i) { return &kc[size_t(i) * size_t(kvd) + size_t(h) * size_t(hd)]; };
        auto value = [&](int i) { return &vb[size_t(i) * size_t(kvd) + size_t(h) * size_t(hd)]; };
        // Principal rows U_r^T K_b and U_r^T V_b over the summarized rows: (r, hd) each.
        pk.assign(size_t(r) * size_t(hd), 0.f);
        pv.assign(size_t(r) * size_t(hd), 0.f);
        for (int c = 0; c < r; ++c)
          for (int i = 0; i < n; ++i) {
            const float u = U[size_t(i) * size_t(k) + size_t(c)];
            const float *kr = key(rows[size_t(i)]), *vr = value(rows[size_t(i)]);
            for (int j = 0; j < hd; ++j) {
              pk[size_t(c) * size_t(hd) + size_t(j)] += u * kr[j];
              pv[size_t(c) * size_t(hd) + size_t(j)] += u * vr[j];
            }
          }
        ATP_RETURN_IF_ERROR(principal_[size_t(h)].Append(pk.data(), pv.data(), r));
        block_rows_[size_t(h)].push_back(principal_[size_t(h)].size());
        for (int i : kept) ATP_RETURN_IF_ERROR(kept_[size_t(h)].Append(&kb[size_t(i) * size_t(kvd) + size_t(h) * size_t(hd)], value(i), 1));
        if (!p_.residual || n == 0) continue;
        // Residuals against the principal rows as stored (dtype-rounded), so K~ = U_r P_k + residual holds.
        for (auto* m : {&pk, &pv}) {
          round.resize(m->size() * DTypeSize(p_.dtype));
          FromF32(p_.dtype, m->data(), round.data(), m->size());
          ToF32(p_.dtype, round.data(), m->data(), m->size());
        }
        rk.resize(size_t(n) * size_t(hd));
        rv.resize(rk.size());
        for (int i = 0; i < n; ++i) {
          std::copy_n(key(rows[size_t(i)]), hd, &rk[size_t(i) * size_t(hd)]);
          std::copy_n(value(rows[size_t(i)]), hd, &rv[size_t(i) * size_t(hd)]);
          for (int c = 0; c < r; ++c) {
            const float u = U[size_t(i) * size_t(k) + size_t(c)];
            for (int j = 0; j < hd; ++j) {
              rk[size_t(i) * size_t(hd) + size_t(j)] -= u * pk[size_t(c) * size_t(hd) + size_t(j)];
              rv[size_t(i) * size_t(hd) + size_t(j)] -= u * pv[size_t(c) * size_t(hd) + size_t(j)];
            }
          }
        }
        ATP_RETURN_IF_ERROR(residual_[size_t(h)]->Append(rk.data(), hd, rv.data(), hd, n));
      }
    }
    return Status::Ok();
  }

  // keep=E: splits the block's rows 0..B-1 (in `rows`) into the E whose energy outside the top r
  // directions, sum_{c>=r} (U_ic S_c)^2, is largest (`kept`, ascending; ties to the earlier row) and
  // the rest (`rows`, ascending). U (B, k) and S (k) are the block's SVD.
  void SplitWorstSummarized(const std::vector<float>& U, const std::vector<float>& S, int k, int r, std::vector<int>* rows,
                            std::vector<int>* kept) const {
    const int B = p_.block;
    std::vector<double> lost(size_t(B), 0.0);
    for (int i = 0; i < B; ++i)
      for (int c = r; c < k; ++c) {
        const double x = double(U[size_t(i) * size_t(k) + size_t(c)]) * S[size_t(c)];
        lost[size_t(i)] += x * x;
      }
    std::vector<int> order(static_cast<size_t>(B));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return lost[size_t(a)] > lost[size_t(b)]; });
    kept->assign(order.begin(), order.begin() + p_.keep);
    std::sort(kept->begin(), kept->end());
    rows->assign(order.begin() + p_.keep, order.end());
    std::sort(rows->begin(), rows->end());
  }

  KvShape s_;
  AtpParams p_;
  int64_t length_ = 0;
  ExactRows exact_;                // positions [exact_begin_, length_), all KV heads
  int64_t exact_begin_ = 0;
  PagedRows x_fill_;               // (tokens of the filling block, d_model) f32: the basis source; a page
                                   // holds a whole block up to 64 tokens, as the rows go when the block completes
  std::vector<std::unique_ptr<BlockInput>> inputs_;  // the newest complete block's, and any computed ahead
  std::vector<ExactRows> principal_;              // per KV head: principal K/V rows, (rows, hd)
  std::vector<std::vector<int64_t>> block_rows_;  // per KV head: principal rows after block b
  std::vector<ExactRows> kept_;                   // per KV head: keep=E exact rows, E per compressed block
  std::vector<std::unique_ptr<RowStore>> residual_;  // per KV head: the summarized tokens' residuals
  std::vector<PagedRows> coef_;                   // residual=, per basis (Groups()): row b: U_r of block b, (summarized, r_b) f32
  std::vector<PagedRows> offsets_;                // rope=pre with keep=E, per basis: row b: block b's summarized tokens' offsets
};

class AtpFactory : public KvPolicyFactory {
 public:
  explicit AtpFactory(const AtpParams& p) : p_(p) {}
  std::unique_ptr<KvPolicy> Create(const KvShape& s) const override { return std::make_unique<AtpPolicy>(s, p_); }
  Status CheckShape(const KvShape& s) const override { return CheckRope(s, p_); }
  std::string Describe() const override { return KvPolicyConfig{p_}.Describe(); }

 private:
  AtpParams p_;
};

}  // namespace

std::shared_ptr<KvPolicyFactory> MakeAtpFactory(const AtpParams& p) { return std::make_shared<AtpFactory>(p); }

}  // namespace atp
