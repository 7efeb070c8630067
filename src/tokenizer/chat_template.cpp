// A small Jinja interpreter for chat templates: lexer (with Jinja's whitespace rules), recursive-descent
// parser into a tree, and a tree-walking renderer whose values are JSON values. It implements what
// chat templates use and stops with a line-numbered error on anything else, never guessing.
//
// A template comes with a model file and the messages with a request, so both are untrusted: parsing
// and rendering are bounded (the limits below), integers that do not fit 64 bits are errors rather
// than Python's big integers, and every failure comes back as a Status, never as an exception.
#include "tokenizer/chat_template.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>
#include <string_view>

#include "core/mapped_file.h"

namespace atp {
namespace jinja {

using Json = nlohmann::ordered_json;

// Limits. They are deterministic (no clocks), so a template renders or fails the same way everywhere.
// Real templates stay far inside them: nesting of about 10, a few thousand work units per message.
//  - kMaxNesting: parser recursion (brackets, unary operators, blocks inside blocks) and the depth of
//    an expression tree (a chain `a ~ b ~ c ...` is as deep as it is long), since evaluating and freeing
//    a tree recurse once per level.
//  - kMaxValueDepth: lists/dicts inside one another, in the messages passed in and in every value a
//    template builds (printing, comparing and copying a value recurse once per level).
//  - kMaxWork: what one Render may do, in units of one executed node, one evaluated expression, one
//    JSON node built, copied or compared, or 256 bytes of string built or scanned (a step costs about
//    as much as copying that many bytes). 2^21 units take well under a second; the real Llama-3,
//    Qwen3, Gemma-3 and DeepSeek-V3 templates render 10,000 short messages, or 4,000 messages of 4 KB
//    (16 MB), inside them. A loop over range(10**9) is refused, one that runs long stops here.
//  - kMaxStringBytes: any one string, the rendered prompt included, checked before it is built.
constexpr int kMaxNesting = 128;
constexpr int kMaxValueDepth = 128;
constexpr uint64_t kMaxWork = uint64_t(1) << 21;
constexpr uint64_t kBytesPerUnit = 256;
constexpr size_t kMaxStringBytes = size_t(64) << 20;

// Thrown inside this file only; Parse and Render turn it into a Status.
struct Error {
  std::string message;
  bool raised = false;  // from the template's raise_exception(): the message is the template's own
};
[[noreturn]] void Fail(int line, const std::string& m) { throw Error{"line " + std::to_string(line) + ": " + m}; }

// A piece of the template quoted in an error, cut to a readable length.
std::string Quote(const std::string& s) { return s.size() <= 40 ? s : s.substr(0, 40) + "..."; }

// ---------------------------------------------------------------------------------------------
// Lexer: text runs and the tokens inside {{ }} and {% %}; comments dropped. Whitespace control
// ({%- -%}), trim_blocks (drop the newline after a block tag) and lstrip_blocks (drop the indentation
// before a block tag) are applied to the text here, as transformers configures Jinja.

struct Tok {
  enum Kind { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof } kind;
  std::string s;  // text, name, string value or operator
  int64_t i = 0;
  double f = 0;
  int line = 1;
};

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string RStrip(const std::string& s) {
  size_t e = s.size();
  while (e > 0 && IsSpace(s[e - 1])) --e;
  return s.substr(0, e);
}
std::string LStrip(const std::string& s) {
  size_t b = 0;
  while (b < s.size() && IsSpace(s[b])) ++b;
  return s.substr(b);
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += char(cp);
  } else if (cp < 0x800) {
    *out += char(0xC0 | (cp >> 6));
    *out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += char(0xE0 | (cp >> 12));
    *out += char(0x80 | ((cp >> 6) & 0x3F));
    *out += char(0x80 | (cp & 0x3F));
  } else {
    *out += char(0xF0 | (cp >> 18));
    *out += char(0x80 | ((cp >> 12) & 0x3F));
    *out += char(0x80 | ((cp >> 6) & 0x3F));
    *out += char(0x80 | (cp & 0x3F));
  }
}

// The source as Jinja's lexer sees it: every line break ("\r\n", "\r", "\n") made "\n", and one break
// at the very end dropped (keep_trailing_newline is off in transformers' environment).
std::string NormalizeNewlines(const std::string& src) {
  std::string out;
  out.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] != '\r') {
      out += src[i];
      continue;
    }
    out += '\n';
    if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  explicit Lexer(const std::string& src) : s_(src) {}

  std::vector<Tok> Run() {
    bool strip_next = false, trim_newline = false;
    while (p_ < s_.size()) {
      const size_t text_begin = p_;
      size_t q = s_.find('{', p_);
      while (q != std::string::npos && q + 1 < s_.size() && s_[q + 1] != '{' && s_[q + 1] != '%' && s_[q + 1] != '#')
        q = s_.find('{', q + 1);
      if (q != std::string::npos && q + 1 >= s_.size()) q = std::string::npos;
      std::string text = s_.substr(p_, q == std::string::npos ? std::string::npos : q - p_);
      bool at_line_start = text_begin == 0 || s_[text_begin - 1] == '\n';
      if (strip_next) {
        text = LStrip(text);
      } else if (trim_newline && !text.empty() && (text[0] == '\n' || text.compare(0, 2, "\r\n") == 0)) {
        text.erase(0, text[0] == '\n' ? 1 : 2);
        at_line_start = true;
      }
      strip_next = trim_newline = false;
      if (q == std::string::npos) {
        Text(text, s_.size());
        break;
      }
      const char kind = s_[q + 1];
      const char mod = q + 2 < s_.size() ? s_[q + 2] : 0;
      if (mod == '-') {
        text = RStrip(text);
      } else if (kind != '{' && mod != '+') {
        // lstrip_blocks: a block or comment tag alone on its line takes the indentation with it.
        const size_t nl = text.rfind('\n');
        const size_t from = nl == std::string::npos ? 0 : nl + 1;
        if ((nl != std::string::npos || at_line_start) &&
            text.find_first_not_of(" \t", from) == std::string::npos)
          text.erase(from);
      }
      Text(text, q);
      p_ = q + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
      if (kind == '#') {
        const size_t e = s_.find("#}", p_);
        if (e == std::string::npos) Fail(Line(q), "unterminated comment");
        strip_next = e > 0 && s_[e - 1] == '-';
        trim_newline = !strip_next && !(e > 0 && s_[e - 1] == '+');
        p_ = e + 2;
        continue;
      }
      toks_.push_back({kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", 0, 0, Line(q)});
      const std::string close = kind == '{' ? "}}" : "%}";
      const char sign = Inside(close);
      toks_.push_back({kind == '{' ? Tok::kVarEnd : Tok::kBlockEnd, "", 0, 0, Line(p_)});
      strip_next = sign == '-';
      trim_newline = kind == '%' && sign != '+' && sign != '-';
    }
    toks_.push_back({Tok::kEof, "", 0, 0, Line(s_.size())});
    return std::move(toks_);
  }

 private:
  // Line of a position; counts on from the last position asked about (positions mostly grow), so lexing
  // stays linear in the template's length.
  int Line(size_t pos) {
    pos = std::min(pos, s_.size());
    if (pos < line_pos_) line_pos_ = 0, line_ = 1;
    line_ += int(std::count(s_.begin() + long(line_pos_), s_.begin() + long(pos), '\n'));
    line_pos_ = pos;
    return line_;
  }

  void Text(const std::string& t, size_t end) {
    if (!t.empty()) toks_.push_back({Tok::kText, t, 0, 0, Line(end)});
  }

  // Lexes expression tokens up to `close`; returns the whitespace sign before it ('-', '+' or 0).
  // Inside brackets the closing tag is not recognized, as in Jinja: {{ {'k': {}} }} closes at the end.
  char Inside(const std::string& close) {
    int open = 0;  // brackets open here
    while (true) {
      while (p_ < s_.size() && IsSpace(s_[p_])) ++p_;
      if (p_ >= s_.size()) Fail(Line(p_), "missing '" + close + "'");
      if (open == 0 && (s_[p_] == '-' || s_[p_] == '+') && s_.compare(p_ + 1, 2, close) == 0) {
        const char sign = s_[p_];
        p_ += 3;
        return sign;
      }
      if (open == 0 && s_.compare(p_, 2, close) == 0) {
        p_ += 2;
        return 0;
      }
      const int line = Line(p_);
      const char c = s_[p_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = p_;
        while (e < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[e])) || s_[e] == '_')) ++e;
        toks_.push_back({Tok::kName, s_.substr(p_, e - p_), 0, 0, line});
        p_ = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t e = p_;
        while (e < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[e])) || s_[e] == '_')) ++e;
        bool is_float = false;
        const auto digit = [&](size_t k) { return k < s_.size() && std::isdigit(static_cast<unsigned char>(s_[k])); };
        if (e < s_.size() && s_[e] == '.' && digit(e + 1)) {
          is_float = true;
          for (++e; digit(e) || (s_[e] == '_' && digit(e + 1)); ++e) {
          }
        }
        if (e < s_.size() && (s_[e] == 'e' || s_[e] == 'E')) {  // an exponent: 1e5, 2.5E-3
          const size_t d = e + 1 + (e + 1 < s_.size() && (s_[e + 1] == '+' || s_[e + 1] == '-'));
          if (digit(d)) {
            is_float = true;
            for (e = d; digit(e) || (s_[e] == '_' && digit(e + 1)); ++e) {
            }
          }
        }
        std::string num = s_.substr(p_, e - p_);
        num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
        if (is_float) {
          // strtod, like Python's float(), gives inf or 0 past the double range ("C" locale: atp sets none).
          toks_.push_back({Tok::kFloat, num, 0, std::strtod(num.c_str(), nullptr), line});
        } else {
          int64_t v = 0;
          const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
          if (ec != std::errc() || end != num.data() + num.size())
            Fail(line, "integer literal " + Quote(num) + " does not fit 64 bits");
          toks_.push_back({Tok::kInt, num, v, 0, line});
        }
        p_ = e;
      } else if (c == '\'' || c == '"') {
        toks_.push_back({Tok::kString, String(c), 0, 0, line});
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                           ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};
        const char* op = nullptr;
        for (const char* o : kOps)
          if (s_.compare(p_, std::strlen(o), o) == 0) {
            op = o;
            break;
          }
        if (!op) Fail(line, std::string("unexpected character '") + c + "'");
        toks_.push_back({Tok::kOp, op, 0, 0, line});
        if (std::strchr("([{", op[0]) && !op[1]) ++open;
        if (std::strchr(")]}", op[0]) && !op[1] && open > 0) --open;
        p_ += std::strlen(op);
      }
    }
  }

  // A quoted string literal with Python's escapes (Jinja decodes literals with "unicode-escape"); p_ is
  // at the opening quote. An escape Python refuses is an error here too; so is a surrogate code point,
  // which has no UTF-8 form. \N{name} is not supported.
  std::string String(char quote) {
    const int line = Line(p_);
    std::string out;
    for (++p_; p_ < s_.size() && s_[p_] != quote; ++p_) {
      if (s_[p_] != '\\') {
        out += s_[p_];
        continue;
      }
      if (++p_ >= s_.size()) break;
      switch (char e = s_[p_]) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          const char* digits = s_.data() + p_ + 1;
          const auto [end, ec] = std::from_chars(digits, digits + std::min(n, s_.size() - p_ - 1), cp, 16);
          if (ec != std::errc() || end != digits + n)
            Fail(line, std::string("invalid \\") + e + " escape in string: expected " + std::to_string(n) + " hex digits");
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            Fail(line, std::string("\\") + e + " escape in string is not a Unicode scalar value");
          AppendUtf8(cp, &out);
          p_ += n;
          break;
        }
        case '\n': break;  // line continuation
        default:
          if (e >= '0' && e <= '7') {  // octal, up to three digits
            uint32_t cp = 0;
            for (int k = 0; k < 3 && p_ < s_.size() && s_[p_] >= '0' && s_[p_] <= '7'; ++k, ++p_) cp = cp * 8 + uint32_t(s_[p_] - '0');
            --p_;
            AppendUtf8(cp, &out);
            break;
          }
          if (e != '\\' && e != '\'' && e != '"') out += '\\';
          out += e;
      }
    }
    if (p_ >= s_.size()) Fail(line, "unterminated string");
    ++p_;
    return out;
  }

  const std::string& s_;
  size_t p_ = 0;
  size_t line_pos_ = 0;
  int line_ = 1;
  std::vector<Tok> toks_;
};

