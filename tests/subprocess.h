// The one way the tests start processes: `Subprocess` starts a command (argv, no shell) with
// changes to the inherited environment, captures its stdout and stderr into files of its own
// folder, and waits for it with a timeout, after which it is killed, so that a test fails
// rather than hangs; `run_command` does all of that in one call. The output goes to files,
// not pipes, so that a process that leaves a grandchild holding them cannot block the test.
// Its TMPDIR is a folder inside that one too (unless the command sets TMPDIR), so what a
// killed process leaves there is removed with the Subprocess. Plain C++ (no LibTorch), so the
// launcher tests use it too.
//
// Example:
//   using namespace accelerate::testing;
//   const Outcome r = run_command(Command({"python3", "-c", "print(6 * 7)"}).env("LANG", "C"));
//   EXPECT_EQ(r.code(), 0) << r.err;
//   EXPECT_EQ(r.out, "42\n");
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "temp_dir.h"

extern char** environ;

namespace accelerate::testing {

/// A command line and how to start it, with chained setters.
struct Command {
  /// `argv[0]` is run as given when it contains a '/', else looked up in the PATH of the
  /// child's environment.
  explicit Command(std::vector<std::string> argv) : argv_(std::move(argv)) {}
  /// Sets NAME=value in the child's environment, which is otherwise this process's.
  Command& env(const std::string& name, const std::string& value) {
    env_[name] = value;
    return *this;
  }
  /// Removes NAME from the child's environment.
  Command& unset(const std::string& name) {
    env_[name] = std::nullopt;
    return *this;
  }
  /// Starts the child in a process group of its own (as a shell starts a job), so that
  /// kill(-pid) reaches it and what it starts; a timeout then kills the whole group.
  Command& own_process_group(bool value) {
    own_process_group_ = value;
    return *this;
  }
  /// Sends stderr where stdout goes, interleaved as written: Outcome::out holds both.
  Command& merge_stderr(bool value) {
    merge_stderr_ = value;
    return *this;
  }

  std::vector<std::string> argv_;                          ///< see Command()
  std::map<std::string, std::optional<std::string>> env_;  ///< see env(), unset()
  bool own_process_group_ = false;                         ///< see own_process_group()
  bool merge_stderr_ = false;                              ///< see merge_stderr()
};

/// How a process ended and what it wrote.
struct Outcome {
  int status = -1;         ///< as waitpid() reports it
  std::string out;         ///< stdout (and stderr with merge_stderr)
  std::string err;         ///< stderr
  bool timed_out = false;  ///< it outlived the timeout and was killed
  double seconds = 0;      ///< from start to end (for lower bounds, e.g. a grace period)
  /// The exit code, or -1 when it did not exit normally.
  int code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
  /// The signal that ended it, or 0.
  int signal() const { return WIFSIGNALED(status) ? WTERMSIG(status) : 0; }
  /// Everything it wrote: stdout, then stderr.
  std::string output() const { return out + err; }
};

/// A running process (see the file comment). Killed (SIGKILL) and reaped on destruction if
/// it is still running. Not copyable or movable.
class Subprocess {
 public:
  /// How long wait() waits unless told otherwise.
  static constexpr std::chrono::milliseconds kDefaultTimeout = std::chrono::minutes(5);

  /// Starts `command`; stdin is /dev/null, signal dispositions and mask are the defaults.
  /// Throws std::runtime_error when it cannot fork; a program that cannot be executed exits
  /// with code 127, saying why on stderr.
  explicit Subprocess(const Command& command)
      : own_group_(command.own_process_group_), start_(std::chrono::steady_clock::now()) {
    auto changes = command.env_;
    if (changes.count("TMPDIR") == 0) {
      std::filesystem::create_directory(dir_.path() / "tmp");
      changes["TMPDIR"] = dir_.path("tmp");
    }
    std::vector<std::string> env_storage;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      const std::string entry = *e;
      if (changes.count(entry.substr(0, entry.find('='))) == 0) env_storage.push_back(entry);
    }
    for (const auto& [name, value] : changes)
      if (value) env_storage.push_back(name + "=" + *value);
    std::vector<std::string> argv_storage = command.argv_;
    std::vector<char*> argv, envp;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string exec_error =
        "Subprocess: cannot execute " +
        (argv_storage.empty() ? std::string("nothing") : argv_storage[0]) + ": ";

    const int in_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int out_fd = ::open(out_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err_fd =
        command.merge_stderr_
            ? out_fd
            : ::open(err_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in_fd < 0 || out_fd < 0 || err_fd < 0)
      throw std::runtime_error("Subprocess: cannot open its output files in " + dir_.str());
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls from here on: the parent may have other threads.
      if (own_group_) ::setpgid(0, 0);
      for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD}) ::signal(sig, SIG_DFL);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::dup2(in_fd, STDIN_FILENO);
      ::dup2(out_fd, STDOUT_FILENO);
      ::dup2(err_fd, STDERR_FILENO);
      environ = envp.data();
      if (argv[0] != nullptr) ::execvp(argv[0], argv.data());
      const char* why = argv[0] != nullptr ? std::strerror(errno) : "empty command";
      (void)!::write(STDERR_FILENO, exec_error.data(), exec_error.size());
      (void)!::write(STDERR_FILENO, why, std::strlen(why));
      (void)!::write(STDERR_FILENO, "\n", 1);
      ::_exit(127);
    }
    const int fork_error = errno;
    if (own_group_ && pid_ > 0) ::setpgid(pid_, pid_);  // before the caller signals the group
    ::close(in_fd);
    ::close(out_fd);
    if (err_fd != out_fd) ::close(err_fd);
    if (pid_ < 0)
      throw std::runtime_error(std::string("Subprocess: fork: ") + std::strerror(fork_error));
  }

  ~Subprocess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(own_group_ ? -pid_ : pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  /// Its process id (also its process group's with own_process_group).
  pid_t pid() const { return pid_; }

  /// Waits until it ends; past `timeout` (counted from its start) kills it, or its process
  /// group, with SIGKILL and sets Outcome::timed_out. Call once.
  Outcome wait(std::chrono::milliseconds timeout = kDefaultTimeout) {
    Outcome outcome;
    const auto deadline = start_ + timeout;
    while (!reaped_) {
      const pid_t r = ::waitpid(pid_, &outcome.status, WNOHANG);
      if (r == pid_ || (r < 0 && errno != EINTR)) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        outcome.timed_out = true;
        ::kill(own_group_ ? -pid_ : pid_, SIGKILL);
        ::waitpid(pid_, &outcome.status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    reaped_ = true;
    outcome.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    outcome.out = read(out_path());
    outcome.err = read(err_path());
    return outcome;
  }

 private:
  std::string out_path() const { return dir_.path("stdout"); }
  std::string err_path() const { return dir_.path("stderr"); }
  static std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  TempDir dir_;
  bool own_group_;
  std::chrono::steady_clock::time_point start_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

/// Runs `command` to its end, or kills it after `timeout` (Outcome::timed_out).
inline Outcome run_command(const Command& command,
                           std::chrono::milliseconds timeout = Subprocess::kDefaultTimeout) {
  Subprocess process(command);
  return process.wait(timeout);
}

}  // namespace accelerate::testing
