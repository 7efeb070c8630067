// The table of policy names, each family's parameters, and `A+B`: A is a policy that keeps whole rows
// (it takes a row form), B a row form (a codec alone). The one place a new policy's syntax is written.
#include "kv/policy_config.h"

#include <filesystem>
#include <functional>
#include <vector>

#include "kv/policy_spec.h"

namespace atp {

namespace {

using Family = decltype(KvPolicyConfig::params);

const MxFormat kMxFormats[] = {MxFormat::kFp8E4M3, MxFormat::kFp8E5M2, MxFormat::kFp6E2M3, MxFormat::kFp6E3M2,
                               MxFormat::kFp4E2M1, MxFormat::kInt8,    MxFormat::kNvFp4};

// Row forms, alone or right of '+'.
Result<RowForm> ParseExact(const PolicySpec& s) {
  ATP_RETURN_IF_ERROR(s.CheckKeys({{"dtype", "storage type f32|f16|bf16, default f32"}}));
  ATP_ASSIGN_OR_RETURN(DType dt, s.Dtype("dtype", DType::kF32));
  return RowForm(ExactForm{dt});
}

Result<RowForm> ParseMx(const PolicySpec& spec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"fmt", "element format fp8_e4m3|fp8_e5m2|fp6_e2m3|fp6_e3m2|fp4|int8|nvfp4, default fp8_e4m3"}}));
  ATP_ASSIGN_OR_RETURN(std::string name, spec.String("fmt", "fp8_e4m3"));
  ATP_ASSIGN_OR_RETURN(MxFormat f, ParseMxFormat(name));
  return RowForm(MxForm{f});
}

Result<RowForm> ParseKivi(const PolicySpec& spec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"bits", "bits per element 2|4|8, default 2"},
                                      {"group", "G: tokens per key group and channels per value group, default 32"},
                                      {"residual", "R: newest tokens kept exact, default 128"},
                                      {"dtype", "exact residual rows f32|f16|bf16, default f32"}}));
  KiviParams p;
  ATP_ASSIGN_OR_RETURN(std::string bits, spec.Choice("bits", "2", {"2", "4", "8"}));
  p.bits = std::stoi(bits);
  ATP_ASSIGN_OR_RETURN(p.group, spec.Int("group", 32, 1, 1 << 16));
  ATP_ASSIGN_OR_RETURN(p.residual, spec.Int("residual", 128, 0, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.dtype, spec.Dtype("dtype", DType::kF32));
  return RowForm(p);
}

// The form of atp's residual=NAME for blocks of `rows` summarized tokens (KIVI's group: AtpResidualGroup).
Result<RowForm> AtpResidualForm(const std::string& name, int rows) {
  if (name == "kivi2" || name == "kivi4" || name == "kivi8") {
    KiviParams k;
    k.bits = name[4] - '0';
    k.residual = 0;
    k.group = AtpResidualGroup(rows);
    return RowForm(k);
  }
  if (name.rfind("mx_", 0) == 0) {
    Result<MxFormat> f = ParseMxFormat(name.substr(3));
    if (!f.ok()) return Status::InvalidArgument("kv policy 'atp': residual=" + name + ": " + f.status().message());
    return RowForm(MxForm{*f});
  }
  return Status::InvalidArgument("kv policy 'atp': residual=" + name + " is not one of none, kivi2, kivi4, kivi8, mx_FMT (FMT one of mx's fmt)");
}

// atp's name for its residual form: kivi2|kivi4|kivi8 or mx_FMT.
std::string AtpResidualName(const RowForm& f) {
  if (auto* k = std::get_if<KiviParams>(&f)) return "kivi" + std::to_string(k->bits);
  return std::string("mx_") + MxFormatName(std::get<MxForm>(f).fmt);
}

