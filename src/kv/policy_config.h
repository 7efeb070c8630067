// A KV policy string parsed once into typed parameters: the one parser every backend builds its policies
// from. The host's factories (kv/kv_registry.cpp) and the GPU's (cuda/kv_policies.cpp) both take a
// KvPolicyConfig, so neither reads policy text, and a parameter's name, default, range and error message
// are written here alone. Describe() gives the canonical string back (reports, the prefix cache's key, the
// scheduler's footprint cache); parsing that string gives the same config.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "core/dtype.h"
#include "core/status.h"
#include "format/basis_file.h"
#include "kernels/packed_attention.h"

namespace atp {

// The forms whole rows are kept in (a row codec: `dense:dtype=`, `mx:fmt=`, `kivi:...`, also B of `A+B`).
struct ExactForm {
  DType dtype = DType::kF32;
};
struct MxForm {
  MxFormat fmt = MxFormat::kFp8E4M3;
};
struct KiviParams {
  int bits = 2;
  int group = 32;       // G: tokens per key group, channels per value group
  int residual = 128;   // R: newest rows kept exact
  DType dtype = DType::kF32;  // of the exact residual rows
};
using RowForm = std::variant<ExactForm, MxForm, KiviParams>;

// `dense`, `mx`, `kivi` alone: every token's K and V rows in one form.
struct RowsParams {
  RowForm form;
};

// `atp` (kv/atp_policy.h, docs/design.md section 4).
struct AtpParams {
  int block = 64;
  int rank = 16;
  double tau = 0;       // > 0: rank by energy fraction instead
  int window = 64;      // exact window W, a multiple of block
  bool key_basis = false;
  bool proj_lowrank = false;  // hand out Q bases (InputBases)
  DType dtype = DType::kF32;
  int keep = 0;               // E: exact rows kept per compressed block
  // The summarized tokens' residuals (residual=kiviN: KIVI in groups of AtpResidualGroup(summarized()),
  // no exact rows of its own; residual=mx_FMT); none when absent.
  std::optional<RowForm> residual;
  bool rope_pre = false;      // compress keys before RoPE (needs residual)
  int summarized() const { return block - keep; }  // tokens of a block the principal rows stand for
};

// `lowrank` (kv/lowrank_policy.h).
struct LowRankParams {
  int rk = 16, rv = 32;
  bool online = false;
  int block = 64;  // online mode
  DType dtype = DType::kF32;
  std::shared_ptr<const KvBasis> basis;  // calib mode: the file's bases, read at parse time
  std::optional<RowForm> codec;          // B of `lowrank+B`; absent: exact rows in dtype
};

// `streaming`, `h2o`, `snapkv` (kv/evict_policy.h).
struct EvictParams {
  enum class Kind { kStreaming, kH2o, kSnapKv };
  Kind kind = Kind::kStreaming;
  int budget = 256;
  int sinks = 4;     // streaming
  int recent = 128;  // h2o
  int window = 32;   // snapkv observation window
  int pool = 7;      // snapkv pooling kernel
  std::optional<RowForm> codec;  // B of `A+B`; absent: exact f32 rows
};

struct KvPolicyConfig {
  std::variant<RowsParams, AtpParams, LowRankParams, EvictParams> params;
  // The canonical policy string, e.g. "dense:dtype=f32" or "h2o:budget=256,recent=128+mx:fmt=fp8_e4m3".
  std::string Describe() const;
  // Whether a prompt must reach Append/Attend in one call (KvPolicyFactory::NeedsWholePrompt).
  bool NeedsWholePrompt() const;
};

// Parses "name:key=value,..." or "A+B". Errors name the policy and list valid names and keys.
// `model_dir` lets policies find files stored beside the model (calibrated bases); may be empty.
Result<KvPolicyConfig> ParseKvConfig(const std::string& text, const std::string& model_dir = "");

// The canonical text of a row form alone, e.g. "mx:fmt=fp8_e4m3".
std::string DescribeRowForm(const RowForm& form);

// The KIVI group G of residual=kivi2|kivi4|kivi8 for blocks of `rows` summarized tokens (tokens per key
// group, channels per value group): the largest divisor of `rows` up to KIVI's 32, so that no key
// group straddles two blocks (it would wait for the next block, and a query's form would depend on it).
int AtpResidualGroup(int rows);

// "fp8_e4m3", ... ; and back.
const char* MxFormatName(MxFormat f);
Result<MxFormat> ParseMxFormat(const std::string& name);

}  // namespace atp
