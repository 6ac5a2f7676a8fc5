// supervisor.cpp - implementation of the process supervisor used by `accelerate-cpp launch`.
//
// Design: single-threaded event loop around poll(). Signal handlers only set a flag and write a
// byte to a non-blocking self-pipe, which wakes poll(); SIGCHLD wakes it the same way and the loop
// reaps with waitpid(WNOHANG). Children are created with fork()+execve() with every signal
// blocked across fork() so no handler of ours ever runs in a child; a CLOEXEC pipe reports a
// failed execve() back to the parent. The watchdog is a fork() without execve() that only reads
// process-group ids (native int, 0 = disarm) from a pipe whose write end only the launcher has.
#include "supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <utility>

namespace accelerate::cli {
namespace {

using Clock = std::chrono::steady_clock;

// ---- signal plumbing (async-signal-safe parts only) ----

constexpr int kMaxSignal = 65;
volatile sig_atomic_t g_pending[kMaxSignal];
volatile sig_atomic_t g_wake_fd = -1;

extern "C" void on_signal(int sig) {
  const int saved_errno = errno;
  if (sig > 0 && sig < kMaxSignal) g_pending[sig] = 1;
  const int fd = g_wake_fd;
  if (fd >= 0) {
    const char byte = 0;
    const ssize_t ignored = write(fd, &byte, 1);  // full pipe: a wake-up is already pending
    (void)ignored;
  }
  errno = saved_errno;
}

/// Signals the supervisor handles; the first three are forwarded to the children.
constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};
constexpr int kHandledSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE};
constexpr int kNumHandled = sizeof(kHandledSignals) / sizeof(kHandledSignals[0]);

bool make_pipe(int fds[2]) {
#if defined(__linux__)
  return pipe2(fds, O_CLOEXEC) == 0;
#else
  if (pipe(fds) != 0) return false;
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  return true;
#endif
}

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

void close_fd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

/// Installs the handlers and the self-pipe; restores everything on destruction.
class SignalScope {
 public:
  SignalScope() {
    if (make_pipe(wake_)) {
      set_nonblocking(wake_[0]);
      set_nonblocking(wake_[1]);
    }
    for (int sig : kHandledSignals) g_pending[sig] = 0;
    g_wake_fd = wake_[1];
    for (int i = 0; i < kNumHandled; ++i) {
      sigaction(kHandledSignals[i], nullptr, &saved_[i]);
      // A stop signal ignored on entry (nohup, background job of a non-interactive shell) stays
      // ignored, for us and for the children.
      const bool stop_signal = kHandledSignals[i] != SIGCHLD && kHandledSignals[i] != SIGPIPE;
      if (stop_signal && saved_[i].sa_handler == SIG_IGN) continue;
      struct sigaction action {};
      sigemptyset(&action.sa_mask);
      if (kHandledSignals[i] == SIGPIPE) {
        action.sa_handler = SIG_IGN;
      } else {
        action.sa_handler = on_signal;
        action.sa_flags = SA_RESTART | (kHandledSignals[i] == SIGCHLD ? SA_NOCLDSTOP : 0);
      }
      sigaction(kHandledSignals[i], &action, nullptr);
    }
  }
  ~SignalScope() {
    for (int i = 0; i < kNumHandled; ++i) sigaction(kHandledSignals[i], &saved_[i], nullptr);
    g_wake_fd = -1;
    close_fd(wake_[0]);
    close_fd(wake_[1]);
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

  int wake_fd() const { return wake_[0]; }
  /// Dispositions to restore in a child before execve().
  const struct sigaction* saved() const { return saved_; }

  /// Empties the self-pipe.
  void drain() const {
    char buffer[256];
    while (read(wake_[0], buffer, sizeof buffer) > 0) {
    }
  }
  /// Returns and clears the pending flag of `sig`.
  static bool take(int sig) {
    if (!g_pending[sig]) return false;
    g_pending[sig] = 0;
    return true;
  }

 private:
  int wake_[2] = {-1, -1};
  struct sigaction saved_[kNumHandled] {};
};

// ---- small helpers ----

/// Writes everything, retrying on EINTR/partial writes; drops the data if the reader is gone.
void write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n > 0) {
      data += n;
      size -= static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, 100);
    } else {
      return;  // EPIPE and friends: nobody reads our output any more
    }
  }
}