// ---------------------------------------------------------------------------------------------
// Syntax tree.

struct Expr;
using ExprP = std::unique_ptr<Expr>;
struct Expr {
  enum Kind { kLiteral, kName, kList, kTuple, kDict, kAttr, kIndex, kSlice, kCall, kFilter, kTest, kNeg, kNot,
              kBinary, kCompare, kAnd, kOr, kCond } kind;
  int line = 0;
  std::shared_ptr<const Json> literal;  // shared by every evaluation: a long string literal is not copied
  std::string name;                 // variable, attribute, filter, test or operator
  std::vector<ExprP> kids;          // operands; for calls/filters/tests: kids[0] is the subject
  std::vector<std::string> ops;     // kCompare: the operators between kids
  std::vector<std::pair<std::string, ExprP>> kwargs;
  bool negated = false;             // kTest: "is not"
  int depth = 1;                    // of the tree under this node (kMaxNesting)
};

struct Node;
using NodeP = std::unique_ptr<Node>;
using Body = std::vector<NodeP>;
struct Node {
  enum Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kBreak, kContinue, kBlock } kind;
  int line = 0;
  std::string text;
  ExprP expr;                                  // output value, set value, for iterable
  ExprP cond;                                  // for ... if cond
  std::vector<std::pair<ExprP, Body>> branches;  // if/elif; a null condition is the else branch
  std::vector<std::string> targets;            // for/set names; set ns.attr: {"ns", "attr"} with attr_target
  bool attr_target = false;
  Body body, else_body;
};

}  // namespace jinja

struct jinja::Program {
  Body body;
  // Whether the source names loop.previtem or loop.nextitem: only then does a loop copy its neighbours
  // into `loop` on every iteration. (An attribute is named in the source; a key built at run time,
  // loop['prev' ~ 'item'], would find nothing.)
  bool loop_neighbours = false;
};

namespace jinja {

// ---------------------------------------------------------------------------------------------
// Parser.

class Parser {
 public:
  explicit Parser(std::vector<Tok> toks) : t_(std::move(toks)) {}

  Body Run() {
    std::string end;
    Body b = ParseBody({}, &end);
    return b;
  }

 private:
  const Tok& Peek(int k = 0) const { return t_[std::min(i_ + size_t(k), t_.size() - 1)]; }
  const Tok& Next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool IsOp(const char* op, int k = 0) const { return Peek(k).kind == Tok::kOp && Peek(k).s == op; }
  bool IsName(const char* n, int k = 0) const { return Peek(k).kind == Tok::kName && Peek(k).s == n; }
  bool AcceptOp(const char* op) { return IsOp(op) ? (++i_, true) : false; }
  bool AcceptName(const char* n) { return IsName(n) ? (++i_, true) : false; }
  void ExpectOp(const char* op) {
    if (!AcceptOp(op)) Fail(Peek().line, std::string("expected '") + op + "'" + Got());
  }
  void Expect(Tok::Kind k, const char* what) {
    if (Peek().kind != k) Fail(Peek().line, std::string("expected ") + what + Got());
    ++i_;
  }
  std::string ExpectName() {
    if (Peek().kind != Tok::kName) Fail(Peek().line, "expected a name" + Got());
    return Next().s;
  }
  std::string Got() const {
    const Tok& t = Peek();
    switch (t.kind) {
      case Tok::kEof: return ", got the end of the template";
      case Tok::kVarEnd: return ", got '}}'";
      case Tok::kBlockEnd: return ", got '%}'";
      default: return ", got '" + t.s + "'";
    }
  }

  // Nodes up to a block tag named in `ends` (consumed up to its name; *end says which) or the end.
  Body ParseBody(const std::vector<std::string>& ends, std::string* end) {
    Body body;
    while (true) {
      const Tok& t = Peek();
      if (t.kind == Tok::kEof) {
        if (!ends.empty()) Fail(t.line, "missing {% " + ends.back() + " %}");
        return body;
      }
      if (t.kind == Tok::kText) {
        auto n = std::make_unique<Node>();
        n->kind = Node::kText;
        n->text = Next().s;
        body.push_back(std::move(n));
      } else if (t.kind == Tok::kVarBegin) {
        auto n = std::make_unique<Node>();
        n->kind = Node::kOutput;
        n->line = Next().line;
        n->expr = ParseExpr();
        Expect(Tok::kVarEnd, "'}}'");
        body.push_back(std::move(n));
      } else {
        Expect(Tok::kBlockBegin, "a tag");
        const int line = Peek().line;
        const std::string tag = ExpectName();
        if (std::find(ends.begin(), ends.end(), tag) != ends.end()) {
          *end = tag;
          return body;
        }
        body.push_back(ParseTag(tag, line));
      }
    }
  }

  NodeP ParseTag(const std::string& tag, int line) {
    Nest nest(this, line);
    auto n = std::make_unique<Node>();
    n->line = line;
    std::string end;
    if (tag == "if") {
      n->kind = Node::kIf;
      ExprP cond = ParseExpr();
      while (true) {
        Expect(Tok::kBlockEnd, "'%}'");
        Body b = ParseBody({"elif", "else", "endif"}, &end);
        n->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "elif") {
          cond = ParseExpr();
        } else if (end == "else") {
          Expect(Tok::kBlockEnd, "'%}'");
          n->branches.emplace_back(nullptr, ParseBody({"endif"}, &end));
          break;
        } else {
          break;
        }
      }
    } else if (tag == "for") {
      n->kind = Node::kFor;
      n->targets = ParseTargets();
      if (!AcceptName("in")) Fail(Peek().line, "expected 'in'" + Got());
      n->expr = ParseCond(false);
      if (AcceptName("if")) n->cond = ParseExpr();
      if (IsName("recursive")) Fail(line, "recursive loops are not supported");
      Expect(Tok::kBlockEnd, "'%}'");
      n->body = ParseBody({"else", "endfor"}, &end);
      if (end == "else") {
        Expect(Tok::kBlockEnd, "'%}'");
        n->else_body = ParseBody({"endfor"}, &end);
      }
    } else if (tag == "set") {
      n->targets = ParseTargets();
      if (n->targets.size() == 1 && AcceptOp(".")) {
        n->targets.push_back(ExpectName());
        n->attr_target = true;
      }
      if (AcceptOp("=")) {
        n->kind = Node::kSet;
        n->expr = ParseExpr();
      } else {
        if (n->attr_target || n->targets.size() != 1) Fail(line, "a block set takes one name");
        n->kind = Node::kSetBlock;
        Expect(Tok::kBlockEnd, "'%}'");
        n->body = ParseBody({"endset"}, &end);
      }
    } else if (tag == "break" || tag == "continue") {
      n->kind = tag == "break" ? Node::kBreak : Node::kContinue;
    } else if (tag == "generation") {
      // transformers' marker for assistant-token masks: renders its body unchanged.
      n->kind = Node::kBlock;
      Expect(Tok::kBlockEnd, "'%}'");
      n->body = ParseBody({"endgeneration"}, &end);
    } else {
      Fail(line, "unsupported tag '" + tag + "'");
    }
    Expect(Tok::kBlockEnd, "'%}'");
    return n;
  }

  std::vector<std::string> ParseTargets() {
    const bool paren = AcceptOp("(");
    std::vector<std::string> names{ExpectName()};
    while (AcceptOp(",")) names.push_back(ExpectName());
    if (paren) ExpectOp(")");
    return names;
  }

