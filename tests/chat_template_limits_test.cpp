// The chat template engine on hostile templates and messages (issue 15: a template comes with a model
// file, the messages with a request). Each case here crashed, hung or exhausted memory before the
// engine bounded its work; now each is an error naming the line (chat_template.cpp states the limits).
#include <string>

#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace atp {
namespace {

using OJson = nlohmann::ordered_json;

OJson ShortConversation() {
  return OJson::parse(R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])");
}

// The error of parsing `source`, or of rendering it when it parses ("" when both succeed).
std::string Error(const std::string& source, const OJson& messages = ShortConversation()) {
  auto t = ChatTemplate::Parse(source, "<s>", "</s>");
  if (!t.ok()) return t.status().message();
  auto r = t->Render(messages, true);
  return r.ok() ? "" : r.status().message();
}

std::string Rendered(const std::string& source) {
  auto t = ChatTemplate::Parse(source, "<s>", "</s>");
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return "";
  auto r = t->Render(ShortConversation(), true);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : "";
}

#define EXPECT_ERROR_HAS(source, text)                                        \
  do {                                                                        \
    const std::string err = Error(source);                                    \
    EXPECT_NE(err.find(text), std::string::npos) << "error: '" << err << "'"; \
  } while (0)

// Both aborted the process: std::stoll / std::stoul threw out of Parse.
TEST(ChatTemplateLimits, LiteralsOutOfRangeAreErrors) {
  EXPECT_ERROR_HAS("{{ 99999999999999999999 }}", "line 1: integer literal 99999999999999999999 does not fit 64 bits");
  EXPECT_ERROR_HAS("a\n{{ \"\\uZZZZ\" }}", "line 2: invalid \\u escape in string: expected 4 hex digits");
  EXPECT_ERROR_HAS("{{ '\\x4' }}", "invalid \\x escape");
  EXPECT_ERROR_HAS("{{ '\\U00110000' }}", "not a Unicode scalar value");
  EXPECT_ERROR_HAS("{{ '\\ud800' }}", "not a Unicode scalar value");
  // What does fit still works, with Python's escapes (octal, \a \b \f \v, 8-digit \U).
  EXPECT_EQ(Rendered("{{ 9223372036854775807 }} {{ '\\101\\x42\\u0043\\U0001F600|\\a\\v' }}"),
            "9223372036854775807 ABC\xF0\x9F\x98\x80|\a\v");
  // A float literal past the double range is inf, as Python's float() makes it.
  EXPECT_EQ(Rendered("{{ " + std::string(400, '9') + ".0 }}"), "inf");
}

// 100,000 levels overflowed the stack (the parser recursed once or more per level).
TEST(ChatTemplateLimits, DeepNestingIsRefusedWhileParsing) {
  const size_t n = 100000;
  EXPECT_ERROR_HAS("{{ " + std::string(n, '(') + "1" + std::string(n, ')') + " }}", "line 1: nested deeper than 128 levels");
  EXPECT_ERROR_HAS("{{ " + std::string(n, '[') + std::string(n, ']') + " }}", "nested deeper than 128 levels");
  EXPECT_ERROR_HAS("{{ " + std::string(n, '-') + "1 }}", "nested deeper than 128 levels");
  std::string nots;
  for (size_t i = 0; i < n; ++i) nots += "not ";
  EXPECT_ERROR_HAS("{{ " + nots + "x }}", "nested deeper than 128 levels");
  std::string ifs, ends;
  for (size_t i = 0; i < n; ++i) ifs += "{% if true %}", ends += "{% endif %}";
  EXPECT_ERROR_HAS(ifs + "x" + ends, "nested deeper than 128 levels");
  // Chains parse in a loop but make trees as deep as they are long (evaluated and freed recursively).
  std::string chain = "{{ 1";
  for (size_t i = 0; i < n; ++i) chain += " + 1";
  EXPECT_ERROR_HAS(chain + " }}", "line 1: expression nested deeper than 128 levels");
  std::string filters = "{{ 'x'";
  for (size_t i = 0; i < n; ++i) filters += "|trim";
  EXPECT_ERROR_HAS(filters + " }}", "expression nested deeper than 128 levels");
  // 100 levels, more than any real template, still work.
  EXPECT_EQ(Rendered("{{ " + std::string(100, '(') + "7" + std::string(100, ')') + " }}"), "7");
}