std::string format_seconds(std::chrono::milliseconds d) {
  std::ostringstream out;
  out << static_cast<double>(d.count()) / 1000.0 << "s";
  return out.str();
}

std::string plural(size_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "es");
}

/// Line assembler for one output stream of one child.
class LinePump {
 public:
  /// Longest partial line kept in memory; longer lines are emitted in pieces.
  static constexpr size_t kMaxPartial = size_t{1} << 20;

  void open(int fd, int target, std::string prefix) {
    fd_ = fd;
    target_ = target;
    prefix_ = std::move(prefix);
  }
  int fd() const { return fd_; }

  /// Reads once (or until EAGAIN when `drain`); returns false once the stream hit EOF/error.
  bool pump(bool drain) {
    char buffer[65536];
    while (fd_ >= 0) {
      const ssize_t n = read(fd_, buffer, sizeof buffer);
      if (n > 0) {
        feed(buffer, static_cast<size_t>(n));
        if (!drain) return true;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return true;
      } else {
        finish();
        return false;
      }
    }
    return false;
  }

  /// Flushes a trailing partial line (terminated with '\n') and closes the stream.
  void finish() {
    if (!partial_.empty()) {
      std::string out = prefix_ + partial_ + "\n";
      write_all(target_, out.data(), out.size());
      partial_.clear();
    }
    close_fd(fd_);
  }

 private:
  // Lines end at '\n' and also at '\r', which progress bars write to redraw their line: each
  // redraw gets the prefix and keeps its '\r', so the bar still overwrites itself instead of
  // growing into one long line. "\r\n" ends one line, also when a read splits it; a bare "\r"
  // (a redraw that starts with one) is forwarded without a prefix.
  void feed(const char* data, size_t size) {
    size_t scan_from = partial_.size();
    partial_.append(data, size);
    std::string out;
    size_t line_start = 0;
    if (after_cr_ && !partial_.empty() && partial_[0] == '\n') {
      out += '\n';  // the second half of a "\r\n" whose '\r' ended the previous read
      line_start = scan_from = 1;
    }
    after_cr_ = false;
    for (size_t end; (end = partial_.find_first_of("\r\n", scan_from)) != std::string::npos;) {
      if (partial_[end] == '\r' && end + 1 < partial_.size() && partial_[end + 1] == '\n') ++end;
      if (partial_[line_start] != '\r') out += prefix_;  // not a bare "\r" (or "\r\n")
      out.append(partial_, line_start, end + 1 - line_start);
      line_start = scan_from = end + 1;
      after_cr_ = partial_[end] == '\r';
    }
    partial_.erase(0, line_start);
    if (!partial_.empty()) after_cr_ = false;
    if (partial_.size() >= kMaxPartial) {
      out += prefix_;
      out += partial_;
      out += '\n';
      partial_.clear();
    }
    if (!out.empty()) write_all(target_, out.data(), out.size());
  }

  int fd_ = -1;
  int target_ = -1;
  std::string prefix_;
  std::string partial_;
  bool after_cr_ = false;  // what was forwarded last ended with '\r'
};

struct Child {
  const ProcessSpec* spec = nullptr;
  pid_t pid = -1;
  bool running = false;
  int status = -1;  // from waitpid, once reaped
  LinePump out;
  LinePump err;
};

/// Everything the child needs between fork() and execve(), prepared before fork().
struct ExecPlan {
  const char* path = nullptr;
  std::vector<char*> argv;
  std::vector<char*> envp;
  pid_t parent = -1;
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  int status_fd = -1;
  const struct sigaction* saved_actions = nullptr;
  sigset_t mask{};
};

