// `atp serve` exposed to hostile clients (issue: "safe to expose"): requests never make the server open
// a path; slow clients neither starve others nor hold connections past the request deadline; caps on
// connections answer 503; endless policy variants stay bounded in memory. Each test names the finding it
// guards against; each failed on the server before the connection gate and the kv vetting.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>

#include "core/thread_pool.h"
#include "format/basis_file.h"
#include "server/kv_request.h"
#include "server_fixture.h"

namespace atp::server_test {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("atp_sec_" + name + "_" + std::to_string(getpid()))).string();
}

// A socket connected to 127.0.0.1:port from `source` (another loopback address is another client).
int ConnectFrom(const char* source, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, source, &src.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
    close(fd);
    return -1;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Finding 1: {"kv": "lowrank:...,file=/etc/passwd"} answered with the file's size.
TEST(ServerSecurity, KvFieldNamingAFileIsRefusedWithoutOpeningIt) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  const std::string fifo = TempPath("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& kv : std::vector<std::string>{"lowrank:rk=16,rv=16,file=/etc/passwd", "lowrank:rk=8,rv=8,file=" + fifo,
                               "lowrank:rk=8,rv=8,mode=calib,file=/nonexistent+kivi:bits=4"}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = Http(s.port(), "POST", "/v1/completions",
                  json{{"prompt", "The"}, {"max_tokens", 2}, {"kv", kv}}.dump(), 10);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5) << kv;
    EXPECT_EQ(r->status(), 400) << kv;
    const std::string msg = r->Json()["error"]["message"];
    EXPECT_NE(msg.find("file= is not accepted"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("file size"), std::string::npos) << msg;
    EXPECT_EQ(r->Json()["error"]["param"], "kv");
  }
  // The server still serves everyone (a FIFO read under the policy lock used to block every request).
  EXPECT_EQ(Http(s.port(), "POST", "/v1/completions", R"({"prompt": "The", "max_tokens": 2})", 10)->status(), 200);
  std::filesystem::remove(fifo);
}

// The operator's basis files are registered at start-up and selected by name.
TEST(ServerSecurity, RegisteredBasisIsSelectedByName) {
  ATP_REQUIRE_REF_MODEL();
  const KvShape shape = Ref().model->kv_shape(0);
  KvBasis b;  // identity bases: orthonormal, so lowrank at full rank is exact
  b.layers = Ref().model->config().num_layers;
  b.kv_heads = shape.n_kv_heads;
  b.head_dim = shape.head_dim;
  std::vector<float> eye(size_t(b.kv_heads) * b.head_dim * b.head_dim, 0.f);
  for (int h = 0; h < b.kv_heads; ++h)
    for (int i = 0; i < b.head_dim; ++i) eye[(size_t(h) * b.head_dim + i) * b.head_dim + i] = 1.f;
  b.k.assign(size_t(b.layers), eye);
  b.v.assign(size_t(b.layers), eye);
  const std::string path = TempPath("basis.safetensors");
  ASSERT_TRUE(WriteKvBasis(path, b).ok());
  ServerOptions opt;
  ASSERT_TRUE(AddKvBasis("eye=" + path, &opt.kv_bases).ok());
  TestServer s(opt);
  const std::string full = std::to_string(b.head_dim);
  auto ok = Http(s.port(), "POST", "/v1/completions",
                 json{{"prompt", "The"}, {"max_tokens", 4}, {"temperature", 0},
                      {"kv", "lowrank:rk=" + full + ",rv=" + full + ",basis=eye"}}.dump());
  EXPECT_EQ(ok->status(), 200) << ok->body();
  auto dense = Http(s.port(), "POST", "/v1/completions", R"({"prompt": "The", "max_tokens": 4, "temperature": 0})");
  EXPECT_EQ(CompletionText(ok->body(), false), CompletionText(dense->body(), false));  // full rank = dense
  auto unknown = Http(s.port(), "POST", "/v1/completions",
                      R"({"prompt": "The", "max_tokens": 2, "kv": "lowrank:rk=8,rv=8,basis=other"})");
  EXPECT_EQ(unknown->status(), 400);
  const std::string msg = unknown->Json()["error"]["message"];
  EXPECT_NE(msg.find("no basis named 'other'; registered: eye"), std::string::npos) << msg;
  std::filesystem::remove(path);
}

