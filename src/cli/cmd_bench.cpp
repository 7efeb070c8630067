// `atp bench`: prefill and decode speed of a model under a KV policy, against the machine's limits.
#include <cstdio>
#include <iostream>

#include "cli/common.h"
#include "core/thread_pool.h"
#include "eval/bench.h"

namespace atp::cli {

void AddBench(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    BenchOptions b;
    bool roofline = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("bench", "prefill and decode tokens/s, KV bytes/token, roofline fraction");
  AddModelFlags(cmd, &o->f);
  cmd->add_option("--prompt-tokens", o->b.prompt_tokens, "prefill length")->capture_default_str();
  cmd->add_option("--decode-context", o->b.context, "tokens in the cache before the timed decode steps")->capture_default_str();
  cmd->add_option("--decode-tokens", o->b.decode_tokens, "timed decode steps per repeat")->capture_default_str();
  cmd->add_option("--repeats", o->b.repeats, "repeats (medians are reported)")->capture_default_str();
  cmd->add_flag("--roofline", o->roofline, "also measure memory bandwidth and sgemm throughput");
  cmd->add_flag("--random-fill", o->b.random_fill,
                "fill the decode cache with random rows appended to the policies instead of a model prefill (long contexts in seconds)");
  cmd->callback([o, run] {
    *run = [o]() -> int {
      auto l = Load(o->f, false);
      if (!l.ok()) return Fail("bench", l.status());
      auto progress = [](const std::string& s) { std::cerr << "bench: " << s << "\n"; };
      o->b.roofline = o->roofline;
      auto r = BenchModel(*l->model, *l->kv, o->b, progress);
      if (!r.ok()) return Fail("bench", r.status());
      nlohmann::json j = {{"model", o->f.model}, {"kv", l->kv->Describe()}, {"threads", ThreadPool::Global().size()},
                          {"prompt_tokens", o->b.prompt_tokens}, {"context", o->b.context},
                          {"random_fill", o->b.random_fill},
                          {"prefill_tok_s", r->prefill_tok_s}, {"prefill_gflop_s", r->prefill_flop_s / 1e9},
                          {"decode_tok_s", r->decode_tok_s}, {"decode_ms_per_token", r->decode_ms_per_token},
                          {"decode_ms_per_token_mean", r->decode_ms_per_token_mean},
                          {"kv_ms_per_token", r->attention_ms_per_token}, {"kv_bytes_per_token", r->kv_bytes_per_token},
                          {"bytes_per_decode_token", r->bytes_per_decode_token}, {"roofline_fraction", nullptr}};
      if (o->roofline) {
        // Limits measured next to each timed run; fractions are medians of per-run ratios
        // (BenchOptions::roofline says why).
        j["bandwidth_gb_s"] = r->bandwidth_bytes_s / 1e9;
        j["roofline_decode_tok_s"] = r->bandwidth_bytes_s / r->bytes_per_decode_token;
        j["roofline_fraction"] = r->roofline_fraction;
        j["sgemm_gflop_s"] = r->sgemm_flop_s / 1e9;
        j["prefill_sgemm_fraction"] = r->prefill_sgemm_fraction;
      }
      if (o->f.json) {
        PrintJson(j);
        return 0;
      }
      char line[512];
      std::cout << "atp bench: " << o->f.model << ", kv " << l->kv->Describe() << ", " << ThreadPool::Global().size() << " threads\n";
      const std::string prefill = std::to_string(o->b.prompt_tokens) + " tokens";
      const std::string decode =
          "after " + std::to_string(o->b.context) + " tokens" + (o->b.random_fill ? " (random fill)" : "");
      std::snprintf(line, sizeof line, "  %-8s %-30s %10.1f tok/s  %.2f GFLOP/s\n", "prefill", prefill.c_str(), r->prefill_tok_s,
                    r->prefill_flop_s / 1e9);
      std::cout << line;
      std::snprintf(line, sizeof line, "  %-8s %-30s %10.1f tok/s  %.3f ms/token (median; mean %.3f; in the KV policy %.3f)\n",
                    "decode", decode.c_str(), r->decode_tok_s, r->decode_ms_per_token, r->decode_ms_per_token_mean,
                    r->attention_ms_per_token);
      std::cout << line;
      std::snprintf(line, sizeof line, "  %-8s %.0f KV bytes/token; %.3f MB read per decode token\n", "memory",
                    r->kv_bytes_per_token, r->bytes_per_decode_token / 1e6);
      std::cout << line;
      if (o->roofline) {
        std::snprintf(line, sizeof line,
                      "  %-8s read bandwidth %.2f GB/s: decode at %.1f%% of its %.1f tok/s; sgemm %.2f GFLOP/s: prefill at %.1f%%\n",
                      "limits", r->bandwidth_bytes_s / 1e9, 100 * r->roofline_fraction, r->bandwidth_bytes_s / r->bytes_per_decode_token,
                      r->sgemm_flop_s / 1e9, 100 * r->prefill_sgemm_fraction);
        std::cout << line;
      }
      return 0;
    };
  });
}

}  // namespace atp::cli
