// fake_rank.cpp - stand-in for a training program, started by the launcher tests.
//
// Behaviour is chosen by arguments (unknown arguments are ignored, so the tests can also pass
// arbitrary ones to check they arrive untouched). Actions run in this order:
//   --ignore-sigterm      ignore SIGTERM (tests the SIGKILL escalation)
//   --print-env           print "ENV NAME=value" (or "ENV NAME unset") for the launcher's variables
//   --print-args          print "ARGC=n" and "ARGV[i]=arg" for every argument
//   --print TEXT          print TEXT and a newline on stdout (repeatable)
//   --eprint TEXT         print TEXT and a newline on stderr (repeatable)
//   --lines N             print N long lines "rank R line I xxx...", each in two write() calls
//   --write R:TEXT        on rank R: write TEXT as it is (no newline added) in one write() call,
//                         then pause 20 ms, so that the launcher reads it apart from the next
//                         (repeatable, in order)
//   --listen TOKEN        a rendezvous like c10d's TCPStore: rank 0 listens on MASTER_PORT (exit 4
//                         if it cannot) and sends TOKEN to each of the WORLD_SIZE-1 other ranks,
//                         which connect to MASTER_ADDR:MASTER_PORT and exit 5 unless they receive
//                         TOKEN (exit 6 if nothing happens within 20 s); rank 0 keeps listening
//                         until it exits
//   --take-ports P:DIR    (before --listen) a program other than the job's rank 0 that wants a
//                         local port at the moment the job starts: on ranks other than 0, a
//                         listen() on port 0 and a connect() to its own listener on 127.0.0.1:P,
//                         printing "LISTEN0 <port>" and "CONNECT <local port>" ("none (why)" when
//                         the system has no port to give), both kept open, then creating
//                         DIR/taken, and waiting for DIR/listening; rank 0 waits (up to 20 s)
//                         for DIR/taken, then listens on MASTER_PORT with SO_REUSEADDR as c10d's
//                         TCPStore does (exit 4 if it cannot), prints "LISTENING <port>" and
//                         creates DIR/listening
//   --spawn-child DIR     start a child process (`sleep 300`) and write its pid to
//                         DIR/rank<RANK>.child (atomically)
//   --pid-dir DIR         write DIR/rank<RANK>.pid (atomically) once the above is done
//   --partial TEXT        print TEXT on stdout without a trailing newline
//   --exit R:C            on rank R: exit with code C
//   --fail-attempts R:N   on rank R: exit with code 3 while TORCHELASTIC_RESTART_COUNT < N
//                         (after printing "ATTEMPT <count>")
//   --signal R:S          on rank R: kill itself with signal S
//   --sleep SECONDS       then sleep, then exit 0
// A rank that is about to --exit/--signal first waits (up to 10 s) until every local rank has
// written its pid file, so the tests know all pids and all ranks reached their steady state.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "launcher_variables.h"

namespace {

namespace env = accelerate::launch_env;

void write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::atoi(value) : fallback;
}

/// Parses "R:V"; returns true if R is this rank.
bool for_this_rank(const std::string& spec, int rank, int* value) {
  const size_t colon = spec.find(':');
  if (colon == std::string::npos) return false;
  if (std::atoi(spec.substr(0, colon).c_str()) != rank) return false;
  *value = std::atoi(spec.substr(colon + 1).c_str());
  return true;
}

int count_pid_files(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  int count = 0;
  while (dirent* entry = readdir(d)) {
    const std::string name = entry->d_name;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".pid") == 0) ++count;
  }
  closedir(d);
  return count;
}

/// Writes `pid` and a newline to `path` through a temporary file and rename().
void write_pid_file(const std::string& path, pid_t pid) {
  const std::string tmp_path = path + ".tmp";
  if (FILE* f = std::fopen(tmp_path.c_str(), "w")) {
    std::fprintf(f, "%ld\n", static_cast<long>(pid));
    std::fclose(f);
    std::rename(tmp_path.c_str(), path.c_str());
  }
}

[[noreturn]] void die(int code, const std::string& message) {
  write_all(STDERR_FILENO, "fake_rank: " + message + "\n");
  std::exit(code);
}

/// Rank 0's listening socket on MASTER_PORT, with SO_REUSEADDR as c10d's TCPStore sets it; exits
/// 4 when it cannot listen.
int listen_on_master_port() {
  const int port = env_int(env::kMasterPort, 0);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 64) != 0) {
    die(4, "rank 0 cannot listen on port " + std::to_string(port) + ": " + std::strerror(errno));
  }
  return fd;
}