TEST(ServerSecurity, KvBasisFlagRefusesWhatWouldBlockOrBreakTheSyntax) {
  const std::string fifo = TempPath("fifo2");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  KvBases bases;
  for (const std::string& bad : std::vector<std::string>{"x=" + fifo, "x=/nonexistent", "x", "=/etc/hostname", "bad name=/etc/hostname",
                                "x=/etc/hostname,file=/etc/passwd"})
    EXPECT_FALSE(AddKvBasis(bad, &bases).ok()) << bad;
  EXPECT_TRUE(bases.empty());
  std::filesystem::remove(fifo);
  // The rewrite touches only basis=: everything else reaches the policy parser as written.
  bases["b1"] = "/srv/b1.safetensors";
  auto r = ResolveRequestKv("lowrank:rk=8,basis=b1,rv=8+kivi:bits=4", bases);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "lowrank:rk=8,file=/srv/b1.safetensors,rv=8+kivi:bits=4");
  EXPECT_EQ(ResolveRequestKv("dense:dtype=bf16", bases).value(), "dense:dtype=bf16");
  EXPECT_FALSE(ResolveRequestKv("dense+mx:fmt=fp4,file=x", bases).ok());
}

// Finding 3: 200 connections sending a header line every few seconds held every handler thread, so new
// requests and /health waited until they closed. Slow clients come from 127.0.0.2, the others from
// 127.0.0.1; the per-client cap is raised so that all 200 are admitted and hold a connection each.
TEST(ServerSecurity, SlowClientsDoNotStarveOthers) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.gate.max_per_client = 256;
  opt.gate.request_timeout = std::chrono::seconds(60);  // the slow ones stay open throughout
  TestServer s(opt);
  std::vector<int> slow;
  for (int i = 0; i < 200; ++i) {
    const int fd = ConnectFrom("127.0.0.2", s.port());
    if (fd < 0) GTEST_SKIP() << "cannot bind a client socket to 127.0.0.2 here";
    const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n";
    ASSERT_GT(send(fd, head.data(), head.size(), MSG_NOSIGNAL), 0);
    slow.push_back(fd);
  }
  std::atomic<bool> done{false};
  std::thread dribble([&] {  // a header line per connection every second, never the end of the headers
    for (int round = 0; !done; ++round) {
      for (int fd : slow) (void)!send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL);
      for (int i = 0; i < 20 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  std::vector<double> latency(100);
  std::atomic<int> failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      for (int i = c; i < 100; i += 4) {
        const auto t0 = std::chrono::steady_clock::now();
        auto r = i % 10 == 0 ? Http(s.port(), "GET", "/health", "", 10)
                             : Http(s.port(), "POST", "/v1/completions", R"({"prompt": "The", "max_tokens": 4})", 10);
        latency[size_t(i)] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r->status() != 200) ++failed;
      }
    });
  for (auto& t : clients) t.join();
  done = true;
  dribble.join();
  // Every slow connection was still open: none was refused or closed while the others were served.
  int open = 0;
  for (int fd : slow) {
    pollfd p{fd, POLLIN, 0};
    open += poll(&p, 1, 0) == 0;
    close(fd);
  }
  EXPECT_EQ(open, 200);
  EXPECT_EQ(failed.load(), 0);
  std::sort(latency.begin(), latency.end());
  EXPECT_LT(latency[98], 2.0) << "p99 latency; max " << latency.back();
}

