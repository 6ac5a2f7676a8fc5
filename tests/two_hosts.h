// Two "machines" on one: network namespaces of this test's own, joined by veth pairs, for the
// tests of jobs that span machines (the launcher tests' namespaces hold one machine each).
// Host a has 10.231.0.1 on eth1, host b 10.231.0.2 on eth1; with a second link, eth2 carries
// 10.232.0.1 and 10.232.0.2. Traffic never leaves the namespaces. IPv6 is off inside them, so
// that an interface's byte counters count only what the job sent.
//
// Commands run on a host through `ip netns exec`, in a mount and UTS namespace of their own
// where the host has its own name (acc-host-a, acc-host-b) and /etc/hosts is Debian's and
// Ubuntu's default: that name on 127.0.1.1. Needs root and iproute2 (the `ip` command); see
// TwoHosts::why_not. Plain C++ (no LibTorch).
//
// Example:
//   accelerate::testing::TwoHosts hosts;
//   if (!hosts.why_not().empty()) GTEST_SKIP() << hosts.why_not();
//   Subprocess a(hosts.command('a', {"accelerate-cpp", "env"}));
#pragma once

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "subprocess.h"
#include "temp_dir.h"

namespace accelerate::testing {

/// The two namespaces, made by the constructor and removed by the destructor. Not copyable.
class TwoHosts {
 public:
  /// Makes the hosts; with `second_link`, eth2 too. On failure why_not() says why.
  explicit TwoHosts(bool second_link = false) {
    const std::string id = std::to_string(::getpid());
    for (char h : {'a', 'b'}) namespaces_.push_back("acc-" + id + "-" + h);
    if (::geteuid() != 0) {
      why_not_ = "network namespaces need root";
      return;
    }
    // Namespaces a killed test process of the same id left behind go first.
    for (const std::string& ns : namespaces_)
      run_command(Command({"ip", "netns", "delete", ns}).merge_stderr(true),
                  std::chrono::seconds(30));
    std::vector<std::vector<std::string>> steps;
    for (const std::string& ns : namespaces_) steps.push_back({"ip", "netns", "add", ns});
    const int links = second_link ? 2 : 1;
    for (int link = 1; link <= links; ++link) {
      const std::string name = "eth" + std::to_string(link);
      steps.push_back({"ip", "link", "add", name, "netns", namespaces_[0], "type", "veth", "peer",
                       "name", name, "netns", namespaces_[1]});
    }
    for (int h = 0; h < 2; ++h) {
      const std::string& ns = namespaces_[static_cast<size_t>(h)];
      steps.push_back({"ip", "netns", "exec", ns, "sh", "-c",
                       "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 && "
                       "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"});
      steps.push_back({"ip", "-n", ns, "link", "set", "lo", "up"});
      for (int link = 1; link <= links; ++link) {
        const std::string name = "eth" + std::to_string(link);
        steps.push_back({"ip", "-n", ns, "address", "add", address(link, h) + "/24", "dev", name});
        steps.push_back({"ip", "-n", ns, "link", "set", name, "up"});
      }
      const std::string file = dir_.path(std::string("hosts_") + host_letter(h));
      std::ofstream(file) << "127.0.0.1 localhost\n127.0.1.1 " << host_name(host_letter(h)) << "\n";
    }
    for (const auto& step : steps) {
      const Outcome r = run_command(Command(step).merge_stderr(true), std::chrono::seconds(30));
      if (r.code() != 0) {
        std::string line;
        for (const auto& word : step) line += word + " ";
        why_not_ = "cannot make the hosts: " + line + "failed: " + r.out;
        return;
      }
    }
  }
  ~TwoHosts() {
    for (const std::string& ns : namespaces_)  // the veth pairs go with them
      run_command(Command({"ip", "netns", "delete", ns}).merge_stderr(true),
                  std::chrono::seconds(30));
  }
  TwoHosts(const TwoHosts&) = delete;
  TwoHosts& operator=(const TwoHosts&) = delete;

  /// Why the hosts could not be made ("" when they were).
  const std::string& why_not() const { return why_not_; }

  /// The address of host `h` (0: a, 1: b) on link 1 (eth1) or 2 (eth2): 10.23<link>.0.<h+1>.
  static std::string address(int link, int h) {
    return "10.23" + std::to_string(link) + ".0." + std::to_string(h + 1);
  }
  /// The name host 'a' or 'b' has: acc-host-a, acc-host-b.
  static std::string host_name(char host) { return std::string("acc-host-") + host; }

  /// `argv` run on host 'a' or 'b' (see the file comment).
  Command command(char host, const std::vector<std::string>& argv) const {
    const int h = host == 'a' ? 0 : 1;
    std::vector<std::string> full = {
        "ip",
        "netns",
        "exec",
        namespaces_[static_cast<size_t>(h)],
        "unshare",
        "--mount",
        "--uts",
        "--",
        "sh",
        "-c",
        "mount --bind \"$1\" /etc/hosts && hostname \"$2\" && shift 2 && exec \"$@\"",
        "sh",
        dir_.path(std::string("hosts_") + host),
        host_name(host)};
    full.insert(full.end(), argv.begin(), argv.end());
    return Command(full);
  }

  /// The bytes interface `name` of host 'a' or 'b' sent and received so far.
  long long interface_bytes(char host, const std::string& name) const {
    long long total = 0;
    for (const char* counter : {"tx_bytes", "rx_bytes"}) {
      const Outcome r =
          run_command(command(host, {"cat", "/sys/class/net/" + name + "/statistics/" + counter}));
      total += std::atoll(r.out.c_str());
    }
    return total;
  }

 private:
  static char host_letter(int h) { return h == 0 ? 'a' : 'b'; }

  TempDir dir_;
  std::vector<std::string> namespaces_;
  std::string why_not_;
};

}  // namespace accelerate::testing
