// The table of policy names: the one place a new policy is registered, and the one place that
// reads `A+B`: A is a policy that keeps whole rows (it takes a codec), B a row codec (kv/composite.h).
#include <functional>

#include "kv/atp_policy.h"
#include "kv/composite.h"
#include "kv/dense_policy.h"
#include "kv/evict_policy.h"
#include "kv/kivi_codec.h"
#include "kv/kv_policy.h"
#include "kv/lowrank_policy.h"
#include "kv/mx_codec.h"
#include "kv/policy_spec.h"

namespace atp {

namespace {

using FactoryResult = Result<std::shared_ptr<KvPolicyFactory>>;
using CodecPtr = std::shared_ptr<const RowCodec>;

struct Entry {
  const char* name;
  // Builds the policy; `codec` is B of `A+B`, null when the policy stands alone.
  std::function<FactoryResult(const PolicySpec&, const std::string& model_dir, CodecPtr codec)> make;
  // Whether `make` honours a codec (the policy may appear left of '+').
  bool takes_codec = false;
  // Set for row codecs (they may appear right of '+').
  std::function<Result<CodecPtr>(const PolicySpec&)> codec = nullptr;
};

Result<CodecPtr> DenseCodec(const PolicySpec& s) {
  ATP_RETURN_IF_ERROR(s.CheckKeys({{"dtype", "storage type f32|f16|bf16, default f32"}}));
  ATP_ASSIGN_OR_RETURN(DType dt, s.Dtype("dtype", DType::kF32));
  return MakeExactCodec(dt);
}

// A codec alone: every token's rows kept in its form.
FactoryResult AllRows(const Result<CodecPtr>& c) {
  if (!c.ok()) return c.status();
  return MakeCodecPolicyFactory(c.value());
}

const std::vector<Entry>& Registry() {
  static const std::vector<Entry> kEntries = {
      {"dense", [](const PolicySpec& s, const std::string&, CodecPtr) { return MakeDenseFactory(s); }, false, DenseCodec},
      {"atp", [](const PolicySpec& s, const std::string&, CodecPtr) { return MakeAtpFactory(s); }},
      {"lowrank", [](const PolicySpec& s, const std::string& dir, CodecPtr c) { return MakeLowRankFactory(s, dir, c); }, true},
      {"kivi", [](const PolicySpec& s, const std::string&, CodecPtr) { return AllRows(ParseKiviCodec(s)); }, false, ParseKiviCodec},
      {"mx", [](const PolicySpec& s, const std::string&, CodecPtr) { return AllRows(ParseMxCodec(s)); }, false, ParseMxCodec},
      {"streaming", [](const PolicySpec& s, const std::string&, CodecPtr c) { return MakeStreamingFactory(s, c); }, true},
      {"h2o", [](const PolicySpec& s, const std::string&, CodecPtr c) { return MakeH2oFactory(s, c); }, true},
      {"snapkv", [](const PolicySpec& s, const std::string&, CodecPtr c) { return MakeSnapKvFactory(s, c); }, true},
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

}  // namespace

Result<std::shared_ptr<KvPolicyFactory>> ParseKvPolicy(const std::string& text, const std::string& model_dir) {
  const size_t plus = text.find('+');
  if (plus == std::string::npos) {
    ATP_ASSIGN_OR_RETURN(PolicySpec spec, PolicySpec::Parse(text));
    ATP_ASSIGN_OR_RETURN(const Entry* e, Find(spec));
    return e->make(spec, model_dir, nullptr);
  }
  const std::string left = text.substr(0, plus), right = text.substr(plus + 1);
  if (right.find('+') != std::string::npos)
    return Status::InvalidArgument("kv policy '" + text + "': composition takes one '+' (POLICY+CODEC)");
  ATP_ASSIGN_OR_RETURN(PolicySpec a, PolicySpec::Parse(left));
  ATP_ASSIGN_OR_RETURN(PolicySpec b, PolicySpec::Parse(right));
  ATP_ASSIGN_OR_RETURN(const Entry* ea, Find(a));
  ATP_ASSIGN_OR_RETURN(const Entry* eb, Find(b));
  if (!eb->codec)
    return Status::InvalidArgument("kv policy '" + text + "': '" + b.name() +
                                   "' cannot follow '+'; the right side stores rows and must be one of: " +
                                   Names([](const Entry& e) { return bool(e.codec); }));
  if (!ea->takes_codec)
    return Status::InvalidArgument("kv policy '" + text + "': '" + a.name() +
                                   "' cannot keep its rows through a codec; left of '+' must be one of: " +
                                   Names([](const Entry& e) { return e.takes_codec; }));
  ATP_ASSIGN_OR_RETURN(CodecPtr codec, eb->codec(b));
  return ea->make(a, model_dir, codec);
}

}  // namespace atp
