// `atp inspect`: a checkpoint's config and tensors.
#include <iostream>

#include "cli/common.h"

namespace atp::cli {

void AddInspect(CLI::App& app, Runner* run) {
  auto f = std::make_shared<CommonFlags>();
  auto* cmd = app.add_subcommand("inspect", "print a checkpoint's config and tensors");
  AddModelFlags(cmd, f.get(), false);
  cmd->callback([f, run] {
    *run = [f]() -> int {
      auto l = Load(*f, false);
      if (!l.ok()) return Fail("inspect", l.status());
      const ModelConfig& c = l->model->config();
      nlohmann::json tensors = nlohmann::json::array();
      int64_t params = 0;
      for (auto& [name, t] : l->model->tensors().tensors()) {
        tensors.push_back({{"name", name}, {"dtype", DTypeName(t.dtype)}, {"shape", t.shape}});
        params += t.numel();
      }
      nlohmann::json j = {{"model_type", c.model_type}, {"layers", c.num_layers}, {"hidden_size", c.hidden_size},
                          {"intermediate_size", c.intermediate_size}, {"heads", c.num_heads},
                          {"kv_heads", c.num_kv_heads}, {"head_dim", c.head_dim}, {"vocab_size", c.vocab_size},
                          {"max_position", c.max_position}, {"rope_theta", c.rope_theta},
                          {"tie_word_embeddings", c.tie_word_embeddings}, {"attention_bias", c.attention_bias},
                          {"parameters", params}, {"weight_bytes", l->model->weight_bytes()},
                          {"tokenizer", l->tokenizer != nullptr}};
      if (f->json) {
        j["tensors"] = tensors;
        PrintJson(j);
      } else {
        std::cout << j.dump(2) << "\n";
        for (auto& t : tensors) std::cout << t["name"].get<std::string>() << "  " << t["dtype"].get<std::string>() << "  " << t["shape"].dump() << "\n";
      }
      return 0;
    };
  });
}

}  // namespace atp::cli
