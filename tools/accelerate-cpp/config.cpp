#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

namespace fs = std::filesystem;

namespace accelerate::cli {
namespace {

// Keys of Accelerate's ClusterConfig that accelerate-cpp does not use. They are accepted when
// they hold what `accelerate config` writes for a plain single- or multi-process job.
const std::set<std::string> kIgnored = {"compute_environment",
                                        "debug",
                                        "downcast_bf16",
                                        "main_training_function",
                                        "rdzv_backend",
                                        "same_network",
                                        "tpu_env",
                                        "tpu_use_cluster",
                                        "tpu_use_sudo",
                                        "gpu_ids",
                                        "enable_cpu_affinity",
                                        "dynamo_config",
                                        "ipex_config",
                                        "mpirun_config",
                                        "commands",
                                        "command_file",
                                        "tpu_name",
                                        "tpu_zone",
                                        "dynamo_backend"};
// Keys whose presence means a feature accelerate-cpp does not have.
const std::set<std::string> kUnsupported = {"deepspeed_config", "fsdp_config", "megatron_lm_config",
                                            "fp8_config"};

[[noreturn]] void fail(const std::string& path, const std::string& key, const std::string& what) {
  throw ConfigError("config file " + path + (key.empty() ? "" : ": key '" + key + "'") + ": " +
                    what);
}

template <typename T>
std::optional<T> get(const YAML::Node& node, const std::string& path, const std::string& key,
                     const char* type) {
  if (node.IsNull()) return std::nullopt;  // `main_process_ip: null` as Accelerate writes it
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    fail(path, key, std::string("expected ") + type + ", got '" + YAML::Dump(node) + "'");
  }
}

std::string size_limit() {
  return "the limit of " + std::to_string(kMaxConfigFileBytes) + " bytes (" +
         std::to_string(kMaxConfigFileBytes >> 20) + " MiB)";
}

/// The contents of `path`, refusing what is not a readable file of at most kMaxConfigFileBytes
/// (checked before reading when the size is known, and while reading for pipes and devices).
std::string read_limited(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) fail(path, "", std::string("cannot be read: ") + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, "", std::string("cannot be read: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail(path, "", "cannot be read: it is a directory");
  if (S_ISREG(st.st_mode) && static_cast<std::uintmax_t>(st.st_size) > kMaxConfigFileBytes)
    fail(path, "", "is " + std::to_string(st.st_size) + " bytes, more than " + size_limit());
  std::string text;
  char buffer[65536];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, "", std::string("cannot be read: ") + std::strerror(errno));
    if (n == 0) return text;
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxConfigFileBytes) fail(path, "", "is more than " + size_limit());
  }
}

}  // namespace

bool is_positive_seconds(const std::string& text) {
  size_t digits = 0, dots = 0;
  for (const char ch : text) {
    if (ch >= '0' && ch <= '9') {
      ++digits;
    } else if (ch == '.') {
      ++dots;
    } else {
      return false;
    }
  }
  if (digits == 0 || dots > 1) return false;
  return std::strtod(text.c_str(), nullptr) > 0;  // digits only: never negative, inf or nan
}

std::optional<int> parse_positive_int(const std::string& text) {
  if (text.empty() || text.size() > 12) return std::nullopt;
  long long value = 0;
  for (const char ch : text) {
    if (ch < '0' || ch > '9') return std::nullopt;
    value = value * 10 + (ch - '0');
  }
  if (value < 1 || value > (1LL << 30)) return std::nullopt;
  return static_cast<int>(value);
}

std::string default_config_file() {
  const char* hf_home = std::getenv("HF_HOME");
  fs::path home;
  if (hf_home && *hf_home) {
    home = hf_home;
  } else {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* user_home = std::getenv("HOME");
    home = (xdg && *xdg) ? fs::path(xdg) / "huggingface"
                         : fs::path(user_home ? user_home : ".") / ".cache" / "huggingface";
  }
  return (home / "accelerate" / "default_config.yaml").string();
}