/// --listen: returns rank 0's listening socket (to keep open until exit), -1 on other ranks.
int rendezvous(const std::string& token, int rank) {
  const int port = env_int(env::kMasterPort, 0);
  const int world = env_int(env::kWorldSize, 1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto ms_left = [&] {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<long long>(0, left.count()));
  };
  const std::string where = "port " + std::to_string(port);
  if (rank == 0) {
    const int fd = listen_on_master_port();
    for (int peer = 1; peer < world; ++peer) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, ms_left()) <= 0) die(6, "rank 0: nobody connected to " + where);
      const int connection = accept(fd, nullptr, nullptr);
      if (connection < 0) die(6, std::string("rank 0: accept(): ") + std::strerror(errno));
      write_all(connection, token + "\n");
      // Let the peer close first: TIME_WAIT then stays on its side, not on MASTER_PORT.
      pollfd c{connection, POLLIN, 0};
      char byte;
      while (poll(&c, 1, ms_left()) > 0 && read(connection, &byte, 1) > 0) {
      }
      close(connection);
    }
    return fd;
  }
  const char* master = std::getenv(env::kMasterAddr);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, master != nullptr ? master : "127.0.0.1", &addr.sin_addr) != 1) {
    die(6, "bad MASTER_ADDR");
  }
  int fd = -1;
  while (true) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    const int error = errno;
    close(fd);
    if (ms_left() == 0) die(6, "cannot connect to " + where + ": " + std::strerror(error));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  timeval timeout{std::max(1, ms_left() / 1000), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string got;
  char ch;
  while (read(fd, &ch, 1) == 1 && ch != '\n') got += ch;
  close(fd);
  if (got != token) {
    die(5, "rank " + std::to_string(rank) + " reached another job on " + where + " (got '" + got +
               "', expected '" + token + "')");
  }
  return -1;
}

/// The local port of `fd`, or "none (why)" when `ok` is false.
std::string local_port(int fd, bool ok, int error) {
  if (!ok) return std::string("none (") + std::strerror(error) + ")";
  sockaddr_in addr{};
  socklen_t length = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  return std::to_string(ntohs(addr.sin_port));
}

