#include "accelerate/state.h"
#include "accelerate/logging.h"

#include <ATen/Parallel.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "collective_protocol.h"
#include "collective_trace.h"
#include "compat.h"
#include "errors.h"
#include "helpers.h"
#include "launch_env.h"
#include "network.h"
#include "warnings.h"

extern char** environ;

namespace accelerate {

using detail::message_of;

struct State::Comm {
  c10::intrusive_ptr<c10d::Store> store;  // ours (TCPStore), or this job's part of a given one
  bool given_store = false;               // StateOptions::store: it outlives us, no server
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::unique_ptr<detail::CollectiveTrace> trace;  // stopped before the group and the store
  std::string key;                                 // in the process's registry ("" if not)
  detail::GlooNetwork gloo;                        // where Gloo binds (backend "gloo" only)
};

namespace {

// The connections of this process to its jobs, by store address, rank and size: a second
// State of the same job shares the first one's (as Accelerate shares its AcceleratorState),
// since process 0 cannot open a second store server on the same port. Held while a State
// joins or leaves, so that a new State never joins while the previous one is tearing down.
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, std::weak_ptr<void>>& registry() {  // State::Comm is State's own
  static std::map<std::string, std::weak_ptr<void>> r;
  return r;
}

}  // namespace

namespace {

// The join timeout unless one is given (or the collective timeout is shorter).
constexpr std::chrono::milliseconds kDefaultJoinTimeout = std::chrono::seconds(300);

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

const std::string* find(const Environment& env, const char* name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

int parse_int(const Environment& env, const char* name, int minimum) {
  const std::string& text = *find(env, name);
  std::size_t used = 0;
  long value = 0;
  try {
    value = std::stol(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || value < minimum || value > 1 << 30) {
    throw InvalidArgument("accelerate: environment variable " + std::string(name) + "='" + text +
                          "' is not an integer >= " + std::to_string(minimum));
  }
  return static_cast<int>(value);
}

bool parse_bool(const std::string& name, const std::string& text) {
  const std::string v = lower(text);
  if (v == "1" || v == "true" || v == "yes" || v == "y" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "n" || v == "off" || v.empty()) return false;
  throw InvalidArgument("accelerate: environment variable " + name + "='" + text +
                        "' is not a boolean (expected true/false, 1/0, yes/no, on/off)");
}

// The value of `name` in seconds, if it is set: a number > 0 (decimals allowed).
std::optional<std::chrono::milliseconds> parse_seconds(const Environment& env, const char* name) {
  const std::string* text = find(env, name);
  if (!text) return std::nullopt;
  std::size_t used = 0;
  double seconds = 0;
  try {
    seconds = std::stod(*text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text->size() || !(seconds > 0) || seconds > 1e7)
    throw InvalidArgument("accelerate: environment variable " + std::string(name) + "='" + *text +
                          "' is not a number of seconds > 0");
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000 + 0.5));
}

// The first of `names` that is set, or nullptr.
const char* first_set(const Environment& env, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (find(env, n)) return n;
  return nullptr;
}

// Waits until something accepts TCP connections at host:port, or the deadline passes.
// LibTorch 1.13's TCPStore client sleeps a whole second after a refused connection; a rank that
// starts before process 0 listens would lose that second, so it polls here first.
std::string seconds(std::chrono::milliseconds d) {
  std::ostringstream os;
  os << static_cast<double>(d.count()) / 1000.0;
  return os.str();
}

/// Gloo sends with writev(), which raises SIGPIPE when the peer's end is closed (a process that
/// died, or one that left after a timeout): with the default disposition the process would be
/// killed by the signal, without a word, where Python (which ignores SIGPIPE from its start)
/// gets Gloo's error. So unless the program chose its own disposition, SIGPIPE gets a handler
/// that does nothing: the write then fails with EPIPE, which Gloo reports as an error. Not
/// SIG_IGN, which programs started later would inherit; a handler is reset by exec().
void quiet_sigpipe() {
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) != 0) return;
  if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL) return;
  struct sigaction quiet {};
  quiet.sa_handler = [](int) {};
  quiet.sa_flags = SA_RESTART;
  sigemptyset(&quiet.sa_mask);
  sigaction(SIGPIPE, &quiet, nullptr);
}

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds left_until(Clock::time_point deadline) {
  return std::max(std::chrono::milliseconds(0),
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

// The time left, rounded up to whole seconds (at least 1): LibTorch 1.13's TCPStore cuts its
// connect timeout down to whole seconds, so that 0.9 s would be no time at all.
std::chrono::milliseconds store_timeout(Clock::time_point deadline) {
  return std::max<std::chrono::milliseconds>(
      std::chrono::seconds(1), std::chrono::ceil<std::chrono::seconds>(left_until(deadline)));
}

// Waits until something accepts TCP connections at host:port, or the deadline passes (then
// false, with `*last_error` saying what the last attempt got: refused, no route, no answer).
// LibTorch 1.13's TCPStore client sleeps a whole second after a refused connection; a rank that
// starts before process 0 listens would lose that second, so it polls here first, every 2 ms at
// first and every 100 ms after a while (the address may be another machine's). Each attempt is
// bounded, so that an address that never answers (a wrong one) still ends at the deadline.
bool wait_for_listener(const std::string& host, int port, Clock::time_point deadline,
                       std::string* last_error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  auto pause = std::chrono::milliseconds(2);
  while (Clock::now() < deadline) {
    addrinfo* found = nullptr;
    const int resolved = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (resolved != 0) {
      *last_error = "the address does not resolve (" + std::string(gai_strerror(resolved)) + ")";
    } else {
      for (addrinfo* a = found; a; a = a->ai_next) {
        const int fd =
            ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int error = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
        if (error == EINPROGRESS) {
          pollfd p{fd, POLLOUT, 0};
          const auto wait = std::min(left_until(deadline), std::chrono::milliseconds(2000));
          const int ready = ::poll(&p, 1, static_cast<int>(wait.count()));
          socklen_t length = sizeof error;
          if (ready == 1)
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
          else
            error = ETIMEDOUT;
        }
        // A connection to itself (the port is in this machine's ephemeral range, nothing
        // listens yet, and the kernel picked that very port as the source) is no listener.
        sockaddr_storage self{}, peer{};
        socklen_t self_length = sizeof self, peer_length = sizeof peer;
        if (error == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &self_length) == 0 &&
            ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) == 0 &&
            self_length == peer_length && std::memcmp(&self, &peer, self_length) == 0)
          error = ECONNREFUSED;
        ::close(fd);
        if (error == 0) {
          ::freeaddrinfo(found);
          return true;
        }
        *last_error = error == ETIMEDOUT ? std::string("no answer") : std::strerror(error);
      }
      ::freeaddrinfo(found);
    }
    std::this_thread::sleep_for(std::min(pause, left_until(deadline)));
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
  return false;
}

// A connection to the store that broke or was refused: a server that was going away (the
// previous State's, when an Accelerator is made right after another) or not yet up. Worth
// another attempt while the join timeout lasts.
bool transient_connection_error(const std::string& what) {
  for (const char* text : {"reset by peer", "Broken pipe", "closed by peer", "Connection refused",
                           "Connection was likely closed", "Socket closed"})
    if (what.find(text) != std::string::npos) return true;
  return false;
}

// "rank 1 (machine rank 1)", "ranks 2, 3 (machine rank 1) and 6 (machine rank 3)": the ranks
// of a job with `per_machine` processes on each machine (as accelerate-cpp launch and torchrun
// place them), by machine when the job has several.
std::string describe_ranks(const std::vector<int>& ranks, int per_machine, int world) {
  std::ostringstream out;
  out << (ranks.size() == 1 ? "rank " : "ranks ");
  const bool machines = per_machine > 0 && per_machine < world;
  for (size_t i = 0; i < ranks.size(); ++i) {
    const int machine = machines ? ranks[i] / per_machine : 0;
    if (i > 0) out << (machines && ranks[i - 1] / per_machine != machine ? " and " : ", ");
    out << ranks[i];
    const bool last_of_machine = i + 1 == ranks.size() || ranks[i + 1] / per_machine != machine;
    if (machines && last_of_machine) out << " (machine rank " << machine << ")";
  }
  return out.str();
}

constexpr const char* kArrivedKey = "accelerate/arrived/";        // + rank: this one came
constexpr const char* kAllArrivedKey = "accelerate/all_arrived";  // set by the last to come
constexpr const char* kJoinFailedKey = "accelerate/join_failed";  // "rank R: why", the first
constexpr const char* kJoinLeftKey = "accelerate/join_left";      // count of those who left

// The failure another process of the job published while joining (see publish_join_failure),
// or "" when none did or the store cannot tell.
std::string published_join_failure(c10d::Store& store) {
  try {
    if (!store.check({kJoinFailedKey})) return {};
    const std::vector<uint8_t> text = store.get(kJoinFailedKey);
    return std::string(text.begin(), text.end());
  } catch (const std::exception&) {
    return {};
  }
}

// Every process says it arrived (a key of its own, then a count); the last one to arrive says
// that all did. Each process polls for that until the deadline (polling, not a store wait: a
// wait that times out leaves LibTorch 1.13's server owing the connection an answer), and stops
// at once when another process published that its join failed. A process that times out says
// which ranks never came, from the keys it sees.
void wait_for_arrivals(c10d::Store& store, const LaunchInfo& info, Clock::time_point deadline) {
  store.set(kArrivedKey + std::to_string(info.rank), std::vector<uint8_t>{1});
  if (store.add("accelerate/arrivals", 1) == info.world_size)
    store.set(kAllArrivedKey, std::vector<uint8_t>{1});
  auto pause = std::chrono::milliseconds(1);
  while (!store.check({kAllArrivedKey})) {
    const std::string failure = published_join_failure(store);
    if (!failure.empty()) throw std::runtime_error(failure);
    if (Clock::now() >= deadline) {
      std::vector<int> missing;
      for (int r = 0; r < info.world_size; ++r)
        if (!store.check({kArrivedKey + std::to_string(r)})) missing.push_back(r);
      if (missing.empty()) break;  // they all came at the last moment
      throw std::runtime_error(describe_ranks(missing, info.local_world_size, info.world_size) +
                               " never arrived");
    }
    std::this_thread::sleep_for(std::min(pause, left_until(deadline)));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

// After this process's join failed: tells the others why (the first failure is kept), so that
// each of them reports it instead of a bare broken connection. Process 0, whose store server
// goes away with it, waits up to 2 s for the others that came to leave first: LibTorch 1.13's
// TCPStore client ends its process (std::terminate) when the server resets a connection it
// has not accepted yet, without a word about why.
void publish_join_failure(c10d::Store& store, const LaunchInfo& info, const std::string& why) {
  try {
    const std::string text = "rank " + std::to_string(info.rank) + ": " + why;
    store.compareSet(kJoinFailedKey, {}, std::vector<uint8_t>(text.begin(), text.end()));
    if (info.rank != 0) {
      store.add(kJoinLeftKey, 1);
      return;
    }
    // Until as many have left as others arrived (process 0 may have failed before it did).
    const int64_t self = store.check({kArrivedKey + std::string("0")}) ? 1 : 0;
    const auto until = Clock::now() + std::chrono::seconds(2);
    while (Clock::now() < until &&
           store.add(kJoinLeftKey, 0) < store.add("accelerate/arrivals", 0) - self)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } catch (const std::exception&) {
    // The store is gone already: nobody left to tell.
  }
}

// Process 0 opens the store's server at MASTER_PORT; every other process connects to it, trying
// again after a refused or broken connection (the server of this job's previous State on process
// 0 can still accept a connection while it closes, then drop it) until a round trip through it
// succeeds or the deadline passes. Store operations wait at most until the deadline too.
c10::intrusive_ptr<c10d::Store> connect_to_store(const LaunchInfo& info,
                                                 Clock::time_point deadline) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(info.master_port);
  options.isServer = info.rank == 0;
  options.numWorkers = static_cast<std::size_t>(info.world_size);
  // Process 0 does not wait for the others inside the TCPStore (wait_for_arrivals() does, and
  // names who did not come). The others do "wait": for them that is one round trip through the
  // server (adding to its count of workers) before LibTorch 1.13's TCPStore opens its second,
  // callback connection, whose thread ends the process (std::terminate, "Connection reset by
  // peer") when that connection is reset. A server that answers is the live one: the
  // previous State's server on process 0 stops answering before it stops accepting, so a
  // connection to it fails here, where it is retried, and never gets that far.
  options.waitWorkers = info.rank != 0;
  if (info.rank == 0) {
    options.timeout = store_timeout(deadline);
    return c10::make_intrusive<c10d::TCPStore>(info.master_addr, options);
  }
  std::string last_error = "no answer";
  while (true) {
    if (!wait_for_listener(info.master_addr, info.master_port, deadline, &last_error))
      throw std::runtime_error("nothing accepted connections there (last attempt: " + last_error +
                               ")");
    try {
      options.timeout = store_timeout(deadline);
      auto store = c10::make_intrusive<c10d::TCPStore>(info.master_addr, options);
      store->add("accelerate/joined", 1);  // a round trip: this is a server that answers
      return store;
    } catch (const std::exception& e) {
      last_error = message_of(e);
      if (!transient_connection_error(last_error) || Clock::now() >= deadline) throw;
      std::this_thread::sleep_for(std::min(std::chrono::milliseconds(5), left_until(deadline)));
    }
  }
}

// Meets the other `world` processes in `store` (StateOptions::store) and returns the part of
// it that belongs to this job: keys under "accelerate/N/", where N is the number of jobs that
// met there before. Every process adds 1 to "accelerate/joined" on arrival; the last of a job
// to arrive says so under the job's prefix, and every process waits for that (at most
// `timeout`: a missing process is a clear error, whatever the store's own waiting does). So
// no process gets past a job's meeting before every process of the job has arrived, and
// arrival k (1-based) belongs to job (k - 1) / world.
c10::intrusive_ptr<c10d::Store> join_given_store(const c10::intrusive_ptr<c10d::Store>& store,
                                                 int world, std::chrono::milliseconds timeout) {
  const std::string joined = "accelerate/joined";
  const int64_t arrival = store->add(joined, 1);
  const int64_t job = (arrival - 1) / world;
  auto mine = c10::make_intrusive<c10d::PrefixStore>("accelerate/" + std::to_string(job), store);
  if (arrival == (job + 1) * world) mine->set("all_joined", std::vector<uint8_t>{1});
  try {
    mine->wait({"all_joined"}, timeout);
  } catch (const std::exception&) {
    const int64_t here = store->add(joined, 0) - job * world;
    throw std::runtime_error(std::to_string(here) + " of " + std::to_string(world) +
                             " processes came to the store");
  }
  return mine;
}

// StateOptions::backend checked against what this process has: the name, else the default of
// the device ("nccl" on CUDA, "gloo" elsewhere).
std::string resolve_backend(const std::optional<std::string>& asked, bool cuda, bool use_cpu) {
  if (!asked) return cuda ? "nccl" : "gloo";
  const std::string name = lower(*asked);
  if (name == "gloo") return name;
  if (name == "nccl") {
    if (!compat::nccl_built())
      throw InvalidArgument(
          "accelerate: State: backend \"nccl\" is not available: this LibTorch was built "
          "without NCCL; use backend(\"gloo\")");
    if (!cuda)
      throw InvalidArgument(std::string("accelerate: State: backend \"nccl\" needs a CUDA device, "
                                        "but this process runs on the CPU (") +
                            (use_cpu ? "cpu was forced" : "no CUDA device is visible") +
                            "); use backend(\"gloo\")");
    return name;
  }
  throw InvalidArgument("accelerate: State: unknown backend \"" + *asked +
                        "\"; accelerate-cpp has \"gloo\" and \"nccl\"");
}

}  // namespace

std::string to_string(DistributedType type) {
  switch (type) {
    case DistributedType::NO:
      return "NO";
    case DistributedType::MULTI_CPU:
      return "MULTI_CPU";
    case DistributedType::MULTI_GPU:
      return "MULTI_GPU";
  }
  return "?";
}

std::string to_string(MixedPrecision mode) {
  switch (mode) {
    case MixedPrecision::NO:
      return "no";
    case MixedPrecision::FP16:
      return "fp16";
    case MixedPrecision::BF16:
      return "bf16";
  }
  return "?";
}

MixedPrecision parse_mixed_precision(const std::string& text) {
  const std::string v = lower(text);
  if (v == "no") return MixedPrecision::NO;
  if (v == "fp16") return MixedPrecision::FP16;
  if (v == "bf16") return MixedPrecision::BF16;
  throw InvalidArgument("accelerate: mixed_precision must be \"no\", \"fp16\" or \"bf16\", got \"" +
                        text + "\"");
}

Environment process_environment() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    if (eq != std::string::npos) env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

LaunchInfo resolve_launch_info(const Environment& env) {
  LaunchInfo info;
  struct Names {
    const char* launcher;
    const char* rank;
    const char* size;
    const char* local_rank;
    const char* local_size;
  };
  static const Names kLaunchers[] = {
      {"torchrun", launch_env::kRank, launch_env::kWorldSize, launch_env::kLocalRank,
       launch_env::kLocalWorldSize},
      {"openmpi", launch_env::kOmpiRank, launch_env::kOmpiSize, launch_env::kOmpiLocalRank,
       launch_env::kOmpiLocalSize},
      {"slurm", launch_env::kSlurmRank, launch_env::kSlurmSize, launch_env::kSlurmLocalRank,
       launch_env::kSlurmLocalSize},
  };
  for (const Names& n : kLaunchers) {
    if (!find(env, n.rank) || !find(env, n.size)) continue;
    info.launcher = n.launcher;
    info.rank = parse_int(env, n.rank, 0);
    info.world_size = parse_int(env, n.size, 1);
    if (info.rank >= info.world_size)
      throw InvalidArgument("accelerate: " + std::string(n.rank) + "=" + std::to_string(info.rank) +
                            " must be below " + n.size + "=" + std::to_string(info.world_size));
    info.local_rank = find(env, n.local_rank) ? parse_int(env, n.local_rank, 0) : info.rank;
    info.local_world_size =
        find(env, n.local_size) ? parse_int(env, n.local_size, 1) : info.world_size;
    if (info.local_rank >= info.local_world_size)
      throw InvalidArgument("accelerate: " + std::string(n.local_rank) + "=" +
                            std::to_string(info.local_rank) + " must be below " + n.local_size +
                            "=" + std::to_string(info.local_world_size));
    break;
  }
  if (const char* addr = first_set(env, {launch_env::kMasterAddr}))
    info.master_addr = *find(env, addr);
  if (find(env, launch_env::kMasterPort))
    info.master_port = parse_int(env, launch_env::kMasterPort, 1);
  if (info.master_port > 65535)
    throw InvalidArgument("accelerate: " + std::string(launch_env::kMasterPort) + "=" +
                          std::to_string(info.master_port) + " is not a TCP port (1..65535)");
  if (const std::string* mp = find(env, launch_env::kMixedPrecision)) {
    try {
      info.mixed_precision = parse_mixed_precision(*mp);
    } catch (const std::invalid_argument&) {
      throw InvalidArgument("accelerate: environment variable " +
                            std::string(launch_env::kMixedPrecision) + "='" + *mp +
                            "' is not one of no, fp16, bf16");
    }
  }
  if (const std::string* cpu = find(env, launch_env::kUseCpu))
    info.use_cpu = parse_bool(launch_env::kUseCpu, *cpu);
  if (find(env, launch_env::kOmpNumThreads))
    info.omp_num_threads = parse_int(env, launch_env::kOmpNumThreads, 1);
  if (find(env, launch_env::kGradientAccumulationSteps))
    info.gradient_accumulation_steps = parse_int(env, launch_env::kGradientAccumulationSteps, 1);
  if (const std::string* dir = find(env, launch_env::kStatusDir)) info.status_dir = *dir;
  if (const std::string* level = find(env, launch_env::kLogLevel)) info.log_level = *level;
  info.timeout = parse_seconds(env, launch_env::kTimeout);
  info.join_timeout = parse_seconds(env, launch_env::kJoinTimeout);
  if (const std::string* ifname = find(env, launch_env::kGlooSocketIfname))
    info.gloo_socket_ifname = *ifname;
  return info;
}

StateOptions& StateOptions::num_cpu_threads_per_process(int threads) {
  num_cpu_threads_per_process_ = detail::checked_thread_count("StateOptions", threads);
  return *this;
}

State::State(const StateOptions& options) {
  info_ =
      resolve_launch_info(options.environment() ? *options.environment() : process_environment());
  timeout_ = options.timeout().value_or(info_.timeout.value_or(std::chrono::seconds(1800)));
  join_timeout_ = options.join_timeout().value_or(info_.join_timeout.value_or(
      std::min<std::chrono::milliseconds>(kDefaultJoinTimeout, timeout_)));
  loggers_ = detail::make_logger_registry(info_.log_level, launch_env::kLogLevel);
  mixed_precision_ =
      options.mixed_precision().value_or(info_.mixed_precision.value_or(MixedPrecision::NO));
  const bool use_cpu = options.cpu().value_or(info_.use_cpu.value_or(false));
  const bool cuda = !use_cpu && compat::cuda_available();
  if (cuda) {
    device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(info_.local_rank));
    compat::set_cuda_device(info_.local_rank);
  }
  const std::string backend = resolve_backend(options.backend(), cuda, use_cpu);
  // Threads only when asked: a program started by a launcher got OMP_NUM_THREADS from it, and
  // one started by hand keeps LibTorch's own choice, as with torchrun.
  if (options.num_cpu_threads_per_process())
    at::set_num_threads(*options.num_cpu_threads_per_process());
  detail::note_job(info_.world_size, info_.rank);
  if (info_.world_size == 1) return;
  backend_ = backend;
  quiet_sigpipe();

  distributed_type_ = cuda ? DistributedType::MULTI_GPU : DistributedType::MULTI_CPU;
  std::unique_lock<std::mutex> registered(registry_mutex(), std::defer_lock);
  std::string key;
  if (!options.store()) {
    key = info_.master_addr + ":" + std::to_string(info_.master_port) + "/" +
          std::to_string(info_.rank) + "/" + std::to_string(info_.world_size);
    registered.lock();
    auto it = registry().find(key);
    if (it != registry().end()) {
      if (auto existing = it->second.lock()) {
        // This job's connection, already open in this process.
        comm_ = std::static_pointer_cast<Comm>(existing);
        gloo_network_ = comm_->gloo.description;
        return;
      }
    }
  }
  comm_ = std::make_shared<Comm>();
  comm_->key = key;
  const auto join_start = Clock::now();
  const auto deadline = join_start + join_timeout_;
  const std::string where =
      options.store() ? "through the given store"
                      : "at " + info_.master_addr + ":" + std::to_string(info_.master_port);
  bool chose_network = false;
  try {
    // The network Gloo will use, first: a machine that has none says so at once.
    if (backend_ == "gloo") {
      detail::GlooNetworkQuery query;
      query.socket_ifname = info_.gloo_socket_ifname;
      query.master_addr = info_.master_addr;
      query.master_port = info_.master_port;
      query.several_machines = info_.local_world_size < info_.world_size;
      comm_->gloo = detail::choose_gloo_network(query);
    }
    chose_network = true;
    if (options.store()) {
      comm_->given_store = true;
      comm_->store = join_given_store(options.store(), info_.world_size, join_timeout_);
    } else {
      comm_->store = connect_to_store(info_, deadline);
      wait_for_arrivals(*comm_->store, info_, deadline);
    }
    // Joined: from now on the store waits as long as a collective may.
    comm_->store->setTimeout(timeout_);
    compat::GlooEndpoint endpoint;
    endpoint.interfaces = comm_->gloo.interfaces;
    endpoint.address = comm_->gloo.address;
    comm_->group = compat::make_process_group(
        comm_->store, info_.rank, info_.world_size, timeout_,
        backend_ == "nccl" ? compat::Backend::NCCL : compat::Backend::GLOO, endpoint);
    comm_->trace = std::make_unique<detail::CollectiveTrace>(
        comm_->store, info_.rank, info_.world_size,
        info_.status_dir.empty() ? std::string()
                                 : info_.status_dir + "/rank_" + std::to_string(info_.rank));
    if (!key.empty()) registry()[key] = comm_;
    gloo_network_ = comm_->gloo.description;
  } catch (const std::exception& e) {
    std::string why = message_of(e);
    while (!why.empty() && (why.back() == '.' || why.back() == '\n')) why.pop_back();
    if (!comm_->store && !options.store() && info_.rank != 0 && !chose_network) {
      // This process has no network for Gloo: tell the others, if process 0's store answers
      // within a few seconds, so that they stop waiting for it and say why.
      try {
        comm_->store =
            connect_to_store(info_, std::min(deadline, Clock::now() + std::chrono::seconds(3)));
      } catch (const std::exception&) {
      }
    }
    if (comm_->store && !options.store()) {
      // Another process's failure first, if that is what broke this join; then ours for them.
      const std::string first = published_join_failure(*comm_->store);
      if (!first.empty() && why.find(first) == std::string::npos)
        why += " (the join failed first on " + first + ")";
      comm_->group.reset();
      publish_join_failure(*comm_->store, info_, message_of(e));
    }
    comm_.reset();
    // Say how long it really took: a port in use or a refused connection fails at once.
    const auto waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - join_start);
    const std::string when = waited * 10 >= join_timeout_ * 9
                                 ? "within the join timeout of " + seconds(join_timeout_) + " s"
                                 : "(it failed after " + seconds(waited) + " s)";
    throw DistributedError(
        "accelerate: State: " + describe() + " could not join the process group " + where + " " +
        when + " (launcher: " + info_.launcher + "): " + why + ". Check that every " +
        "process was started and that all " +
        (options.store() ? "were given the same store and WORLD_SIZE."
                         : "use the same MASTER_ADDR and MASTER_PORT (--main_process_ip and "
                           "--main_process_port): the main machine's address and port.") +
        " The join timeout is set with ACCELERATE_JOIN_TIMEOUT (launch --join_timeout).");
  }
}

