// NFC as UAX #15 defines it: full canonical decomposition, canonical ordering, canonical composition.
// Only canonical mappings: compatibility forms (NFKC) are refused by the normalizer parser, not here.
#include "tokenizer/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "tokenizer/utf8.h"

namespace atp {
namespace {

struct CanonicalDecomposition {
  char32_t cp, first, second;  // second == 0: a singleton decomposition
  bool recomposes;
};
struct CombiningClassRange {
  char32_t first, last;
  uint8_t ccc;
};
#include "tokenizer/unicode_nfc_tables.inc"

// Hangul syllables decompose and compose arithmetically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

struct Tables {
  std::unordered_map<char32_t, const CanonicalDecomposition*> decompose;
  std::unordered_map<uint64_t, char32_t> compose;  // (first << 32 | second) -> composite
  Tables() {
    for (const auto& d : kCanonicalDecompositions) {
      decompose[d.cp] = &d;
      if (d.recomposes) compose[(uint64_t(d.first) << 32) | d.second] = d.cp;
    }
  }
};
const Tables& GetTables() {
  static const Tables t;
  return t;
}

uint8_t CombiningClass(char32_t c) {
  if (c < 0x300) return 0;
  auto it = std::upper_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), c,
                             [](char32_t v, const CombiningClassRange& r) { return v < r.first; });
  if (it == std::begin(kCombiningClasses)) return 0;
  --it;
  return c <= it->last ? it->ccc : 0;
}

void Decompose(const Tables& t, char32_t c, std::vector<char32_t>& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const char32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  auto it = t.decompose.find(c);
  if (it == t.decompose.end()) {
    out.push_back(c);
    return;
  }
  Decompose(t, it->second->first, out);
  if (it->second->second) Decompose(t, it->second->second, out);
}

// 0 if the pair does not compose.
char32_t Compose(const Tables& t, char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  auto it = t.compose.find((uint64_t(a) << 32) | b);
  return it == t.compose.end() ? 0 : it->second;
}

}  // namespace

std::string ToNfc(std::string_view s) {
  // Every code point below U+0300 is NFC-stable and no mark below it composes; their UTF-8 lead
  // bytes are all below 0xCC, so most Latin text returns here untouched.
  if (std::none_of(s.begin(), s.end(), [](char c) { return uint8_t(c) >= 0xCC; })) return std::string(s);
  const Tables& t = GetTables();
  std::vector<char32_t> buf;
  buf.reserve(s.size());
  for (size_t i = 0; i < s.size();) Decompose(t, utf8::Next(s, &i), buf);

  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < buf.size();) {
    if (CombiningClass(buf[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < buf.size() && CombiningClass(buf[j]) != 0) ++j;
    std::stable_sort(buf.begin() + i, buf.begin() + j,
                     [](char32_t a, char32_t b) { return CombiningClass(a) < CombiningClass(b); });
    i = j;
  }

  // Canonical composition (the UAX #15 reference loop): a mark joins the last starter unless a
  // mark of the same or higher class, or a starter, stands between them.
  size_t out = 0;
  size_t starter = 0;
  bool have_starter = false;
  int last_class = -1;  // class of the last character kept after the starter; -1: none
  for (size_t i = 0; i < buf.size(); ++i) {
    const char32_t c = buf[i];
    const int cc = CombiningClass(c);
    if (have_starter && (last_class == -1 || last_class < cc)) {
      if (char32_t comp = Compose(t, buf[starter], c)) {
        buf[starter] = comp;
        continue;
      }
    }
    if (cc == 0) {
      starter = out;
      have_starter = true;
      last_class = -1;
    } else {
      last_class = cc;
    }
    buf[out++] = c;
  }
  buf.resize(out);

  std::string result;
  result.reserve(s.size());
  for (char32_t c : buf) utf8::Append(result, c);
  return result;
}

}  // namespace atp
