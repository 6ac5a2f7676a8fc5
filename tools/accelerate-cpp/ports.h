// ports.h - the job's rendezvous port for `accelerate-cpp launch`.
//
// When the command line gives no --main_process_port, the launcher picks a free TCP port and
// keeps it for the whole job: locked against other accelerate-cpp launchers on this host (a
// lock file, which the supervisor's watchdog keeps open until the ranks are gone, even when the
// launcher is killed) and held against every other program by a bound socket that rank 0's store
// can listen beside. Pure POSIX; knows nothing about processes or the launch environment.
#pragma once

#include <string>

namespace accelerate::cli {

/// A TCP port reserved for one job against other accelerate-cpp launchers on this host: an
/// exclusive flock() on <port_lock_folder()>/<port>.lock, held until release() or destruction
/// (and, through fork(), by any process that inherited lock_fd()). Against other programs, a
/// socket bound to the port with SO_REUSEADDR (not listening) is held as long: the kernel gives
/// the port to no bind() to port 0 and to no connect() as its local port, while the job's rank
/// 0 can listen on it with SO_REUSEADDR (as c10d's TCPStore does).
class PortReservation {
 public:
  PortReservation() = default;
  PortReservation(int port, int lock_fd, std::string lock_path, int socket_fd = -1);
  ~PortReservation() { release(); }
  PortReservation(PortReservation&& other) noexcept;
  PortReservation& operator=(PortReservation&& other) noexcept;
  PortReservation(const PortReservation&) = delete;
  PortReservation& operator=(const PortReservation&) = delete;

  /// The port; 0 when none was reserved.
  int port() const { return port_; }
  /// The locked file's descriptor (close-on-exec); -1 when the port is not locked.
  int lock_fd() const { return lock_fd_; }
  /// Removes the lock file, unlocks it and closes the bound socket.
  void release();

 private:
  int port_ = 0;
  int lock_fd_ = -1;
  int socket_fd_ = -1;  // bound to the port with SO_REUSEADDR, close-on-exec
  std::string lock_path_;
};

/// Where the port locks live: /tmp/accelerate-cpp-ports (one folder for every user of the
/// host; created with mode 1777), or $TMPDIR/accelerate-cpp-ports when /tmp cannot be used.
std::string port_lock_folder();

/// Finds a free TCP port no other accelerate-cpp launcher on this host holds: binds a socket to
/// port 0 on all IPv4 interfaces (IPv6 if that fails), locks the port the kernel chose while the
/// socket still holds it, and tries another one when the lock is taken. The socket stays bound
/// in the reservation. Returns port 0 with
/// `*error` set when no port can be found. When the lock folder cannot be used, returns an
/// unlocked port and sets `*warning` (both pointers may be null).
PortReservation reserve_free_tcp_port(std::string* error = nullptr, std::string* warning = nullptr);

}  // namespace accelerate::cli
