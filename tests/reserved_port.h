// A TCP port of 127.0.0.1 held for a test, for the few tests about TCP itself (the store a
// process 0 serves, two launchers meeting at a given port); ranks as threads meet through an
// in-memory store instead (test_util.h). The port is bound with SO_REUSEADDR and never
// listened on: the kernel hands it to no one else (no ephemeral port, no other bind without
// SO_REUSEADDR) while the object lives, yet a c10d TCPStore server, which also sets
// SO_REUSEADDR, can listen on it, and a client connecting before then is refused at once.
// So, unlike probing for a free port and closing it, nothing can take it in between, even
// with tests running in parallel. Plain C++ (no LibTorch).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace accelerate::testing {

/// A port held for the object's lifetime (see the file comment). Not copyable or movable.
class ReservedPort {
 public:
  /// Binds a port the kernel picks; throws std::runtime_error when it cannot.
  ReservedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd_ < 0 || ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      const std::string why = std::strerror(errno);
      if (fd_ >= 0) ::close(fd_);
      throw std::runtime_error("ReservedPort: " + why);
    }
    port_ = ntohs(addr.sin_port);
  }
  ~ReservedPort() { ::close(fd_); }
  ReservedPort(const ReservedPort&) = delete;
  ReservedPort& operator=(const ReservedPort&) = delete;

  /// The port number.
  int number() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace accelerate::testing