LaunchConfig read_config(const std::string& path) {
  const std::string text = read_limited(path);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(path, "", std::string("is not valid YAML: ") + e.what());
  }
  if (!root.IsMap()) fail(path, "", "is not a mapping of keys to values");
  LaunchConfig c;
  for (const auto& item : root) {
    const std::string key = item.first.as<std::string>();
    const YAML::Node& v = item.second;
    if (key == "num_processes") {
      c.num_processes = get<int>(v, path, key, "an integer");
    } else if (key == "num_machines") {
      c.num_machines = get<int>(v, path, key, "an integer");
    } else if (key == "machine_rank") {
      c.machine_rank = get<int>(v, path, key, "an integer");
    } else if (key == "main_process_ip") {
      c.main_process_ip = get<std::string>(v, path, key, "a string");
    } else if (key == "main_process_port") {
      c.main_process_port = get<int>(v, path, key, "an integer");
    } else if (key == "mixed_precision") {
      c.mixed_precision = get<std::string>(v, path, key, "a string");
      if (c.mixed_precision && *c.mixed_precision != "no" && *c.mixed_precision != "fp16" &&
          *c.mixed_precision != "bf16")
        fail(path, key, "expected no, fp16 or bf16, got '" + *c.mixed_precision + "'");
    } else if (key == "use_cpu") {
      c.use_cpu = get<bool>(v, path, key, "true or false");
    } else if (key == "distributed_type") {
      c.distributed_type = get<std::string>(v, path, key, "a string");
      if (c.distributed_type && *c.distributed_type != "NO" && *c.distributed_type != "MULTI_CPU" &&
          *c.distributed_type != "MULTI_GPU")
        fail(path, key,
             "'" + *c.distributed_type +
                 "' is not supported by accelerate-cpp (NO, MULTI_CPU, MULTI_GPU)");
    } else if (key == "timeout" || key == "join_timeout") {
      if (!v.IsNull()) {
        if (!v.IsScalar() || !is_positive_seconds(v.Scalar()))
          fail(path, key,
               "expected a positive number of seconds (e.g. " +
                   std::string(key == "timeout" ? "1800" : "300") + " or 0.5), got '" +
                   YAML::Dump(v) + "'");
        (key == "timeout" ? c.timeout : c.join_timeout) = v.Scalar();
      }
    } else if (key == "num_cpu_threads_per_process" || key == "gradient_accumulation_steps") {
      if (!v.IsNull()) {
        const std::optional<int> n = v.IsScalar() ? parse_positive_int(v.Scalar()) : std::nullopt;
        if (!n)
          fail(path, key, "expected a whole number of at least 1, got '" + YAML::Dump(v) + "'");
        (key == "num_cpu_threads_per_process" ? c.num_cpu_threads_per_process
                                              : c.gradient_accumulation_steps) = *n;
      }
    } else if (kUnsupported.count(key)) {
      if (!v.IsNull() && !(v.IsMap() && v.size() == 0))
        fail(path, key, "is not supported by accelerate-cpp");
    } else if (!kIgnored.count(key)) {
      fail(path, key, "unknown key");
    }
  }
  return c;
}

void write_config(const std::string& path, const LaunchConfig& c) {
  const int n = c.num_processes.value_or(1);
  const bool cpu = c.use_cpu.value_or(false);
  std::string type = c.distributed_type.value_or(n > 1 ? (cpu ? "MULTI_CPU" : "MULTI_GPU") : "NO");
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "compute_environment" << YAML::Value << "LOCAL_MACHINE";
  out << YAML::Key << "debug" << YAML::Value << false;
  out << YAML::Key << "distributed_type" << YAML::Value << type;
  out << YAML::Key << "downcast_bf16" << YAML::Value << YAML::SingleQuoted << "no";
  // accelerate-cpp's own keys (timeout, join_timeout, gradient_accumulation_steps,
  // num_cpu_threads_per_process) only when given, since Python's Accelerate refuses keys it does
  // not know; in sorted order, as Python writes the file.
  if (c.gradient_accumulation_steps)
    out << YAML::Key << "gradient_accumulation_steps" << YAML::Value
        << *c.gradient_accumulation_steps;
  if (c.join_timeout) out << YAML::Key << "join_timeout" << YAML::Value << *c.join_timeout;
  out << YAML::Key << "machine_rank" << YAML::Value << c.machine_rank.value_or(0);
  out << YAML::Key << "main_process_ip" << YAML::Value;
  if (c.main_process_ip)
    out << *c.main_process_ip;
  else
    out << YAML::Null;
  out << YAML::Key << "main_process_port" << YAML::Value;
  if (c.main_process_port)
    out << *c.main_process_port;
  else
    out << YAML::Null;
  out << YAML::Key << "main_training_function" << YAML::Value << "main";
  out << YAML::Key << "mixed_precision" << YAML::Value << YAML::SingleQuoted
      << c.mixed_precision.value_or("no");
  if (c.num_cpu_threads_per_process)
    out << YAML::Key << "num_cpu_threads_per_process" << YAML::Value
        << *c.num_cpu_threads_per_process;
  out << YAML::Key << "num_machines" << YAML::Value << c.num_machines.value_or(1);
  out << YAML::Key << "num_processes" << YAML::Value << n;
  out << YAML::Key << "rdzv_backend" << YAML::Value << "static";
  out << YAML::Key << "same_network" << YAML::Value << true;
  if (c.timeout) out << YAML::Key << "timeout" << YAML::Value << *c.timeout;
  out << YAML::Key << "tpu_env" << YAML::Value << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
  out << YAML::Key << "tpu_use_cluster" << YAML::Value << false;
  out << YAML::Key << "tpu_use_sudo" << YAML::Value << false;
  out << YAML::Key << "use_cpu" << YAML::Value << cpu;
  out << YAML::EndMap;
  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) fail(path, "", "cannot create its folder: " + ec.message());
  std::ofstream file(path);
  file << out.c_str() << '\n';
  if (!file) fail(path, "", "cannot be written");
}

}  // namespace accelerate::cli
