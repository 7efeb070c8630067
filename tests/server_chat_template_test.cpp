// Chat templates against what Hugging Face transformers renders (apply_chat_template with
// add_generation_prompt=True), for the real Llama-3, Qwen2 and Mistral templates on a 3-message
// conversation; the expected strings were written by hand from the templates. Then the Jinja corners
// (whitespace control, trim_blocks/lstrip_blocks, scoping, namespace, filters, tests) and errors.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace atp {
namespace {

using OJson = nlohmann::ordered_json;

// meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json "chat_template".
const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// Qwen/Qwen2-7B-Instruct.
const char* kQwen2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou "
    "are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' "
    "}}{% endif %}";

// mistralai/Mistral-7B-Instruct-v0.2.
const char* kMistral =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";

// Whitespace inside the contents shows which templates trim (Llama-3) and which do not.
OJson Conversation() {
  return OJson::parse(R"([
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": " Hi there. How can I help?"},
    {"role": "user", "content": "What is 2+2?\n"}
  ])");
}

std::string Render(const char* source, const OJson& messages, const std::string& bos = "", const std::string& eos = "",
                   bool gen = true) {
  auto t = ChatTemplate::Parse(source, bos, eos);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (!t.ok()) return "";
  auto r = t->Render(messages, gen);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : "";
}