Result<Family> ParseAtp(const PolicySpec& spec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"block", "block size B in tokens, default 64"},
                                      {"rank", "principal rows r per block, default 16"},
                                      {"tau", "energy fraction in (0,1]; chooses r per block instead of rank"},
                                      {"window", "exact window W in tokens, a multiple of block, default 64"},
                                      {"basis", "input (the paper's, from the layer input) or key"},
                                      {"proj", "dense, or lowrank: Q of block b's tokens in rank r on block b-1's input basis"},
                                      {"dtype", "storage type f32|f16|bf16, default f32"},
                                      {"keep", "exact rows kept per block: the E tokens its principal rows summarize worst, 0..block, default 0"},
                                      {"residual", "none, kivi2|kivi4|kivi8 or mx_FMT: each summarized token's residual kept in that codec (queries read tokens rebuilt)"},
                                      {"rope", "post (default: compress keys as appended, after RoPE) or pre: compress keys turned back to before RoPE, rotate each rebuilt key at its position (needs residual=)"}}));
  AtpParams p;
  ATP_ASSIGN_OR_RETURN(p.block, spec.Int("block", 64, 1, 1 << 16));
  ATP_ASSIGN_OR_RETURN(p.rank, spec.Int("rank", 16, 1, 1 << 16));
  ATP_ASSIGN_OR_RETURN(p.tau, spec.Float("tau", 0, 0, 1));
  if (spec.Has("tau") && p.tau <= 0) return Status::InvalidArgument("kv policy 'atp': tau must be in (0, 1]");
  if (spec.Has("tau") && spec.Has("rank")) return Status::InvalidArgument("kv policy 'atp': give rank or tau, not both");
  ATP_ASSIGN_OR_RETURN(p.window, spec.Int("window", p.block, 0, 1 << 24));
  if (p.window % p.block != 0)
    return Status::InvalidArgument("kv policy 'atp': window=" + std::to_string(p.window) + " must be a multiple of block=" +
                                   std::to_string(p.block));
  ATP_ASSIGN_OR_RETURN(std::string basis, spec.Choice("basis", "input", {"input", "key"}));
  p.key_basis = basis == "key";
  ATP_ASSIGN_OR_RETURN(std::string proj, spec.Choice("proj", "dense", {"dense", "lowrank"}));
  p.proj_lowrank = proj == "lowrank";
  ATP_ASSIGN_OR_RETURN(p.dtype, spec.Dtype("dtype", DType::kF32));
  ATP_ASSIGN_OR_RETURN(p.keep, spec.Int("keep", 0, 0, p.block));
  ATP_ASSIGN_OR_RETURN(std::string residual, spec.String("residual", "none"));
  if (residual != "none") {
    ATP_ASSIGN_OR_RETURN(p.residual, AtpResidualForm(residual, p.summarized()));
  }
  ATP_ASSIGN_OR_RETURN(std::string rope, spec.Choice("rope", "post", {"post", "pre"}));
  p.rope_pre = rope == "pre";
  if (p.rope_pre && !p.residual)
    return Status::InvalidArgument(
        "kv policy 'atp': rope=pre needs residual=: a principal row mixes the keys of a block's positions and has no "
        "single RoPE angle, so only keys rebuilt token by token (residual=) can be rotated at their own positions");
  return Family(p);
}

