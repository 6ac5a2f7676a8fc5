// Trackers. TensorBoard's event file is a sequence of TFRecords, each
//   uint64 length, uint32 masked_crc32c(length), bytes[length], uint32 masked_crc32c(bytes)
// holding one serialised tensorflow.Event protocol buffer. Only four fields are needed, so
// they are encoded here directly (protobuf wire format):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
#include "accelerate/tracking.h"
#include "accelerate/errors.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace accelerate {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string make_dir(const std::string& logging_dir, const std::string& run_name, const char* who) {
  if (run_name.empty())
    throw InvalidArgument(std::string("accelerate: ") + who + ": the project name is empty");
  const fs::path dir = fs::path(logging_dir.empty() ? "." : logging_dir) / run_name;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw FileError(std::string("accelerate: ") + who + ": cannot create " + dir.string() + ": " +
                    ec.message());
  return dir.string();
}

// ---- protobuf wire format ----
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
template <typename T>
void put_fixed(std::string& out, T v) {  // little-endian (x86, ARM: host order)
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}
void put_bytes_field(std::string& out, int field, const std::string& bytes) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | 2);
  put_varint(out, bytes.size());
  out += bytes;
}

std::string event(double wall_time, std::optional<int64_t> step, const std::string& file_version,
                  const std::string& summary) {
  std::string e;
  put_varint(e, (1 << 3) | 1);
  put_fixed(e, wall_time);
  if (step) {
    put_varint(e, 2 << 3);
    put_varint(e, static_cast<uint64_t>(*step));
  }
  if (!file_version.empty()) put_bytes_field(e, 3, file_version);
  if (!summary.empty()) put_bytes_field(e, 5, summary);
  return e;
}

uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

YAML::Node to_yaml(const TrackerConfig& config) {
  YAML::Node n(YAML::NodeType::Map);
  for (const auto& [key, value] : config)
    std::visit([&, k = key](const auto& v) { n[k] = v; }, value.value());
  return n;
}

nlohmann::json to_json(const TrackerConfig& config) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, value] : config)
    std::visit([&, k = key](const auto& v) { j[k] = v; }, value.value());
  return j;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

// ---- TensorBoardTracker ----

TensorBoardTracker::TensorBoardTracker(const std::string& run_name, const std::string& logging_dir)
    : dir_(make_dir(logging_dir, run_name, "TensorBoardTracker")) {
  char host[256] = "localhost";
  ::gethostname(host, sizeof(host) - 1);
  std::ostringstream file;
  file << "events.out.tfevents." << static_cast<int64_t>(now_seconds()) << '.' << host << '.'
       << ::getpid() << ".0";
  path_ = (fs::path(dir_) / file.str()).string();
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw FileError("accelerate: TensorBoardTracker: cannot write " + path_);
  write_record(event(now_seconds(), std::nullopt, "brain.Event:2", ""));
  out_.flush();
}

TensorBoardTracker::~TensorBoardTracker() {
  if (out_.is_open()) out_.close();
}

void TensorBoardTracker::write_record(const std::string& data) {
  const uint64_t length = data.size();
  std::string header;
  put_fixed(header, length);
  put_fixed(header, masked(crc32c(header.data(), 8)));
  std::string footer;
  put_fixed(footer, masked(crc32c(data.data(), data.size())));
  out_ << header << data << footer;
  if (!out_) throw FileError("accelerate: TensorBoardTracker: write to " + path_ + " failed");
}

void TensorBoardTracker::store_init_configuration(const TrackerConfig& config) {
  const fs::path file = fs::path(dir_) / "hparams.yml";
  std::ofstream out(file);
  YAML::Emitter emitter;
  emitter << to_yaml(config);
  out << emitter.c_str() << '\n';
  if (!out) throw FileError("accelerate: TensorBoardTracker: cannot write " + file.string());
}

void TensorBoardTracker::log(const std::map<std::string, double>& values,
                             std::optional<int64_t> step) {
  const int64_t s = step.value_or(next_step_);
  next_step_ = s + 1;
  std::string summary;
  for (const auto& [tag, value] : values) {
    std::string v;
    put_bytes_field(v, 1, tag);
    put_varint(v, (2 << 3) | 5);
    put_fixed(v, static_cast<float>(value));
    put_bytes_field(summary, 1, v);
  }
  write_record(event(now_seconds(), s, "", summary));
  out_.flush();
}

void TensorBoardTracker::finish() {
  if (out_.is_open()) {
    out_.flush();
    out_.close();
  }
}

// ---- CSVTracker ----

CSVTracker::CSVTracker(const std::string& run_name, const std::string& logging_dir)
    : dir_(make_dir(logging_dir, run_name, "CSVTracker")) {
  const fs::path file = fs::path(dir_) / "metrics.csv";
  const bool fresh = !fs::exists(file) || fs::file_size(file) == 0;
  out_.open(file, std::ios::app);
  if (!out_) throw FileError("accelerate: CSVTracker: cannot write " + file.string());
  if (fresh) out_ << "wall_time,step,name,value\n";
  out_.flush();
}

void CSVTracker::store_init_configuration(const TrackerConfig& config) {
  const fs::path file = fs::path(dir_) / "config.json";
  std::ofstream out(file);
  out << to_json(config).dump(2) << '\n';
  if (!out) throw FileError("accelerate: CSVTracker: cannot write " + file.string());
}

void CSVTracker::log(const std::map<std::string, double>& values, std::optional<int64_t> step) {
  const int64_t s = step.value_or(next_step_);
  next_step_ = s + 1;
  const double t = now_seconds();
  for (const auto& [name, value] : values)
    out_ << std::fixed << std::setprecision(6) << t << ',' << s << ',' << csv_field(name) << ','
         << std::defaultfloat << std::setprecision(17) << value << '\n';
  out_.flush();
  if (!out_) throw FileError("accelerate: CSVTracker: write to " + dir_ + "/metrics.csv failed");
}

void CSVTracker::finish() {
  if (out_.is_open()) out_.close();
}

void check_tracker_name(const std::string& name) {
  if (name != "tensorboard" && name != "csv")
    throw InvalidArgument("accelerate: log_with: unknown tracker '" + name +
                          "' (built in: tensorboard, csv, all)");
}

std::unique_ptr<GeneralTracker> make_tracker(const std::string& name, const std::string& run_name,
                                             const std::string& logging_dir) {
  check_tracker_name(name);
  if (name == "tensorboard") return std::make_unique<TensorBoardTracker>(run_name, logging_dir);
  return std::make_unique<CSVTracker>(run_name, logging_dir);
}

}  // namespace accelerate
