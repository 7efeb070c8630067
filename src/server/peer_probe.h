// Tells a waiting HTTP handler that its client has gone. cpp-httplib 0.11 (Debian 12) exposes neither
// the request's socket nor is_connection_closed(), so the probe finds the accepted socket itself: the
// one whose peer is the request's remote address and port and whose local port is the server's.
#pragma once
#include <string>
#include <utility>

namespace atp {

// Used by one handler thread. The socket stays open while its handler runs, so the descriptor found
// cannot be reused for another connection meanwhile.
class PeerProbe {
 public:
  PeerProbe(std::string remote_addr, int remote_port, int local_port)
      : addr_(std::move(remote_addr)), port_(remote_port), local_port_(local_port) {}
  // True once the client closed or reset the connection (a client that half-closes after sending its
  // request counts as gone); false when the socket was not found. The first call scans this process's
  // descriptors: requests that finish quickly never pay for it.
  bool Gone();

 private:
  int Find() const;
  std::string addr_;
  int port_, local_port_;
  int fd_ = -2;  // -2: not searched yet; -1: not found
};

}  // namespace atp
