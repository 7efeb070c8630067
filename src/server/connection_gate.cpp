#include "server/connection_gate.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace atp {

using Clock = std::chrono::steady_clock;

struct ConnectionGate::Conn {
  int fd = -1;  // the gate's descriptor; serve() gets a dup, so shutdown() here never hits a reused number
  std::string addr;
  // Clock ticks by which a whole request must have arrived; 0 while a handler runs or a response is written.
  std::atomic<int64_t> deadline{0};
  ConnectionGate* gate = nullptr;
};

thread_local ConnectionGate::Conn* ConnectionGate::current_ = nullptr;

namespace {

int64_t Ticks(Clock::time_point t) { return t.time_since_epoch().count(); }

std::string PeerAddress(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, buf, sizeof buf);
  else if (ss.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr, buf, sizeof buf);
  return buf;
}

// A complete HTTP/1.1 503 in OpenAI's error shape, sent without blocking (it fits any socket buffer).
void Refuse(int fd, const std::string& why) {
  const std::string body = "{\"error\":{\"message\":\"" + why + "\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
  const std::string msg = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                          "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  (void)!send(fd, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  close(fd);
}

}  // namespace

Result<std::unique_ptr<ConnectionGate>> ConnectionGate::Listen(const std::string& host, int port, GateOptions opt) {
  if (port < 0 || port > 65535) return Status::InvalidArgument("--port " + std::to_string(port) + " is not in 0..65535");
  const std::string where = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int e = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); e != 0)
    return Status::InvalidArgument("cannot listen on " + where + ": " + gai_strerror(e));
  std::string why = "no address";
  int fd = -1;
  for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    // SO_REUSEADDR only (a restart may bind while old connections sit in TIME_WAIT); never SO_REUSEPORT.
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
      why = std::strerror(errno);
      if (errno == EADDRINUSE) why += " (another process listens there)";
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) return Status::IOError("cannot listen on " + where + ": " + why);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  const int bound = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(ss).sin6_port
                                                   : reinterpret_cast<sockaddr_in&>(ss).sin_port);
  std::unique_ptr<ConnectionGate> g(new ConnectionGate(fd, bound, opt));
  if (pipe2(g->wake_, O_CLOEXEC) != 0) return Status::IOError(std::string("pipe: ") + std::strerror(errno));
  return g;
}

ConnectionGate::ConnectionGate(int fd, int port, GateOptions opt) : listen_fd_(fd), port_(port), opt_(opt) {
  watcher_ = std::thread([this] { Watch(); });
}

ConnectionGate::~ConnectionGate() {
  Stop();
  watcher_.join();
  close(listen_fd_);
  for (int f : wake_)
    if (f >= 0) close(f);
}

bool ConnectionGate::Admit(const std::string& addr, std::string* why) {
  if (int(conns_.size()) >= opt_.max_connections) {
    *why = "the server holds its maximum of " + std::to_string(opt_.max_connections) + " connections";
    return false;
  }
  if (per_client_[addr] >= opt_.max_per_client) {
    *why = "too many connections from " + addr + " (at most " + std::to_string(opt_.max_per_client) + ")";
    return false;
  }
  return true;
}

void ConnectionGate::Run(const std::function<void(int fd)>& serve) {
  auto run = std::make_shared<std::function<void(int)>>(serve);  // outlives Run for the connection threads
  while (true) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) continue;  // the client left already, or out of descriptors for a moment
    auto c = std::make_shared<Conn>();
    c->fd = fd;
    c->addr = PeerAddress(ss);
    c->gate = this;
    c->deadline = Ticks(Clock::now() + opt_.request_timeout);
    const int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    {
      std::lock_guard<std::mutex> lk(mu_);
      std::string why;
      if (stopping_ || dup_fd < 0 || !Admit(c->addr, &why)) {
        ++rejected_;
        if (dup_fd >= 0) close(dup_fd);
        Refuse(fd, stopping_ ? "the server is shutting down" : dup_fd < 0 ? "out of file descriptors" : why);
        continue;
      }
      conns_[c.get()] = c;
      ++per_client_[c->addr];
    }
    std::thread([this, c, run, dup_fd] {
      current_ = c.get();
      (*run)(dup_fd);  // closes dup_fd
      current_ = nullptr;
      std::lock_guard<std::mutex> lk(mu_);
      if (--per_client_[c->addr] == 0) per_client_.erase(c->addr);
      close(c->fd);
      conns_.erase(c.get());
      cv_.notify_all();
    }).detach();
  }
}

void ConnectionGate::Watch() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_) {
    cv_.wait_for(lk, std::chrono::milliseconds(100));
    const int64_t now = Ticks(Clock::now());
    for (auto& [p, c] : conns_) {
      const int64_t d = c->deadline.load();
      if (d != 0 && d < now) {
        c->deadline = 0;  // once
        ++timed_out_;
        shutdown(c->fd, SHUT_RDWR);  // its thread's read returns; cpp-httplib closes the connection
      }
    }
  }
}

void ConnectionGate::Stop() {
  std::unique_lock<std::mutex> lk(mu_);
  if (!stopping_) {
    stopping_ = true;
    const char c = 's';
    (void)!write(wake_[1], &c, 1);
  }
  cv_.notify_all();
  // Connections waiting for a request end now; those whose handler runs end when it is done.
  for (auto& [p, c] : conns_)
    if (c->deadline.load() != 0) shutdown(c->fd, SHUT_RDWR);
  while (!conns_.empty()) {
    for (auto& [p, c] : conns_)
      if (c->deadline.load() != 0) shutdown(c->fd, SHUT_RDWR);  // also one whose handler has finished since
    cv_.wait_for(lk, std::chrono::milliseconds(50));
  }
}

void ConnectionGate::RequestRead() {
  if (current_) current_->deadline = 0;
}

void ConnectionGate::ResponseWritten() {
  if (current_) current_->deadline = Ticks(Clock::now() + current_->gate->opt_.request_timeout);
}

ConnectionGate::Counts ConnectionGate::counts() const {
  std::lock_guard<std::mutex> lk(mu_);
  return {int(conns_.size()), rejected_, timed_out_};
}

}  // namespace atp