/// Places `fd` on `target` in the child, keeping it open across execve().
void install_fd(int fd, int target) {
  if (fd < 0) return;
  if (fd == target) {
    fcntl(fd, F_SETFD, 0);
  } else {
    dup2(fd, target);
  }
}

[[noreturn]] void exec_child(const ExecPlan& plan) {
  // Only async-signal-safe calls from here on.
  setpgid(0, 0);
#if defined(__linux__)
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != plan.parent) _exit(127);  // the launcher died before prctl() took effect
#endif
  for (int i = 0; i < kNumHandled; ++i)
    sigaction(kHandledSignals[i], &plan.saved_actions[i], nullptr);
  sigprocmask(SIG_SETMASK, &plan.mask, nullptr);
  install_fd(plan.stdin_fd, STDIN_FILENO);
  install_fd(plan.stdout_fd, STDOUT_FILENO);
  install_fd(plan.stderr_fd, STDERR_FILENO);
  execve(plan.path, plan.argv.data(), plan.envp.data());
  const int error = errno;
  const ssize_t ignored = write(plan.status_fd, &error, sizeof error);
  (void)ignored;
  _exit(127);
}

/// Closes every descriptor from 3 up except `keep_a` and `keep_b` (-1: none).
void close_other_fds(int keep_a, int keep_b) {
  const int kept[2] = {std::min(keep_a, keep_b), std::max(keep_a, keep_b)};
#if defined(__linux__) && defined(SYS_close_range)
  // close_range() over the gaps between the kept descriptors; `last` < 0: to the end.
  auto close_from_to = [](int first, int last) {
    if (last >= 0 && last < first) return true;
    return syscall(SYS_close_range, static_cast<unsigned>(first),
                   last < 0 ? ~0U : static_cast<unsigned>(last), 0) == 0;
  };
  int first = 3;
  bool ok = true;
  for (int k : kept) {
    if (k < first) continue;
    ok = ok && close_from_to(first, k - 1);
    first = k + 1;
  }
  if (ok && close_from_to(first, -1)) return;  // else an old kernel: one by one below
#endif
  long max_fd = sysconf(_SC_OPEN_MAX);
  if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
  for (int fd = 3; fd < max_fd; ++fd) {
    if (fd != kept[0] && fd != kept[1]) close(fd);
  }
}

/// Body of the watchdog process: collects process-group ids from `read_fd`; on 0 exits, on
/// EOF (the launcher is gone without saying goodbye) SIGKILLs every group first.
[[noreturn]] void watchdog_main(int read_fd, int keep_fd) {
  setpgid(0, 0);  // out of the launcher's group: a signal to that group does not reach us
#if defined(__linux__)
  prctl(PR_SET_NAME, "acc-watchdog");  // what ps -o comm and top show
#endif
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU}) {
    signal(sig, SIG_IGN);
  }
  signal(SIGCHLD, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  const int null_fd = open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) dup2(null_fd, fd);
  }
  close_other_fds(read_fd, keep_fd);

  std::vector<pid_t> groups;
  pid_t value = 0;
  size_t have = 0;
  while (true) {
    const ssize_t n = read(read_fd, reinterpret_cast<char*>(&value) + have, sizeof value - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    if (have < sizeof value) continue;
    have = 0;
    if (value == 0) _exit(0);
    groups.push_back(value);
  }
  for (const pid_t group : groups) kill(-group, SIGKILL);
  _exit(0);
}

std::vector<char*> to_c_strings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

class Supervisor {
 public:
  Supervisor(const std::vector<ProcessSpec>& specs, const SupervisorOptions& options)
      : options_(options), children_(specs.size()) {
    for (size_t i = 0; i < specs.size(); ++i) children_[i].spec = &specs[i];
  }