  ExprP Make(Expr::Kind k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }
  ExprP Binary(Expr::Kind k, const std::string& op, ExprP a, ExprP b) {
    auto e = Make(k, a->line);
    e->name = op;
    e->kids.push_back(std::move(a));
    e->kids.push_back(std::move(b));
    return Done(std::move(e));
  }

  // Precedence, lowest first, as Jinja2's parser: conditional, or, and, not, comparisons, + -,
  // ~, * / // %, **, unary minus, then primary with postfix (. [] ()) and filters/tests.
  ExprP ParseExpr() { return ParseCond(true); }

  ExprP ParseCond(bool allow_cond) {
    Nest nest(this, Peek().line);
    ExprP e = ParseOr();
    while (allow_cond && IsName("if")) {
      ++i_;
      auto c = Make(Expr::kCond, e->line);
      c->kids.push_back(std::move(e));
      c->kids.push_back(ParseOr());
      c->kids.push_back(AcceptName("else") ? ParseCond(true) : nullptr);
      e = Done(std::move(c));
    }
    return e;
  }
  ExprP ParseOr() {
    ExprP e = ParseAnd();
    while (AcceptName("or")) e = Binary(Expr::kOr, "or", std::move(e), ParseAnd());
    return e;
  }
  ExprP ParseAnd() {
    ExprP e = ParseNot();
    while (AcceptName("and")) e = Binary(Expr::kAnd, "and", std::move(e), ParseNot());
    return e;
  }
  ExprP ParseNot() {
    if (IsName("not")) {
      Nest nest(this, Peek().line);
      auto e = Make(Expr::kNot, Next().line);
      e->kids.push_back(ParseNot());
      return Done(std::move(e));
    }
    return ParseCompare();
  }
  ExprP ParseCompare() {
    ExprP first = ParseMath1();
    auto cmp = Make(Expr::kCompare, first->line);
    cmp->kids.push_back(std::move(first));
    while (true) {
      std::string op;
      if (Peek().kind == Tok::kOp && (Peek().s == "==" || Peek().s == "!=" || Peek().s == "<" || Peek().s == ">" ||
                                      Peek().s == "<=" || Peek().s == ">=")) {
        op = Next().s;
      } else if (IsName("in")) {
        ++i_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        i_ += 2;
        op = "not in";
      } else {
        break;
      }
      cmp->ops.push_back(op);
      cmp->kids.push_back(ParseMath1());
    }
    return cmp->ops.empty() ? std::move(cmp->kids[0]) : Done(std::move(cmp));
  }
  ExprP ParseMath1() {
    ExprP e = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const std::string op = Next().s;
      e = Binary(Expr::kBinary, op, std::move(e), ParseConcat());
    }
    return e;
  }
  ExprP ParseConcat() {
    ExprP e = ParseMath2();
    while (AcceptOp("~")) e = Binary(Expr::kBinary, "~", std::move(e), ParseMath2());
    return e;
  }
  ExprP ParseMath2() {
    ExprP e = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const std::string op = Next().s;
      e = Binary(Expr::kBinary, op, std::move(e), ParsePow());
    }
    return e;
  }
  ExprP ParsePow() {
    ExprP e = ParseUnary(true);
    while (AcceptOp("**")) e = Binary(Expr::kBinary, "**", std::move(e), ParseUnary(true));
    return e;
  }
  ExprP ParseUnary(bool with_filter) {
    ExprP e;
    if (IsOp("-") || IsOp("+")) {
      Nest nest(this, Peek().line);
      const Tok& t = Next();
      e = ParseUnary(false);
      if (t.s == "-") {
        auto n = Make(Expr::kNeg, t.line);
        n->kids.push_back(std::move(e));
        e = Done(std::move(n));
      }
    } else {
      e = ParsePostfix(ParsePrimary());
    }
    return with_filter ? ParseFilters(std::move(e)) : std::move(e);
  }

  ExprP ParsePrimary() {
    const Tok& t = Next();
    switch (t.kind) {
      case Tok::kName: {
        static const std::map<std::string, Json> kConst = {{"true", true},   {"True", true},  {"false", false},
                                                           {"False", false}, {"none", nullptr}, {"None", nullptr}};
        auto it = kConst.find(t.s);
        auto e = Make(it != kConst.end() ? Expr::kLiteral : Expr::kName, t.line);
        if (it != kConst.end()) e->literal = std::make_shared<const Json>(it->second);
        else e->name = t.s;
        return e;
      }
      case Tok::kString: {
        auto e = Make(Expr::kLiteral, t.line);
        std::string s = t.s;
        while (Peek().kind == Tok::kString) s += Next().s;  // adjacent literals concatenate
        e->literal = std::make_shared<const Json>(std::move(s));
        return e;
      }
      case Tok::kInt: {
        auto e = Make(Expr::kLiteral, t.line);
        e->literal = std::make_shared<const Json>(t.i);
        return e;
      }
      case Tok::kFloat: {
        auto e = Make(Expr::kLiteral, t.line);
        e->literal = std::make_shared<const Json>(t.f);
        return e;
      }
      case Tok::kOp:
        if (t.s == "(") {
          if (AcceptOp(")")) return Make(Expr::kTuple, t.line);
          ExprP e = ParseExpr();
          if (!IsOp(",")) {
            ExpectOp(")");
            return e;
          }
          auto tup = Make(Expr::kTuple, t.line);
          tup->kids.push_back(std::move(e));
          while (AcceptOp(",") && !IsOp(")")) tup->kids.push_back(ParseExpr());
          ExpectOp(")");
          return Done(std::move(tup));
        }
        if (t.s == "[") {
          auto e = Make(Expr::kList, t.line);
          while (!AcceptOp("]")) {
            e->kids.push_back(ParseExpr());
            if (!AcceptOp(",")) {
              ExpectOp("]");
              break;
            }
          }
          return Done(std::move(e));
        }
        if (t.s == "{") {
          auto e = Make(Expr::kDict, t.line);
          while (!AcceptOp("}")) {
            e->kids.push_back(ParseExpr());
            ExpectOp(":");
            e->kids.push_back(ParseExpr());
            if (!AcceptOp(",")) {
              ExpectOp("}");
              break;
            }
          }
          return Done(std::move(e));
        }
        break;
      default:
        break;
    }
    --i_;
    Fail(t.line, "expected an expression" + Got());
  }

  ExprP ParsePostfix(ExprP e) {
    while (true) {
      if (AcceptOp(".")) {
        auto a = Make(Expr::kAttr, e->line);
        a->kids.push_back(std::move(e));
        a->name = Peek().kind == Tok::kInt ? Next().s : ExpectName();
        e = Done(std::move(a));
      } else if (AcceptOp("[")) {
        e = ParseSubscript(std::move(e));
      } else if (IsOp("(")) {
        e = ParseCall(Expr::kCall, "", std::move(e));
      } else {
        return e;
      }
    }
  }

  // After '[': an index or a slice [start:stop:step] (each part optional).
  ExprP ParseSubscript(ExprP obj) {
    ExprP parts[3];
    int colons = 0;
    if (!IsOp(":")) parts[0] = ParseExpr();
    while (colons < 2 && AcceptOp(":")) {
      ++colons;
      if (!IsOp(":") && !IsOp("]")) parts[colons] = ParseExpr();
    }
    ExpectOp("]");
    auto e = Make(colons ? Expr::kSlice : Expr::kIndex, obj->line);
    e->kids.push_back(std::move(obj));
    for (int k = 0; k < (colons ? 3 : 1); ++k) e->kids.push_back(std::move(parts[k]));
    return Done(std::move(e));
  }

  // kCall (subject: the callee), kFilter or kTest (subject: the filtered value), with "(args)" if present.
  ExprP ParseCall(Expr::Kind kind, const std::string& name, ExprP subject) {
    auto e = Make(kind, subject->line);
    e->name = name;
    e->kids.push_back(std::move(subject));
    if (!AcceptOp("(")) return Done(std::move(e));
    while (!AcceptOp(")")) {
      if (Peek().kind == Tok::kName && IsOp("=", 1)) {
        std::string key = Next().s;
        ++i_;
        e->kwargs.emplace_back(key, ParseExpr());
      } else {
        if (!e->kwargs.empty()) Fail(Peek().line, "positional argument after keyword argument");
        e->kids.push_back(ParseExpr());
      }
      if (!AcceptOp(",")) {
        ExpectOp(")");
        break;
      }
    }
    return Done(std::move(e));
  }

  ExprP ParseFilters(ExprP e) {
    while (true) {
      if (AcceptOp("|")) {
        const std::string name = ExpectName();
        e = ParseCall(Expr::kFilter, name, std::move(e));
      } else if (IsName("is")) {
        ++i_;
        const bool neg = AcceptName("not");
        const std::string name = ExpectName();
        const Tok& t = Peek();
        const bool bare_arg = (t.kind == Tok::kString || t.kind == Tok::kInt || t.kind == Tok::kFloat ||
                               (t.kind == Tok::kName && t.s != "and" && t.s != "or" && t.s != "else" &&
                                t.s != "if" && t.s != "is" && t.s != "not" && t.s != "in"));
        if (bare_arg) {
          auto test = Make(Expr::kTest, e->line);
          test->name = name;
          test->kids.push_back(std::move(e));
          test->kids.push_back(ParsePostfix(ParsePrimary()));
          e = Done(std::move(test));
        } else {
          e = ParseCall(Expr::kTest, name, std::move(e));
        }
        e->negated = neg;
      } else {
        return e;
      }
    }
  }

  // Counts parser recursion: every nested expression, unary operator and block tag holds one.
  class Nest {
   public:
    Nest(Parser* p, int line) : p_(p) {
      if (++p_->nesting_ > kMaxNesting) Fail(line, "nested deeper than " + std::to_string(kMaxNesting) + " levels");
    }
    ~Nest() { --p_->nesting_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;

   private:
    Parser* p_;
  };

  // A finished expression node: its depth from its operands', refused past kMaxNesting (loops build
  // left-deep trees, e.g. for `a ~ b ~ c`, without recursing in the parser).
  static ExprP Done(ExprP e) {
    for (auto& k : e->kids)
      if (k) e->depth = std::max(e->depth, k->depth + 1);
    for (auto& [name, k] : e->kwargs) e->depth = std::max(e->depth, k->depth + 1);
    if (e->depth > kMaxNesting)
      Fail(e->line, "expression nested deeper than " + std::to_string(kMaxNesting) + " levels");
    return e;
  }

  std::vector<Tok> t_;
  size_t i_ = 0;
  int nesting_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Values: JSON data, plus Jinja's undefined and namespace() objects (shared, so `set ns.x` is seen
// through every reference). Data other than a namespace's is immutable and shared: looking a variable
// up, indexing or iterating hands out pointers into the same JSON instead of copies, so a template's
// cost does not grow with how often it names `messages`.

struct Value {
  std::shared_ptr<const Json> p;  // null: None (or undefined)
  bool undefined = false;
  std::shared_ptr<Json> ns;

  static Value Undefined() {
    Value v;
    v.undefined = true;
    return v;
  }
  Value() = default;
  Value(Json data) : p(std::make_shared<const Json>(std::move(data))) {}  // NOLINT: implicit by design
  // A part of `parent` (an element, a member): shares its storage, except inside a namespace, whose
  // members a later `set ns.x` may replace or move.
  static Value Part(const Value& parent, const Json& part) {
    if (parent.ns) return Value(part);
    Value v;
    v.p = std::shared_ptr<const Json>(parent.p, &part);
    return v;
  }
  const Json& data() const {
    static const Json kNone;
    return ns ? *ns : p ? *p : kNone;
  }
};

bool Truthy(const Value& v) {
  if (v.undefined) return false;
  const Json& j = v.data();
  switch (j.type()) {
    case Json::value_t::null: return false;
    case Json::value_t::boolean: return j.get<bool>();
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return j.get<int64_t>() != 0;
    case Json::value_t::number_float: return j.get<double>() != 0;
    case Json::value_t::string: return !j.get_ref<const std::string&>().empty();
    case Json::value_t::array:
    case Json::value_t::object: return !j.empty();
    default: return true;
  }
}

// Python's repr of a string: single quotes unless the text has a single quote and no double quote.
std::string PyQuote(const std::string& s) {
  const char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    if (c == q || c == '\\') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out + q;
}

std::string ToStr(const Value& v);
std::string PyRepr(const Json& j) {
  if (j.is_string()) return PyQuote(j.get<std::string>());
  if (j.is_array()) {
    std::string s = "[";
    for (size_t i = 0; i < j.size(); ++i) s += (i ? ", " : "") + PyRepr(j[i]);
    return s + "]";
  }
  if (j.is_object()) {
    std::string s = "{";
    bool first = true;
    for (auto& [k, x] : j.items()) {
      s += (first ? "" : ", ") + PyQuote(k) + ": " + PyRepr(x);
      first = false;
    }
    return s + "}";
  }
  return ToStr(Value(j));
}

// Python's str() of a float: inf, -inf and nan by name (JSON has no spelling for them).
std::string FloatStr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  return Json(d).dump();
}

