#include "kv/mx_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace atp {

namespace {

struct MiniSpec {
  int ebits, mbits, bias;
  double max_normal;
};

MiniSpec Spec(MxFormat f) {
  switch (f) {
    case MxFormat::kFp8E4M3: return {4, 3, 7, 448.0};
    case MxFormat::kFp8E5M2: return {5, 2, 15, 57344.0};
    case MxFormat::kFp6E2M3: return {2, 3, 1, 7.5};
    case MxFormat::kFp6E3M2: return {3, 2, 3, 28.0};
    case MxFormat::kFp4E2M1:
    case MxFormat::kNvFp4: return {2, 1, 1, 6.0};
    case MxFormat::kInt8: return {0, 0, 0, 127.0 / 64};
  }
  return {};
}

// Round to nearest even onto the grid of a small float format, saturating at max normal.
uint32_t QuantizeMini(const MiniSpec& s, double x) {
  const uint32_t sign = std::signbit(x) ? 1u << (s.ebits + s.mbits) : 0u;
  double a = std::min(std::fabs(x), s.max_normal);
  if (a == 0) return sign;
  const int emin = 1 - s.bias;
  const int e = std::max(std::ilogb(a), emin);
  double r = std::nearbyint(std::ldexp(a, s.mbits - e));  // significand in units of the binade's quantum
  if (r == 0) return sign;                                   // below half the smallest subnormal
  int biased = e + s.bias;
  if (r >= double(1u << (s.mbits + 1))) {                    // rounded up into the next binade
    r /= 2;
    ++biased;
  }
  if (r < double(1u << s.mbits)) return sign | uint32_t(r);  // subnormal (only at e == emin)
  return sign | uint32_t(biased) << s.mbits | (uint32_t(r) - (1u << s.mbits));
}

void WriteCode(uint8_t* s, int64_t i, int w, uint32_t code) {
  const int64_t bit = i * w, byte = bit >> 3;
  const int sh = int(bit & 7);
  s[byte] |= uint8_t(code << sh);
  if (sh + w > 8) s[byte + 1] |= uint8_t(code >> (8 - sh));
}

bool AllFinite(const float* x, int n) {
  for (int i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

void EncodeNvFp4(const float* x, int dim, uint8_t* out) {
  float amax = 0;
  for (int i = 0; i < dim; ++i)
    if (std::isfinite(x[i])) amax = std::max(amax, std::fabs(x[i]));
  // Row (tensor) scale: maps the row's largest magnitude to E4M3 max times E2M1 max.
  const float rs = amax > 0 ? amax / (448.0f * 6.0f) : 1.0f;
  std::memcpy(out, &rs, 4);
  const int nb = (dim + 15) / 16;
  uint8_t* el = out + 4 + nb;
  const MiniSpec e2m1 = Spec(MxFormat::kFp4E2M1);
  for (int b = 0; b < nb; ++b) {
    const int lo = b * 16, n = std::min(16, dim - lo);
    if (!AllFinite(x + lo, n)) {
      out[4 + b] = 0x7F;  // E4M3 NaN: the whole block reads NaN
      continue;
    }
    float bmax = 0;
    for (int i = 0; i < n; ++i) bmax = std::max(bmax, std::fabs(x[lo + i]));
    const uint8_t sb = E4M3Quantize(double(bmax) / (6.0 * double(rs)));
    out[4 + b] = sb;
    const double d = double(E4M3Value(sb)) * double(rs);
    if (d == 0) continue;
    for (int i = 0; i < n; ++i) WriteCode(el, lo + i, 4, QuantizeMini(e2m1, double(x[lo + i]) / d));
  }
}

// Packed MX rows in pages of the engine's store (kv/page_store.h), one PagedRows each for keys and
// values; a query reads one segment per page run (the packed kernels' scores and sums do not depend on
// the runs).
class MxStore : public RowStore {
 public:
  MxStore(PageStore& pages, MxFormat f, int kw, int vw)
      : f_(f), kw_(kw), vw_(vw), k_(pages, size_t(MxRowBytes(f, kw))), v_(pages, size_t(MxRowBytes(f, vw))) {}

  Status Append(const float* K, int64_t ks, const float* V, int64_t vs, int64_t n) override {
    const int64_t first = size();
    ATP_RETURN_IF_ERROR(GrowPair(k_, v_, n));
    for (int64_t i = 0; i < n; ++i) {
      MxEncodeRow(f_, K + i * ks, kw_, k_.Row(first + i));
      MxEncodeRow(f_, V + i * vs, vw_, v_.Row(first + i));
    }
    return Status::Ok();
  }

  Status Retain(const std::vector<char>& keep) override {
    ATP_RETURN_IF_ERROR(k_.Retain(keep.data()));
    return v_.Retain(keep.data());
  }

  void View(int64_t begin, int64_t end, int64_t, std::vector<KvSegment>* out) const override {
    k_.ForEachRun(begin, end - begin, [&](int64_t first, int64_t n, const uint8_t* k) {
      KvSegment s;
      s.pk = Rows(k, kw_, k_.row_bytes(), n);
      s.pv = Rows(v_.Row(first), vw_, v_.row_bytes(), n);
      out->push_back(s);
    });
  }

  int64_t size() const override { return k_.size(); }
  size_t Bytes() const override { return size_t(size()) * (k_.row_bytes() + v_.row_bytes()); }
  size_t AppendBytes(int64_t n) const override { return k_.GrowBytes(n) + v_.GrowBytes(n); }
  // A row's code depends on the row alone; the policy above decides whether rows were ever dropped.
  bool SharePages(int64_t b, BlockPages* out) override {
    out->push_back(k_.FullPage(b)), out->push_back(v_.FullPage(b));
    return true;
  }
  size_t Adopt(std::span<const BlockPages> blocks, size_t at) override {
    k_.Adopt(blocks, at), v_.Adopt(blocks, at + 1);
    return at + 2;
  }

 private:
  PackedRows Rows(const uint8_t* data, int dim, size_t rb, int64_t count) const {
    PackedRows r;
    r.layout = PackedLayout::kMx;
    r.mx = f_;
    r.dim = dim;
    r.data = data;
    r.stride = int64_t(rb);
    r.count = count;
    return r;
  }

  MxFormat f_;
  int kw_, vw_;
  PagedRows k_, v_;  // packed key and value rows, MxRowBytes(f_, kw_) and (f_, vw_) bytes each
};

class MxCodec : public RowCodec {
 public:
  explicit MxCodec(MxFormat f) : f_(f) {}
  std::unique_ptr<RowStore> NewStore(PageStore& pages, int kw, int vw) const override {
    return std::make_unique<MxStore>(pages, f_, kw, vw);
  }
 private:
  MxFormat f_;
};

}  // namespace

int MxEmax(MxFormat f) {
  switch (f) {
    case MxFormat::kFp8E4M3: return 8;
    case MxFormat::kFp8E5M2: return 15;
    case MxFormat::kFp6E2M3: return 2;
    case MxFormat::kFp6E3M2: return 4;
    case MxFormat::kFp4E2M1:
    case MxFormat::kNvFp4: return 2;
    case MxFormat::kInt8: return 0;
  }
  return 0;
}

float MxMaxNormal(MxFormat f) { return float(Spec(f).max_normal); }

uint32_t MxQuantizeElement(MxFormat f, double x) {
  if (f == MxFormat::kInt8) {  // two's complement, 6 fraction bits, symmetric saturation
    const double q = std::clamp(std::nearbyint(x * 64), -127.0, 127.0);
    return uint32_t(uint8_t(int8_t(q)));
  }
  return QuantizeMini(Spec(f), x);
}

uint8_t E4M3Quantize(double x) { return uint8_t(QuantizeMini(Spec(MxFormat::kFp8E4M3), x)); }

void MxEncodeRow(MxFormat f, const float* x, int dim, uint8_t* out) {
  std::memset(out, 0, size_t(MxRowBytes(f, dim)));
  if (f == MxFormat::kNvFp4) return EncodeNvFp4(x, dim, out);
  const int nb = (dim + 31) / 32, w = MxElementBits(f);
  uint8_t* el = out + nb;
  for (int b = 0; b < nb; ++b) {
    const int lo = b * 32, n = std::min(32, dim - lo);
    if (!AllFinite(x + lo, n)) {
      out[b] = 0xFF;  // NaN scale: every element of the block reads NaN
      continue;
    }
    float amax = 0;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[lo + i]));
    // ilogb is exact floor(log2) for normal and subnormal inputs; an all-zero block takes X = -127.
    const int X = amax == 0 ? -127 : std::clamp(std::ilogb(amax) - MxEmax(f), -127, 127);
    out[b] = uint8_t(X + 127);
    for (int i = 0; i < n; ++i) WriteCode(el, lo + i, w, MxQuantizeElement(f, std::ldexp(double(x[lo + i]), -X)));
  }
}

std::shared_ptr<const RowCodec> MakeMxCodec(MxFormat f) { return std::make_shared<MxCodec>(f); }

}  // namespace atp
