// The listening socket and accept loop of `atp serve`, in front of cpp-httplib's request handling.
// Why not cpp-httplib's own (Debian's 0.11): it binds with SO_REUSEPORT, so a second server on the
// same port starts silently and the kernel splits the requests between the two; a failed bind gives
// no reason; and it serves connections from a fixed pool of threads with only a per-read timeout, so
// clients that send one header line every few seconds hold every thread while new requests wait.
//
// The gate binds without SO_REUSEPORT (errors name host, port and errno's text), admits a connection
// only while fewer than `max_connections` are open and fewer than `max_per_client` come from its
// address (else it answers 503 and closes), runs each admitted connection on a thread of its own,
// and closes a connection that has not delivered a whole request within `request_timeout` of its
// start or of its previous response. A request's handler marks the request read (RequestRead); the
// deadline does not run while a handler works or a response streams.
#pragma once
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/status.h"

namespace atp {

struct GateOptions {
  int max_connections = 1024;  // open at once, all clients
  int max_per_client = 256;    // open at once from one address (a benchmark client or a proxy opens many)
  std::chrono::milliseconds request_timeout{10000};  // to read one whole request (headers and body)
};

class ConnectionGate {
 public:
  // Binds and listens on host:port (0: any free port). Errors say which address and why.
  static Result<std::unique_ptr<ConnectionGate>> Listen(const std::string& host, int port, GateOptions opt);
  ~ConnectionGate();  // Stop()s

  int port() const { return port_; }
  int fd() const { return listen_fd_; }

  // Accepts until Stop(): serve(fd) runs each admitted connection on its own thread and closes fd.
  void Run(const std::function<void(int fd)>& serve);
  // From any thread: stops accepting, closes the connections that wait for a request, and returns
  // once every connection thread has ended (handlers still running are waited for).
  void Stop();

  // On a connection's thread (inside serve): the request being read is complete, its handler runs.
  static void RequestRead();
  // On a connection's thread: the response is written; the next request's deadline starts now.
  static void ResponseWritten();

  struct Counts {
    int open = 0;
    long rejected = 0;   // answered 503 at accept
    long timed_out = 0;  // closed for not delivering a request in time
  };
  Counts counts() const;

 private:
  struct Conn;
  static thread_local Conn* current_;  // the connection a connection thread serves
  ConnectionGate(int fd, int port, GateOptions opt);
  void Watch();  // the deadline thread
  bool Admit(const std::string& addr, std::string* why);

  const int listen_fd_;
  const int port_;
  const GateOptions opt_;
  int wake_[2] = {-1, -1};  // Stop() writes here to end Run's poll

  mutable std::mutex mu_;
  std::condition_variable cv_;  // a connection ended, or stopping
  std::map<Conn*, std::shared_ptr<Conn>> conns_;
  std::map<std::string, int> per_client_;
  long rejected_ = 0, timed_out_ = 0;
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace atp