Result<Family> ParseLowRank(const PolicySpec& spec, const std::string& model_dir, std::optional<RowForm> codec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"rk", "key rank r_k, default 16"},
                                      {"rv", "value rank r_v, default 32"},
                                      {"mode", "calib (bases from atp calibrate) or online (per block)"},
                                      {"block", "online mode: block size in tokens, default 64"},
                                      {"file", "calib mode: basis file, default MODEL/kv_basis.safetensors (MODEL.kv_basis.safetensors for a .gguf)"},
                                      {"dtype", "coefficient storage f32|f16|bf16, default f32"}}));
  LowRankParams p;
  ATP_ASSIGN_OR_RETURN(p.rk, spec.Int("rk", 16, 1, 4096));
  ATP_ASSIGN_OR_RETURN(p.rv, spec.Int("rv", 32, 1, 4096));
  ATP_ASSIGN_OR_RETURN(std::string mode, spec.Choice("mode", "calib", {"calib", "online"}));
  p.online = mode == "online";
  ATP_ASSIGN_OR_RETURN(p.block, spec.Int("block", 64, 1, 1 << 16));
  ATP_ASSIGN_OR_RETURN(p.dtype, spec.Dtype("dtype", DType::kF32));
  if (codec && p.online)  // a KIVI residual would count within each sealed block and never apply
    return Status::InvalidArgument("kv policy 'lowrank': mode=online takes no codec after '+'; use mode=calib");
  p.codec = std::move(codec);
  if (!p.online) {
    ATP_ASSIGN_OR_RETURN(std::string file, spec.String("file", DefaultKvBasisPath(model_dir)));
    if (!std::filesystem::exists(file))
      return Status::NotFound("kv policy 'lowrank': no basis file " + file + " (run `atp calibrate -m MODEL -f TEXT --into-model` first, pass file=BASIS, or use mode=online)");
    ATP_ASSIGN_OR_RETURN(KvBasis b, ReadKvBasis(file));
    if (p.rk > b.head_dim || p.rv > b.head_dim)
      return Status::InvalidArgument("kv policy 'lowrank': rk and rv must be <= head_dim " + std::to_string(b.head_dim));
    p.basis = std::make_shared<const KvBasis>(std::move(b));
  }
  return Family(p);
}

Result<Family> ParseStreaming(const PolicySpec& spec, std::optional<RowForm> codec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"budget", "tokens kept per KV head (sinks + window), default 256"},
                                      {"sinks", "first tokens always kept, default 4"}}));
  EvictParams p;
  p.kind = EvictParams::Kind::kStreaming;
  ATP_ASSIGN_OR_RETURN(p.budget, spec.Int("budget", 256, 1, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.sinks, spec.Int("sinks", std::min(4, p.budget - 1), 0, 1 << 24));
  if (p.sinks >= p.budget)
    return Status::InvalidArgument("kv policy 'streaming': sinks=" + std::to_string(p.sinks) + " must be below budget=" +
                                   std::to_string(p.budget));
  p.codec = std::move(codec);
  return Family(p);
}

Result<Family> ParseH2o(const PolicySpec& spec, std::optional<RowForm> codec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"budget", "tokens kept per KV head (heavy hitters + recent), default 256"},
                                      {"recent", "newest tokens never evicted, default budget/2"}}));
  EvictParams p;
  p.kind = EvictParams::Kind::kH2o;
  ATP_ASSIGN_OR_RETURN(p.budget, spec.Int("budget", 256, 1, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.recent, spec.Int("recent", p.budget / 2, 0, p.budget));
  p.codec = std::move(codec);
  return Family(p);
}

