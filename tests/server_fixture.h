// Helpers shared by the server tests: the reference model (loaded once per test process), an
// in-process HttpServer on a free loopback port, and a minimal blocking HTTP/1.1 client written on raw
// sockets, so a test can read a stream piece by piece and hang up half-way like a real client.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/testgen.h"
#include "server/http_server.h"
#include "test_util.h"

namespace atp::server_test {

using json = nlohmann::json;

inline const std::string kRefModel = ATP_SOURCE_DIR "/../shared/models/ref-5m";

#define ATP_REQUIRE_REF_MODEL()                                                                  \
  if (!std::filesystem::exists(::atp::server_test::kRefModel + "/model.safetensors"))            \
  GTEST_SKIP() << "reference model missing at " << ::atp::server_test::kRefModel

struct RefModel {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tok;
};
// One per process: gtest_discover_tests runs each test in its own process anyway.
inline RefModel& Ref() {
  static RefModel m = [] {
    RefModel r;
    auto model = LlamaModel::Load(kRefModel);
    auto tok = Tokenizer::LoadFromDir(kRefModel);
    if (!model.ok() || !tok.ok()) {
      ADD_FAILURE() << "loading " << kRefModel << ": " << model.status().ToString() << tok.status().ToString();
      return r;
    }
    r.model = std::move(model).value();
    r.tok = std::move(tok).value();
    return r;
  }();
  return m;
}

// model/testgen.h's "tiny" random-weight model (seed 7), written to a temporary directory once per
// process: its byte-level tokenizer makes multi-byte characters of consecutive tokens, which the
// reference model never generates, and it needs nothing from ../shared.
struct TinyModel {
  TinyModel() {
    Status w = WriteTestModel("tiny", dir.path(), DType::kF32, 7);
    auto m = LlamaModel::Load(dir.path());
    auto t = Tokenizer::LoadFromDir(dir.path());
    if (!w.ok() || !m.ok() || !t.ok()) {
      ADD_FAILURE() << "tiny model: " << w.ToString() << m.status().ToString() << t.status().ToString();
      return;
    }
    model = std::move(m).value();
    tok = std::move(t).value();
  }
  testing::TempDir dir{"tiny_server"};
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tok;
};
inline TinyModel& Tiny() {
  static TinyModel m;
  return m;
}

// An HttpServer over the reference model (or `model`: another instance of it, e.g. on the GPU; or the
// tiny model with `tiny`) on 127.0.0.1:<free port>, serving on its own thread.
class TestServer {
 public:
  explicit TestServer(ServerOptions opt = {}, LlamaModel* model = nullptr, bool tiny = false) {
    opt.host = "127.0.0.1";
    opt.port = 0;
    if (opt.model_name.empty()) opt.model_name = tiny ? "tiny" : "ref-5m";
    opt.log_format = LogFormat::kOff;  // the access log has a test of its own (server_process_test)
    auto chat = ChatTemplate::LoadFromDir(tiny ? Tiny().dir.path() : kRefModel);
    EXPECT_TRUE(chat.ok()) << chat.status().ToString();
    auto s = HttpServer::Create(tiny ? *Tiny().model : model ? *model : *Ref().model, tiny ? *Tiny().tok : *Ref().tok,
                                std::move(chat).value(), opt);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    auto port = server_->Bind();
    EXPECT_TRUE(port.ok()) << port.status().ToString();
    port_ = *port;
    thread_ = std::thread([this] { EXPECT_TRUE(server_->Serve().ok()); });
  }
  ~TestServer() {
    server_->Shutdown();
    thread_.join();
  }
  int port() const { return port_; }
  HttpServer& server() { return *server_; }

