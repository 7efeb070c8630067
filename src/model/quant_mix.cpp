#include "model/quant_mix.h"

namespace atp {

namespace {

using gguf::GgmlType;

struct FormatRow {
  std::string_view name;
  GgmlType base;
  bool mix;
  uint32_t file_type;  // llama_ftype: the pure k-quant files take their _S number, as llama-quantize --pure does
};
constexpr FormatRow kFormats[] = {
    {"f32", GgmlType::kF32, false, 0},       {"f16", GgmlType::kF16, false, 1},
    {"bf16", GgmlType::kBF16, false, 32},    {"q8_0", GgmlType::kQ8_0, false, 7},
    {"q4_0", GgmlType::kQ4_0, false, 2},     {"q4_1", GgmlType::kQ4_1, false, 3},
    {"q5_0", GgmlType::kQ5_0, false, 8},     {"q5_1", GgmlType::kQ5_1, false, 9},
    {"iq4_nl", GgmlType::kIQ4_NL, false, 25}, {"q2_k", GgmlType::kQ2_K, false, 10},
    {"q3_k", GgmlType::kQ3_K, false, 11},    {"q4_k", GgmlType::kQ4_K, false, 14},
    {"q5_k", GgmlType::kQ5_K, false, 16},    {"q6_k", GgmlType::kQ6_K, false, 18},
    {"iq4_xs", GgmlType::kIQ4_XS, false, 30}, {"q4_k_m", GgmlType::kQ4_K, true, 15},
    {"q5_k_m", GgmlType::kQ5_K, true, 17},
};

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between.
bool UseMoreBits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// The layer index of "blk.<i>.<rest>" and the rest; -1 when the name is not a layer tensor.
int LayerOf(std::string_view name, std::string_view* rest) {
  if (name.substr(0, 4) != "blk.") return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string_view::npos || dot == 4) return -1;
  int i = 0;
  for (char c : name.substr(4, dot - 4)) {
    if (c < '0' || c > '9') return -1;
    i = i * 10 + (c - '0');
  }
  *rest = name.substr(dot + 1);
  return i;
}

// llama.cpp's tensor_type_fallback; the same type where it has none.
GgmlType Fallback(GgmlType t) {
  switch (t) {
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K: return GgmlType::kQ4_0;
    case GgmlType::kQ4_K: return GgmlType::kQ5_0;
    case GgmlType::kQ5_K: return GgmlType::kQ5_1;
    case GgmlType::kQ6_K: return GgmlType::kQ8_0;
    case GgmlType::kIQ4_XS: return GgmlType::kIQ4_NL;
    default: return t;
  }
}

}  // namespace

bool ParseGgufWeightFormat(std::string_view name, GgufWeightFormat* out) {
  for (const FormatRow& r : kFormats)
    if (r.name == name) {
      *out = {std::string(r.name), r.base, r.mix, r.file_type};
      return true;
    }
  return false;
}

std::string GgufWeightFormatNames() {
  std::string s;
  for (const FormatRow& r : kFormats) s += (s.empty() ? "" : ", ") + std::string(r.name);
  return s;
}

TensorTypeChoice ChooseTensorType(const GgufWeightFormat& f, std::string_view gguf_name, int64_t cols, DType stored,
                                  int n_layers, bool has_output) {
  GgmlType t = f.base;
  if (f.mix) {
    std::string_view rest;
    const int layer = LayerOf(gguf_name, &rest);
    const bool output = gguf_name == "output.weight" || (!has_output && gguf_name == "token_embd.weight");
    if (output) t = cols % GgmlBlockElems(GgmlType::kQ6_K) != 0 ? GgmlType::kQ8_0 : GgmlType::kQ6_K;
    else if (layer >= 0 && (rest == "attn_v.weight" || rest == "ffn_down.weight") && UseMoreBits(layer, n_layers))
      t = GgmlType::kQ6_K;
  }
  TensorTypeChoice c{t, ""};
  auto fits = [&](GgmlType g) { return cols % GgmlBlockElems(g) == 0; };
  if (fits(t)) return c;
  const GgmlType fb = Fallback(t);
  c.type = fits(fb) ? fb : gguf::GgmlOfDType(stored);
  c.fallback = std::string(gguf_name) + ": rows of " + std::to_string(cols) + " elements are not whole " +
               std::string(GgmlTypeName(t)) + " blocks of " + std::to_string(GgmlBlockElems(t)) + "; written as " +
               std::string(GgmlTypeName(c.type)) +
               (fits(fb) ? " (llama.cpp's fallback)" : " (the checkpoint's type; llama.cpp would write F16)");
  return c;
}

}  // namespace atp
