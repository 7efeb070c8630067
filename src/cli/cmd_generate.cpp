// `atp generate`: stream a continuation of a prompt (given, read from a file, or from stdin).
#include <chrono>
#include <iostream>
#include <iterator>

#include "cli/common.h"
#include "core/mapped_file.h"
#include "engine/generate.h"

namespace atp::cli {

void AddGenerate(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    std::string prompt;
    std::string file;
    GenerateOptions g;
    bool no_bos = false;
  };
  auto o = std::make_shared<Opts>();
  o->g.max_tokens = 128;
  auto* cmd = app.add_subcommand("generate", "generate text from a prompt (streamed to stdout)");
  AddModelFlags(cmd, &o->f);
  auto* prompt = cmd->add_option("-p,--prompt", o->prompt, "prompt text ('-': read it from stdin)");
  cmd->add_option("-f,--file", o->file, "read the prompt from FILE ('-': stdin), as it is")->excludes(prompt);
  AddSamplingFlags(cmd, &o->g);
  cmd->add_flag("--no-bos", o->no_bos, "do not add the tokenizer's special prefix (BOS)");
  cmd->callback([o, run, cmd] {
    const bool has_prompt = cmd->count("--prompt") > 0, has_file = cmd->count("--file") > 0;
    const uint64_t seed = ResolveSeed(cmd, &o->g);
    *run = [o, has_prompt, has_file, seed]() -> int {
      if (!has_prompt && !has_file)
        return Fail("generate", Status::InvalidArgument("no prompt: give -p TEXT, -f FILE, or -p - to read stdin"));
      const std::string from = has_file ? o->file : o->prompt == "-" ? "-" : "";
      if (from == "-") {
        o->prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      } else if (!from.empty()) {
        auto text = ReadFile(from);
        if (!text.ok()) return Fail("generate", text.status().WithContext("-f: "));
        o->prompt = *text;
      }
      auto l = Load(o->f, true);
      if (!l.ok()) return Fail("generate", l.status());
      std::vector<int32_t> ids = l->tokenizer->Encode(o->prompt, !o->no_bos);
      o->g.context = o->f.ctx;
      const bool stream = !o->f.json;
      auto r = Generate(*l->model, *l->tokenizer, *l->kv, ids, o->g, [&](const std::string& s) {
        if (stream) std::cout << s << std::flush;
      });
      if (!r.ok()) return Fail("generate", r.status());
      if (stream) std::cout << std::endl;
      const double prefill_tps = r->prompt_ids.size() / std::max(r->prefill_seconds, 1e-9);
      const double decode_tps = r->token_ids.size() > 1 ? (r->token_ids.size() - 1) / std::max(r->decode_seconds, 1e-9) : 0;
      if (o->f.json) {
        PrintJson({{"prompt_tokens", r->prompt_ids.size()}, {"completion_tokens", r->token_ids.size()},
                   {"text", r->text}, {"token_ids", r->token_ids}, {"prefill_tok_s", prefill_tps},
                   {"decode_tok_s", decode_tps}, {"finish_reason", r->finish_reason}, {"kv", l->kv->Describe()},
                   {"seed", seed}});
      } else {
        std::cerr << "[" << r->prompt_ids.size() << " prompt tokens at " << int(prefill_tps) << " tok/s, "
                  << r->token_ids.size() << " generated at " << int(decode_tps) << " tok/s, finish: " << r->finish_reason
                  << ", seed " << seed << "]\n";
      }
      return 0;
    };
  });
}

}  // namespace atp::cli