 private:
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
  std::thread thread_;
};

// A request sent on its own connection; the response is read as it arrives.
class HttpConnection {
 public:
  // `headers`: more header lines, each ending in "\r\n".
  HttpConnection(int port, const std::string& method, const std::string& path, const std::string& body,
                 const std::string& headers = "")
      : HttpConnection(port, method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                                 headers + "Content-Length: " + std::to_string(body.size()) +
                                 "\r\nConnection: close\r\n\r\n" + body) {}
  // Sends `request` as it is: request line, headers and body.
  HttpConnection(int port, const std::string& request) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ADD_FAILURE() << "connect to port " << port << " failed";
      return;
    }
    for (size_t sent = 0; sent < request.size();) {
      const ssize_t n = send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;  // the server may answer (413) and close before reading everything
      sent += size_t(n);
    }
  }
  ~HttpConnection() { Close(); }

  // Reads until `needle` has arrived, the server closes, or `timeout_s` passes; whether it arrived.
  bool ReadUntil(const std::string& needle, double timeout_s = 60) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (raw_.find(needle) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !ReadSome(int(left.count()))) return false;
    }
    return true;
  }
  // Reads everything until the server closes the connection (or `timeout_s` passes).
  void ReadAll(double timeout_s = 60) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    int left_ms = int(timeout_s * 1000);
    while (left_ms > 0 && ReadSome(left_ms))
      left_ms = int(std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count());
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  int status() const { return raw_.size() > 12 ? std::atoi(raw_.c_str() + 9) : 0; }
  // The response's status line and headers.
  std::string head() const { return raw_.substr(0, raw_.find("\r\n\r\n")); }
  // The body, with chunked transfer coding removed.
  std::string body() const {
    const size_t h = raw_.find("\r\n\r\n");
    if (h == std::string::npos) return "";
    std::string head = raw_.substr(0, h), rest = raw_.substr(h + 4);
    for (char& c : head) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (head.find("transfer-encoding: chunked") == std::string::npos) return rest;
    std::string out;
    for (size_t p = 0; p < rest.size();) {
      const size_t eol = rest.find("\r\n", p);
      if (eol == std::string::npos) break;
      const size_t n = std::stoul(rest.substr(p, eol - p), nullptr, 16);
      if (n == 0 || eol + 2 + n > rest.size()) break;
      out += rest.substr(eol + 2, n);
      p = eol + 2 + n + 2;
    }
    return out;
  }
  json Json() const { return json::parse(body(), nullptr, false); }

 private:
  bool ReadSome(int timeout_ms) {
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[65536];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    raw_.append(buf, size_t(n));
    return true;
  }
  int fd_ = -1;
  std::string raw_;
};

// One request, answer read to the end.
inline std::unique_ptr<HttpConnection> Http(int port, const std::string& method, const std::string& path,
                                            const std::string& body = "", double timeout_s = 60,
                                            const std::string& headers = "") {
  auto c = std::make_unique<HttpConnection>(port, method, path, body, headers);
  c->ReadAll(timeout_s);
  return c;
}

// The JSON objects of a server-sent-event body ("data: {...}" lines), without the final [DONE].
inline std::vector<json> SseEvents(const std::string& body) {
  std::vector<json> out;
  size_t p = 0;
  while ((p = body.find("data: ", p)) != std::string::npos) {
    const size_t e = body.find("\n\n", p);
    const std::string data = body.substr(p + 6, e == std::string::npos ? std::string::npos : e - p - 6);
    if (data != "[DONE]") out.push_back(json::parse(data, nullptr, false));
    p = e == std::string::npos ? body.size() : e;
  }
  return out;
}

// The text of a completion (whole or streamed) of either endpoint.
inline std::string CompletionText(const std::string& body, bool stream) {
  std::string text;
  if (!stream) {
    const json j = json::parse(body, nullptr, false);
    const json& c = j["choices"][0];
    return c.contains("message") ? c["message"]["content"].get<std::string>() : c["text"].get<std::string>();
  }
  for (const json& e : SseEvents(body)) {
    if (!e.contains("choices") || e["choices"].empty()) continue;
    const json& c = e["choices"][0];
    if (c.contains("text")) text += c["text"].get<std::string>();
    else if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
  }
  return text;
}

// Polls `cond` every 5 ms for up to `timeout_s`.
template <class F>
bool WaitFor(F cond, double timeout_s) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace atp::server_test
