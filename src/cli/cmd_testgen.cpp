// `atp testgen`: write a random-weight checkpoint of a real model's shape (for speed work).
#include <algorithm>
#include <iostream>

#include "cli/common.h"
#include "model/testgen.h"

namespace atp::cli {

void AddTestgen(CLI::App& app, Runner* run) {
  struct Opts {
    std::string shape, out, dtype = "bf16";
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  std::string names;
  for (auto& n : TestShapeNames()) names += (names.empty() ? "" : ", ") + n;
  auto* cmd = app.add_subcommand("testgen", "write a RANDOM-weight checkpoint with a real model's shape (" + names + ")");
  cmd->add_option("--shape", o->shape, "model shape: " + names)->required();
  cmd->add_option("-o,--out", o->out, "output directory")->required();
  cmd->add_option("--type", o->dtype, "weight dtype f32|f16|bf16")->capture_default_str();
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  cmd->callback([o, run, names] {
    *run = [o, names]() -> int {
      DType dt;
      // Q8_0/Q4_0 cannot go in safetensors; `--weights q8_0|q4_0` quantizes a checkpoint at load instead.
      if (!ParseDType(o->dtype, &dt) || IsBlockDType(dt))
        return Fail("testgen", Status::InvalidArgument("--type must be f32, f16 or bf16 (for q8_0/q4_0 load with --weights)"));
      const auto shapes = TestShapeNames();
      if (std::find(shapes.begin(), shapes.end(), o->shape) == shapes.end())  // before any log line
        return Fail("testgen", Status::InvalidArgument("unknown --shape '" + o->shape + "'; valid shapes: " + names));
      std::cerr << "testgen: writing " << o->shape << " (" << o->dtype << ", random weights) to " << o->out << "\n";
      Status s = WriteTestModel(o->shape, o->out, dt, o->seed);
      if (!s.ok()) return Fail("testgen", s);
      std::cerr << "testgen: done\n";
      return 0;
    };
  });
}

}  // namespace atp::cli