// str(value) as Python prints it: True/False/None, 1.0 for floats, repr for containers.
std::string ToStr(const Value& v) {
  if (v.undefined) return "";
  const Json& j = v.data();
  switch (j.type()) {
    case Json::value_t::null: return "None";
    case Json::value_t::boolean: return j.get<bool>() ? "True" : "False";
    case Json::value_t::string: return j.get<std::string>();
    case Json::value_t::array:
    case Json::value_t::object: return PyRepr(j);
    case Json::value_t::number_float: return FloatStr(j.get<double>());
    default: return j.dump();
  }
}

std::string TypeName(const Value& v) {
  if (v.undefined) return "undefined";
  if (v.ns) return "namespace";
  const Json& j = v.data();
  if (j.is_null()) return "none";
  if (j.is_boolean()) return "bool";
  if (j.is_number_integer()) return "int";
  if (j.is_number()) return "float";
  if (j.is_string()) return "str";
  if (j.is_array()) return "list";
  return "dict";
}

// Appends `piece` unless the result would pass kMaxStringBytes.
void Append(std::string* s, const std::string& piece, int line) {
  if (s->size() + piece.size() > kMaxStringBytes)
    Fail(line, "a string would pass " + std::to_string(kMaxStringBytes) + " bytes");
  *s += piece;
}

// json.dumps as transformers' tojson calls it: ", " and ": " separators without indent, "," and ": "
// with one (indent 0 included: newlines, no spaces), non-ASCII kept, keys in their order; inf and nan
// spelled as Python's json spells them. Stops at kMaxStringBytes.
void Dump(const Json& j, int64_t indent, int depth, int line, std::string* out) {
  const bool pretty = indent >= 0;
  if (pretty && indent * (depth + 1) > int64_t(kMaxStringBytes))
    Fail(line, "tojson: indentation would pass " + std::to_string(kMaxStringBytes) + " bytes");
  const std::string nl = pretty ? "\n" + std::string(size_t(indent * (depth + 1)), ' ') : "";
  const std::string end_nl = pretty ? "\n" + std::string(size_t(indent * depth), ' ') : "";
  const std::string sep = pretty ? "," : ", ";
  if (j.is_array()) {
    if (j.empty()) return Append(out, "[]", line);
    Append(out, "[", line);
    for (size_t i = 0; i < j.size(); ++i) {
      Append(out, (i ? sep : "") + nl, line);
      Dump(j[i], indent, depth + 1, line, out);
    }
    Append(out, end_nl + "]", line);
  } else if (j.is_object()) {
    if (j.empty()) return Append(out, "{}", line);
    Append(out, "{", line);
    bool first = true;
    for (auto& [k, x] : j.items()) {
      Append(out, (first ? "" : sep) + nl + Json(k).dump(-1, ' ', false, Json::error_handler_t::replace) + ": ", line);
      Dump(x, indent, depth + 1, line, out);
      first = false;
    }
    Append(out, end_nl + "}", line);
  } else if (j.is_number_float() && !std::isfinite(j.get<double>())) {
    const double d = j.get<double>();
    Append(out, std::isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity", line);
  } else {
    Append(out, j.dump(-1, ' ', false, Json::error_handler_t::replace), line);
  }
}

// UTF-8 code points, so that string length, indexing and slicing count characters as Python does.
size_t CharLength(unsigned char lead) { return lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1; }
size_t CountChars(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += CharLength(static_cast<unsigned char>(s[i]))) ++n;
  return n;
}

int64_t ToInt(const Value& v, int line, const char* what) {
  const Json& j = v.data();
  if (!j.is_number()) Fail(line, std::string(what) + " must be a number, not " + TypeName(v));
  if (!j.is_number_float()) return j.get<int64_t>();
  const double d = j.get<double>();
  // int64_t(d) is undefined outside this range (2^63 is exactly representable).
  if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0))
    Fail(line, std::string(what) + " " + FloatStr(d) + " does not fit 64 bits");
  return int64_t(d);
}

std::string Strip(const std::string& s, const std::string& chars, bool left, bool right) {
  const auto strip = [&](char c) { return chars.empty() ? IsSpace(c) : chars.find(c) != std::string::npos; };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && strip(s[b])) ++b;
  if (right)
    while (e > b && strip(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// str.title() (first_only false) or str.capitalize() (true), ASCII letters only.
std::string Title(const std::string& s, bool first_only) {
  std::string out = s;
  bool start = true;
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    c = char(start ? std::toupper(u) : std::tolower(u));
    start = !first_only && !std::isalpha(u);
  }
  return out;
}

// Python's int(str) (surrounding whitespace and digit-group underscores allowed), else int(float(str)),
// else 0, as Jinja's int filter falls back.
Json IntOfString(std::string s, int line) {
  s = Strip(s, "", true, true);
  std::string digits = s;
  digits.erase(std::remove(digits.begin(), digits.end(), '_'), digits.end());
  const char* b = digits.data() + (!digits.empty() && digits[0] == '+');
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(b, digits.data() + digits.size(), v);
  if (ec == std::errc::result_out_of_range) Fail(line, "int: " + Quote(s) + " does not fit 64 bits");
  if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty()) return v;
  char* fend = nullptr;
  const double d = std::strtod(s.c_str(), &fend);
  if (s.empty() || fend != s.c_str() + s.size() || !std::isfinite(d)) return 0;
  return ToInt(Value(Json(d)), line, "int");
}

