// The one parser of both backends (kv/policy_config.h): typed parameters, and canonical strings that
// parse back to themselves and that the host's factories report unchanged.
#include "kv/policy_config.h"

#include <gtest/gtest.h>

#include "kv/kv_policy.h"

namespace atp {
namespace {

TEST(PolicyConfig, CanonicalStringsParseBackToThemselves) {
  for (const char* spec :
       {"dense", "dense:dtype=bf16", "mx:fmt=nvfp4", "kivi:bits=4,group=16,residual=32,dtype=f16",
        "atp", "atp:block=32,rank=4,window=64,basis=key,dtype=f16", "atp:block=16,tau=0.9",
        "atp:proj=lowrank,rank=8", "atp:block=32,rank=4,keep=8,residual=kivi4,rope=pre",
        "atp:block=32,rank=4,residual=mx_fp6_e2m3", "lowrank:mode=online,rk=8,rv=8,block=16",
        "streaming:budget=64", "streaming:budget=64,sinks=2+dense:dtype=f16", "h2o:budget=64+mx:fmt=fp4",
        "snapkv:budget=64,window=8,pool=3+kivi:bits=2,group=16", "streaming+dense:dtype=f32"}) {
    SCOPED_TRACE(spec);
    auto c = ParseKvConfig(spec);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    const std::string canon = c->Describe();
    auto again = ParseKvConfig(canon);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(again->Describe(), canon);
    auto host = ParseKvPolicy(spec);
    ASSERT_TRUE(host.ok()) << host.status().ToString();
    EXPECT_EQ((*host)->Describe(), canon);
    EXPECT_EQ((*host)->NeedsWholePrompt(), c->NeedsWholePrompt());
  }
}

TEST(PolicyConfig, TypedParameters) {
  auto a = ParseKvConfig("atp:block=32,rank=8,keep=4,residual=kivi4");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  const AtpParams& p = std::get<AtpParams>(a->params);
  EXPECT_EQ(p.block, 32);
  EXPECT_EQ(p.rank, 8);
  EXPECT_EQ(p.window, 32);  // defaults to block
  EXPECT_EQ(p.keep, 4);
  ASSERT_TRUE(p.residual.has_value());
  const KiviParams& k = std::get<KiviParams>(*p.residual);
  EXPECT_EQ(k.bits, 4);
  EXPECT_EQ(k.group, 28);  // AtpResidualGroup(32 - 4): 28 divides the 28 summarized tokens
  EXPECT_EQ(k.residual, 0);

  auto h = ParseKvConfig("h2o:budget=64+mx:fmt=fp4");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  const EvictParams& e = std::get<EvictParams>(h->params);
  EXPECT_EQ(e.kind, EvictParams::Kind::kH2o);
  EXPECT_EQ(e.budget, 64);
  EXPECT_EQ(e.recent, 32);  // budget / 2
  ASSERT_TRUE(e.codec.has_value());
  EXPECT_EQ(std::get<MxForm>(*e.codec).fmt, MxFormat::kFp4E2M1);
  EXPECT_TRUE(h->NeedsWholePrompt());

  auto d = ParseKvConfig("dense:dtype=f16");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(std::get<ExactForm>(std::get<RowsParams>(d->params).form).dtype, DType::kF16);
  EXPECT_FALSE(d->NeedsWholePrompt());
}

TEST(PolicyConfig, ErrorsNameThePolicyAndTheKey) {
  for (auto [spec, needle] : {std::pair{"atp:blok=3", "blok"}, {"atp:rope=pre", "needs residual="},
                              {"atp:residual=kivi3", "kivi3"}, {"atp:residual=mx_fp5", "fp5"},
                              {"streaming:budget=4,sinks=4", "below budget"}, {"lowrank:mode=online+mx", "mode=calib"}}) {
    auto c = ParseKvConfig(spec);
    ASSERT_FALSE(c.ok()) << spec;
    EXPECT_NE(c.status().message().find(needle), std::string::npos) << spec << ": " << c.status().message();
  }
}

}  // namespace
}  // namespace atp