  int run() {
    SignalScope signals;
    signals_ = &signals;
    start_watchdog();
    if (isatty(STDIN_FILENO)) stdin_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (Child& child : children_) {
      if (!spawn(child)) break;
      handle_signals();
      if (stopping_) break;
    }
    if (stdin_fd_ >= 0) close_fd(stdin_fd_);
    loop();
    // Every child is reaped; collect what is left in the pipes (a child's output is complete
    // once it has exited), then make sure nothing it started survives.
    for (Child& child : children_) {
      child.out.pump(/*drain=*/true);
      child.err.pump(/*drain=*/true);
      child.out.finish();
      child.err.finish();
      if (child.pid > 0) kill(-child.pid, SIGKILL);
    }
    stop_watchdog();
    signals_ = nullptr;
    // A failed job of several processes: how each one ended (the first failure reported above
    // may be a consequence, e.g. of another rank leaving early).
    if (exit_code_ != 0 && children_.size() > 1) {
      std::string summary;
      for (const Child& child : children_) {
        if (child.status < 0) continue;
        summary += (summary.empty() ? "" : ", ") + std::string("rank ") +
                   std::to_string(child.spec->rank) + " ";
        if (WIFSIGNALED(child.status))
          summary += "killed by " + signal_name(WTERMSIG(child.status));
        else
          summary += "code " + std::to_string(WEXITSTATUS(child.status));
      }
      if (!summary.empty()) log("exit statuses: " + summary);
    }
    return exit_code_;
  }

 private:
  void log(const std::string& message) const {
    const std::string line = options_.name + ": " + message + "\n";
    write_all(STDERR_FILENO, line.data(), line.size());
  }

  std::string describe(const Child& child) const {
    return "rank " + std::to_string(child.spec->rank) + " (pid " + std::to_string(child.pid) + ")";
  }

