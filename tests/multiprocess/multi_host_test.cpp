// Jobs over two machines: `accelerate-cpp launch --num_machines 2` on each of two network
// namespaces joined by veth pairs (two_hosts.h), whose names resolve to loopback (127.0.1.1),
// as Debian's and Ubuntu's /etc/hosts have it. Checks which network Gloo uses (the route to the
// main process by default, GLOO_SOCKET_IFNAME when set, `accelerate-cpp env` showing the same),
// that a wrong main address fails on both machines within the join timeout, and repeated joins.
// No LibTorch in this binary: the ranks are dist_check.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "subprocess.h"
#include "temp_dir.h"
#include "two_hosts.h"

namespace {

using accelerate::testing::Command;
using accelerate::testing::Outcome;
using accelerate::testing::Subprocess;
using accelerate::testing::TempDir;
using accelerate::testing::TwoHosts;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// What both machines' launchers did.
struct Job {
  Outcome a, b;
  std::string log() const { return "host a:\n" + a.out + "host b:\n" + b.out; }
  /// Both launchers exited with 0.
  bool passed() const { return a.code() == 0 && b.code() == 0; }
};

struct JobOptions {
  int port = 29400;
  int processes_per_host = 1;
  std::string main_ip_a = TwoHosts::address(1, 0), main_ip_b = TwoHosts::address(1, 0);
  std::string ifname_a, ifname_b;         ///< GLOO_SOCKET_IFNAME ("" unset)
  std::vector<std::string> launch_flags;  ///< extra launcher flags, both hosts
  std::vector<std::string> program_args = {"--quick", "--print-network"};
};

/// dist_check over both hosts (machine rank 0 on a), both launchers started together.
Job run_job(const TwoHosts& hosts, const JobOptions& o,
            std::chrono::seconds limit = std::chrono::seconds(60)) {
  auto machine = [&](char host) {
    std::vector<std::string> argv = {LAUNCHER,
                                     "launch",
                                     "--num_processes",
                                     std::to_string(2 * o.processes_per_host),
                                     "--num_machines",
                                     "2",
                                     "--machine_rank",
                                     host == 'a' ? "0" : "1",
                                     "--main_process_ip",
                                     host == 'a' ? o.main_ip_a : o.main_ip_b,
                                     "--main_process_port",
                                     std::to_string(o.port),
                                     "--num_cpu_threads_per_process",
                                     "1"};
    argv.insert(argv.end(), o.launch_flags.begin(), o.launch_flags.end());
    argv.push_back(DIST_CHECK);
    argv.insert(argv.end(), o.program_args.begin(), o.program_args.end());
    Command command = hosts.command(host, argv).merge_stderr(true);
    const std::string& ifname = host == 'a' ? o.ifname_a : o.ifname_b;
    if (ifname.empty())
      command.unset("GLOO_SOCKET_IFNAME");
    else
      command.env("GLOO_SOCKET_IFNAME", ifname);
    for (const char* name : {"ACCELERATE_TIMEOUT", "ACCELERATE_JOIN_TIMEOUT"}) command.unset(name);
    return command;
  };
  Subprocess b(machine('b'));
  Subprocess a(machine('a'));
  Job job{a.wait(limit), b.wait(limit)};
  EXPECT_FALSE(job.a.timed_out || job.b.timed_out) << "killed after " << limit.count() << " s\n"
                                                   << job.log();
  return job;
}

#define MAKE_HOSTS(name, ...) \
  TwoHosts name{__VA_ARGS__}; \
  if (!name.why_not().empty()) GTEST_SKIP() << name.why_not()

}  // namespace

// Each machine's name resolves to loopback (127.0.1.1), where PyTorch's default puts Gloo, so
// that each process would tell the other machine to reach it on that machine's own loopback.
// Here Gloo binds the address of the route to the main process instead, and the job passes.
TEST(TwoHosts, NamesOnLoopbackStillJoin) {
  MAKE_HOSTS(hosts);
  const Job job = run_job(hosts, {});
  EXPECT_EQ(job.a.code(), 0) << job.log();
  EXPECT_EQ(job.b.code(), 0) << job.log();
  EXPECT_TRUE(contains(job.a.out,
                       "[rank 0] GLOO 10.231.0.1 (eth1), the address of this machine's "
                       "route to MASTER_ADDR 10.231.0.1"))
      << job.log();
  EXPECT_TRUE(contains(job.b.out,
                       "[rank 1] GLOO 10.231.0.2 (eth1), the address of this machine's "
                       "route to MASTER_ADDR 10.231.0.1"))
      << job.log();
}

