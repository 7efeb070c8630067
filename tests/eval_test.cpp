// `atp eval` on a tiny run (one short perplexity window, two retrieval cases, two policies) checking
// the CSV columns and JSON fields, plus the sweep's pieces: exact-match rule, policy expansion,
// method names and retrieval file errors.
#include <gtest/gtest.h>

#include "eval/bench.h"
#include "eval/retrieval.h"
#include "eval/sweep.h"
#include "test_util.h"

namespace atp {
namespace {

using testing::RunAtp;
using testing::TempDir;

// The bandwidth probe's two loops read every float: small integers sum exactly in f32.
TEST(Bench, ProbeSumsReadEveryFloat) {
  std::vector<float> x(128 * 37);
  int64_t want = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = float(int64_t(i % 7) - 3 + (i == 4000 ? 1000 : 0));
    want += int64_t(x[i]);
  }
  for (bool paced : {false, true}) {
    EXPECT_EQ(ProbeSum(x.data(), int64_t(x.size()), paced), float(want)) << paced;
    EXPECT_EQ(ProbeSum(x.data(), 128, paced), -5.f) << paced;  // 18 whole cycles of 7 sum to 0, then -3, -2
  }
}

TEST(Retrieval, ExactMatchStripsAndTakesPrefix) {
  EXPECT_TRUE(RetrievalMatch(" 17602. Remember", "17602"));
  EXPECT_TRUE(RetrievalMatch("\n745", "745"));
  EXPECT_FALSE(RetrievalMatch(" 1760", "17602"));
  EXPECT_FALSE(RetrievalMatch("The pass key is 17602", "17602"));
  EXPECT_FALSE(RetrievalMatch("   ", "1"));
}

TEST(Retrieval, LoadErrorsNameLineAndField) {
  TempDir d("eval_cases");
  testing::WriteString(d / "c.jsonl", "{\"prompt\": \"a\", \"answer\": \"1\", \"kind\": \"passkey\", \"prompt_tokens\": 3}\n\n"
                                       "{\"prompt\": \"b\", \"kind\": \"lookup\"}\n");
  auto r = LoadRetrievalCases(d / "c.jsonl");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("c.jsonl:3"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("answer"), std::string::npos);
}

TEST(Sweep, MethodsAndBudgetExpansion) {
  EXPECT_EQ(MethodOf("snapkv:budget=128+mx:fmt=fp8_e4m3"), "snapkv+mx");
  EXPECT_EQ(MethodOf("dense"), "dense");
  auto e = SweepFromFlags({"h2o:budget={b}", "kivi:bits=4"}, {"64", "128"});
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->size(), 3u);
  EXPECT_EQ((*e)[1].policy, "h2o:budget=128");
  EXPECT_EQ((*e)[1].budget, "128");
  EXPECT_EQ((*e)[2].method, "kivi");
  EXPECT_FALSE(SweepFromFlags({"h2o:budget={b}"}, {}).ok());
  // The default sweep parses (lowrank needs a basis file and is left out without one).
  for (auto& s : DefaultSweep("")) EXPECT_TRUE(ParseKvPolicy(s.policy).ok()) << s.policy;
}

TEST(EvalCli, TinySweepWritesCsvJsonAndPlots) {
  ATP_SKIP_WITHOUT_SHARED();
  TempDir out("eval_out");
  const std::string args = "eval -m '" + testing::kRefModel + "' -f '" + testing::kValidText + "' --retrieval '" +
                           testing::kShared + "/data/valid_retrieval.jsonl' -o '" + out.path() +
                           "' --kv dense --kv 'snapkv:budget={b}' --budgets 24 --window-context 48 --scored 8 --max-windows 1"
                           " --max-cases 2 --decode-context 32 --decode-tokens 2 --decode-repeats 1 -t 2 --json";
  testing::CmdResult r = RunAtp(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // stdout: exactly one JSON object, the same as sweep.json.
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j, nlohmann::json::parse(testing::Slurp(out / "sweep.json")));
  for (const char* k : {"model", "file", "retrieval_file", "machine", "context", "scored_per_window", "kv_bytes_per_token_dense"})
    EXPECT_TRUE(j.contains(k)) << k;
  ASSERT_EQ(j["results"].size(), 2u);
  const auto& dense = j["results"][0];
  const auto& snap = j["results"][1];
  for (auto& k : SweepColumns()) EXPECT_TRUE(dense.contains(k)) << k;
  EXPECT_EQ(dense["method"], "dense");
  EXPECT_EQ(dense["kv"], "dense:dtype=f32");
  EXPECT_EQ(dense["windows"], 1);
  EXPECT_EQ(dense["scored_tokens"], 8);
  EXPECT_EQ(dense["cases"], 2);
  EXPECT_GT(dense["ppl"].get<double>(), 1.0);
  EXPECT_GE(dense["accuracy"].get<double>(), 0.0);
  EXPECT_GT(dense["decode_tok_s"].get<double>(), 0.0);
  // ref-5m: 6 layers x 2 KV heads x 64 x (K + V) x 4 bytes per token; dense has ratio 1.
  EXPECT_EQ(dense["kv_bytes_per_token_dense"].get<double>(), 6144.0);
  EXPECT_DOUBLE_EQ(dense["kv_ratio"].get<double>(), 1.0);
  // snapkv at budget 24 holds 24 rows after the 48-token prompt and one more per scored step (7):
  // (24 + 7) rows of 512 bytes + 4-byte positions, per head and layer, over 55 tokens.
  EXPECT_EQ(snap["method"], "snapkv");
  EXPECT_EQ(snap["budget"], "24");
  EXPECT_NEAR(snap["kv_bytes_per_token"].get<double>(), 6 * 2 * 31 * 516 / 55.0, 1e-6);
  // CSV: header = SweepColumns, one line per entry.
  const std::string csv = testing::Slurp(out / "sweep.csv");
  std::string header;
  for (auto& k : SweepColumns()) header += (header.empty() ? "" : ",") + k;
  EXPECT_EQ(csv.substr(0, csv.find('\n')), header);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3);
  EXPECT_NE(csv.find("\"snapkv:budget=24,window=23,pool=7\""), std::string::npos);  // commas quoted
  for (const char* svg : {"quality_vs_bytes.svg", "speed_vs_bytes.svg"}) {
    const std::string s = testing::Slurp(out / svg);
    EXPECT_EQ(s.rfind("<svg", 0), 0u) << svg;
    EXPECT_NE(s.find("snapkv"), std::string::npos) << svg;
  }
  EXPECT_NE(r.err.find("%"), std::string::npos);  // the progress bar went to stderr
}

TEST(EvalCli, BadPolicyFailsBeforeRunning) {
  ATP_SKIP_WITHOUT_SHARED();
  TempDir out("eval_bad");
  testing::CmdResult r = RunAtp("eval -m '" + testing::kRefModel + "' --no-perplexity --no-retrieval --no-speed -o '" + out.path() +
                                "' --kv 'snapkv+h2o'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("right side"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
}

}  // namespace
}  // namespace atp
