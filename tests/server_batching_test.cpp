// Continuous batching through HTTP on the reference model: concurrent greedy requests return what
// engine Generate returns for each alone; 200 requests from 32 clients (bad ones mixed in) all get
// their answer; a full queue answers 429; a client hanging up cancels its sequence; shutdown drains.
#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "engine/generate.h"
#include "server_fixture.h"

namespace atp::server_test {
namespace {

const char* kPassage =
    "And the LORD spake unto Moses, saying, Speak unto the children of Israel, that they bring me an offering: of "
    "every man that giveth it willingly with his heart ye shall take my offering. The Fulton County Grand Jury said "
    "Friday an investigation of recent primary election produced no evidence that any irregularities took place.";

std::string Words(int n) {
  std::string s = kPassage;
  size_t p = 0;
  for (int i = 0; i < n && p != std::string::npos; ++i) p = s.find(' ', p + 1);
  return p == std::string::npos ? s : s.substr(0, p);
}

TEST(ServerBatching, ConcurrentGreedyRequestsEqualGenerateAlone) {
  ATP_REQUIRE_REF_MODEL();
  constexpr int kN = 16;
  std::vector<std::string> prompts;
  std::vector<int> max_tokens;
  std::vector<GenerateResult> alone;
  auto kv = ParseKvPolicy("dense").value();
  for (int i = 0; i < kN; ++i) {
    prompts.push_back(Words(1 + 3 * i));
    max_tokens.push_back(6 + (i * 7) % 30);
    GenerateOptions g;
    g.sampling.temperature = 0;
    g.max_tokens = max_tokens.back();
    // Before the server starts: the model takes one caller at a time.
    auto r = Generate(*Ref().model, *Ref().tok, *kv, Ref().tok->Encode(prompts.back(), true), g, nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    alone.push_back(std::move(r).value());
  }
  ServerOptions opt;
  opt.scheduler.max_batch_tokens = 32;  // prompts arrive in chunks, mixed with other sequences' decode steps
  TestServer s(opt);
  std::vector<std::string> bodies(kN);
  std::vector<std::thread> clients;
  for (int i = 0; i < kN; ++i)
    clients.emplace_back([&, i] {
      const json req = {{"prompt", prompts[size_t(i)]}, {"max_tokens", max_tokens[size_t(i)]}, {"temperature", 0},
                        {"stream", i % 2 == 1}, {"stream_options", {{"include_usage", true}}}};
      auto r = Http(s.port(), "POST", "/v1/completions", req.dump());
      EXPECT_EQ(r->status(), 200) << r->body();
      bodies[size_t(i)] = r->body();
    });
  for (auto& c : clients) c.join();
  for (int i = 0; i < kN; ++i) {
    const bool stream = i % 2 == 1;
    const std::string& b = bodies[size_t(i)];
    EXPECT_EQ(CompletionText(b, stream), alone[size_t(i)].text) << "request " << i;
    const json usage = stream ? SseEvents(b).back()["usage"] : json::parse(b)["usage"];
    EXPECT_EQ(usage["completion_tokens"], alone[size_t(i)].token_ids.size()) << "request " << i;
  }
  EXPECT_LT(s.server().scheduler().stats().forward_passes, 16u * 36u) << "requests were not batched";
}

TEST(ServerBatching, LoadOf200RequestsFrom32Clients) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.scheduler.max_seqs = 32;
  opt.scheduler.max_queue = 256;
  TestServer s(opt);
  constexpr int kRequests = 200, kClients = 32;
  const std::vector<std::string> bad = {"{\"prompt\": ", R"({"prompt": "x", "temperature": 7})",
                                        R"({"prompt": "x", "n": 17})", R"({"messages": [{"role": 1}]})"};
  std::atomic<int> next{0}, ok{0}, rejected{0};
  std::mutex mu;
  std::vector<std::string> problems;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&] {
      for (int i; (i = next++) < kRequests;) {
        const bool chat = i % 3 == 0, stream = i % 2 == 1;
        const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
        std::string problem;
        if (i % 10 == 0) {
          auto r = Http(s.port(), "POST", path, bad[size_t(i / 10) % bad.size()]);
          if (r->status() == 400 && r->Json()["error"]["type"] == "invalid_request_error") ++rejected;
          else problem = "bad request " + std::to_string(i) + " got " + std::to_string(r->status());
        } else {
          json req = {{"max_tokens", 1 + i % 8}, {"temperature", 0.7}, {"seed", i}, {"stream", stream}};
          if (chat) req["messages"] = {{{"role", "user"}, {"content", Words(1 + i % 20)}}};
          else req["prompt"] = Words(1 + i % 25);
          auto r = Http(s.port(), "POST", path, req.dump());
          const std::string b = r->body();
          const bool complete = stream ? b.size() >= 14 && b.compare(b.size() - 14, 14, "data: [DONE]\n\n") == 0
                                       : json::parse(b, nullptr, false).contains("usage");
          if (r->status() == 200 && complete) ++ok;
          else problem = "request " + std::to_string(i) + " got " + std::to_string(r->status()) + ": " + b.substr(0, 200);
        }
        if (!problem.empty()) {
          std::lock_guard<std::mutex> lk(mu);
          problems.push_back(problem);
        }
      }
    });
  for (auto& c : clients) c.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 40.0) << "time limit";
  for (auto& p : problems) ADD_FAILURE() << p;
  EXPECT_EQ(ok.load(), kRequests - kRequests / 10);
  EXPECT_EQ(rejected.load(), kRequests / 10);
  // Every reply ends only after its sequence has left the running set and the KV pool, so the gauges
  // read zero as soon as the last client has its answer (no waiting).
  const std::string m = Http(s.port(), "GET", "/metrics")->body();
  EXPECT_NE(m.find("atp_running_sequences 0"), std::string::npos);
  EXPECT_NE(m.find("atp_kv_bytes_reserved 0"), std::string::npos);
  // Where a step's time went: both counters ran.
  const auto counter = [&](const std::string& name) {
    const size_t at = m.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + name.size() + 2));
  };
  const double fwd = counter("atp_step_forward_seconds_total"), smp = counter("atp_step_sample_seconds_total");
  EXPECT_GT(fwd, 0.0);
  EXPECT_GT(smp, 0.0);
  std::cerr << "[ load ] step seconds: forward " << fwd << ", sample " << smp << "\n";
  std::cerr << "[ load ] " << kRequests << " requests from " << kClients << " clients in " << secs << " s\n";
}