// With two links between the machines, Gloo follows the route to the main process (eth1)
// unless GLOO_SOCKET_IFNAME names another interface (eth2), which then carries Gloo's traffic;
// several interfaces (comma-separated, as PyTorch reads them) give one Gloo device each. A name
// that a machine does not have fails that machine at once, naming it, and, told through the
// store, the other machine too, with that reason.
TEST(TwoHosts, GlooSocketIfnamePicksTheNamedInterface) {
  MAKE_HOSTS(hosts, /*second_link=*/true);
  JobOptions o;
  Job job = run_job(hosts, o);
  EXPECT_TRUE(job.passed()) << job.log();
  EXPECT_TRUE(contains(job.b.out, "[rank 1] GLOO 10.231.0.2 (eth1), the address")) << job.log();

  const long long eth2_before = hosts.interface_bytes('b', "eth2");
  o.port += 1;
  o.ifname_a = o.ifname_b = "eth2";
  job = run_job(hosts, o);
  EXPECT_TRUE(job.passed()) << job.log();
  EXPECT_TRUE(contains(job.a.out, "[rank 0] GLOO eth2 (10.232.0.1), from GLOO_SOCKET_IFNAME"))
      << job.log();
  EXPECT_TRUE(contains(job.b.out, "[rank 1] GLOO eth2 (10.232.0.2), from GLOO_SOCKET_IFNAME"))
      << job.log();
  // The store stays on eth1; Gloo's connections and collectives went over eth2.
  EXPECT_GT(hosts.interface_bytes('b', "eth2") - eth2_before, 2000) << job.log();

  o.port += 1;
  o.ifname_a = o.ifname_b = "eth1,eth2";
  job = run_job(hosts, o);
  EXPECT_TRUE(job.passed()) << job.log();
  EXPECT_TRUE(contains(job.b.out,
                       "[rank 1] GLOO eth1 (10.231.0.2), eth2 (10.232.0.2), from "
                       "GLOO_SOCKET_IFNAME"))
      << job.log();

  o.port += 1;
  o.ifname_a = "eth2";
  o.ifname_b = "eth9";
  o.launch_flags = {"--join_timeout", "3"};
  job = run_job(hosts, o);
  EXPECT_NE(job.b.code(), 0) << job.log();
  EXPECT_TRUE(contains(job.b.out,
                       "accelerate: State: rank 1 of 2 could not join the process group "
                       "at 10.231.0.1:29403 (it failed after"))
      << job.log();
  EXPECT_TRUE(contains(job.b.out,
                       "GLOO_SOCKET_IFNAME='eth9' names eth9, which has no IPv4 or IPv6 "
                       "address on this machine (its interfaces: lo 127.0.0.1, eth1 "
                       "10.231.0.2, eth2 10.232.0.2)"))
      << job.log();
  // Host b told host a through the store, so host a says why at once.
  EXPECT_NE(job.a.code(), 0) << job.log();
  EXPECT_TRUE(contains(job.a.out,
                       "accelerate: State: rank 0 of 2 could not join the process group "
                       "at 10.231.0.1:29403 (it failed after"))
      << job.log();
  EXPECT_TRUE(contains(job.a.out,
                       "s) (launcher: torchrun): rank 1: GLOO_SOCKET_IFNAME='eth9' names "
                       "eth9, which has no IPv4 or IPv6 address on this machine"))
      << job.log();
}

