// PCRE2 behind Regex: JIT matching with a per-thread JIT stack, and the interpreter as fallback.
// It does not translate other regex dialects: tokenizer.json's Oniguruma patterns run as PCRE2 reads them.
#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <string>

namespace atp {

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

std::string Pcre2Error(int err) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(err, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

// The default 32 KiB JIT stack can run out on long runs of a repeated group; the per-thread stack
// grows on demand up to 8 MiB. Stacks and match contexts may not be shared between threads.
pcre2_match_context* ThreadMatchContext() {
  struct Holder {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_match_context* ctx = pcre2_match_context_create(nullptr);
    Holder() { pcre2_jit_stack_assign(ctx, nullptr, stack); }
    ~Holder() {
      pcre2_match_context_free(ctx);
      pcre2_jit_stack_free(stack);
    }
  };
  thread_local Holder h;
  return h.ctx;
}

}  // namespace

Result<Regex> Regex::Compile(std::string_view pattern, bool literal) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  // PCRE2 refuses UCP with LITERAL; character properties mean nothing to a literal anyway. \C matches
  // one byte even in UTF mode: its matches would split characters, and the next pattern would then run
  // on invalid UTF-8 without PCRE2's check (undefined; a match could end past the subject).
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                                   &err, &err_offset, nullptr);
  if (!code)
    // Patterns come from tokenizer.json, written for Oniguruma: one PCRE2 cannot read is unsupported.
    return Status::Unsupported("PCRE2 cannot compile the regex (offset " + std::to_string(err_offset) +
                               "): " + Pcre2Error(err));
  auto c = std::make_shared<Code>();
  c->code = code;
  // A failed JIT compile (no JIT on this CPU) leaves the interpreter, which gives the same matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return Regex(std::move(c));
}

std::vector<std::pair<size_t, size_t>> Regex::FindAll(std::string_view subject) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  pcre2_match_context* ctx = ThreadMatchContext();
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const size_t n = subject.size();
  size_t offset = 0;
  while (offset <= n) {
    int rc = pcre2_match(code_->code, s, n, offset, PCRE2_NO_UTF_CHECK, md, ctx);
    // JIT resource limits are the only expected failure; the interpreter keeps its frames on the heap.
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
      rc = pcre2_match(code_->code, s, n, offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, ctx);
    // Still failing (heap limit): the rest of the text stays one unmatched piece, which every
    // caller treats as text between matches, so no input is lost.
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      out.emplace_back(b, e);
      offset = e;
    } else {
      if (b >= n) break;
      offset = b + 1;
      while (offset < n && (uint8_t(subject[offset]) & 0xC0) == 0x80) ++offset;
    }
  }
  pcre2_match_data_free(md);
  return out;
}

std::string Regex::ReplaceAll(std::string_view subject, std::string_view with) const {
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : FindAll(subject)) {
    out.append(subject.substr(prev, b - prev));
    out.append(with);
    prev = e;
  }
  out.append(subject.substr(prev));
  return out;
}

Result<Regex> ParsePattern(const nlohmann::json& j, const std::string& path) {
  for (const char* kind : {"String", "Regex"}) {
    if (!j.is_object()) break;
    auto it = j.find(kind);
    if (it != j.end() && it->is_string()) {
      auto r = Regex::Compile(it->get<std::string>(), /*literal=*/kind[0] == 'S');
      if (!r.ok()) return r.status().WithContext(path + "." + kind + ": ");
      return r;
    }
  }
  return Status::Corruption(path + ": expected {\"String\": ...} or {\"Regex\": ...}");
}

}  // namespace atp