TEST(ServerBatching, ABurstOfConnectionsIsAccepted) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  constexpr int kBurst = 150;  // far over the listen backlog of 5 that cpp-httplib uses by default
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<HttpConnection>> conns;
  for (int i = 0; i < kBurst; ++i) conns.push_back(std::make_unique<HttpConnection>(s.port(), "GET", "/health", ""));
  int ok = 0;
  for (auto& c : conns) {
    c->ReadAll(30);
    ok += c->status() == 200;
  }
  EXPECT_EQ(ok, kBurst);
  // An overflowing backlog shows as SYN retransmissions: seconds instead of milliseconds.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

json LongRequest(bool stream) {
  // Greedy decoding from "The" runs on for well over 1500 tokens without an EOS.
  return {{"prompt", "The"}, {"max_tokens", 1500}, {"temperature", 0}, {"stream", stream}};
}

TEST(ServerBatching, FullQueueAnswers429AndAStreamHangingUpIsCancelled) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.scheduler.max_seqs = 1;
  opt.scheduler.max_queue = 1;
  TestServer s(opt);
  Scheduler& sched = s.server().scheduler();
  HttpConnection a(s.port(), "POST", "/v1/completions", LongRequest(true).dump());
  ASSERT_TRUE(a.ReadUntil("data: ", 20));
  HttpConnection b(s.port(), "POST", "/v1/completions", R"({"prompt": "The", "max_tokens": 5, "temperature": 0})");
  ASSERT_TRUE(WaitFor([&] { return sched.stats().queued == 1; }, 10));
  auto c = Http(s.port(), "POST", "/v1/completions", R"({"prompt": "The", "max_tokens": 5})");
  EXPECT_EQ(c->status(), 429) << c->body();
  EXPECT_EQ(c->Json()["error"]["type"], "rate_limit_error");
  a.Close();  // the next chunk's write fails, which cancels A and lets B in
  b.ReadAll(20);
  EXPECT_EQ(b.status(), 200) << b.body();
  EXPECT_EQ(b.Json()["usage"]["completion_tokens"], 5);
  EXPECT_LT(sched.stats().generated_tokens, 1000u);
  const std::string m = Http(s.port(), "GET", "/metrics")->body();
  EXPECT_NE(m.find("atp_requests_total{endpoint=\"completions\",code=\"429\"} 1"), std::string::npos) << m;
}

TEST(ServerBatching, AWholeResponseClientHangingUpIsCancelled) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  Scheduler& sched = s.server().scheduler();
  {
    HttpConnection a(s.port(), "POST", "/v1/completions", LongRequest(false).dump());
    ASSERT_TRUE(WaitFor([&] { return sched.stats().generated_tokens > 0; }, 10));
  }  // closed
  EXPECT_TRUE(WaitFor([&] { return sched.stats().running == 0; }, 5));
  EXPECT_LT(sched.stats().generated_tokens, 1000u);
  auto ok = Http(s.port(), "POST", "/v1/completions", R"({"prompt": "The", "max_tokens": 3})");
  EXPECT_EQ(ok->status(), 200);
}

TEST(ServerBatching, ShutdownCancelsWhatOutlivesItsTimeout) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.shutdown_timeout = std::chrono::milliseconds(300);
  TestServer s(opt);
  HttpConnection a(s.port(), "POST", "/v1/completions", LongRequest(true).dump());
  ASSERT_TRUE(a.ReadUntil("data: ", 20));
  HttpConnection b(s.port(), "POST", "/v1/completions", LongRequest(false).dump());
  ASSERT_TRUE(WaitFor([&] { return s.server().scheduler().stats().running == 2; }, 10));
  const auto t0 = std::chrono::steady_clock::now();
  std::thread stopper([&] { s.server().Shutdown(); });
  a.ReadAll(20);
  b.ReadAll(20);
  stopper.join();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  const auto events = SseEvents(a.body());
  ASSERT_FALSE(events.empty());
  EXPECT_NE(events.back()["error"]["message"].get<std::string>().find("shutting down"), std::string::npos) << a.body();
  EXPECT_NE(a.body().find("data: [DONE]"), std::string::npos);
  EXPECT_EQ(b.status(), 503) << b.body();
}

}  // namespace
}  // namespace atp::server_test
