// Internal: which of this machine's network addresses the Gloo process group uses.
//
// Plain POSIX (no LibTorch), so that the command-line tool (`accelerate-cpp env`) shows the very
// choice the library makes. PyTorch's rule is GLOO_SOCKET_IFNAME, else the address this
// machine's name resolves to, else, silently, loopback: with Debian's and Ubuntu's /etc/hosts
// (the name on 127.0.1.1) every process of a job that spans machines then tells the others to
// reach it on their own loopback. Here the fallback is the address of the route to MASTER_ADDR,
// i.e. the address this machine's connection to the store comes from, and loopback only when
// the whole job runs on this machine (see choose_gloo_network()).
#pragma once

#include <string>
#include <vector>

namespace accelerate::detail {

/// One address of one of this machine's network interfaces.
struct InterfaceAddress {
  std::string interface;  ///< e.g. "eth0"
  std::string address;    ///< numeric, e.g. "10.0.0.5" or "fe80::1"
  bool ipv6 = false;
  bool loopback = false;  ///< a loopback interface, or an address in 127.0.0.0/8 or ::1
  bool up = false;        ///< the interface is up
};

/// This machine's IPv4 and IPv6 interface addresses, in getifaddrs() order (which is the order
/// in which Gloo picks an interface's address: the first IPv4 or IPv6 one).
std::vector<InterfaceAddress> interface_addresses();

/// "lo 127.0.0.1, eth0 10.0.0.5" (IPv4, then IPv6 addresses that are not link-local), for
/// messages; "none" when there are none.
std::string describe_interfaces(const std::vector<InterfaceAddress>& addresses);

/// What the choice depends on.
struct GlooNetworkQuery {
  /// GLOO_SOCKET_IFNAME as set ("" when unset): one or several interface names, separated by
  /// commas, as PyTorch reads it.
  std::string socket_ifname;
  /// Where the job's store listens (MASTER_ADDR, MASTER_PORT).
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// True when processes of the job run on other machines (LOCAL_WORLD_SIZE < WORLD_SIZE).
  bool several_machines = false;
};

/// Where Gloo binds, and why.
struct GlooNetwork {
  /// From GLOO_SOCKET_IFNAME: one Gloo device per interface (every process of the job must name
  /// the same number). Empty otherwise.
  std::vector<std::string> interfaces;
  /// Without GLOO_SOCKET_IFNAME: the one Gloo device binds to this address.
  std::string address;
  /// For messages and `accelerate-cpp env`, e.g. "10.231.0.1 (veth0), the address of this
  /// machine's route to MASTER_ADDR 10.231.0.1".
  std::string description;
};

/// The rule, in order:
///  1. GLOO_SOCKET_IFNAME: the interfaces it names (each must exist and have an IPv4 or IPv6
///     address);
///  2. the local address of the route to MASTER_ADDR (the one the store connection uses), unless
///     it is a loopback address while the job spans machines and MASTER_ADDR is a name (a
///     MASTER_ADDR written as 127.0.0.1, ::1 or localhost says that every machine is this one);
///  3. then this machine's name, when it resolves to one of this machine's addresses that is not
///     loopback (PyTorch's default);
///  4. loopback only for a job on one machine.
/// Throws std::runtime_error naming what was tried and this machine's interfaces when nothing
/// fits (the caller adds its own prefix).
GlooNetwork choose_gloo_network(const GlooNetworkQuery& query);

}  // namespace accelerate::detail