TEST(ChatTemplate, Llama3MatchesTransformers) {
  EXPECT_EQ(Render(kLlama3, Conversation(), "<|begin_of_text|>", "<|end_of_text|>"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi there. How can I help?<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, Qwen2MatchesTransformers) {
  EXPECT_EQ(Render(kQwen2, Conversation(), "", "<|im_end|>"),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHello!<|im_end|>\n"
            "<|im_start|>assistant\n Hi there. How can I help?<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n"
            "<|im_start|>assistant\n");
  // With a system message of its own, no default one is added.
  OJson sys = OJson::parse(R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])");
  EXPECT_EQ(Render(kQwen2, sys, "", "", false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplate, MistralMatchesTransformers) {
  EXPECT_EQ(Render(kMistral, Conversation(), "<s>", "</s>"),
            "<s>[INST] Hello! [/INST] Hi there. How can I help?</s>[INST] What is 2+2?\n [/INST]");
}

TEST(ChatTemplate, RaiseExceptionBecomesTheError) {
  auto t = ChatTemplate::Parse(kMistral, "<s>", "</s>");
  ASSERT_TRUE(t.ok());
  auto r = t->Render(OJson::parse(R"([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])"), true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "Conversation roles must alternate user/assistant/user/assistant/...");
}

TEST(ChatTemplate, WhitespaceControlAndBlockTrimming) {
  // lstrip_blocks removes the indentation before {% ... %}, trim_blocks the newline after it;
  // {{ }} lines keep theirs; '-' strips all whitespace on its side.
  const char* src =
      "{% for m in messages %}\n"
      "    {% if m.role == 'user' %}\n"
      "U: {{ m.content }}\n"
      "    {% else %}\n"
      "A: {{ m.content }}\n"
      "    {% endif %}\n"
      "{% endfor %}\n"
      "{{- '  end' -}}\n"
      "   !";
  EXPECT_EQ(Render(src, Conversation()), "U: Hello!\nA:  Hi there. How can I help?\nU: What is 2+2?\n\n  end!");
  // Comments follow the block rules: "  " before {# c #} is mid-line and stays; the indentation
  // before {# e #} goes, and so does the newline after it.
  EXPECT_EQ(Render("a  {{- 'b' }}  {# c #}  d\n  {# e #}\nf", OJson::array()), "ab    d\nf");
}

TEST(ChatTemplate, ScopingNamespaceAndLoopVariables) {
  const char* src =
      "{%- set x = 'outer' -%}"
      "{%- set ns = namespace(count=0, last='') -%}"
      "{%- for m in messages -%}"
      "{%- set x = 'inner' -%}"
      "{%- set ns.count = ns.count + 1 -%}"
      "{%- set ns.last = m.role -%}"
      "{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}"
      "{%- endfor %}"
      " {{ x }} {{ ns.count }} {{ ns.last }}";
  EXPECT_EQ(Render(src, Conversation()), "1/3,2/3,3/3 outer 3 user");
}

TEST(ChatTemplate, ExpressionsFiltersAndTests) {
  const OJson msgs = Conversation();
  const auto r = [&](const std::string& src) { return Render(src.c_str(), msgs); };
  EXPECT_EQ(r("{{ messages | length }} {{ messages[-1]['role'] }} {{ messages[1:] | length }}"), "3 user 2");
  EXPECT_EQ(r("{{ 'a' ~ 1 ~ none ~ true }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 1 / 4 }}"),
            "a1NoneTrue 3 -4 1 1024 0.25");
  EXPECT_EQ(r("{{ '  x ' | trim }}|{{ 'Hi' | upper }}|{{ 'ab' * 2 }}|{{ 'x,y' .split(',') | join('+') }}"), "x|HI|abab|x+y");
  EXPECT_EQ(r("{{ messages | map(attribute='role') | join(' ') }}"), "user assistant user");
  EXPECT_EQ(r("{{ messages | selectattr('role', 'equalto', 'user') | list | length }}"), "2");
  EXPECT_EQ(r("{{ undefined_thing is defined }} {{ none is none }} {{ 'x' is string }} {{ 3 is odd }}"),
            "False True True True");
  EXPECT_EQ(r("{{ undefined_thing | default('d') }} {{ 'a' if false else 'b' }} {{ 'ell' in 'hello' }}"), "d b True");
  EXPECT_EQ(r("{{ {'k': [1, 'two', none]} }} {{ {'k': 'v', 'n': [1, 2]} | tojson }}"),
            "{'k': [1, 'two', None]} {\"k\": \"v\", \"n\": [1, 2]}");
  EXPECT_EQ(r("{{ '  hi  '.strip() }} {{ 'Hello'.startswith('He') }} {{ 'abc'[::-1] }} {{ 'héllo'[1] }}"), "hi True cba é");
  EXPECT_EQ(r("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}"
              "{{ i }}{% endfor %}"),
            "02");
  EXPECT_EQ(r("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(r("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(r("{% set block %}in {{ 1 + 1 }}{% endset %}[{{ block }}]"), "[in 2]");
  EXPECT_EQ(r("{{ tools is none }} {{ 1 < 2 < 3 }} {{ 'b' not in ['a'] }}"), "True True True");
}

TEST(ChatTemplate, ParseErrorsNameTheLine) {
  for (const char* bad : {"{% if x %}no end", "{{ 1 + }}", "{% macro f() %}{% endmacro %}", "line\n{{ 'unterminated }}",
                          "{% for x in %}{% endfor %}", "{{ x | }}"}) {
    auto t = ChatTemplate::Parse(bad, "", "");
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_NE(t.status().message().find("line "), std::string::npos) << t.status().message();
  }
  auto t = ChatTemplate::Parse("{{ messages | nosuchfilter }}", "", "");
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->Render(Conversation(), true).ok());
}

TEST(ChatTemplate, LoadFromDirFallsBackToTheDocumentedDefault) {
  const auto dir = std::filesystem::temp_directory_path() / ("atp_chat_template_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>"})";
  auto t = ChatTemplate::LoadFromDir(dir.string());
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_TRUE(t->is_default());
  EXPECT_EQ(t->Render(OJson::parse(R"([{"role": "user", "content": "Hi"}])"), true).value(),
            "<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // A template in the config wins, and a list of named templates picks "default".
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"eos_token": "</s>", "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ eos_token }}"}]})";
  t = ChatTemplate::LoadFromDir(dir.string());
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE(t->is_default());
  EXPECT_EQ(t->Render(OJson::array(), false).value(), "</s>");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace atp