  /// Forks the watchdog (see supervisor.h); without one, a warning says what is not guaranteed.
  void start_watchdog() {
    int fds[2] = {-1, -1};
    if (!make_pipe(fds)) {
      log("warning: cannot start the watchdog (pipe(): " + std::string(std::strerror(errno)) +
          "); processes the ranks start may outlive a killed launcher");
      return;
    }
    sigset_t all, saved;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &saved);
    const pid_t pid = fork();
    if (pid == 0) watchdog_main(fds[0], options_.watchdog_keep_fd);
    const int fork_error = errno;
    sigprocmask(SIG_SETMASK, &saved, nullptr);
    close_fd(fds[0]);
    if (pid < 0) {
      close_fd(fds[1]);
      log("warning: cannot start the watchdog (fork(): " + std::string(std::strerror(fork_error)) +
          "); processes the ranks start may outlive a killed launcher");
      return;
    }
    setpgid(pid, pid);  // also done by the watchdog; whichever runs first wins
    watchdog_pid_ = pid;
    watchdog_fd_ = fds[1];
  }

  /// Tells the watchdog about a new process group.
  void watch(pid_t group) {
    if (watchdog_fd_ >= 0)
      write_all(watchdog_fd_, reinterpret_cast<const char*>(&group), sizeof group);
  }

  /// Every group is already killed: disarm the watchdog (0) and wait for it to exit.
  void stop_watchdog() {
    if (watchdog_fd_ >= 0) {
      watch(0);
      close_fd(watchdog_fd_);
    }
    if (watchdog_pid_ > 0) {
      while (waitpid(watchdog_pid_, nullptr, 0) < 0 && errno == EINTR) {
      }
      watchdog_pid_ = -1;
    }
  }

  size_t running_count() const {
    return static_cast<size_t>(std::count_if(children_.begin(), children_.end(),
                                             [](const Child& c) { return c.running; }));
  }

  bool spawn(Child& child) {
    const ProcessSpec& spec = *child.spec;
    int out_pipe[2] = {-1, -1};
    int err_pipe[2] = {-1, -1};
    int status_pipe[2] = {-1, -1};
    bool ok = make_pipe(status_pipe);
    if (ok && options_.prefix_output) ok = make_pipe(out_pipe) && make_pipe(err_pipe);
    if (!ok) {
      const int error = errno;
      for (int* fds : {out_pipe, err_pipe, status_pipe}) {
        close_fd(fds[0]);
        close_fd(fds[1]);
      }
      return start_failed(spec, std::string("pipe() failed: ") + std::strerror(error));
    }

    ExecPlan plan;
    plan.path = spec.executable.c_str();
    plan.argv = to_c_strings(spec.argv);
    plan.envp = to_c_strings(spec.env);
    plan.parent = getpid();
    plan.stdin_fd = stdin_fd_;
    plan.stdout_fd = out_pipe[1];
    plan.stderr_fd = err_pipe[1];
    plan.status_fd = status_pipe[1];
    plan.saved_actions = signals_->saved();

    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &plan.mask);
    const pid_t pid = fork();
    if (pid == 0) exec_child(plan);
    const int fork_error = errno;
    sigprocmask(SIG_SETMASK, &plan.mask, nullptr);

    close_fd(out_pipe[1]);
    close_fd(err_pipe[1]);
    close_fd(status_pipe[1]);
    if (pid < 0) {
      close_fd(out_pipe[0]);
      close_fd(err_pipe[0]);
      close_fd(status_pipe[0]);
      return start_failed(spec, std::string("fork() failed: ") + std::strerror(fork_error));
    }
    setpgid(pid, pid);  // also done by the child; whichever runs first wins, the other may fail
    watch(pid);
    child.pid = pid;
    child.running = true;
    if (options_.prefix_output) {
      const std::string prefix = "[rank " + std::to_string(spec.rank) + "] ";
      set_nonblocking(out_pipe[0]);
      set_nonblocking(err_pipe[0]);
      child.out.open(out_pipe[0], STDOUT_FILENO, prefix);
      child.err.open(err_pipe[0], STDERR_FILENO, prefix);
    }

    int exec_error = 0;
    ssize_t n;
    do {
      n = read(status_pipe[0], &exec_error, sizeof exec_error);
    } while (n < 0 && errno == EINTR);
    close_fd(status_pipe[0]);
    if (n != static_cast<ssize_t>(sizeof exec_error)) return true;  // execve() succeeded

    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    child.running = false;
    const std::string program = spec.argv.empty() ? spec.executable : spec.argv.front();
    return start_failed(spec, "cannot execute '" + program + "': " + std::strerror(exec_error));
  }

  bool start_failed(const ProcessSpec& spec, const std::string& why) {
    std::string message = "failed to start rank " + std::to_string(spec.rank) + ": " + why;
    const size_t others = running_count();
    if (others > 0) message += "; stopping the other " + plural(others, "process");
    log(message);
    if (!stopping_) {
      exit_code_ = kStartFailureExitCode;
      begin_stop(SIGTERM);
    }
    return false;
  }

  /// Sends `sig` to the process group of every running child and arms the grace-period timer.
  void begin_stop(int sig) {
    if (options_.describe_positions) {
      std::vector<int> ranks;
      for (const Child& child : children_) ranks.push_back(child.spec->rank);
      const std::string positions = options_.describe_positions(ranks);
      if (!positions.empty()) log("where the ranks were: " + positions);
    }
    stopping_ = true;
    deadline_ = Clock::now() + options_.grace_period;
    signal_running(sig);
  }

  void signal_running(int sig) {
    for (const Child& child : children_) {
      if (!child.running) continue;
      if (kill(-child.pid, sig) != 0) kill(child.pid, sig);
    }
  }

  void kill_running() {
    killed_ = true;
    signal_running(SIGKILL);
  }

  void handle_signals() {
    signals_->drain();
    SignalScope::take(SIGCHLD);  // reaping happens unconditionally in the loop
    for (int sig : kStopSignals) {
      if (!SignalScope::take(sig)) continue;
      const size_t running = running_count();
      if (!stopping_) {
        log("received " + signal_name(sig) + "; forwarding it to " + plural(running, "process"));
        exit_code_ = 128 + sig;
        if (options_.interrupted) *options_.interrupted = true;
        begin_stop(sig);
      } else if (!killed_ && running > 0) {
        log("received " + signal_name(sig) + " while stopping; killing " +
            plural(running, "process"));
        kill_running();
      }
    }
  }

  void on_exit(Child& child, int status) {
    child.running = false;
    child.status = status;
    const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!failed || stopping_) return;
    std::string message = describe(child);
    if (WIFSIGNALED(status)) {
      const int sig = WTERMSIG(status);
      message += " was killed by signal " + signal_name(sig) + " (" + std::to_string(sig) + ")";
#ifdef WCOREDUMP
      if (WCOREDUMP(status)) message += " (core dumped)";
#endif
      exit_code_ = 128 + sig;
    } else {
      message += " exited with code " + std::to_string(WEXITSTATUS(status));
      exit_code_ = WEXITSTATUS(status);
    }
    const size_t others = running_count();
    if (others > 0) message += "; stopping the other " + plural(others, "process");
    log(message);
    begin_stop(SIGTERM);
  }

  void reap() {
    for (Child& child : children_) {
      if (!child.running) continue;
      int status = 0;
      pid_t r;
      do {
        r = waitpid(child.pid, &status, WNOHANG);
      } while (r < 0 && errno == EINTR);
      if (r == child.pid) {
        on_exit(child, status);
      } else if (r < 0 && errno == ECHILD) {
        child.running = false;  // someone else reaped it; nothing more to learn
      }
    }
  }

  void loop() {
    std::vector<pollfd> fds;
    std::vector<LinePump*> pumps;
    while (true) {
      handle_signals();
      reap();
      if (running_count() == 0) return;

      int timeout_ms = -1;
      if (stopping_ && !killed_) {
        const auto now = Clock::now();
        if (now >= deadline_) {
          for (const Child& child : children_) {
            if (child.running) {
              log(describe(child) + " still running " + format_seconds(options_.grace_period) +
                  " after the stop signal; sending SIGKILL");
            }
          }
          kill_running();
          continue;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - now) +
                          std::chrono::milliseconds(1);
        timeout_ms = static_cast<int>(std::min<long long>(left.count(), 1 << 30));
      }

      fds.clear();
      pumps.clear();
      fds.push_back({signals_->wake_fd(), POLLIN, 0});
      pumps.push_back(nullptr);
      for (Child& child : children_) {
        for (LinePump* pump : {&child.out, &child.err}) {
          if (pump->fd() < 0) continue;
          fds.push_back({pump->fd(), POLLIN, 0});
          pumps.push_back(pump);
        }
      }
      const int ready = poll(fds.data(), fds.size(), timeout_ms);
      if (ready <= 0) continue;  // timeout or EINTR: re-evaluate at the top
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents != 0) pumps[i]->pump(/*drain=*/false);
      }
    }
  }

  SupervisorOptions options_;
  std::vector<Child> children_;
  SignalScope* signals_ = nullptr;
  pid_t watchdog_pid_ = -1;
  int watchdog_fd_ = -1;  ///< write end of the watchdog's pipe (close-on-exec)
  int stdin_fd_ = -1;
  bool stopping_ = false;
  bool killed_ = false;
  Clock::time_point deadline_{};
  int exit_code_ = 0;
};

}  // namespace

int run_processes(const std::vector<ProcessSpec>& processes, const SupervisorOptions& options) {
  Supervisor supervisor(processes, options);
  return supervisor.run();
}

std::string signal_name(int signal_number) {
  static const std::pair<int, const char*> kNames[] = {
      {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},       {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
      {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"},     {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},
      {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"},     {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
      {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"},     {SIGTERM, "SIGTERM"}, {SIGCHLD, "SIGCHLD"},
      {SIGCONT, "SIGCONT"}, {SIGSTOP, "SIGSTOP"},     {SIGTSTP, "SIGTSTP"}, {SIGTTIN, "SIGTTIN"},
      {SIGTTOU, "SIGTTOU"}, {SIGURG, "SIGURG"},       {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"},
      {SIGPROF, "SIGPROF"}, {SIGVTALRM, "SIGVTALRM"}, {SIGSYS, "SIGSYS"},
  };
  for (const auto& [number, name] : kNames) {
    if (number == signal_number) return name;
  }
  return "signal " + std::to_string(signal_number);
}

}  // namespace accelerate::cli
