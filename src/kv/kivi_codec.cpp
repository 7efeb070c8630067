#include "kv/kivi_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/packed_attention.h"
#include "kv/exact_rows.h"

namespace atp {

namespace {

// f16 neighbours: the next representable value toward -inf / +inf.
uint16_t F16Down(uint16_t h) {
  if (h == 0x0000) return 0x8001;             // +0 -> -smallest subnormal
  return (h & 0x8000) ? uint16_t(h + 1) : uint16_t(h - 1);
}
uint16_t F16Up(uint16_t h) {
  if (h == 0x8000) return 0x0001;
  return (h & 0x8000) ? uint16_t(h - 1) : uint16_t(h + 1);
}
uint16_t F16RoundDown(float v) {
  uint16_t h = F32ToF16(v);
  return F16ToF32(h) > v ? F16Down(h) : h;
}
uint16_t F16RoundUp(float v) {
  uint16_t h = F32ToF16(v);
  return F16ToF32(h) < v ? F16Up(h) : h;
}

void WriteCode(uint8_t* s, int64_t i, int w, uint32_t code) {
  const int64_t bit = i * w;
  s[bit >> 3] |= uint8_t(code << (bit & 7));  // w in {2, 4, 8}: never straddles a byte
}

// Token groups in pages of the engine's store (kv/page_store.h): one page row per group, holding
// its per-channel key scales and zeros, its value rows and its key code rows (G of each; fewer after
// Retain). The exact rows not yet grouped are ExactRows, in pages too.
class KiviStore : public RowStore {
 public:
  KiviStore(const KiviParams& p, PageStore& pages, int kw, int vw)
      : p_(p), kw_(kw), vw_(vw), kcb_(KiviCodeBytes(p.bits, kw)), vrb_(KiviTokenRowBytes(p.bits, p.group, vw)),
        groups_(pages, GroupBytes(), PagedRows::RowsPerPageFor(p.group)), exact_(pages, p.dtype, kw, vw) {}

  void Trim() override {
    // No later query has a horizon below size_ + 1: exact copies of rows it reads packed can go.
    const int64_t keep_from = cum_[size_t(PackedGroups(size_ + 1))];
    if (keep_from > e0_) {
      exact_.DropFront(keep_from - e0_);
      e0_ = keep_from;
    }
  }

  Status Append(const float* K, int64_t ks, const float* V, int64_t vs, int64_t n) override {
    Trim();
    ATP_RETURN_IF_ERROR(exact_.Append(K, ks, V, vs, n));
    size_ += n;
    // Quantize a group only once some query may read it packed: G rows older than the newest R. A group
    // whose page is refused stays exact rows until an Append forms it (View reads groups formed only).
    while (size_ - cum_.back() >= int64_t(p_.group) + p_.residual) ATP_RETURN_IF_ERROR(FormGroup());
    return Status::Ok();
  }

  Status Retain(const std::vector<char>& keep) override {
    // Each group keeps its scales and zeros and moves its kept rows to the front of its page row;
    // groups left empty go.
    std::vector<char> live(size_t(groups_.size()));
    std::vector<int64_t> cum{0};
    for (int64_t g = 0; g < groups_.size(); ++g) {
      uint8_t* row = groups_.Row(g);
      int64_t count = 0;
      for (int64_t i = 0; i < cum_[size_t(g) + 1] - cum_[size_t(g)]; ++i) {
        if (!keep[size_t(cum_[size_t(g)] + i)]) continue;
        if (count != i) {
          std::memcpy(row + KCodes() + count * kcb_, row + KCodes() + i * kcb_, size_t(kcb_));
          std::memcpy(row + VRows() + count * vrb_, row + VRows() + i * vrb_, size_t(vrb_));
        }
        ++count;
      }
      live[size_t(g)] = count > 0;
      if (count > 0) cum.push_back(cum.back() + count);
    }
    int64_t new_e0 = 0;
    for (int64_t i = 0; i < e0_; ++i) new_e0 += keep[size_t(i)] != 0;
    int64_t new_size = new_e0;
    for (int64_t i = e0_; i < size_; ++i) new_size += keep[size_t(i)] != 0;
    ATP_RETURN_IF_ERROR(exact_.Retain(keep.data() + e0_));
    ATP_RETURN_IF_ERROR(groups_.Retain(live.data()));
    cum_ = std::move(cum);
    e0_ = new_e0;
    size_ = new_size;
    return Status::Ok();
  }

