// supervisor.h - process supervision for `accelerate-cpp launch`.
//
// Starts a group of local processes (one per rank), forwards their output line by line with an
// optional "[rank K] " prefix ('\r' also ends a line, so that a progress bar's redraws are
// prefixed one by one and still overwrite each other), and tears the whole group down as soon as
// one of them fails or the launcher itself is asked to stop (SIGINT/SIGTERM/SIGHUP). Pure POSIX
// (plus prctl on Linux); it knows nothing about command-line parsing or the torchrun environment
// contract, which the caller puts into each ProcessSpec.
//
// Guarantees:
//  * every child runs in its own process group; stop signals go to the whole group, so helper
//    processes a rank started are stopped with it;
//  * on Linux every child has PR_SET_PDEATHSIG=SIGKILL, so the ranks die with a SIGKILLed launcher;
//  * a watchdog process (forked before the ranks, in its own process group, deaf to SIGINT,
//    SIGTERM, SIGHUP and the job-control signals) learns the ranks' process groups through a
//    pipe and SIGKILLs those groups when the pipe reaches EOF without the launcher having said
//    goodbye, i.e. when the launcher died; so processes a rank started die with it too, unless
//    they left its process group (setsid(), setpgid());
//  * a child that fails (non-zero exit or killed by a signal) stops the others: SIGTERM, then
//    SIGKILL after the grace period; all children are reaped before run_processes() returns;
//  * output lines of different ranks are never mixed within a line (a line longer than 1 MiB is
//    forwarded in 1 MiB pieces, each ending with a newline); a last line without '\n' is
//    forwarded with one added.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace accelerate::cli {

/// One process to start.
struct ProcessSpec {
  /// Global rank; names the process in messages and in the "[rank K] " output prefix.
  int rank = 0;
  /// Path handed to execve(); resolve it first (see find_executable(), launch.h).
  std::string executable;
  /// Argument vector including argv[0]; passed to the program untouched.
  std::vector<std::string> argv;
  /// Complete environment of the process, as "NAME=value" entries.
  std::vector<std::string> env;
};

/// How run_processes() supervises its processes.
struct SupervisorOptions {
  /// Forward each line of the children's stdout/stderr to the launcher's stdout/stderr with the
  /// prefix "[rank K] "; a line ends at '\n' or at '\r' (kept, so that a progress bar's redraws
  /// still overwrite each other; "\r\n" ends one line). When false the children write directly
  /// to the launcher's stdout/stderr.
  bool prefix_output = true;
  /// Time between the stop signal (SIGTERM, or the signal the launcher received) and SIGKILL.
  std::chrono::milliseconds grace_period{5000};
  /// Prefix of the supervisor's own messages on stderr, e.g. "accelerate-cpp launch".
  std::string name = "accelerate-cpp launch";
  /// Set to true (when not null) if the launcher itself received a stop signal (SIGINT,
  /// SIGTERM, SIGHUP): the job was interrupted, not failed, and must not be restarted.
  bool* interrupted = nullptr;
  /// A descriptor the watchdog keeps open until it exits (the port lock of a
  /// PortReservation, ports.h), so that what it holds outlives a killed launcher until the
  /// processes are gone; -1: none. The watchdog closes every other descriptor.
  int watchdog_keep_fd = -1;
  /// Where each rank was when the job is stopped (a rank failed, or a stop signal): called with
  /// the ranks, returns the report, e.g. from the ranks' status lines (describe_rank_positions()
  /// in launch.h); empty, or a null function: no report.
  std::function<std::string(const std::vector<int>& ranks)> describe_positions;
};

/// Exit code of run_processes() when a process could not be started (fork or exec failed).
inline constexpr int kStartFailureExitCode = 2;

/// Starts every process in `processes` and supervises them until all have exited.
///
/// While it runs, SIGINT, SIGTERM and SIGHUP sent to the calling process are forwarded to every
/// child's process group (a second one escalates to SIGKILL at once), except those that were
/// already ignored on entry, which stay ignored; SIGPIPE is ignored. The previous signal
/// dispositions are restored before it returns and are what the children start with. The caller
/// must be single-threaded (PR_SET_PDEATHSIG is tied to the calling thread) and must not have other
/// children. A child's stdin is /dev/null when the caller's stdin is a terminal (children run in
/// background process groups and would be stopped by SIGTTIN), otherwise it is inherited.
///
/// @return 0 when every process exited with status 0; otherwise the exit code of the first
///   process that failed, or 128+signal if it was killed by a signal; 128+signal if the launcher
///   itself received a stop signal first; kStartFailureExitCode if a process could not be started.
int run_processes(const std::vector<ProcessSpec>& processes, const SupervisorOptions& options);

/// Returns the symbolic name of a signal ("SIGTERM"), or "signal N" for unknown ones.
std::string signal_name(int signal_number);

}  // namespace accelerate::cli
