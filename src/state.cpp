#include "accelerate/state.h"
#include "accelerate/logging.h"

#include <ATen/Parallel.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "collective_trace.h"
#include "compat.h"
#include "errors.h"
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

bool wait_for_listener(const std::string& host, int port, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  while (std::chrono::steady_clock::now() < deadline) {
    addrinfo* found = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) == 0) {
      for (addrinfo* a = found; a; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        const bool up = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
        ::close(fd);
        if (up) {
          ::freeaddrinfo(found);
          return true;
        }
      }
      ::freeaddrinfo(found);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
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
      {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
      {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
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
  if (const char* addr = first_set(env, {"MASTER_ADDR"})) info.master_addr = *find(env, addr);
  if (find(env, "MASTER_PORT")) info.master_port = parse_int(env, "MASTER_PORT", 1);
  if (info.master_port > 65535)
    throw InvalidArgument("accelerate: MASTER_PORT=" + std::to_string(info.master_port) +
                          " is not a TCP port (1..65535)");
  if (const std::string* mp = find(env, "ACCELERATE_MIXED_PRECISION")) {
    try {
      info.mixed_precision = parse_mixed_precision(*mp);
    } catch (const std::invalid_argument&) {
      throw InvalidArgument("accelerate: environment variable ACCELERATE_MIXED_PRECISION='" + *mp +
                            "' is not one of no, fp16, bf16");
    }
  }
  if (const std::string* cpu = find(env, "ACCELERATE_USE_CPU"))
    info.use_cpu = parse_bool("ACCELERATE_USE_CPU", *cpu);
  if (find(env, "OMP_NUM_THREADS")) info.omp_num_threads = parse_int(env, "OMP_NUM_THREADS", 1);
  if (find(env, "ACCELERATE_GRADIENT_ACCUMULATION_STEPS"))
    info.gradient_accumulation_steps = parse_int(env, "ACCELERATE_GRADIENT_ACCUMULATION_STEPS", 1);
  if (const std::string* dir = find(env, "ACCELERATE_STATUS_DIR")) info.status_dir = *dir;
  if (const std::string* level = find(env, "ACCELERATE_LOG_LEVEL")) info.log_level = *level;
  if (const std::string* timeout = find(env, "ACCELERATE_TIMEOUT")) {
    std::size_t used = 0;
    double seconds = 0;
    try {
      seconds = std::stod(*timeout, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != timeout->size() || !(seconds > 0) || seconds > 1e7)
      throw InvalidArgument("accelerate: environment variable ACCELERATE_TIMEOUT='" + *timeout +
                            "' is not a number of seconds > 0");
    info.timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000 + 0.5));
  }
  return info;
}

StateOptions& StateOptions::num_cpu_threads_per_process(int threads) {
  if (threads < 1)
    throw InvalidArgument("accelerate: StateOptions::num_cpu_threads_per_process: " +
                          std::to_string(threads) + " is not a number of threads (>= 1)");
  num_cpu_threads_per_process_ = threads;
  return *this;
}

State::State(const StateOptions& options) {
  info_ =
      resolve_launch_info(options.environment() ? *options.environment() : process_environment());
  timeout_ = options.timeout().value_or(info_.timeout.value_or(std::chrono::seconds(1800)));
  loggers_ = detail::make_logger_registry(info_.log_level, "ACCELERATE_LOG_LEVEL");
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
        return;
      }
    }
  }
  comm_ = std::make_shared<Comm>();
  comm_->key = key;
  const auto join_start = std::chrono::steady_clock::now();
  try {
    if (options.store()) {
      comm_->given_store = true;
      comm_->store = join_given_store(options.store(), info_.world_size, timeout_);
    } else {
      c10d::TCPStoreOptions store_options;
      store_options.port = static_cast<std::uint16_t>(info_.master_port);
      store_options.isServer = info_.rank == 0;
      store_options.numWorkers = static_cast<std::size_t>(info_.world_size);
      store_options.waitWorkers = true;
      store_options.timeout = timeout_;
      const auto deadline = std::chrono::steady_clock::now() + timeout_;
      while (true) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (info_.rank != 0 && !wait_for_listener(info_.master_addr, info_.master_port, left))
          throw std::runtime_error("nothing accepted connections there (is process 0 running?)");
        try {
          comm_->store = c10::make_intrusive<c10d::TCPStore>(info_.master_addr, store_options);
          if (info_.rank != 0) comm_->store->add("accelerate/joined", 1);  // a round trip
          break;
        } catch (const std::exception& e) {
          // The server of this job's previous State on process 0 (an Accelerator made right
          // after another) can still accept a connection while it closes, then drop it: try
          // again until the new one answers.
          const std::string what = message_of(e);
          const bool dropped = what.find("reset by peer") != std::string::npos ||
                               what.find("Broken pipe") != std::string::npos;
          if (info_.rank == 0 || !dropped || std::chrono::steady_clock::now() >= deadline) throw;
          comm_->store.reset();
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      }
    }
    comm_->group = compat::make_process_group(
        comm_->store, info_.rank, info_.world_size, timeout_,
        backend_ == "nccl" ? compat::Backend::NCCL : compat::Backend::GLOO);
    comm_->trace = std::make_unique<detail::CollectiveTrace>(
        comm_->store, info_.rank, info_.world_size,
        info_.status_dir.empty() ? std::string()
                                 : info_.status_dir + "/rank_" + std::to_string(info_.rank));
    if (!key.empty()) registry()[key] = comm_;
  } catch (const std::exception& e) {
    comm_.reset();
    // Say how long it really took: a port in use or a refused connection fails at once.
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - join_start);
    const std::string when = waited * 10 >= timeout_ * 9
                                 ? "within the timeout of " + seconds(timeout_) + " s"
                                 : "(it failed after " + seconds(waited) + " s)";
    const std::string where =
        options.store() ? "through the given store"
                        : "at " + info_.master_addr + ":" + std::to_string(info_.master_port);
    throw DistributedError("accelerate: State: " + describe() +
                           " could not join the process group " + where + " " + when +
                           " (launcher: " + info_.launcher + "): " + message_of(e) +
                           ". Check that every process was started and that all " +
                           (options.store() ? "were given the same store and WORLD_SIZE."
                                            : "use the same MASTER_ADDR and MASTER_PORT."));
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

}  // namespace accelerate