/// --take-ports P:DIR (see the top of this file).
void take_ports(const std::string& value, int rank) {
  const size_t colon = value.find(':');
  if (colon == std::string::npos) die(2, "--take-ports wants P:DIR");
  const int listen_port = std::atoi(value.substr(0, colon).c_str());
  const std::string taken = value.substr(colon + 1) + "/taken";
  const std::string listening = value.substr(colon + 1) + "/listening";
  const auto wait_for = [rank](const std::string& file) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (access(file.c_str(), F_OK) != 0) {
      if (std::chrono::steady_clock::now() > deadline)
        die(6, "rank " + std::to_string(rank) + ": nobody created " + file);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  if (rank == 0) {
    wait_for(taken);
    listen_on_master_port();  // kept open until exit
    write_all(STDOUT_FILENO, "LISTENING " + std::to_string(env_int(env::kMasterPort, 0)) + "\n");
    close(open(listening.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    return;
  }
  // A server on a port of the kernel's choice (as Gloo's listeners are).
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  const int server = socket(AF_INET, SOCK_STREAM, 0);
  const bool listen_ok =
      bind(server, reinterpret_cast<sockaddr*>(&any), sizeof any) == 0 && listen(server, 4) == 0;
  const int listen_error = errno;
  write_all(STDOUT_FILENO, "LISTEN0 " + local_port(server, listen_ok, listen_error) + "\n");

  sockaddr_in target{};
  target.sin_family = AF_INET;
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  target.sin_port = htons(static_cast<uint16_t>(listen_port));
  // A connection, whose local port is the kernel's choice.
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (bind(listener, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0 ||
      listen(listener, 4) != 0) {
    die(7,
        "cannot listen on 127.0.0.1:" + std::to_string(listen_port) + ": " + std::strerror(errno));
  }
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  const bool connect_ok = connect(client, reinterpret_cast<sockaddr*>(&target), sizeof target) == 0;
  const int connect_error = errno;
  write_all(STDOUT_FILENO, "CONNECT " + local_port(client, connect_ok, connect_error) + "\n");
  close(open(taken.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  wait_for(listening);  // the sockets stay open until rank 0 listened (or failed to)
}

}  // namespace

int main(int argc, char** argv) {
  bool ignore_sigterm = false, print_env = false, print_args = false;
  std::vector<std::string> prints, eprints, exits, signals, fail_attempts, writes;
  std::string pid_dir, partial, listen_token, child_dir, take;
  int lines = 0;
  double sleep_seconds = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--ignore-sigterm") {
      ignore_sigterm = true;
    } else if (arg == "--print-env") {
      print_env = true;
    } else if (arg == "--print-args") {
      print_args = true;
    } else if (arg == "--print" && has_value) {
      prints.push_back(argv[++i]);
    } else if (arg == "--eprint" && has_value) {
      eprints.push_back(argv[++i]);
    } else if (arg == "--write" && has_value) {
      writes.push_back(argv[++i]);
    } else if (arg == "--lines" && has_value) {
      lines = std::atoi(argv[++i]);
    } else if (arg == "--listen" && has_value) {
      listen_token = argv[++i];
    } else if (arg == "--take-ports" && has_value) {
      take = argv[++i];
    } else if (arg == "--spawn-child" && has_value) {
      child_dir = argv[++i];
    } else if (arg == "--pid-dir" && has_value) {
      pid_dir = argv[++i];
    } else if (arg == "--partial" && has_value) {
      partial = argv[++i];
    } else if (arg == "--exit" && has_value) {
      exits.push_back(argv[++i]);
    } else if (arg == "--fail-attempts" && has_value) {
      fail_attempts.push_back(argv[++i]);
    } else if (arg == "--signal" && has_value) {
      signals.push_back(argv[++i]);
    } else if (arg == "--sleep" && has_value) {
      sleep_seconds = std::atof(argv[++i]);
    }
  }
  const int rank = env_int(env::kRank, -1);

  if (ignore_sigterm) signal(SIGTERM, SIG_IGN);

  if (print_env) {
    std::vector<const char*> names(std::begin(accelerate::testing::kLauncherVariables),
                                   std::end(accelerate::testing::kLauncherVariables));
    names.push_back("FAKE_RANK_INHERITED");
    std::string out;
    for (const char* name : names) {
      const char* value = std::getenv(name);
      out += std::string("ENV ") + name + (value ? std::string("=") + value : " unset") + "\n";
    }
    write_all(STDOUT_FILENO, out);
  }
  if (print_args) {
    std::string out = "ARGC=" + std::to_string(argc) + "\n";
    for (int i = 0; i < argc; ++i) out += "ARGV[" + std::to_string(i) + "]=" + argv[i] + "\n";
    write_all(STDOUT_FILENO, out);
  }
  for (const std::string& p : prints) write_all(STDOUT_FILENO, p + "\n");
  for (const std::string& p : eprints) write_all(STDERR_FILENO, p + "\n");
  for (const std::string& w : writes) {
    const size_t colon = w.find(':');
    if (colon == std::string::npos || std::atoi(w.substr(0, colon).c_str()) != rank) continue;
    write_all(STDOUT_FILENO, w.substr(colon + 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int i = 0; i < lines; ++i) {
    const std::string line = "rank " + std::to_string(rank) + " line " + std::to_string(i) + " " +
                             std::string(2000, static_cast<char>('a' + (rank % 26))) + "\n";
    const size_t half = line.size() / 2;
    write_all(STDOUT_FILENO, line.substr(0, half));
    write_all(STDOUT_FILENO, line.substr(half));
  }

  if (!take.empty()) take_ports(take, rank);
  const int listening = listen_token.empty() ? -1 : rendezvous(listen_token, rank);
  (void)listening;  // closed at exit

  if (!child_dir.empty()) {
    const pid_t child = fork();
    if (child == 0) {
      execlp("sleep", "sleep", "300", static_cast<char*>(nullptr));
      while (true) pause();  // no sleep(1) on PATH: be a sleeping child all the same
    }
    if (child < 0) die(7, std::string("fork(): ") + std::strerror(errno));
    write_pid_file(child_dir + "/rank" + std::to_string(rank) + ".child", child);
  }

  if (!pid_dir.empty()) write_pid_file(pid_dir + "/rank" + std::to_string(rank) + ".pid", getpid());

  int exit_code = 0, signal_number = 0;
  bool do_exit = false, do_signal = false;
  for (const std::string& e : exits) do_exit = do_exit || for_this_rank(e, rank, &exit_code);
  const int attempt = env_int(env::kRestartCount, 0);
  if (!fail_attempts.empty()) {
    write_all(STDOUT_FILENO, "ATTEMPT " + std::to_string(attempt) + "\n");
    int failing = 0;
    for (const std::string& f : fail_attempts)
      if (for_this_rank(f, rank, &failing) && attempt < failing) {
        do_exit = true;
        exit_code = 3;
      }
  }
  for (const std::string& s : signals) {
    do_signal = do_signal || for_this_rank(s, rank, &signal_number);
  }
  if ((do_exit || do_signal) && !pid_dir.empty()) {
    const int local_world = env_int(env::kLocalWorldSize, 1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (count_pid_files(pid_dir) < local_world && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  if (!partial.empty()) write_all(STDOUT_FILENO, partial);

  if (do_signal) {
    const rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(signal_number, SIG_DFL);
    kill(getpid(), signal_number);
    std::this_thread::sleep_for(std::chrono::seconds(5));
    return 99;  // the signal did not kill us
  }
  if (do_exit) return exit_code;
  if (sleep_seconds > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(sleep_seconds));
  }
  return 0;
}