// A client that never finishes its request is closed at the deadline, whatever it keeps sending.
TEST(ServerSecurity, RequestNotDeliveredByTheDeadlineIsClosed) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.gate.request_timeout = std::chrono::milliseconds(800);
  TestServer s(opt);
  const int fd = ConnectFrom("127.0.0.1", s.port());
  ASSERT_GE(fd, 0);
  const auto t0 = std::chrono::steady_clock::now();
  (void)!send(fd, "GET /health HTTP/1.1\r\n", 22, MSG_NOSIGNAL);
  bool closed = false;
  while (!closed && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10)) {
    (void)!send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL);  // activity does not extend the deadline
    pollfd p{fd, POLLIN, 0};
    char buf[256];
    if (poll(&p, 1, 200) > 0 && recv(fd, buf, sizeof buf, 0) <= 0) closed = true;
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(closed);
  EXPECT_GE(took, 0.7);
  EXPECT_LT(took, 5.0);
  close(fd);
  EXPECT_EQ(Http(s.port(), "GET", "/health")->status(), 200);  // and the server goes on
}

TEST(ServerSecurity, ConnectionsOverThePerClientCapGet503) {
  ATP_REQUIRE_REF_MODEL();
  ServerOptions opt;
  opt.gate.max_per_client = 2;
  TestServer s(opt);
  const int a = ConnectFrom("127.0.0.1", s.port()), b = ConnectFrom("127.0.0.1", s.port());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  WaitFor([] { return false; }, 0.2);  // the gate accepts both before the third arrives
  auto third = Http(s.port(), "GET", "/health", "", 10);
  EXPECT_EQ(third->status(), 503);
  EXPECT_NE(third->Json()["error"]["message"].get<std::string>().find("too many connections from 127.0.0.1"),
            std::string::npos) << third->body();
  close(a);
  close(b);
  EXPECT_TRUE(WaitFor([&] { return Http(s.port(), "GET", "/health", "", 10)->status() == 200; }, 5));
}

// Finding 2 (in process): a port another server holds is an error naming the cause, not a shared port.
TEST(ServerSecurity, PortInUseIsAnErrorNamingTheCause) {
  ATP_REQUIRE_REF_MODEL();
  TestServer first;
  ServerOptions opt;
  opt.host = "127.0.0.1";
  opt.port = first.port();
  opt.model_name = "x";
  auto chat = ChatTemplate::LoadFromDir(kRefModel);
  ASSERT_TRUE(chat.ok());
  auto second = HttpServer::Create(*Ref().model, *Ref().tok, std::move(chat).value(), opt);
  ASSERT_TRUE(second.ok());
  auto port = (*second)->Bind();
  ASSERT_FALSE(port.ok());
  EXPECT_NE(port.status().message().find("127.0.0.1:" + std::to_string(first.port())), std::string::npos);
  EXPECT_NE(port.status().message().find("in use"), std::string::npos) << port.status().message();
}

// Finding 4: every new kv string was measured under the model lock, and the measurements were kept forever.
TEST(ServerSecurity, FootprintCacheStaysBounded) {
  ATP_REQUIRE_REF_MODEL();
  TestServer s;
  for (size_t i = 0; i < Scheduler::kMaxFootprints + 8; ++i) {
    auto r = Http(s.port(), "POST", "/v1/completions",
                  json{{"prompt", "The"}, {"max_tokens", 1}, {"kv", "streaming:budget=" + std::to_string(64 + i)}}.dump());
    ASSERT_EQ(r->status(), 200) << r->body();
  }
  EXPECT_EQ(s.server().scheduler().stats().footprints, Scheduler::kMaxFootprints);
}

// What lets a footprint be measured beside a running forward pass: concurrent ParallelFor calls each
// complete their whole range (one gets the workers, the other runs on its caller).
TEST(ThreadPoolConcurrency, ConcurrentCallersEachCoverTheirWholeRange) {
  ThreadPool pool(2);
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 300; ++rep) {
        std::vector<int> hit(1000, 0);
        pool.ParallelFor(1000, [&](int64_t b, int64_t e, int) {
          for (int64_t i = b; i < e; ++i) ++hit[size_t(i)];
        });
        wrong += int(std::count_if(hit.begin(), hit.end(), [](int h) { return h != 1; }));
      }
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace atp::server_test
