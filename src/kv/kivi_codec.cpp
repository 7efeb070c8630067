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

class KiviStore : public RowStore {
 public:
  KiviStore(const KiviParams& p, PageStore& pages, int kw, int vw)
      : p_(p), kw_(kw), vw_(vw), kcb_(KiviCodeBytes(p.bits, kw)), vrb_(KiviTokenRowBytes(p.bits, p.group, vw)),
        exact_(pages, p.dtype, kw, vw) {}

  void Trim() override {
    // No later query has a horizon below size_ + 1: exact copies of rows it reads packed can go.
    const int64_t keep_from = cum_[size_t(PackedGroups(size_ + 1))];
    if (keep_from > e0_) {
      exact_.DropFront(keep_from - e0_);
      e0_ = keep_from;
    }
  }

  void Append(const float* K, int64_t ks, const float* V, int64_t vs, int64_t n) override {
    Trim();
    exact_.Append(K, ks, V, vs, n);
    size_ += n;
    // Quantize a group only once some query may read it packed: G rows older than the newest R.
    while (size_ - cum_.back() >= int64_t(p_.group) + p_.residual) FormGroup();
  }

  void Retain(const std::vector<char>& keep) override {
    std::vector<Group> kept;
    std::vector<int64_t> cum{0};
    for (size_t g = 0; g < groups_.size(); ++g) {
      Group& G = groups_[g];
      Group out;
      out.scale = std::move(G.scale);
      out.zero = std::move(G.zero);
      for (int64_t i = 0; i < G.count; ++i) {
        if (!keep[size_t(cum_[g] + i)]) continue;
        out.kcodes.insert(out.kcodes.end(), G.kcodes.begin() + i * kcb_, G.kcodes.begin() + (i + 1) * kcb_);
        out.vrows.insert(out.vrows.end(), G.vrows.begin() + i * vrb_, G.vrows.begin() + (i + 1) * vrb_);
        ++out.count;
      }
      if (out.count == 0) continue;
      cum.push_back(cum.back() + out.count);
      kept.push_back(std::move(out));
    }
    int64_t new_e0 = 0;
    for (int64_t i = 0; i < e0_; ++i) new_e0 += keep[size_t(i)] != 0;
    int64_t new_size = new_e0;
    for (int64_t i = e0_; i < size_; ++i) new_size += keep[size_t(i)] != 0;
    exact_.Retain(keep.data() + e0_);
    groups_ = std::move(kept);
    cum_ = std::move(cum);
    e0_ = new_e0;
    size_ = new_size;
  }

  void View(int64_t begin, int64_t end, int64_t horizon, std::vector<KvSegment>* out) const override {
    const int k = PackedGroups(horizon);
    for (int g = 0; g < k; ++g) {
      const int64_t lo = std::max(begin, cum_[size_t(g)]), hi = std::min(end, cum_[size_t(g) + 1]);
      if (lo >= hi) continue;
      const Group& G = groups_[size_t(g)];
      const int64_t off = lo - cum_[size_t(g)];
      KvSegment s;
      s.pk.layout = PackedLayout::kKiviChannel;
      s.pk.dim = kw_;
      s.pk.bits = p_.bits;
      s.pk.data = G.kcodes.data() + off * kcb_;
      s.pk.stride = kcb_;
      s.pk.count = hi - lo;
      s.pk.scale = G.scale.data();
      s.pk.zero = G.zero.data();
      s.pv.layout = PackedLayout::kKiviToken;
      s.pv.dim = vw_;
      s.pv.bits = p_.bits;
      s.pv.group = p_.group;
      s.pv.data = G.vrows.data() + off * vrb_;
      s.pv.stride = vrb_;
      s.pv.count = hi - lo;
      out->push_back(s);
    }
    const int64_t lo = std::max(begin, cum_[size_t(k)]);  // >= e0_ by the Append contract
    exact_.View(0, lo - e0_, end - lo, out);
  }

  int64_t size() const override { return size_; }
  size_t Bytes() const override {
    size_t n = exact_.Bytes();
    for (auto& G : groups_) n += (G.scale.size() + G.zero.size()) * 2 + G.kcodes.size() + G.vrows.size();
    return n;
  }

 private:
  struct Group {
    int64_t count = 0;
    std::vector<uint16_t> scale, zero;  // (kw) f16 per key channel
    std::vector<uint8_t> kcodes;        // (count, kcb_)
    std::vector<uint8_t> vrows;         // (count, vrb_) kKiviToken rows
  };

  // Groups read packed by a query with horizon n: the most k with cum_[k] + R <= n.
  int PackedGroups(int64_t n) const {
    const auto it = std::upper_bound(cum_.begin(), cum_.end(), n - p_.residual);
    return std::max(0, int(it - cum_.begin()) - 1);
  }

  // Quantizes the G oldest rows not yet in a group (all still exact) into a new group.
  void FormGroup() {
    const int64_t first = cum_.back(), G = p_.group;
    std::vector<float> k(static_cast<size_t>(G * kw_)), v(static_cast<size_t>(vw_));
    Group g;
    g.count = G;
    g.scale.resize(size_t(kw_));
    g.zero.resize(size_t(kw_));
    g.kcodes.assign(size_t(G * kcb_), 0);
    g.vrows.assign(size_t(G * vrb_), 0);
    for (int64_t i = 0; i < G; ++i) {
      exact_.ToF32(first + i - e0_, 1, &k[size_t(i * kw_)], v.data());
      KiviEncodeValueRow(v.data(), vw_, p_.bits, p_.group, &g.vrows[size_t(i * vrb_)]);
    }
    KiviEncodeKeyGroup(k.data(), kw_, G, kw_, p_.bits, g.scale.data(), g.zero.data(), g.kcodes.data());
    groups_.push_back(std::move(g));
    cum_.push_back(first + G);
  }

  KiviParams p_;
  int kw_, vw_;
  int64_t kcb_, vrb_;           // bytes of one key code row / one packed value row
  std::vector<Group> groups_;   // rows [0, cum_.back())
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
  std::string Describe() const override {
    return "kivi:bits=" + std::to_string(p_.bits) + ",group=" + std::to_string(p_.group) +
           ",residual=" + std::to_string(p_.residual) + ",dtype=" + std::string(DTypeName(p_.dtype));
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

Result<std::shared_ptr<const RowCodec>> ParseKiviCodec(const PolicySpec& spec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"bits", "bits per element 2|4|8, default 2"},
                                      {"group", "G: tokens per key group and channels per value group, default 32"},
                                      {"residual", "R: newest tokens kept exact, default 128"},
                                      {"dtype", "exact residual rows f32|f16|bf16, default f32"}}));
  KiviParams p;
  ATP_ASSIGN_OR_RETURN(std::string bits, spec.Choice("bits", "2", {"2", "4", "8"}));
  p.bits = std::stoi(bits);
  ATP_ASSIGN_OR_RETURN(p.group, spec.Int("group", 32, 1, 1 << 16));
  ATP_ASSIGN_OR_RETURN(p.residual, spec.Int("residual", 128, 0, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.dtype, spec.Dtype("dtype", DType::kF32));
  return MakeKiviCodec(p);
}

}  // namespace atp
