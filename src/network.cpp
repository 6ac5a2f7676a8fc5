#include "network.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace accelerate::detail {
namespace {

/// The numeric text of an IPv4 or IPv6 socket address; "" for other families.
std::string numeric(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(address);
    if (!inet_ntop(AF_INET, &in->sin_addr, text, sizeof text)) return {};
  } else if (address->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {  // ::ffff:10.0.0.5 is 10.0.0.5
      if (!inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], text, sizeof text)) return {};
    } else if (!inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text)) {
      return {};
    }
  } else {
    return {};
  }
  return text;
}

bool loopback_address(const std::string& address) {
  return address.rfind("127.", 0) == 0 || address == "::1";
}

bool link_local(const std::string& address) { return address.rfind("fe80:", 0) == 0; }

/// True when `host` is written as a loopback address (127.0.0.0/8, ::1) or is "localhost":
/// whoever reaches it is on this machine.
bool written_as_loopback(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  std::string lower;
  for (char c : host) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower == "localhost";
}

/// The interface that holds `address`, or "" when none of this machine's does.
std::string interface_of(const std::vector<InterfaceAddress>& addresses,
                         const std::string& address) {
  for (const InterfaceAddress& a : addresses)
    if (a.address == address) return a.interface;
  return {};
}

std::string with_interface(const std::vector<InterfaceAddress>& addresses,
                           const std::string& address) {
  const std::string name = interface_of(addresses, address);
  return name.empty() ? address : address + " (" + name + ")";
}

/// The local address of this machine's route to host:port, as a UDP socket connect()ed there
/// sees it (nothing is sent); "" with `*why` set when the host does not resolve or there is no
/// route.
std::string route_source(const std::string& host, int port, std::string* why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const int rv = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rv != 0) {
    *why = "it does not resolve (" + std::string(gai_strerror(rv)) + ")";
    return {};
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(found, ::freeaddrinfo);
  *why = "no route to it";
  for (addrinfo* a = found; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    const bool ok = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0;
    const int error = errno;
    ::close(fd);
    if (ok) {
      std::string address = numeric(reinterpret_cast<const sockaddr*>(&local));
      if (!address.empty()) return address;
    } else {
      *why = "no route to " + numeric(a->ai_addr) + " (" + std::strerror(error) + ")";
    }
  }
  return {};
}

/// This machine's name.
std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return {};
  return name;
}

/// The addresses `name` resolves to, numeric, in getaddrinfo() order.
std::vector<std::string> resolve(const std::string& name) {
  std::vector<std::string> result;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (name.empty() || ::getaddrinfo(name.c_str(), nullptr, &hints, &found) != 0) return result;
  for (addrinfo* a = found; a; a = a->ai_next) {
    const std::string address = numeric(a->ai_addr);
    if (!address.empty()) result.push_back(address);
  }
  ::freeaddrinfo(found);
  return result;
}

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  std::string::size_type start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    const std::string name =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!name.empty()) names.push_back(name);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return names;
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

}  // namespace

std::vector<InterfaceAddress> interface_addresses() {
  std::vector<InterfaceAddress> result;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return result;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || !i->ifa_name) continue;
    InterfaceAddress a;
    a.interface = i->ifa_name;
    a.address = numeric(i->ifa_addr);
    if (a.address.empty()) continue;
    a.ipv6 = i->ifa_addr->sa_family == AF_INET6;
    a.loopback = (i->ifa_flags & IFF_LOOPBACK) != 0 || loopback_address(a.address);
    a.up = (i->ifa_flags & IFF_UP) != 0;
    result.push_back(std::move(a));
  }
  ::freeifaddrs(list);
  return result;
}

std::string describe_interfaces(const std::vector<InterfaceAddress>& addresses) {
  std::vector<std::string> parts;
  for (bool ipv6 : {false, true})
    for (const InterfaceAddress& a : addresses)
      if (a.ipv6 == ipv6 && !link_local(a.address))
        parts.push_back(a.interface + " " + a.address + (a.up ? "" : " (down)"));
  return parts.empty() ? "none" : join(parts, ", ");
}

GlooNetwork choose_gloo_network(const GlooNetworkQuery& query) {
  const std::vector<InterfaceAddress> addresses = interface_addresses();
  GlooNetwork choice;

  // 1. GLOO_SOCKET_IFNAME, as PyTorch reads it: names separated by commas.
  if (!query.socket_ifname.empty()) {
    const std::vector<std::string> names = split_names(query.socket_ifname);
    if (names.empty())
      throw std::runtime_error("GLOO_SOCKET_IFNAME='" + query.socket_ifname +
                               "' names no interface");
    std::vector<std::string> described;
    for (const std::string& name : names) {
      const InterfaceAddress* first = nullptr;  // the address Gloo takes: its first one
      for (const InterfaceAddress& a : addresses)
        if (a.interface == name) {
          first = &a;
          break;
        }
      if (!first)
        throw std::runtime_error("GLOO_SOCKET_IFNAME='" + query.socket_ifname + "' names " + name +
                                 ", which has no IPv4 or IPv6 address on this machine (its "
                                 "interfaces: " +
                                 describe_interfaces(addresses) + ")");
      if (!first->up)
        throw std::runtime_error("GLOO_SOCKET_IFNAME='" + query.socket_ifname + "' names " + name +
                                 ", which is down");
      choice.interfaces.push_back(name);
      described.push_back(name + " (" + first->address + ")");
    }
    choice.description = join(described, ", ") + ", from GLOO_SOCKET_IFNAME";
    return choice;
  }

  // 2. The address this machine reaches MASTER_ADDR from: the one the store connection uses.
  std::string why_not_route;
  const std::string route = route_source(query.master_addr, query.master_port, &why_not_route);
  const std::string master = "MASTER_ADDR " + query.master_addr;
  if (!route.empty() && (!loopback_address(route) || !query.several_machines ||
                         written_as_loopback(query.master_addr))) {
    choice.address = route;
    choice.description = with_interface(addresses, route) + ", the address of this machine's " +
                         "route to " + master;
    return choice;
  }
  std::vector<std::string> tried;
  tried.push_back(route.empty() ? master + ": " + why_not_route
                                : master + ": reached over loopback (" + route + ")");

  // 3. This machine's name, when it resolves to an address of its own that is not loopback.
  const std::string name = host_name();
  const std::vector<std::string> resolved = resolve(name);
  for (const std::string& address : resolved) {
    if (loopback_address(address) || interface_of(addresses, address).empty()) continue;
    choice.address = address;
    choice.description = with_interface(addresses, address) + ", the address of this " +
                         "machine's name " + name + " (" + tried.front() + ")";
    return choice;
  }
  tried.push_back("this machine's name '" + name + "': " +
                  (resolved.empty() ? std::string("does not resolve")
                                    : "resolves to " + join(resolved, ", ") +
                                          " (loopback or not this machine's)"));

  // 4. Loopback, for a job on this machine only.
  if (!query.several_machines) {
    choice.address = "127.0.0.1";
    choice.description = "127.0.0.1 (loopback: the job runs on this machine only)";
    return choice;
  }
  const std::string hint =
      "Set GLOO_SOCKET_IFNAME to the interface that reaches them (this machine's interfaces: " +
      describe_interfaces(addresses) +
      "), or MASTER_ADDR (--main_process_ip) to the main machine's address on that network";
  throw std::runtime_error("no network interface for Gloo reaches the other machines: tried " +
                           join(tried, "; ") + ". " + hint);
}

}  // namespace accelerate::detail