  void View(int64_t begin, int64_t end, int64_t horizon, std::vector<KvSegment>* out) const override {
    const int k = PackedGroups(horizon);
    for (int g = 0; g < k; ++g) {
      const int64_t lo = std::max(begin, cum_[size_t(g)]), hi = std::min(end, cum_[size_t(g) + 1]);
      if (lo >= hi) continue;
      const uint8_t* row = groups_.Row(g);
      const int64_t off = lo - cum_[size_t(g)];
      KvSegment s;
      s.pk.layout = PackedLayout::kKiviChannel;
      s.pk.dim = kw_;
      s.pk.bits = p_.bits;
      s.pk.data = row + KCodes() + off * kcb_;
      s.pk.stride = kcb_;
      s.pk.count = hi - lo;
      s.pk.scale = reinterpret_cast<const uint16_t*>(row);
      s.pk.zero = reinterpret_cast<const uint16_t*>(row) + kw_;
      s.pv.layout = PackedLayout::kKiviToken;
      s.pv.dim = vw_;
      s.pv.bits = p_.bits;
      s.pv.group = p_.group;
      s.pv.data = row + VRows() + off * vrb_;
      s.pv.stride = vrb_;
      s.pv.count = hi - lo;
      out->push_back(s);
    }
    const int64_t lo = std::max(begin, cum_[size_t(k)]);  // >= e0_ by the Append contract
    exact_.View(0, lo - e0_, end - lo, out);
  }

  int64_t size() const override { return size_; }
  // The exact rows grow by n (Trim only drops), and the groups by those that n more rows complete: G
  // rows older than the newest R, whatever the split of the appends.
  size_t AppendBytes(int64_t n) const override {
    const int64_t pending = size_ + n - cum_.back(), G = p_.group, R = p_.residual;  // rows in no group yet
    return exact_.GrowBytes(n) + groups_.GrowBytes(pending >= G + R ? (pending - R) / G : 0);
  }
  // The data of the groups' rows held (not the room a group left by Retain keeps) and of their scales
  // and zeros, plus the exact rows.
  size_t Bytes() const override {
    return exact_.Bytes() + size_t(groups_.size()) * size_t(4 * kw_) + size_t(cum_.back()) * size_t(kcb_ + vrb_);
  }

 private:
  // A group's page row: (kw) f16 key scales and (kw) f16 key zeros (the kernels read them in place, so
  // they need 2-byte alignment: the row size is rounded up to 8 bytes and pages are 64-byte aligned),
  // G value rows of vrb_ bytes (kKiviToken; read bytewise), then G key code rows of kcb_ bytes.
  int64_t VRows() const { return 4 * int64_t(kw_); }
  int64_t KCodes() const { return VRows() + int64_t(p_.group) * vrb_; }
  size_t GroupBytes() const { return size_t((KCodes() + int64_t(p_.group) * kcb_ + 7) / 8 * 8); }

  // Groups read packed by a query with horizon n: the most k with cum_[k] + R <= n.
  int PackedGroups(int64_t n) const {
    const auto it = std::upper_bound(cum_.begin(), cum_.end(), n - p_.residual);
    return std::max(0, int(it - cum_.begin()) - 1);
  }

  // Quantizes the G oldest rows not yet in a group (all still exact) into a new group.
  Status FormGroup() {
    const int64_t first = cum_.back(), G = p_.group;
    std::vector<float> k(static_cast<size_t>(G * kw_)), v(static_cast<size_t>(vw_));
    ATP_RETURN_IF_ERROR(groups_.Grow(1));
    uint8_t* row = groups_.Row(groups_.size() - 1);
    std::memset(row, 0, groups_.row_bytes());
    uint16_t* scale = reinterpret_cast<uint16_t*>(row);
    for (int64_t i = 0; i < G; ++i) {
      exact_.ToF32(first + i - e0_, 1, &k[size_t(i * kw_)], v.data());
      KiviEncodeValueRow(v.data(), vw_, p_.bits, p_.group, row + VRows() + i * vrb_);
    }
    KiviEncodeKeyGroup(k.data(), kw_, G, kw_, p_.bits, scale, scale + kw_, row + KCodes());
    cum_.push_back(first + G);
    return Status::Ok();
  }