TEST(ChatTemplateLimits, ValuesNestedTooDeeplyAreRefused) {
  // Built one level per iteration: no literal is deep, the value is.
  EXPECT_ERROR_HAS("{% set x = [] %}{% for i in range(1000) %}{% set x = [x] %}{% endfor %}{{ x }}",
                   "line 1: a value nested deeper than 128 levels");
  EXPECT_ERROR_HAS("{% set ns = namespace(a=0) %}{% for i in range(1000) %}{% set ns.a = ns %}{% endfor %}",
                   "nested deeper than 128 levels");
  OJson deep = "x";
  for (int i = 0; i < 1000; ++i) deep = OJson::array({deep});
  const OJson messages = OJson::array({{{"role", "user"}, {"content", deep}}});
  EXPECT_NE(Error("{{ messages }}", messages).find("messages: nested deeper than 128 levels"), std::string::npos);
}

TEST(ChatTemplateLimits, WorkAndSizeAreBounded) {
  EXPECT_ERROR_HAS("{% for i in range(10**9) %}{% endfor %}", "line 1: range of more than 2097152 items");
  EXPECT_ERROR_HAS("{% for i in range(4000) %}{% for j in range(4000) %}{% endfor %}{% endfor %}",
                   "rendering exceeds its work limit");
  EXPECT_ERROR_HAS("{{ 'ab' * 10**18 }}", "a string would pass 67108864 bytes");
  EXPECT_ERROR_HAS("{% set s = 'x' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}", "line 1: ");
  EXPECT_ERROR_HAS("{{ ('a' * 1000000) | replace('a', 'b' * 1000) }}", "a string would pass 67108864 bytes");
  EXPECT_ERROR_HAS("{{ range(100000) | join('x' * 100000) }}", "a string would pass 67108864 bytes");
  EXPECT_ERROR_HAS("{{ [[[1]]] | tojson(indent=10**9) }}", "tojson: indentation would pass");
  EXPECT_ERROR_HAS("{{ ('a' * 200000) in ('a' * 2000000) }}", "rendering exceeds its work limit");  // O(n*m) search
  // Iterating a 20 MB string would build 20M one-character strings: charged before they are built.
  EXPECT_ERROR_HAS("{% for c in 'ab' * 10000000 %}{% endfor %}", "rendering exceeds its work limit");
  // A name looked up from inside 120 nested loops searches 121 scopes each time.
  std::string nested = "{% set x = 1 %}";
  for (int i = 0; i < 120; ++i) nested += "{% for a in [1] %}";
  nested += "{% for i in range(1000000) %}{{ x }}{% endfor %}";
  for (int i = 0; i < 120; ++i) nested += "{% endfor %}";
  EXPECT_ERROR_HAS(nested, "rendering exceeds its work limit");
}

// 64-bit integers: what Python makes a big integer is an error, never a wrapped or undefined value.
TEST(ChatTemplateLimits, IntegerArithmeticNeverOverflowsSilently) {
  EXPECT_ERROR_HAS("{{ 9223372036854775807 + 1 }}", "line 1: integer overflow in +");
  EXPECT_ERROR_HAS("{{ -9223372036854775807 - 2 }}", "integer overflow in -");
  EXPECT_ERROR_HAS("{{ 4294967296 * 4294967296 }}", "integer overflow in *");
  EXPECT_ERROR_HAS("{{ 2 ** 63 }}", "integer overflow in **");
  EXPECT_ERROR_HAS("{{ (-9223372036854775807 - 1) // -1 }}", "integer overflow in //");
  EXPECT_ERROR_HAS("{{ -(-9223372036854775807 - 1) }}", "integer overflow in unary -");
  EXPECT_ERROR_HAS("{{ (-9223372036854775807 - 1) | abs }}", "integer overflow in abs");
  EXPECT_ERROR_HAS("{{ range(10.0 ** 300) }}", "range stop 1e+300 does not fit 64 bits");
  EXPECT_ERROR_HAS("{{ '99999999999999999999' | int }}", "does not fit 64 bits");
  EXPECT_EQ(Rendered("{{ 3 ** 39 }} {{ (-9223372036854775807 - 1) % -1 }} {{ 2 ** -1 }} {{ -7 // 2 }} {{ ' 1_000 ' | int }} "
                     "{{ '2.9' | int }} {{ 'x' | int }}"),
            "4052555153018976267 0 0.5 -4 1000 2 0");
  EXPECT_EQ(Rendered("{{ [1, 2, 3][1::9223372036854775807] }} {{ [1, 2, 3][-9223372036854775807 - 1:] }} "
                     "{{ [1, 2, 3].9223372036854775807 is defined }}"),
            "[2] [1, 2, 3] False");
}

// Type errors that nlohmann's get<>() threw past the line number, now errors naming the line.
TEST(ChatTemplateLimits, TypeErrorsNameTheLine) {
  EXPECT_ERROR_HAS("\n{{ 'abc'.startswith(['a', 1]) }}", "line 2: startswith: the prefixes must be strings");
}

}  // namespace
}  // namespace atp
