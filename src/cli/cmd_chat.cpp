// `atp chat`: a conversation with the model's chat template, one user turn per line of stdin.
// Each turn re-renders the whole conversation and prefills it again: chat templates are not
// guaranteed to render a conversation as a prefix of its continuation, so reusing the cache could
// silently diverge from what the template means; prefill is the fast (GEMM) path, so this stays cheap.
#include <unistd.h>

#include <iostream>

#include "cli/common.h"
#include "tokenizer/chat_template.h"

namespace atp::cli {

namespace {

// End-of-turn markers of common templates. A model that emits one has finished its turn; those in
// the vocabulary as special tokens become stop strings (EOS already stops generation).
std::vector<std::string> TurnEndStops(const Tokenizer& tok) {
  std::vector<std::string> out;
  for (const char* s : {"<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|start_header_id|>", "<|end|>", "<end_of_turn>"}) {
    const int32_t id = tok.TokenToId(s);
    if (id >= 0 && tok.IsSpecial(id)) out.push_back(s);
  }
  return out;
}

// Renders and encodes the conversation, dropping the oldest non-system messages until it leaves at
// least one token of room in the context. Fails if even the newest user message alone does not fit.
Result<std::vector<int32_t>> EncodeFitting(const ChatTemplate& chat, const Tokenizer& tok, nlohmann::ordered_json* msgs,
                                           int ctx) {
  const size_t first = (!msgs->empty() && (*msgs)[0]["role"] == "system") ? 1 : 0;
  while (true) {
    ATP_ASSIGN_OR_RETURN(std::string text, chat.Render(*msgs, /*add_generation_prompt=*/true));
    std::vector<int32_t> ids = tok.Encode(text, /*add_special=*/false);  // the template writes BOS itself
    if (int(ids.size()) < ctx) return ids;
    if (msgs->size() <= first + 1)
      return Status::InvalidArgument("this message needs " + std::to_string(ids.size()) +
                                     " tokens with the template; the context holds " + std::to_string(ctx));
    msgs->erase(msgs->begin() + first);
  }
}

}  // namespace

void AddChat(CLI::App& app, Runner* run) {
  struct Opts {
    CommonFlags f;
    GenerateOptions g;
    std::string system;
  };
  auto o = std::make_shared<Opts>();
  o->g.max_tokens = 256;
  auto* cmd = app.add_subcommand(
      "chat",
      "chat with the model through its chat template: one user message per line of stdin; '/reset' forgets the "
      "conversation, '/exit' or end of input ends it. The oldest turns are dropped when the context is full.");
  AddModelFlags(cmd, &o->f);
  AddSamplingFlags(cmd, &o->g);
  cmd->add_option("--system", o->system, "system message opening the conversation");
  cmd->callback([o, run, cmd] {
    const uint64_t seed = ResolveSeed(cmd, &o->g);
    *run = [o, seed]() -> int {
      auto l = Load(o->f, true);
      if (!l.ok()) return Fail("chat", l.status());
      auto chat = LoadChatTemplate(o->f.model, *l);
      if (!chat.ok()) return Fail("chat", chat.status());
      if (chat->is_default())
        std::cerr << "atp chat: the model ships no chat template; using ChatML (" << o->f.model << ")\n";
      for (auto& s : TurnEndStops(*l->tokenizer)) o->g.stop.push_back(s);
      o->g.context = o->f.ctx;
      const int ctx = o->f.ctx > 0 ? o->f.ctx : l->model->config().max_position;
      const bool tty = isatty(STDIN_FILENO);
      const bool stream = !o->f.json;

      nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
      auto reset = [&] {
        msgs = nlohmann::ordered_json::array();
        if (!o->system.empty()) msgs.push_back({{"role", "system"}, {"content", o->system}});
      };
      reset();
      nlohmann::json turns = nlohmann::json::array();
      std::string line;
      while (true) {
        if (tty && stream) std::cout << "> " << std::flush;
        if (!std::getline(std::cin, line) || line == "/exit") break;
        if (line == "/reset") {
          reset();
          continue;
        }
        if (line.empty()) continue;
        msgs.push_back({{"role", "user"}, {"content", line}});
        auto ids = EncodeFitting(*chat, *l->tokenizer, &msgs, ctx);
        if (!ids.ok()) {
          // One turn that cannot run does not end the conversation: report it and forget that message.
          std::cerr << "atp chat: " << ids.status().ToString() << "\n";
          msgs.erase(msgs.end() - 1);
          continue;
        }
        auto r = Generate(*l->model, *l->tokenizer, *l->kv, *ids, o->g, [&](const std::string& s) {
          if (stream) std::cout << s << std::flush;
        });
        if (!r.ok()) return Fail("chat", r.status());
        if (stream) std::cout << std::endl;
        std::cerr << "[" << ids->size() << " prompt tokens, " << r->token_ids.size()
                  << " generated, finish: " << r->finish_reason << ", seed " << seed << "]\n";
        msgs.push_back({{"role", "assistant"}, {"content", r->text}});
        turns.push_back({{"user", line}, {"assistant", r->text}, {"prompt_tokens", ids->size()},
                         {"completion_tokens", r->token_ids.size()}, {"finish_reason", r->finish_reason}});
      }
      if (o->f.json) PrintJson({{"turns", turns}, {"kv", l->kv->Describe()}, {"seed", seed}});
      return 0;
    };
  });
}

}  // namespace atp::cli