  KiviParams p_;
  int kw_, vw_;
  int64_t kcb_, vrb_;           // bytes of one key code row / one packed value row
  PagedRows groups_;            // one row per group: rows [0, cum_.back())
  std::vector<int64_t> cum_{0}; // cum_[g]: rows before group g
  ExactRows exact_;             // rows [e0_, size_): the residual and rows not yet grouped
  int64_t e0_ = 0, size_ = 0;
};

class KiviCodec : public RowCodec {
 public:
  explicit KiviCodec(const KiviParams& p) : p_(p) {}
  std::unique_ptr<RowStore> NewStore(PageStore& pages, int kw, int vw) const override {
    return std::make_unique<KiviStore>(p_, pages, kw, vw);
  }
 private:
  KiviParams p_;
};

}  // namespace

void KiviParamsFor(float lo, float hi, int bits, uint16_t* scale, uint16_t* zero) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) {
    *scale = *zero = 0x7E00;  // f16 NaN
    return;
  }
  *zero = F16RoundDown(lo);
  *scale = F16RoundUp((hi - F16ToF32(*zero)) / float((1 << bits) - 1));
}

uint32_t KiviCode(float x, uint16_t scale, uint16_t zero, int bits) {
  const float s = F16ToF32(scale);
  if (!(s > 0)) return 0;
  const float q = std::nearbyint((x - F16ToF32(zero)) / s);
  return uint32_t(std::clamp(q, 0.0f, float((1 << bits) - 1)));
}

void KiviEncodeKeyGroup(const float* rows, int64_t stride, int64_t n, int dim, int bits, uint16_t* scale,
                        uint16_t* zero, uint8_t* codes) {
  const int64_t cb = KiviCodeBytes(bits, dim);
  std::memset(codes, 0, size_t(n * cb));
  for (int c = 0; c < dim; ++c) {
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    bool finite = true;
    for (int64_t j = 0; j < n; ++j) {
      const float x = rows[j * stride + c];
      finite &= std::isfinite(x);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    if (!finite) lo = std::numeric_limits<float>::quiet_NaN();
    KiviParamsFor(lo, hi, bits, &scale[c], &zero[c]);
    for (int64_t j = 0; j < n; ++j) WriteCode(codes + j * cb, c, bits, KiviCode(rows[j * stride + c], scale[c], zero[c], bits));
  }
}

void KiviEncodeValueRow(const float* x, int dim, int bits, int group, uint8_t* out) {
  const int ng = (dim + group - 1) / group;
  std::memset(out, 0, size_t(KiviTokenRowBytes(bits, group, dim)));
  uint8_t* codes = out + 4 * ng;
  for (int g = 0; g < ng; ++g) {
    const int lo_c = g * group, hi_c = std::min(dim, lo_c + group);
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    bool finite = true;
    for (int c = lo_c; c < hi_c; ++c) {
      finite &= std::isfinite(x[c]);
      lo = std::min(lo, x[c]);
      hi = std::max(hi, x[c]);
    }
    if (!finite) lo = std::numeric_limits<float>::quiet_NaN();
    uint16_t s, z;
    KiviParamsFor(lo, hi, bits, &s, &z);
    std::memcpy(out + 2 * g, &s, 2);
    std::memcpy(out + 2 * (ng + g), &z, 2);
    for (int c = lo_c; c < hi_c; ++c) WriteCode(codes, c, bits, KiviCode(x[c], s, z, bits));
  }
}

std::shared_ptr<const RowCodec> MakeKiviCodec(const KiviParams& p) { return std::make_shared<KiviCodec>(p); }

}  // namespace atp