State::~State() {
  if (!comm_) return;
  std::unique_lock<std::mutex> registered(registry_mutex(), std::defer_lock);
  if (!comm_->key.empty()) {
    registered.lock();
    if (comm_.use_count() > 1) return;  // another State of this process still uses it
    registry().erase(comm_->key);
  }
  // Note [teardown order]: destroying a Gloo group while a peer is still reading from it
  // resets the peer's connection, and destroying the store's server while a client still
  // talks to it aborts that client. So: meet at a barrier (unless an exception is unwinding:
  // then the peers are stopped by the launcher instead), drop the group, then count out
  // through the store; the server on process 0 goes last. (A store given in the options has
  // no server of ours: it lives as long as its owner keeps it.)
  // The barrier is a signature exchange like every collective's, so that a process that ends
  // while the others wait in a collective is told so at once (and they are too) instead of
  // waiting out the timeout.
  const bool unwinding = std::uncaught_exceptions() > 0;
  if (!unwinding) {
    try {
      detail::enter_collective(*this, {"shutdown", -1, {}, 0});
    } catch (const std::exception& e) {
      std::cerr << "accelerate: " << describe() << ": barrier at shutdown failed: " << message_of(e)
                << std::endl;
    }
  }
  comm_->trace.reset();
  comm_->group.reset();
  try {
    const std::string key = "accelerate/teardown";
    comm_->store->add(key, 1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    if (info_.rank == 0 && !unwinding && !comm_->given_store) {
      while (comm_->store->add(key, 0) < info_.world_size &&
             std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    } else if (!unwinding && !comm_->given_store) {
      // Leave once process 0's server is gone (the next call fails): a State made right after
      // this one must not reach the old server, which would drop it mid-join.
      while (std::chrono::steady_clock::now() < deadline) {
        comm_->store->add(key, 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
  } catch (const std::exception&) {
    // The server is gone (process 0 ended first): nothing left to coordinate.
  }
  comm_->store.reset();
}

c10d::ProcessGroup* State::process_group() const { return comm_ ? comm_->group.get() : nullptr; }

c10d::Store* State::store() const { return comm_ ? comm_->store.get() : nullptr; }

detail::CollectiveTrace* State::collective_trace() const {
  return comm_ ? comm_->trace.get() : nullptr;
}

std::string State::describe_positions() const {
  return comm_ && comm_->trace ? comm_->trace->describe() : std::string();
}

void State::wait_for_everyone() const {
  if (!comm_) return;
  // The signature exchange is itself a barrier, and it notices a process that is in
  // another collective.
  detail::enter_collective(*this, {"wait_for_everyone", -1, {}, 0});
}

std::string State::describe() const {
  return "rank " + std::to_string(info_.rank) + " of " + std::to_string(info_.world_size);
}

MainProcessFirstGuard::MainProcessFirstGuard(const State& state, bool local)
    : state_(state),
      first_(local ? state.is_local_main_process() : state.is_main_process()),
      exceptions_(std::uncaught_exceptions()) {
  if (!first_) state_.wait_for_everyone();
}

MainProcessFirstGuard::~MainProcessFirstGuard() {
  // While an exception leaves the scope, skip the barrier: the peers are stopped by the
  // launcher (or time out) rather than this process hanging here.
  if (!first_ || std::uncaught_exceptions() > exceptions_) return;
  try {
    state_.wait_for_everyone();
  } catch (const std::exception& e) {
    detail::exit_from_destructor(e);
  }
}

}  // namespace accelerate
