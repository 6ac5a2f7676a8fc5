// ports.cpp - reserving the job's port (see ports.h).
#include "ports.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <utility>

namespace accelerate::cli {
namespace {

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

/// Binds a TCP socket with SO_REUSEADDR to port 0 on all IPv4 interfaces (IPv6 if that fails).
/// Returns the socket, still bound so that the kernel hands the port to nobody else, and the
/// port; -1 on failure. Bound but not listening, with SO_REUSEADDR, it leaves the port to a
/// listener that sets SO_REUSEADDR too (c10d's TCPStore does), while bind() to port 0 and the
/// local ports of connect() pass it over.
int bind_free_port(int* port, std::string* why) {
  for (const int family : {AF_INET, AF_INET6}) {
    const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *why = std::string("socket(): ") + std::strerror(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage storage{};
    socklen_t length;
    if (family == AF_INET) {
      auto* addr = reinterpret_cast<sockaddr_in*>(&storage);
      addr->sin_family = AF_INET;
      addr->sin_addr.s_addr = htonl(INADDR_ANY);
      length = sizeof(sockaddr_in);
    } else {
      auto* addr = reinterpret_cast<sockaddr_in6*>(&storage);
      addr->sin6_family = AF_INET6;
      addr->sin6_addr = in6addr_any;
      length = sizeof(sockaddr_in6);
    }
    if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
      *why = std::string("bind(): ") + std::strerror(errno);
      close(fd);
      continue;
    }
    *port = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&storage)->sin_port
                                    : reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port);
    return fd;
  }
  return -1;
}

/// Creates the lock folder (mode 1777, like /tmp) unless it exists; "" or why it cannot be used.
std::string prepare_lock_folder(const std::string& folder) {
  if (mkdir(folder.c_str(), 01777) == 0) {
    chmod(folder.c_str(), 01777);  // mkdir() applied the umask
  } else if (errno != EEXIST) {
    return std::strerror(errno);
  }
  struct stat st {};
  if (lstat(folder.c_str(), &st) != 0) return std::strerror(errno);
  if (!S_ISDIR(st.st_mode)) return "not a directory";
  return {};
}

enum class LockResult { kLocked, kTaken, kError };

/// Takes the exclusive lock of `path` without waiting; `*fd` is the locked descriptor.
LockResult lock_file(const std::string& path, int* fd, std::string* why) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    // Open without O_CREAT first: with fs.protected_regular, O_CREAT on another user's file in
    // a sticky folder fails even though the file exists.
    *fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (*fd < 0 && errno == ENOENT) {
      *fd = open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (*fd < 0 && errno == EEXIST) continue;
      if (*fd >= 0) fchmod(*fd, 0644);  // readable by every user whatever the umask
    }
    if (*fd < 0) {
      *why = path + ": " + std::strerror(errno);
      return LockResult::kError;
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      close_fd(*fd);
      if (error == EWOULDBLOCK || error == EINTR) return LockResult::kTaken;
      *why = path + ": flock(): " + std::strerror(error);
      return LockResult::kError;
    }
    // The previous holder removes the file before unlocking it: a lock on a removed file is
    // worth nothing, so check that the path still names the locked file.
    struct stat locked {};
    struct stat named {};
    if (fstat(*fd, &locked) == 0 && stat(path.c_str(), &named) == 0 &&
        locked.st_dev == named.st_dev && locked.st_ino == named.st_ino) {
      return LockResult::kLocked;
    }
    close_fd(*fd);
  }
  return LockResult::kTaken;
}

}  // namespace

PortReservation::PortReservation(int port, int lock_fd, std::string lock_path, int socket_fd)
    : port_(port), lock_fd_(lock_fd), socket_fd_(socket_fd), lock_path_(std::move(lock_path)) {}

PortReservation::PortReservation(PortReservation&& other) noexcept
    : port_(std::exchange(other.port_, 0)),
      lock_fd_(std::exchange(other.lock_fd_, -1)),
      socket_fd_(std::exchange(other.socket_fd_, -1)),
      lock_path_(std::move(other.lock_path_)) {}

PortReservation& PortReservation::operator=(PortReservation&& other) noexcept {
  if (this != &other) {
    release();
    port_ = std::exchange(other.port_, 0);
    lock_fd_ = std::exchange(other.lock_fd_, -1);
    socket_fd_ = std::exchange(other.socket_fd_, -1);
    lock_path_ = std::move(other.lock_path_);
  }
  return *this;
}

void PortReservation::release() {
  if (lock_fd_ >= 0) {
    unlink(lock_path_.c_str());  // before unlocking, see lock_file(); fails for others' files
    close_fd(lock_fd_);
  }
  if (socket_fd_ >= 0) close_fd(socket_fd_);
  port_ = 0;
  lock_path_.clear();
}

std::string port_lock_folder() {
  const std::string shared = "/tmp/accelerate-cpp-ports";
  if (prepare_lock_folder(shared).empty()) return shared;
  const char* tmpdir = std::getenv("TMPDIR");
  if (tmpdir != nullptr && *tmpdir != '\0') return std::string(tmpdir) + "/accelerate-cpp-ports";
  return shared;
}

PortReservation reserve_free_tcp_port(std::string* error, std::string* warning) {
  std::string why;
  const std::string folder = port_lock_folder();
  std::string lock_problem = prepare_lock_folder(folder);
  if (!lock_problem.empty()) lock_problem = folder + ": " + lock_problem;
  // A port whose lock is taken belongs to another launcher's job. Its bound socket keeps the
  // kernel from offering the port again, but a launcher of an earlier version closed its socket
  // at once, and then the kernel may offer the port until that job's rank 0 binds it (in a busy
  // or narrow port range): so wait a little for another one.
  std::set<int> taken;
  constexpr int kAttempts = 256;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    int port = 0;
    const int probe = bind_free_port(&port, &why);
    if (probe < 0) break;
    if (lock_problem.empty()) {
      if (taken.count(port) != 0) {
        close(probe);
        usleep(2000);
        continue;
      }
      int fd = -1;
      const std::string path = folder + "/" + std::to_string(port) + ".lock";
      const LockResult result = lock_file(path, &fd, &lock_problem);
      // The probe stays bound for the job (see bind_free_port): a program that is not an
      // accelerate-cpp launcher (a connect()'s local port, a bind to port 0) cannot take the
      // port before the job's rank 0 listens on it.
      if (result == LockResult::kLocked) return PortReservation(port, fd, path, probe);
      if (result == LockResult::kTaken) {
        close(probe);
        taken.insert(port);
        continue;  // another launcher's: try another port
      }
    }
    if (warning != nullptr) {
      *warning = "cannot lock ports (" + lock_problem +
                 "); a launcher starting at the same time could pick the same port";
    }
    return PortReservation(port, -1, {}, probe);
  }
  if (error != nullptr) {
    *error = why.empty() ? "every port tried is locked by another launcher in " + folder : why;
  }
  return {};
}

}  // namespace accelerate::cli
