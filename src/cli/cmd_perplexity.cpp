// `atp perplexity`: perplexity of a text file under the evaluation protocol.
#include <iostream>

#include "cli/common.h"
#include "core/mapped_file.h"
#include "eval/perplexity.h"

namespace atp::cli {

void AddPerplexity(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    std::string file;
    PerplexityOptions p;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("perplexity", "perplexity of a text under the evaluation protocol (docs/evaluation.md)");
  AddModelFlags(cmd, &o->f);
  cmd->add_option("-f,--file", o->file, "text file")->required();
  cmd->add_option("--window-context", o->p.context, "prefilled context tokens C per window")->capture_default_str();
  cmd->add_option("--scored", o->p.scored, "scored tokens S per window")->capture_default_str();
  cmd->add_option("--max-windows", o->p.max_windows, "stop after this many windows (0: all)")->capture_default_str();
  cmd->add_flag("--chunked", o->p.chunked, "score each window's S tokens as one causal chunk, not S decode steps");
  cmd->callback([o, run] {
    *run = [o]() -> int {
      auto l = Load(o->f, true);
      if (!l.ok()) return Fail("perplexity", l.status());
      auto text = ReadFile(o->file);
      if (!text.ok()) return Fail("perplexity", text.status());
      // The stream is BOS + the whole file as one text (the reference's convention).
      std::vector<int32_t> stream = l->tokenizer->Encode(*text, true);
      auto r = Perplexity(*l->model, *l->kv, stream, o->p, [](int done, int total) {
        std::cerr << "\rperplexity: window " << done << "/" << total << std::flush;
        if (done == total) std::cerr << "\n";
      });
      if (!r.ok()) return Fail("perplexity", r.status());
      if (o->f.json) {
        PrintJson({{"model", o->f.model}, {"file", o->file}, {"kv", l->kv->Describe()}, {"ppl", r->ppl}, {"nll", r->nll},
                   {"scored_tokens", r->scored_tokens}, {"windows", r->windows}, {"context", o->p.context},
                   {"scored_per_window", o->p.scored}, {"kv_bytes_per_token", r->kv_bytes_per_token},
                   {"kv_bytes_per_token_dense", r->kv_bytes_per_token_dense}});
      } else {
        std::cout << "perplexity " << r->ppl << " over " << r->scored_tokens << " scored tokens in " << r->windows
                  << " windows (kv " << l->kv->Describe() << ", " << r->kv_bytes_per_token << " KV bytes/token; dense "
                  << r->kv_bytes_per_token_dense << ")\n";
      }
      return 0;
    };
  });
}

}  // namespace atp::cli