Result<Family> ParseSnapKv(const PolicySpec& spec, std::optional<RowForm> codec) {
  ATP_RETURN_IF_ERROR(spec.CheckKeys({{"budget", "tokens kept per KV head after a prompt, default 256"},
                                      {"window", "observation window: last queries of the prompt that vote, default 32"},
                                      {"pool", "max-pooling kernel over neighbouring votes, default 7 (1: none)"}}));
  EvictParams p;
  p.kind = EvictParams::Kind::kSnapKv;
  ATP_ASSIGN_OR_RETURN(p.budget, spec.Int("budget", 256, 2, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.window, spec.Int("window", std::min(32, p.budget - 1), 1, 1 << 24));
  ATP_ASSIGN_OR_RETURN(p.pool, spec.Int("pool", 7, 1, 1 << 16));
  if (p.window >= p.budget)
    return Status::InvalidArgument("kv policy 'snapkv': window=" + std::to_string(p.window) + " must be below budget=" +
                                   std::to_string(p.budget));
  p.codec = std::move(codec);
  return Family(p);
}

struct Entry {
  const char* name;
  // Parses the policy; `codec` is B of `A+B`, absent when the policy stands alone.
  std::function<Result<Family>(const PolicySpec&, const std::string& model_dir, std::optional<RowForm> codec)> parse;
  // Whether the policy honours a codec (it may appear left of '+').
  bool takes_codec = false;
  // Set for row forms (they may appear right of '+').
  std::function<Result<RowForm>(const PolicySpec&)> form = nullptr;
};

// A row form alone: every token's rows kept in it.
Result<Family> AllRows(Result<RowForm> f) {
  if (!f.ok()) return f.status();
  return Family(RowsParams{std::move(f).value()});
}

const std::vector<Entry>& Registry() {
  using Codec = std::optional<RowForm>;
  static const std::vector<Entry> kEntries = {
      {"dense", [](const PolicySpec& s, const std::string&, Codec) { return AllRows(ParseExact(s)); }, false, ParseExact},
      {"atp", [](const PolicySpec& s, const std::string&, Codec) { return ParseAtp(s); }},
      {"lowrank", [](const PolicySpec& s, const std::string& dir, Codec c) { return ParseLowRank(s, dir, std::move(c)); }, true},
      {"kivi", [](const PolicySpec& s, const std::string&, Codec) { return AllRows(ParseKivi(s)); }, false, ParseKivi},
      {"mx", [](const PolicySpec& s, const std::string&, Codec) { return AllRows(ParseMx(s)); }, false, ParseMx},
      {"streaming", [](const PolicySpec& s, const std::string&, Codec c) { return ParseStreaming(s, std::move(c)); }, true},
      {"h2o", [](const PolicySpec& s, const std::string&, Codec c) { return ParseH2o(s, std::move(c)); }, true},
      {"snapkv", [](const PolicySpec& s, const std::string&, Codec c) { return ParseSnapKv(s, std::move(c)); }, true},
  };
  return kEntries;
}

std::string Names(bool (*pick)(const Entry&)) {
  std::string names;
  for (auto& e : Registry())
    if (pick(e)) names += (names.empty() ? "" : ", ") + std::string(e.name);
  return names;
}

Result<const Entry*> Find(const PolicySpec& spec) {
  for (auto& e : Registry())
    if (spec.name() == e.name) return &e;
  return Status::InvalidArgument("unknown kv policy '" + spec.name() + "'; valid policies: " +
                                 Names([](const Entry&) { return true; }));
}

// "A+B" canonical text: the policy's own description, then "+form" unless the form is the default.
std::string WithCodec(const std::string& policy, const std::optional<RowForm>& codec) {
  return codec ? policy + "+" + DescribeRowForm(*codec) : policy;
}

std::string Describe(const RowsParams& p) { return DescribeRowForm(p.form); }

std::string Describe(const AtpParams& p) {
  std::string d = "atp:block=" + std::to_string(p.block);
  d += p.tau > 0 ? ",tau=" + std::to_string(p.tau) : ",rank=" + std::to_string(p.rank);
  d += ",window=" + std::to_string(p.window) + ",basis=" + (p.key_basis ? "key" : "input");
  d += std::string(",proj=") + (p.proj_lowrank ? "lowrank" : "dense");
  if (p.keep > 0) d += ",keep=" + std::to_string(p.keep);
  if (p.residual) d += ",residual=" + AtpResidualName(*p.residual);
  if (p.rope_pre) d += ",rope=pre";
  return d + ",dtype=" + std::string(DTypeName(p.dtype));
}

std::string Describe(const LowRankParams& p) {
  std::string d = "lowrank:rk=" + std::to_string(p.rk) + ",rv=" + std::to_string(p.rv);
  d += p.online ? ",mode=online,block=" + std::to_string(p.block) : ",mode=calib";
  return WithCodec(d + ",dtype=" + std::string(DTypeName(p.dtype)), p.codec);
}

std::string Describe(const EvictParams& p) {
  std::string d;
  switch (p.kind) {
    case EvictParams::Kind::kStreaming:
      d = "streaming:budget=" + std::to_string(p.budget) + ",sinks=" + std::to_string(p.sinks);
      break;
    case EvictParams::Kind::kH2o: d = "h2o:budget=" + std::to_string(p.budget) + ",recent=" + std::to_string(p.recent); break;
    case EvictParams::Kind::kSnapKv:
      d = "snapkv:budget=" + std::to_string(p.budget) + ",window=" + std::to_string(p.window) + ",pool=" + std::to_string(p.pool);
      break;
  }
  return WithCodec(d, p.codec);
}

}  // namespace