// `accelerate-cpp env` shows the network the processes of the machine would use, by the
// library's own rule: the route to the configuration's main process, GLOO_SOCKET_IFNAME, or
// why there is none (a job over machines whose main address is a name that resolves to loopback
// here, as this machine's own name does with Debian's /etc/hosts). A main address written as
// loopback means that every machine is this one: loopback is then right.
TEST(TwoHosts, EnvShowsTheGlooNetwork) {
  MAKE_HOSTS(hosts, /*second_link=*/true);
  const TempDir dir;
  const std::string config = dir.path("job.yaml");
  auto env = [&](char host, const std::string& yaml, const std::string& ifname) {
    std::ofstream(config) << yaml;
    Command command = hosts.command(host, {LAUNCHER, "env", "--config_file", config});
    if (ifname.empty())
      command.unset("GLOO_SOCKET_IFNAME");
    else
      command.env("GLOO_SOCKET_IFNAME", ifname);
    const Outcome r = accelerate::testing::run_command(command.merge_stderr(true));
    EXPECT_EQ(r.code(), 0) << r.out;
    return r.out;
  };
  const std::string two_machines =
      "num_machines: 2\nnum_processes: 2\nmain_process_ip: 10.231.0.1\nmain_process_port: 29400\n";
  std::string out = env('b', two_machines, "");
  EXPECT_TRUE(contains(out, "- Network interfaces: lo 127.0.0.1, eth1 10.231.0.2, eth2 10.232.0.2"))
      << out;
  EXPECT_TRUE(contains(out,
                       "- Gloo network of each process (main process at 10.231.0.1:29400, 2 "
                       "machines): 10.231.0.2 (eth1), the address of this machine's route "
                       "to MASTER_ADDR 10.231.0.1"))
      << out;
  out = env('b', two_machines, "eth2");
  EXPECT_TRUE(contains(out, "2 machines): eth2 (10.232.0.2), from GLOO_SOCKET_IFNAME")) << out;
  out = env('a', "num_machines: 2\nnum_processes: 2\nmain_process_ip: acc-host-a\n", "");
  EXPECT_TRUE(contains(out,
                       "2 machines): none: no network interface for Gloo reaches the other "
                       "machines: tried MASTER_ADDR acc-host-a: reached over loopback "
                       "(127.0.0.1); this machine's name 'acc-host-a': resolves to "
                       "127.0.1.1 (loopback or not this machine's). Set GLOO_SOCKET_IFNAME"))
      << out;
  out = env('a', "num_machines: 2\nnum_processes: 2\nmain_process_ip: 127.0.0.1\n", "");
  EXPECT_TRUE(contains(out,
                       "2 machines): 127.0.0.1 (lo), the address of this machine's route to "
                       "MASTER_ADDR 127.0.0.1"))
      << out;
}

// A machine given a wrong main address (nothing there) and the main machine, which never hears
// from it, both fail within the join timeout, each naming the address and port it used, the
// main machine also the rank and machine that never arrived.
TEST(TwoHosts, WrongMainAddressFailsWithinTheJoinTimeoutOnBothHosts) {
  MAKE_HOSTS(hosts);
  JobOptions o;
  o.main_ip_b = "10.231.0.3";
  o.launch_flags = {"--join_timeout", "3"};
  const Job job = run_job(hosts, o, std::chrono::seconds(40));
  EXPECT_NE(job.a.code(), 0) << job.log();
  EXPECT_NE(job.b.code(), 0) << job.log();
  EXPECT_LT(job.a.seconds, 15) << job.log();
  EXPECT_LT(job.b.seconds, 15) << job.log();
  EXPECT_TRUE(contains(job.a.out,
                       "[rank 0] dist_check: accelerate: State: rank 0 of 2 could not "
                       "join the process group at 10.231.0.1:29400 within the join "
                       "timeout of 3 s"))
      << job.log();
  EXPECT_TRUE(contains(job.a.out, "rank 1 (machine rank 1) never arrived")) << job.log();
  EXPECT_TRUE(contains(job.b.out,
                       "[rank 1] dist_check: accelerate: State: rank 1 of 2 could not "
                       "join the process group at 10.231.0.3:29400 within the join "
                       "timeout of 3 s"))
      << job.log();
  EXPECT_TRUE(contains(job.b.out, "nothing accepted connections there")) << job.log();
}

// 50 joins on a non-loopback address: one job whose processes join 50 times, each Accelerator
// right after the previous one (process 0's store server closing and opening again on the same
// port), then 10 jobs started afresh. Every join passes, and every line is the program's own.
TEST(TwoHosts, FiftyJoinsOnANonLoopbackAddress) {
  MAKE_HOSTS(hosts);
  JobOptions o;
  o.processes_per_host = 2;
  o.program_args = {"--joins", "50"};
  Job job = run_job(hosts, o);
  ASSERT_TRUE(job.passed()) << job.log();
  o.processes_per_host = 1;
  o.program_args = {"--quick"};
  for (int i = 1; i <= 10; ++i) {
    o.port = 29400 + i;
    job = run_job(hosts, o);
    ASSERT_TRUE(job.passed()) << "job " << i << ":\n" << job.log();
    EXPECT_FALSE(contains(job.a.out + job.b.out, "terminate called")) << job.log();
  }
}

// The long variant (label joins-long, which CI leaves out): 200 jobs started afresh, each
// joining once, two processes per machine.
TEST(TwoHostsLong, TwoHundredJobs) {
  MAKE_HOSTS(hosts);
  JobOptions o;
  o.processes_per_host = 2;
  o.program_args = {"--quick"};
  for (int i = 1; i <= 200; ++i) {
    o.port = 20000 + i;
    const Job job = run_job(hosts, o);
    ASSERT_TRUE(job.passed()) << "job " << i << ":\n" << job.log();
  }
}