// Python's str.replace (count < 0: all), its result's size checked before it is built.
std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count, int line) {
  if (from.empty()) return s;
  uint64_t hits = 0;
  for (size_t q = 0; int64_t(hits) != count && (q = s.find(from, q)) != std::string::npos; q += from.size()) ++hits;
  if (to.size() > from.size() && s.size() + hits * (to.size() - from.size()) > kMaxStringBytes)
    Fail(line, "a string would pass " + std::to_string(kMaxStringBytes) + " bytes");
  std::string out;
  size_t p = 0;
  for (size_t q; count != 0 && (q = s.find(from, p)) != std::string::npos; p = q + from.size(), --count) {
    Append(&out, s.substr(p, q - p), line);
    Append(&out, to, line);
  }
  Append(&out, s.substr(p), line);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Renderer. Every step, and every value it builds, is charged to a work budget (kMaxWork); strings
// are checked against kMaxStringBytes before they are built.

class Renderer {
 public:
  Renderer(std::map<std::string, Value> globals, bool loop_neighbours) : loop_neighbours_(loop_neighbours) {
    scopes_.push_back(std::move(globals));
  }

  std::string Run(const Body& body) {
    Exec(body);
    return std::move(out_);
  }

  // Charges a value handed in from outside (the messages) and refuses one nested too deeply.
  void Admit(const Json& j) { Charge(Measure(j, 0), 0); }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  void Charge(uint64_t units, int line) {
    work_ += units;
    if (work_ > kMaxWork)
      Fail(line, "rendering exceeds its work limit (" + std::to_string(kMaxWork) + " units: steps, value nodes, " +
                     std::to_string(kBytesPerUnit) + "-byte pieces of string)");
  }
  static uint64_t Units(size_t bytes) { return bytes / kBytesPerUnit; }
  // Searching a string of n bytes for one of m bytes (std::string::find is O(n*m) at worst).
  void ChargeSearch(size_t n, size_t m, int line) { Charge((Units(n) + 1) * (Units(m) + 1), line); }

  // The work units of building, copying or comparing j: one per node, one per kBytesPerUnit of string.
  // Stops counting once past the budget (Charge then fails). line 0: the value came with the messages.
  uint64_t Measure(const Json& j, int line) const {
    uint64_t n = 0;
    MeasureInto(j, 1, line, &n);
    return n;
  }
  void MeasureInto(const Json& j, int depth, int line, uint64_t* n) const {
    if (depth > kMaxValueDepth) {
      const std::string m = "nested deeper than " + std::to_string(kMaxValueDepth) + " levels";
      if (line == 0) throw Error{"messages: " + m};
      Fail(line, "a value " + m);
    }
    ++*n;
    if (j.is_string()) {
      *n += Units(j.get_ref<const std::string&>().size());
    } else if (j.is_object()) {
      for (auto& [k, x] : j.items()) {
        if (work_ + *n > kMaxWork) return;
        *n += Units(k.size());
        MeasureInto(x, depth + 1, line, n);
      }
    } else if (j.is_array()) {
      for (auto& x : j) {
        if (work_ + *n > kMaxWork) return;
        MeasureInto(x, depth + 1, line, n);
      }
    }
  }

  Flow Exec(const Body& body) {
    for (auto& n : body) {
      Flow f = Exec(*n);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  // The code points of s, as views into it; charged for the scan and the table before it is built.
  std::vector<std::string_view> Chars(const std::string& s, int line) {
    const size_t n = CountChars(s);
    Charge(Units(s.size()) + Units(n * sizeof(std::string_view)) + 1, line);
    std::vector<std::string_view> out;
    out.reserve(n);
    for (size_t i = 0; i < s.size();) {
      const size_t k = std::min(CharLength(static_cast<unsigned char>(s[i])), s.size() - i);
      out.emplace_back(s.data() + i, k);
      i += k;
    }
    return out;
  }

  // str(value), charged like a copy when it prints a container (its repr visits every node).
  std::string Str(const Value& v, int line) {
    if (v.data().is_structured()) Charge(Measure(v.data(), line), line);
    return ToStr(v);
  }

  void Output(const std::string& s, int line) {
    Charge(Units(s.size()), line);
    Append(&out_, s, line);
  }

  Flow Exec(const Node& n) {
    Charge(1, n.line);
    switch (n.kind) {
      case Node::kText: Output(n.text, n.line); break;
      case Node::kOutput: Output(Str(Eval(*n.expr), n.line), n.line); break;
      case Node::kIf:
        for (auto& [cond, body] : n.branches)
          if (!cond || Truthy(Eval(*cond))) return Exec(body);
        break;
      case Node::kFor: return For(n);
      case Node::kSet: Assign(n, Eval(*n.expr)); break;
      case Node::kSetBlock: {
        std::string saved = std::move(out_);
        out_.clear();
        Exec(n.body);
        std::swap(saved, out_);
        Assign(n, Value(Json(saved)));
        break;
      }
      case Node::kBreak:
      case Node::kContinue:
        if (loops_ == 0) Fail(n.line, "break/continue outside a loop");
        return n.kind == Node::kBreak ? Flow::kBreak : Flow::kContinue;
      case Node::kBlock: return Exec(n.body);
    }
    return Flow::kNormal;
  }

  void Assign(const Node& n, const Value& v) {
    if (n.attr_target) {
      Value* ns = Lookup(n.targets[0], n.line);
      if (!ns || !ns->ns) Fail(n.line, "'" + n.targets[0] + "' is not a namespace");
      // The member is a copy (and one more level of nesting): charged, its depth checked.
      Charge(Measure(v.data(), n.line) + ns->ns->size(), n.line);
      (*ns->ns)[n.targets[1]] = v.data();
      return;
    }
    Bind(n.targets, v, n.line);
  }

  // Binds one name, or unpacks a sequence into several, in the innermost scope.
  void Bind(const std::vector<std::string>& names, const Value& v, int line) {
    if (names.size() == 1) {
      scopes_.back()[names[0]] = v;
      return;
    }
    const Json& j = v.data();
    if (!j.is_array() || j.size() != names.size())
      Fail(line, "cannot unpack " + TypeName(v) + " into " + std::to_string(names.size()) + " names");
    for (size_t i = 0; i < names.size(); ++i) scopes_.back()[names[i]] = Value::Part(v, j[i]);
  }

  // The innermost binding of name. Each nested loop adds a scope to search: charged one unit per 4
  // scopes searched (a name looked up from the 128th loop down searches them all).
  Value* Lookup(const std::string& name, int line) {
    size_t searched = 0;
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      ++searched;
      auto f = it->find(name);
      if (f != it->end()) {
        Charge(searched / 4, line);
        return &f->second;
      }
    }
    Charge(searched / 4, line);
    return nullptr;
  }

  std::vector<Value> Items(const Value& v, int line) {
    std::vector<Value> items;
    if (v.undefined) return items;
    const Json& j = v.data();
    if (j.is_array()) {
      Charge(j.size(), line);
      for (auto& x : j) items.push_back(Value::Part(v, x));
    } else if (j.is_object()) {
      Charge(j.size(), line);
      for (auto& [k, x] : j.items()) items.emplace_back(Json(k));
    } else if (j.is_string()) {
      const std::vector<std::string_view> chars = Chars(j.get_ref<const std::string&>(), line);
      Charge(chars.size(), line);  // a string value per character
      for (auto c : chars) items.emplace_back(Json(std::string(c)));
    } else {
      Fail(line, "'" + TypeName(v) + "' is not iterable");
    }
    return items;
  }

  // A loop body gets its own scope (its sets do not leak out), with `loop` describing the position.
  Flow For(const Node& n) {
    std::vector<Value> items = Items(Eval(*n.expr), n.line);
    scopes_.emplace_back();
    ++loops_;
    if (n.cond) {
      std::vector<Value> kept;
      for (auto& it : items) {
        Bind(n.targets, it, n.line);
        if (Truthy(Eval(*n.cond))) kept.push_back(it);
      }
      items = std::move(kept);
    }
    const int64_t len = int64_t(items.size());
    for (int64_t i = 0; i < len; ++i) {
      Bind(n.targets, items[size_t(i)], n.line);
      Json loop = Json::object();
      auto& fields = loop.get_ref<Json::object_t&>();
      fields.reserve(9);
      fields.emplace_back("index", i + 1);
      fields.emplace_back("index0", i);
      fields.emplace_back("revindex", len - i);
      fields.emplace_back("revindex0", len - i - 1);
      fields.emplace_back("first", i == 0);
      fields.emplace_back("last", i == len - 1);
      fields.emplace_back("length", len);
      // As in Jinja, previtem is undefined on the first iteration and nextitem on the last.
      if (loop_neighbours_ && i > 0) fields.emplace_back("previtem", items[size_t(i - 1)].data());
      if (loop_neighbours_ && i + 1 < len) fields.emplace_back("nextitem", items[size_t(i + 1)].data());
      Charge(Measure(loop, n.line), n.line);  // built afresh each iteration
      scopes_.back()["loop"] = Value(std::move(loop));
      if (Exec(n.body) == Flow::kBreak) break;
    }
    --loops_;
    scopes_.pop_back();
    if (len == 0) return Exec(n.else_body);
    return Flow::kNormal;
  }

  // Every evaluation is a step; a value built afresh (a literal container, an operator's, a call's or
  // a filter's result) is charged for its size and checked for its depth.
  Value Eval(const Expr& e) {
    Charge(1, e.line);
    Value v = EvalNode(e);
    switch (e.kind) {
      case Expr::kList:
      case Expr::kTuple:
      case Expr::kDict:
      case Expr::kSlice:
      case Expr::kCall:
      case Expr::kFilter:
      case Expr::kBinary: Charge(Measure(v.data(), e.line), e.line); break;
      default: break;
    }
    return v;
  }

  Value EvalNode(const Expr& e) {
    switch (e.kind) {
      case Expr::kLiteral: {
        Value v;
        v.p = e.literal;
        return v;
      }
      case Expr::kName: {
        Value* v = Lookup(e.name, e.line);
        return v ? *v : Value::Undefined();
      }
      case Expr::kList:
      case Expr::kTuple: {
        Json a = Json::array();
        for (auto& k : e.kids) a.push_back(Eval(*k).data());
        return Value(std::move(a));
      }
      case Expr::kDict: {
        // ordered_json finds keys by a linear scan: n keys cost n^2/2.
        Charge(uint64_t(e.kids.size()) * e.kids.size() / 8, e.line);
        Json o = Json::object();
        for (size_t i = 0; i + 1 < e.kids.size(); i += 2) o[Str(Eval(*e.kids[i]), e.line)] = Eval(*e.kids[i + 1]).data();
        return Value(std::move(o));
      }
      case Expr::kAttr: return Attr(Eval(*e.kids[0]), e.name, e.line);
      case Expr::kIndex: return Index(Eval(*e.kids[0]), Eval(*e.kids[1]), e.line);
      case Expr::kSlice: return Slice(e);
      case Expr::kCall: return Call(e);
      case Expr::kFilter: return Filter(e);
      case Expr::kTest: return Value(Json(Test(e) != e.negated));
      case Expr::kNeg: {
        Value v = Eval(*e.kids[0]);
        const Json& j = v.data();
        if (j.is_number_integer()) {
          const int64_t i = j.get<int64_t>();
          if (i == std::numeric_limits<int64_t>::min()) Fail(e.line, "integer overflow in unary -");
          return Value(Json(-i));
        }
        if (j.is_number()) return Value(Json(-j.get<double>()));
        Fail(e.line, "bad operand type for unary -: " + TypeName(v));
      }
      case Expr::kNot: return Value(Json(!Truthy(Eval(*e.kids[0]))));
      case Expr::kAnd: {
        Value a = Eval(*e.kids[0]);
        return Truthy(a) ? Eval(*e.kids[1]) : a;
      }
      case Expr::kOr: {
        Value a = Eval(*e.kids[0]);
        return Truthy(a) ? a : Eval(*e.kids[1]);
      }
      case Expr::kCond:
        if (Truthy(Eval(*e.kids[1]))) return Eval(*e.kids[0]);
        return e.kids[2] ? Eval(*e.kids[2]) : Value::Undefined();
      case Expr::kCompare: {
        Value left = Eval(*e.kids[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = Eval(*e.kids[i + 1]);
          if (!Compare(e.ops[i], left, right, e.line)) return Value(Json(false));
          left = std::move(right);
        }
        return Value(Json(true));
      }
      case Expr::kBinary: return Arith(e.name, Eval(*e.kids[0]), Eval(*e.kids[1]), e.line);
    }
    Fail(e.line, "bad expression");
  }

  // obj.name, or obj.0 on a list. Objects find keys by a linear scan: charged by their size.
  Value Attr(const Value& obj, const std::string& name, int line) {
    const Json& j = obj.data();
    if (j.is_object()) {
      Charge(j.size(), line);
      auto it = j.find(name);
      return it != j.end() ? Value::Part(obj, *it) : Value::Undefined();
    }
    size_t i = 0;
    if (j.is_array() && std::from_chars(name.data(), name.data() + name.size(), i).ptr == name.data() + name.size() &&
        !name.empty() && i < j.size())
      return Value::Part(obj, j[i]);
    return Value::Undefined();
  }

  Value Index(const Value& obj, const Value& key, int line) {
    const Json& j = obj.data();
    const Json& k = key.data();
    if (j.is_object()) {
      if (!k.is_string()) return Value::Undefined();
      return Attr(obj, k.get<std::string>(), line);
    }
    if ((j.is_array() || j.is_string()) && k.is_number_integer()) {
      std::vector<std::string_view> chars;
      if (j.is_string()) chars = Chars(j.get_ref<const std::string&>(), line);
      const int64_t n = j.is_array() ? int64_t(j.size()) : int64_t(chars.size());
      int64_t i = k.get<int64_t>();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::Undefined();
      return j.is_array() ? Value::Part(obj, j[size_t(i)]) : Value(Json(std::string(chars[size_t(i)])));
    }
    if (obj.undefined) return Value::Undefined();
    Fail(line, "cannot index " + TypeName(obj) + " with " + TypeName(key));
  }

  // Python slicing semantics (negative indices, step, clamping) over lists and strings.
  Value Slice(const Expr& e) {
    Value obj = Eval(*e.kids[0]);
    const Json& j = obj.data();
    if (!j.is_array() && !j.is_string()) Fail(e.line, "cannot slice " + TypeName(obj));
    std::vector<std::string_view> chars;
    if (j.is_string()) chars = Chars(j.get_ref<const std::string&>(), e.line);
    const int64_t n = j.is_array() ? int64_t(j.size()) : int64_t(chars.size());
    const int64_t step = e.kids[3] ? ToInt(Eval(*e.kids[3]), e.line, "slice step") : 1;
    if (step == 0) Fail(e.line, "slice step cannot be zero");
    const auto bound = [&](const ExprP& x, int64_t def) {
      if (!x) return def;
      int64_t v = ToInt(Eval(*x), e.line, "slice index");
      if (v < 0) v = v < -n ? -n - 1 : v + n;  // (v + n without overflow; below -n it clamps anyway)
      return step > 0 ? std::clamp<int64_t>(v, 0, n) : std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = bound(e.kids[1], step > 0 ? 0 : n - 1), stop = bound(e.kids[2], step > 0 ? n : -1);
    Json arr = Json::array();
    std::string str;
    // __int128: start + step may pass int64 on the last step.
    for (__int128 i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (j.is_array()) arr.push_back(j[size_t(i)]);
      else str += chars[size_t(i)];
    }
    return j.is_array() ? Value(std::move(arr)) : Value(Json(str));
  }

  // Python's == on values: containers compare element by element (charged by the left one's size).
  bool Equal(const Value& a, const Value& b, int line) {
    if (a.undefined || b.undefined) return a.undefined && b.undefined;
    const Json &x = a.data(), &y = b.data();
    if (x.is_string() && y.is_string())
      Charge(Units(std::min(x.get_ref<const std::string&>().size(), y.get_ref<const std::string&>().size())), line);
    else if (x.is_structured() && x.type() == y.type())
      Charge(Measure(x, line), line);
    return x == y;
  }

  bool Contains(const Value& container, const Value& item, int line) {
    const Json& c = container.data();
    const Json& x = item.data();
    if (c.is_string()) {
      if (!x.is_string()) Fail(line, "'in <string>' requires a string");
      ChargeSearch(c.get_ref<const std::string&>().size(), x.get_ref<const std::string&>().size(), line);
      return c.get<std::string>().find(x.get<std::string>()) != std::string::npos;
    }
    if (c.is_array()) {
      Charge(c.size(), line);
      for (auto& y : c)
        if (Equal(item, Value::Part(container, y), line)) return true;
      return false;
    }
    if (c.is_object()) {
      Charge(c.size(), line);
      return x.is_string() && c.contains(x.get<std::string>());
    }
    if (container.undefined) return false;
    Fail(line, "argument of type '" + TypeName(container) + "' is not iterable");
  }

  bool Compare(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "in") return Contains(b, a, line);
    if (op == "not in") return !Contains(b, a, line);
    if (op == "==" || op == "!=") return (op == "==") == Equal(a, b, line);
    const Json &x = a.data(), &y = b.data();
    if (!((x.is_number() && y.is_number()) || (x.is_string() && y.is_string())))
      Fail(line, "'" + op + "' not supported between " + TypeName(a) + " and " + TypeName(b));
    if (x.is_string())
      Charge(Units(std::min(x.get_ref<const std::string&>().size(), y.get_ref<const std::string&>().size())), line);
    if (op == "<") return x < y;
    if (op == ">") return y < x;
    if (op == "<=") return !(y < x);
    return !(x < y);
  }

  // Integer arithmetic is 64-bit: a result Python would make a big integer is an error here.
  Value Arith(const std::string& op, const Value& a, const Value& b, int line) {
    const auto overflow = [&]() { Fail(line, "integer overflow in " + op + " (integers are 64-bit here)"); };
    if (op == "~") {
      std::string r = Str(a, line);
      Append(&r, Str(b, line), line);
      return Value(Json(std::move(r)));
    }
    const Json &x = a.data(), &y = b.data();
    if (op == "+" && x.is_string() && y.is_string()) {
      std::string r = x.get<std::string>();
      Append(&r, y.get<std::string>(), line);
      return Value(Json(std::move(r)));
    }
    if (op == "+" && x.is_array() && y.is_array()) {
      Json r = x;
      for (auto& v : y) r.push_back(v);
      return Value(std::move(r));
    }
    if (op == "*" && x.is_string() && y.is_number_integer()) {
      const std::string& s = x.get_ref<const std::string&>();
      const int64_t times = y.get<int64_t>();
      if (times > 0 && !s.empty() && uint64_t(times) > kMaxStringBytes / s.size())
        Fail(line, "a string would pass " + std::to_string(kMaxStringBytes) + " bytes");
      std::string r;
      for (int64_t i = 0; i < times; ++i) r += s;
      return Value(Json(r));
    }
    if (!x.is_number() || !y.is_number() || x.is_boolean() || y.is_boolean())
      Fail(line, "unsupported operand types for " + op + ": " + TypeName(a) + " and " + TypeName(b));
    const bool ints = x.is_number_integer() && y.is_number_integer();
    const double p = x.get<double>(), q = y.get<double>();
    if (ints && op != "/") {
      const int64_t i = x.get<int64_t>(), k = y.get<int64_t>();
      int64_t r = 0;
      if (op == "**" && k >= 0) {  // exact, by squaring (pow() in doubles loses digits past 2^53)
        int64_t base = i, r2 = 1;
        for (int64_t e = k; e > 0; e >>= 1) {
          if ((e & 1) && __builtin_mul_overflow(r2, base, &r2)) overflow();
          if (e > 1 && __builtin_mul_overflow(base, base, &base)) overflow();
        }
        return Value(Json(r2));
      }
      if (op == "+" || op == "-" || op == "*") {
        if (op == "+" ? __builtin_add_overflow(i, k, &r)
                      : op == "-" ? __builtin_sub_overflow(i, k, &r) : __builtin_mul_overflow(i, k, &r))
          overflow();
        return Value(Json(r));
      }
      if (op == "//" || op == "%") {
        if (k == 0) Fail(line, "integer division or modulo by zero");
        if (k == -1) {  // INT64_MIN / -1 overflows (and traps on x86)
          if (op == "%") return Value(Json(0));
          if (i == std::numeric_limits<int64_t>::min()) overflow();
          return Value(Json(-i));
        }
        const int64_t fl = i / k - ((i % k != 0) && ((i < 0) != (k < 0)));  // floor division
        if (op == "//") return Value(Json(fl));
        return Value(Json(i - fl * k));
      }
    }
    if ((op == "/" || op == "//" || op == "%") && q == 0) Fail(line, "division by zero");
    if (op == "+") return Value(Json(p + q));
    if (op == "-") return Value(Json(p - q));
    if (op == "*") return Value(Json(p * q));
    if (op == "/") return Value(Json(p / q));
    if (op == "//") return Value(Json(std::floor(p / q)));
    if (op == "%") return Value(Json(p - std::floor(p / q) * q));
    return Value(Json(std::pow(p, q)));
  }

  // str.join and the join filter: the items (or their attribute `attr`) as strings, `sep` between them;
  // the separators' total size is checked before anything is built.
  std::string Join(const std::vector<Value>& items, const std::string& sep, const Value& attr, int line) {
    if (!items.empty() && sep.size() > kMaxStringBytes / items.size())
      Fail(line, "a string would pass " + std::to_string(kMaxStringBytes) + " bytes");
    std::string r;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) Append(&r, sep, line);
      Append(&r, Str(attr.undefined ? items[i] : Attr(items[i], Str(attr, line), line), line), line);
    }
    return r;
  }

  std::vector<Value> Args(const Expr& e) {
    std::vector<Value> args;
    for (size_t i = 1; i < e.kids.size(); ++i) args.push_back(Eval(*e.kids[i]));
    return args;
  }
  Value Kwarg(const Expr& e, const std::string& name, const std::vector<Value>& args, size_t pos, Value def) {
    for (auto& [k, x] : e.kwargs)
      if (k == name) return Eval(*x);
    return pos < args.size() ? args[pos] : def;
  }

  Value Call(const Expr& e) {
    const Expr& callee = *e.kids[0];
    std::vector<Value> args = Args(e);
    const auto arg = [&](size_t i) -> const Value& {
      if (i >= args.size()) Fail(e.line, "missing argument " + std::to_string(i + 1));
      return args[i];
    };
    const auto str_arg = [&](size_t i) {
      const Json& j = arg(i).data();
      if (!j.is_string()) Fail(e.line, "argument " + std::to_string(i + 1) + " must be a string");
      return j.get<std::string>();
    };
    if (callee.kind == Expr::kName && !Lookup(callee.name, e.line)) {
      const std::string& f = callee.name;
      if (f == "raise_exception") throw Error{args.empty() ? "raise_exception" : Str(args[0], e.line), true};
      if (f == "namespace" || f == "dict") {
        Charge(uint64_t(e.kwargs.size()) * e.kwargs.size() / 2, e.line);  // linear key lookups, as for {...}
        Json o = Json::object();
        if (!args.empty() && args[0].data().is_object()) o = args[0].data();
        for (auto& [k, x] : e.kwargs) o[k] = Eval(*x).data();
        Value v;
        if (f == "dict") return Value(std::move(o));
        v.ns = std::make_shared<Json>(std::move(o));
        return v;
      }
      if (f == "range") {
        int64_t start = 0, stop = 0, step = 1;
        if (args.size() == 1) stop = ToInt(arg(0), e.line, "range stop");
        else start = ToInt(arg(0), e.line, "range start"), stop = ToInt(arg(1), e.line, "range stop");
        if (args.size() > 2) step = ToInt(arg(2), e.line, "range step");
        if (step == 0) Fail(e.line, "range step cannot be zero");
        const __int128 span = step > 0 ? __int128(stop) - start : __int128(start) - stop;
        const __int128 abs_step = step > 0 ? __int128(step) : -__int128(step);
        const __int128 len = span <= 0 ? 0 : (span + abs_step - 1) / abs_step;
        if (len > __int128(kMaxWork)) Fail(e.line, "range of more than " + std::to_string(kMaxWork) + " items");
        Charge(uint64_t(len), e.line);
        Json r = Json::array();
        for (__int128 i = 0; i < len; ++i) r.push_back(int64_t(start + i * step));
        return Value(std::move(r));
      }
      if (f == "strftime_now") {
        const std::time_t t = std::time(nullptr);
        std::tm tm{};
        localtime_r(&t, &tm);
        char buf[256];
        const size_t n = std::strftime(buf, sizeof buf, str_arg(0).c_str(), &tm);
        return Value(Json(std::string(buf, n)));
      }
      Fail(e.line, "unknown function '" + f + "'");
    }
    if (callee.kind != Expr::kAttr) Fail(e.line, "only built-in functions and str/dict methods can be called");
    const Value obj = Eval(*callee.kids[0]);
    const std::string& m = callee.name;
    const Json& j = obj.data();
    if (j.is_string()) {
      const std::string& s = j.get_ref<const std::string&>();
      Charge(Units(s.size()), e.line);  // every method reads the string once at least
      if (m == "strip" || m == "lstrip" || m == "rstrip") {
        const std::string chars = args.empty() || args[0].data().is_null() ? "" : str_arg(0);
        ChargeSearch(s.size(), chars.size(), e.line);
        return Value(Json(Strip(s, chars, m != "rstrip", m != "lstrip")));
      }
      if (m == "upper" || m == "lower") {
        std::string r = s;
        for (char& c : r) c = char(m == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
        return Value(Json(r));
      }
      if (m == "title" || m == "capitalize") return Value(Json(Title(s, m == "capitalize")));
      if (m == "startswith" || m == "endswith") {
        std::vector<std::string> opts;
        if (arg(0).data().is_array()) {
          Charge(arg(0).data().size(), e.line);
          for (auto& x : arg(0).data()) {
            if (!x.is_string()) Fail(e.line, m + ": the prefixes must be strings");
            opts.push_back(x.get<std::string>());
          }
        } else {
          opts.push_back(str_arg(0));
        }
        for (auto& o : opts)
          if (o.size() <= s.size() && (m == "startswith" ? s.compare(0, o.size(), o) == 0
                                                         : s.compare(s.size() - o.size(), o.size(), o) == 0))
            return Value(Json(true));
        return Value(Json(false));
      }
      if (m == "split") {
        Json parts = Json::array();
        const bool by_space = args.empty() || args[0].data().is_null();
        int64_t max = args.size() > 1 ? ToInt(args[1], e.line, "maxsplit") : -1;
        if (by_space) {
          std::istringstream in(s);
          for (std::string w; in >> w;) parts.push_back(w);
          return Value(std::move(parts));
        }
        const std::string sep = str_arg(0);
        if (sep.empty()) Fail(e.line, "empty separator");
        ChargeSearch(s.size(), sep.size(), e.line);
        size_t p = 0;
        for (size_t q; max != 0 && (q = s.find(sep, p)) != std::string::npos; p = q + sep.size(), --max)
          parts.push_back(s.substr(p, q - p));
        parts.push_back(s.substr(p));
        return Value(std::move(parts));
      }
      if (m == "replace") {
        const std::string from = str_arg(0);
        ChargeSearch(s.size(), from.size(), e.line);
        return Value(Json(Replace(s, from, str_arg(1), args.size() > 2 ? ToInt(args[2], e.line, "count") : -1, e.line)));
      }
      if (m == "join") return Value(Json(Join(Items(arg(0), e.line), s, Value::Undefined(), e.line)));
    }
    if (j.is_object()) {
      if (m == "items" || m == "keys" || m == "values") {
        Json r = Json::array();
        for (auto& [k, x] : j.items()) {
          if (m == "items") r.push_back(Json::array({k, x}));
          else r.push_back(m == "keys" ? Json(k) : x);
        }
        return Value(std::move(r));
      }
      if (m == "get") {
        const Value v = Attr(obj, str_arg(0), e.line);
        return !v.undefined ? v : (args.size() > 1 ? args[1] : Value(Json()));
      }
    }
    Fail(e.line, "'" + TypeName(obj) + "' has no method '" + m + "'");
  }

  Value Filter(const Expr& e) {
    const Value v = Eval(*e.kids[0]);
    std::vector<Value> args = Args(e);
    const std::string& f = e.name;
    const Json& j = v.data();
    if (j.is_string()) Charge(Units(j.get_ref<const std::string&>().size()), e.line);  // read once at least
    // Jinja's string filters work on str(value) (an undefined value is "").
    const auto need_str = [&]() { return Str(v, e.line); };
    if (f == "trim") {
      const Value chars = Kwarg(e, "chars", args, 0, Value(Json()));
      const std::string set = chars.data().is_string() ? chars.data().get<std::string>() : "";
      ChargeSearch(j.is_string() ? j.get_ref<const std::string&>().size() : 0, set.size(), e.line);
      return Value(Json(Strip(need_str(), set, true, true)));
    }
    if (f == "upper" || f == "lower") {
      std::string r = need_str();
      for (char& c : r) c = char(f == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
      return Value(Json(r));
    }
    if (f == "title" || f == "capitalize") return Value(Json(Title(need_str(), f == "capitalize")));
    if (f == "length" || f == "count") {
      if (j.is_string()) return Value(Json(int64_t(CountChars(j.get_ref<const std::string&>()))));
      if (j.is_array() || j.is_object()) return Value(Json(int64_t(j.size())));
      if (v.undefined) return Value(Json(0));
      Fail(e.line, "object of type '" + TypeName(v) + "' has no length");
    }
    if (f == "default" || f == "d") {
      const bool boolean = args.size() > 1 && Truthy(args[1]);
      if (v.undefined || (boolean && !Truthy(v))) return args.empty() ? Value(Json("")) : args[0];
      return v;
    }
    if (f == "first" || f == "last") {
      std::vector<Value> items = Items(v, e.line);
      if (items.empty()) return Value::Undefined();
      return f == "first" ? items.front() : items.back();
    }
    if (f == "join") {
      const std::string sep = args.empty() ? "" : Str(args[0], e.line);
      const Value attr = Kwarg(e, "attribute", args, 1, Value::Undefined());
      return Value(Json(Join(Items(v, e.line), sep, attr, e.line)));
    }
    if (f == "list") {
      Json a = Json::array();
      for (auto& x : Items(v, e.line)) a.push_back(x.data());
      return Value(std::move(a));
    }
    if (f == "reverse") {
      if (j.is_string()) {
        const std::vector<std::string_view> c = Chars(j.get_ref<const std::string&>(), e.line);
        std::string r;
        for (auto it = c.rbegin(); it != c.rend(); ++it) r += *it;
        return Value(Json(r));
      }
      Json a = Json::array();
      for (auto& x : Items(v, e.line)) a.push_back(x.data());
      std::reverse(a.begin(), a.end());
      return Value(std::move(a));
    }
    if (f == "string") return Value(Json(Str(v, e.line)));
    if (f == "safe") return v;
    if (f == "int") {
      if (j.is_string()) return Value(IntOfString(j.get<std::string>(), e.line));
      return Value(Json(j.is_number() ? ToInt(v, e.line, "int") : 0));
    }
    if (f == "float") {
      if (j.is_number()) return Value(Json(j.get<double>()));
      if (!j.is_string()) return Value(Json(0.0));
      const std::string s = Strip(j.get<std::string>(), "", true, true);
      char* end = nullptr;
      const double d = std::strtod(s.c_str(), &end);
      return Value(Json(!s.empty() && end == s.c_str() + s.size() ? d : 0.0));
    }
    if (f == "abs") {
      if (j.is_number_integer()) {
        const int64_t i = j.get<int64_t>();
        if (i == std::numeric_limits<int64_t>::min()) Fail(e.line, "integer overflow in abs");
        return Value(Json(i < 0 ? -i : i));
      }
      if (j.is_number()) return Value(Json(std::fabs(j.get<double>())));
      Fail(e.line, "bad operand type for abs(): " + TypeName(v));
    }
    if (f == "replace") {
      if (args.size() < 2) Fail(e.line, "replace needs two arguments");
      const std::string s = need_str(), from = Str(args[0], e.line);
      ChargeSearch(s.size(), from.size(), e.line);
      return Value(Json(Replace(s, from, Str(args[1], e.line), args.size() > 2 ? ToInt(args[2], e.line, "count") : -1, e.line)));
    }
    if (f == "tojson") {
      const Value indent = Kwarg(e, "indent", args, 0, Value(Json()));
      Charge(Measure(j, e.line), e.line);
      std::string out;
      // No indent: compact. A negative one, as in Python, breaks lines without indenting.
      const int64_t n = indent.data().is_number() ? std::max<int64_t>(ToInt(indent, e.line, "indent"), 0) : -1;
      if (n > int64_t(kMaxStringBytes))
        Fail(e.line, "tojson: indentation would pass " + std::to_string(kMaxStringBytes) + " bytes");
      Dump(j, n, 0, e.line, &out);
      return Value(Json(out));
    }
    if (f == "items") {
      Json r = Json::array();
      if (j.is_object())
        for (auto& [k, x] : j.items()) r.push_back(Json::array({k, x}));
      return Value(std::move(r));
    }
    if (f == "selectattr" || f == "rejectattr" || f == "select" || f == "reject") {
      // select(test, arg) / selectattr(attribute, test, arg): keep the items passing the test
      // (or truthy when no test is named).
      const bool attr = f == "selectattr" || f == "rejectattr";
      const bool keep = f == "selectattr" || f == "select";
      const size_t t = attr ? 1 : 0;
      Json a = Json::array();
      for (auto& x : Items(v, e.line)) {
        const Value subject = attr ? Attr(x, Str(args.empty() ? Value() : args[0], e.line), e.line) : x;
        const bool pass = args.size() > t ? RunTest(Str(args[t], e.line), subject, {args.begin() + long(t) + 1, args.end()}, e.line)
                                          : Truthy(subject);
        if (pass == keep) a.push_back(x.data());
      }
      return Value(std::move(a));
    }
    if (f == "map") {
      const Value attr = Kwarg(e, "attribute", {}, 0, Value::Undefined());
      if (attr.undefined) Fail(e.line, "map: only map(attribute=...) is supported");
      Json a = Json::array();
      for (auto& x : Items(v, e.line)) a.push_back(Attr(x, Str(attr, e.line), e.line).data());
      return Value(std::move(a));
    }
    Fail(e.line, "unknown filter '" + f + "'");
  }

  bool Test(const Expr& e) {
    const Value v = Eval(*e.kids[0]);
    return RunTest(e.name, v, Args(e), e.line);
  }

  bool RunTest(const std::string& t, const Value& v, const std::vector<Value>& args, int line) {
    const Json& j = v.data();
    if (t == "defined") return !v.undefined;
    if (t == "undefined") return v.undefined;
    if (v.undefined && t != "none") return false;
    if (t == "none") return !v.undefined && j.is_null();
    if (t == "string") return j.is_string();
    if (t == "number") return j.is_number();
    if (t == "integer") return j.is_number_integer();
    if (t == "float") return j.is_number_float();
    if (t == "boolean") return j.is_boolean();
    if (t == "true") return j.is_boolean() && j.get<bool>();
    if (t == "false") return j.is_boolean() && !j.get<bool>();
    if (t == "mapping") return j.is_object();
    if (t == "sequence" || t == "iterable") return j.is_array() || j.is_string() || j.is_object();
    if (t == "even" || t == "odd") return j.is_number_integer() && (j.get<int64_t>() % 2 == 0) == (t == "even");
    if (t == "lower" || t == "upper") {
      if (!j.is_string()) return false;
      Charge(Units(j.get_ref<const std::string&>().size()), line);
      for (char c : j.get<std::string>())
        if (t == "lower" ? std::isupper(static_cast<unsigned char>(c)) : std::islower(static_cast<unsigned char>(c))) return false;
      return true;
    }
    if (args.empty()) Fail(line, "unknown test '" + t + "' or missing argument");
    if (t == "divisibleby") {
      const int64_t d = ToInt(args[0], line, "divisibleby");
      return d != 0 && j.is_number_integer() && (d == -1 || j.get<int64_t>() % d == 0);
    }
    if (t == "equalto" || t == "eq" || t == "==") return Compare("==", v, args[0], line);
    if (t == "ne" || t == "!=") return Compare("!=", v, args[0], line);
    if (t == "lt" || t == "gt" || t == "le" || t == "ge") {
      static const std::map<std::string, std::string> kOp = {{"lt", "<"}, {"gt", ">"}, {"le", "<="}, {"ge", ">="}};
      return Compare(kOp.at(t), v, args[0], line);
    }
    if (t == "in") return Contains(args[0], v, line);
    Fail(line, "unknown test '" + t + "'");
  }

  std::vector<std::map<std::string, Value>> scopes_;
  std::string out_;
  int loops_ = 0;
  uint64_t work_ = 0;
  const bool loop_neighbours_;
};

}  // namespace jinja

const char* const ChatTemplate::kDefaultSource =
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

Result<ChatTemplate> ChatTemplate::Parse(const std::string& source, const std::string& bos_token,
                                         const std::string& eos_token) {
  ChatTemplate t;
  try {
    auto p = std::make_shared<jinja::Program>();
    const std::string normalized = jinja::NormalizeNewlines(source);
    p->body = jinja::Parser(jinja::Lexer(normalized).Run()).Run();
    p->loop_neighbours = source.find("previtem") != std::string::npos || source.find("nextitem") != std::string::npos;
    t.program_ = std::move(p);
  } catch (const jinja::Error& e) {
    return Status::InvalidArgument("chat template: " + e.message);
  } catch (const std::exception& e) {  // a bug here (the parser throws only Error), but never a crash
    return Status::InvalidArgument(std::string("chat template: ") + e.what());
  }
  t.bos_ = bos_token;
  t.eos_ = eos_token;
  return t;
}

namespace {

// A special token in tokenizer_config.json: "text" or {"content": "text", ...}; "" when absent.
std::string TokenText(const nlohmann::json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"];
  return "";
}

}  // namespace

Result<ChatTemplate> ChatTemplate::LoadFromDir(const std::string& dir) {
  nlohmann::json cfg = nlohmann::json::object();
  const std::string cfg_path = dir + "/tokenizer_config.json";
  std::error_code ec;  // (the throwing overload of exists() fails on e.g. an unreadable directory)
  if (std::filesystem::exists(cfg_path, ec)) {
    ATP_ASSIGN_OR_RETURN(std::string text, ReadFile(cfg_path));
    cfg = nlohmann::json::parse(text, nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object()) return Status::Corruption(cfg_path + ": invalid JSON");
  }
  const std::string jinja_path = dir + "/chat_template.jinja";
  if (std::filesystem::exists(jinja_path, ec)) {
    ATP_ASSIGN_OR_RETURN(std::string source, ReadFile(jinja_path));
    auto t = Parse(source, TokenText(cfg, "bos_token"), TokenText(cfg, "eos_token"));
    if (!t.ok()) return t.status().WithContext(jinja_path + ": ");
    return t;
  }
  return FromTokenizerConfig(cfg, cfg_path);
}

Result<ChatTemplate> ChatTemplate::FromTokenizerConfig(const nlohmann::json& cfg, const std::string& where) {
  std::string source;
  if (auto it = cfg.find("chat_template"); it != cfg.end() && !it->is_null()) {
    if (it->is_string()) {
      source = it->get<std::string>();
    } else if (it->is_array()) {
      for (auto& entry : *it)
        if (entry.is_object() && entry.value("name", nlohmann::json()) == "default" && entry.contains("template") &&
            entry["template"].is_string())
          source = entry["template"];
      if (source.empty()) return Status::Corruption(where + ": chat_template: no entry named \"default\"");
    } else {
      return Status::Corruption(where + ": chat_template: expected a string or a list");
    }
  }
  const bool is_default = source.empty();
  auto t = Parse(is_default ? kDefaultSource : source, TokenText(cfg, "bos_token"), TokenText(cfg, "eos_token"));
  if (!t.ok()) return t.status().WithContext(where + ": ");
  t->is_default_ = is_default;
  return t;
}

Result<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages, bool add_generation_prompt) const {
  using jinja::Value;
  // The messages are shared, not copied: a pointer that owns nothing, valid for this call.
  Value messages_value;
  messages_value.p = std::shared_ptr<const jinja::Json>(std::shared_ptr<void>(), &messages);
  // The variables transformers' apply_chat_template passes (tools and documents are None without tools).
  std::map<std::string, Value> globals = {
      {"messages", messages_value},      {"add_generation_prompt", Value(add_generation_prompt)},
      {"bos_token", Value(bos_)},         {"eos_token", Value(eos_)},
      {"tools", Value(nullptr)},          {"documents", Value(nullptr)},
  };
  try {
    jinja::Renderer renderer(std::move(globals), program_->loop_neighbours);
    renderer.Admit(messages);
    return renderer.Run(program_->body);
  } catch (const jinja::Error& e) {
    return Status::InvalidArgument(e.raised ? e.message : "chat template: " + e.message);
  } catch (const std::exception& e) {  // a bug here (the renderer throws only Error), but never a crash
    return Status::InvalidArgument(std::string("chat template: ") + e.what());
  }
}

}  // namespace atp