std::string DescribeRowForm(const RowForm& form) {
  if (auto* e = std::get_if<ExactForm>(&form)) return "dense:dtype=" + std::string(DTypeName(e->dtype));
  if (auto* m = std::get_if<MxForm>(&form)) return std::string("mx:fmt=") + MxFormatName(m->fmt);
  const KiviParams& k = std::get<KiviParams>(form);
  return "kivi:bits=" + std::to_string(k.bits) + ",group=" + std::to_string(k.group) +
         ",residual=" + std::to_string(k.residual) + ",dtype=" + std::string(DTypeName(k.dtype));
}

std::string KvPolicyConfig::Describe() const {
  return std::visit([](const auto& p) { return atp::Describe(p); }, params);
}

bool KvPolicyConfig::NeedsWholePrompt() const {
  auto* e = std::get_if<EvictParams>(&params);
  return e && e->kind != EvictParams::Kind::kStreaming;
}

Result<KvPolicyConfig> ParseKvConfig(const std::string& text, const std::string& model_dir) {
  const size_t plus = text.find('+');
  if (plus == std::string::npos) {
    ATP_ASSIGN_OR_RETURN(PolicySpec spec, PolicySpec::Parse(text));
    ATP_ASSIGN_OR_RETURN(const Entry* e, Find(spec));
    ATP_ASSIGN_OR_RETURN(Family f, e->parse(spec, model_dir, std::nullopt));
    return KvPolicyConfig{std::move(f)};
  }
  const std::string left = text.substr(0, plus), right = text.substr(plus + 1);
  if (right.find('+') != std::string::npos)
    return Status::InvalidArgument("kv policy '" + text + "': composition takes one '+' (POLICY+CODEC)");
  ATP_ASSIGN_OR_RETURN(PolicySpec a, PolicySpec::Parse(left));
  ATP_ASSIGN_OR_RETURN(PolicySpec b, PolicySpec::Parse(right));
  ATP_ASSIGN_OR_RETURN(const Entry* ea, Find(a));
  ATP_ASSIGN_OR_RETURN(const Entry* eb, Find(b));
  if (!eb->form)
    return Status::InvalidArgument("kv policy '" + text + "': '" + b.name() +
                                   "' cannot follow '+'; the right side stores rows and must be one of: " +
                                   Names([](const Entry& e) { return bool(e.form); }));
  if (!ea->takes_codec)
    return Status::InvalidArgument("kv policy '" + text + "': '" + a.name() +
                                   "' cannot keep its rows through a codec; left of '+' must be one of: " +
                                   Names([](const Entry& e) { return e.takes_codec; }));
  ATP_ASSIGN_OR_RETURN(RowForm codec, eb->form(b));
  ATP_ASSIGN_OR_RETURN(Family f, ea->parse(a, model_dir, codec));
  return KvPolicyConfig{std::move(f)};
}

int AtpResidualGroup(int rows) {
  for (int g = std::min(rows, 32); g > 1; --g)
    if (rows % g == 0) return g;
  return 1;
}

const char* MxFormatName(MxFormat f) {
  switch (f) {
    case MxFormat::kFp8E4M3: return "fp8_e4m3";
    case MxFormat::kFp8E5M2: return "fp8_e5m2";
    case MxFormat::kFp6E2M3: return "fp6_e2m3";
    case MxFormat::kFp6E3M2: return "fp6_e3m2";
    case MxFormat::kFp4E2M1: return "fp4";
    case MxFormat::kInt8: return "int8";
    case MxFormat::kNvFp4: return "nvfp4";
  }
  return "?";
}

Result<MxFormat> ParseMxFormat(const std::string& name) {
  std::string list;
  for (MxFormat f : kMxFormats) {
    if (name == MxFormatName(f)) return f;
    list += (list.empty() ? "" : ", ") + std::string(MxFormatName(f));
  }
  return Status::InvalidArgument("kv policy 'mx': fmt=" + name + " is not one of " + list);
}

}  // namespace atp
