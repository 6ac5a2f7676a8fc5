// bench_ckpt: checkpoint I/O of accelerate-cpp (save_model_files -> model.safetensors,
// load_checkpoint_in_model) against plain POSIX I/O of the same bytes (write() of each
// parameter's memory into one file; read() of the file straight into the parameters); and,
// with --mode state, what the checksums cost save_state and load_state.
//
//   bench_ckpt --dir DIR [--tensors 16 --rows 4096 --cols 4096 --reps 5]
//
// Default model: 16 float32 parameters of 4096 x 4096 = 1.07 GB. Each repetition runs every
// pair below side by side, in alternating order, and the medians are reported:
//   save        library save vs write(); the page cache absorbs the data (the file is then
//               fsync'ed outside the timing so that every save starts with no dirty pages)
//   save_fsync  the same, each followed by fsync() of the file inside the timing (durable)
//   load_warm   the file is in the page cache (memory-bound)
//   load_cold   the file's pages are evicted first (fsync + posix_fadvise DONTNEED; checked
//               with mincore), so the data comes from the disk
// Before each save both old files are removed and the file system is synced (syncfs), outside
// the timing: on this ext4 (mounted with `discard`) deleting a 1 GB file makes the next
// journal commit discard its blocks, and a write that waits for that commit would be
// charged for the deletion.
//
//   bench_ckpt --mode state --dir DIR [--tensors 16 --rows 2048 --cols 2048 --reps 5]
//
// Accelerator::save_state / load_state of a model (default 16 x 2048 x 2048 float32 = 268 MB)
// with Adam's state (optimizer.bin, twice that), with the checksums (ProjectConfiguration's
// default) against without (`checksums(false)`: nothing recorded, nothing verified), paired and
// alternating as above: save (every file fsync'ed, as save_state always does), load_warm (the
// folder in the page cache), load_cold (its pages dropped first).
//
//   bench_ckpt --mode hash [--mib 256 --reps 5]
//
// Why XXH3-64: GB/s of one core over a buffer in memory, median of the repetitions, for the
// library's checksum (src/checksum.h) against zlib's crc32, a hardware CRC-32C of one stream
// (SSE4.2, x86-64 only) and memcpy.
#include <accelerate/accelerate.h>
#include <accelerate/model_files.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "checksum.h"
#include "common.h"

#include <zlib.h>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace fs = std::filesystem;

namespace {

struct Big : torch::nn::Module {
  Big(int64_t n, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < n; ++i)
      ws.push_back(register_parameter("w" + std::to_string(i), torch::empty({rows, cols}),
                                      /*requires_grad=*/false));
  }
  std::vector<at::Tensor> ws;
};

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what + ": " + std::strerror(errno));
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  check(fd >= 0, "open " + path);
  check(::fsync(fd) == 0, "fsync " + path);
  ::close(fd);
}

// Drops the file's pages from the page cache (they must be clean: fsync first).
void evict(const std::string& path) {
  fsync_path(path);
  int fd = ::open(path.c_str(), O_RDONLY);
  check(fd >= 0, "open " + path);
  check(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0, "fadvise " + path);
  ::close(fd);
}

// Fraction of the file's pages resident in the page cache.
double resident(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  check(fd >= 0, "open " + path);
  struct stat st {};
  ::fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size), page = sysconf(_SC_PAGESIZE);
  void* a = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  check(a != MAP_FAILED, "mmap " + path);
  std::vector<unsigned char> v((size + page - 1) / page);
  ::mincore(a, size, v.data());
  ::munmap(a, size);
  size_t in = 0;
  for (auto c : v) in += c & 1;
  return static_cast<double>(in) / static_cast<double>(v.size());
}

void raw_save(const Big& m, const std::string& path, bool sync) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  check(fd >= 0, "open " + path);
  for (const auto& w : m.ws) {
    const char* p = static_cast<const char*>(w.data_ptr());
    size_t left = w.nbytes();
    while (left > 0) {
      ssize_t n = ::write(fd, p, left);
      check(n > 0, "write " + path);
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (sync) check(::fsync(fd) == 0, "fsync " + path);
  check(::close(fd) == 0, "close " + path);
}

void raw_load(Big& m, const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, "open " + path);
  for (auto& w : m.ws) {
    char* p = static_cast<char*>(w.data_ptr());
    size_t left = w.nbytes();
    while (left > 0) {
      ssize_t n = ::read(fd, p, left);
      check(n > 0, "read " + path);
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  ::close(fd);
}

void syncfs_of(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  check(fd >= 0, "open " + dir);
  check(::syncfs(fd) == 0, "syncfs " + dir);
  ::close(fd);
}

// One Accelerator with a model and an Adam optimizer that has state for every parameter.
struct StateJob {
  std::unique_ptr<accelerate::Accelerator> accelerator;
  std::shared_ptr<Big> model;
  std::shared_ptr<accelerate::AcceleratedOptimizer> optimizer;

  StateJob(bool checksums, const Big& init, int64_t n, int64_t rows, int64_t cols) {
    accelerator = std::make_unique<accelerate::Accelerator>(
        accelerate::AcceleratorOptions().cpu(true).environment({}).project_config(
            accelerate::ProjectConfiguration().checksums(checksums)));
    model = std::make_shared<Big>(n, rows, cols);
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < model->ws.size(); ++i) {
        model->ws[i].copy_(init.ws[i]);
        model->ws[i].set_requires_grad(true);
      }
    }
    auto adam = std::make_shared<torch::optim::Adam>(model->parameters());
    std::tie(model, optimizer) = accelerator->prepare(model, adam);
    for (auto& w : model->ws) w.mutable_grad() = torch::full_like(w, 1e-3);
    optimizer->step();  // exp_avg and exp_avg_sq for every parameter
    for (const auto& w : model->ws) saved.push_back(w.detach().clone());
  }
  bool restored() const {
    for (size_t i = 0; i < saved.size(); ++i)
      if (!torch::equal(model->ws[i].detach(), saved[i])) return false;
    return true;
  }
  std::vector<at::Tensor> saved;  // the weights save_state writes
};

int bench_state(const bench::Args& args) {
  const std::string dir = args.str("dir", "bench/out/ckpt_state");
  const int64_t n = args.num("tensors", 16), rows = args.num("rows", 2048),
                cols = args.num("cols", 2048);
  const int reps = static_cast<int>(args.num("reps", 5));
  at::set_num_threads(1);
  fs::create_directories(dir);
  Big init(n, rows, cols);
  for (auto& w : init.ws) w.uniform_(-1, 1);
  StateJob on(true, init, n, rows, cols), off(false, init, n, rows, cols);
  const std::string on_dir = dir + "/on", off_dir = dir + "/off";
  const double model_bytes = static_cast<double>(n * rows * cols) * 4.0;

  std::map<std::string, std::vector<double>> t;
  auto timed = [&](const std::string& key, auto&& fn) {
    bench::Timer timer;
    fn();
    t[key].push_back(timer.seconds());
  };
  auto folder_bytes = [](const std::string& folder) {
    double bytes = 0;
    for (const auto& e : fs::directory_iterator(folder))
      bytes += static_cast<double>(e.file_size());
    return bytes;
  };
  auto evict_folder = [&](const std::string& folder) {
    double worst = 0;
    for (const auto& e : fs::directory_iterator(folder)) {
      evict(e.path().string());
      if (e.file_size() > 0) worst = std::max(worst, resident(e.path().string()));
    }
    return worst;
  };
  double on_bytes = 0, min_resident_cold = 0;
  for (int r = 0; r < reps + 1; ++r) {  // repetition 0 is a warm-up
    const bool on_first = r % 2 == 0;
    for (int k = 0; k < 2; ++k) {
      const bool with = (k == 0) == on_first;
      StateJob& job = with ? on : off;
      const std::string& folder = with ? on_dir : off_dir;
      fs::remove_all(folder);
      syncfs_of(dir);
      timed(with ? "save_on" : "save_off", [&] { job.accelerator->save_state(folder); });
    }
    on_bytes = folder_bytes(on_dir);
    for (const char* kind : {"load_warm", "load_cold"}) {
      const bool cold = std::string(kind) == "load_cold";
      for (int k = 0; k < 2; ++k) {
        const bool with = (k == 0) == on_first;
        StateJob& job = with ? on : off;
        const std::string& folder = with ? on_dir : off_dir;
        if (cold)
          min_resident_cold = std::max(min_resident_cold, evict_folder(folder));
        else
          job.accelerator->load_state(folder);  // into the page cache
        for (auto& w : job.model->ws) {
          torch::NoGradGuard no_grad;
          w.zero_();
        }
        timed(std::string(kind) + (with ? "_on" : "_off"),
              [&] { job.accelerator->load_state(folder); });
      }
    }
    if (r == 0) t.clear();
  }
  const bool same = on.restored() && off.restored();
  fs::remove_all(dir);

  std::printf(
      "RESULT {\"bench\": \"ckpt_state\", \"model_bytes\": %.0f, \"folder_bytes\": %.0f, "
      "\"reps\": %d, \"verified\": %s, \"resident_before_cold\": %.3f",
      model_bytes, on_bytes, reps, same ? "true" : "false", min_resident_cold);
  for (const char* op : {"save", "load_warm", "load_cold"}) {
    const auto& with = t[std::string(op) + "_on"];
    const auto& without = t[std::string(op) + "_off"];
    std::vector<double> ratios;  // paired: time with checksums / time without
    for (size_t i = 0; i < with.size() && i < without.size(); ++i)
      ratios.push_back(with[i] / without[i]);
    std::printf(", \"%s_on_s\": %.4f, \"%s_off_s\": %.4f, \"%s_ratio\": %.3f", op,
                bench::median(with), op, bench::median(without), op, bench::median(ratios));
  }
  std::printf("}\n");
  return same ? 0 : 1;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(const unsigned char* p, size_t n) {
  uint64_t crc = 0xffffffffu;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    crc = _mm_crc32_u64(crc, word);
  }
  for (; n > 0; ++p, --n) crc = _mm_crc32_u8(static_cast<uint32_t>(crc), *p);
  return static_cast<uint32_t>(crc) ^ 0xffffffffu;
}
#endif

int bench_hash(const bench::Args& args) {
  const size_t bytes = static_cast<size_t>(args.num("mib", 256)) << 20;
  const int reps = static_cast<int>(args.num("reps", 5));
  std::vector<unsigned char> buffer(bytes), copy(bytes);
  for (size_t i = 0; i < bytes; ++i)
    buffer[i] = static_cast<unsigned char>((i * 2654435761u) >> 13);
  std::vector<std::pair<std::string, std::function<uint64_t()>>> variants = {
    {"memcpy",
     [&] {
       std::memcpy(copy.data(), buffer.data(), bytes);
       return uint64_t{copy[bytes / 2]};
     }},
    {"xxh3_64", [&] { return accelerate::detail::checksum_of(buffer.data(), bytes); }},
    {"zlib_crc32",
     [&] {
       uLong crc = crc32(0L, Z_NULL, 0);
       for (size_t at = 0; at < bytes; at += 1 << 30)
         crc = crc32(crc, buffer.data() + at,
                     static_cast<uInt>(std::min<size_t>(1 << 30, bytes - at)));
       return uint64_t{crc};
     }},
#if defined(__x86_64__)
    {"crc32c_sse42", [&] { return uint64_t{crc32c_sse42(buffer.data(), bytes)}; }},
#endif
  };
  std::printf("RESULT {\"bench\": \"hash\", \"bytes\": %zu, \"reps\": %d", bytes, reps);
  for (auto& [name, fn] : variants) {
    std::vector<double> seconds;
    uint64_t sink = 0;
    for (int r = 0; r < reps + 1; ++r) {
      bench::Timer timer;
      sink += fn();
      if (r > 0) seconds.push_back(timer.seconds());
    }
    std::printf(", \"%s_GBps\": %.2f", name.c_str(),
                static_cast<double>(bytes) / bench::median(seconds) / 1e9);
    if (sink == 42) std::printf(" ");  // keeps the results alive
  }
  std::printf("}\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  if (args.str("mode", "model") == "state") return bench_state(args);
  if (args.str("mode", "model") == "hash") return bench_hash(args);
  const std::string dir = args.str("dir", "bench/out/ckpt");
  const int64_t n = args.num("tensors", 16), rows = args.num("rows", 4096),
                cols = args.num("cols", 4096);
  const int reps = static_cast<int>(args.num("reps", 5));
  at::set_num_threads(1);  // copies in load_checkpoint_in_model: one thread, as read()

  fs::create_directories(dir);
  const std::string st_dir = dir + "/st", st_file = st_dir + "/model.safetensors",
                    raw_file = dir + "/raw.bin";
  Big model(n, rows, cols), target(n, rows, cols);
  for (size_t i = 0; i < model.ws.size(); ++i) model.ws[i].uniform_(-1, 1);
  for (auto& w : target.ws) w.zero_();
  const double bytes = static_cast<double>(n * rows * cols) * 4.0;

  std::map<std::string, std::vector<double>> t;
  auto timed = [&](const std::string& key, auto&& fn) {
    bench::Timer timer;
    fn();
    t[key].push_back(timer.seconds());
  };
  auto clean = [&] {
    fs::remove(st_file);
    fs::remove(raw_file);
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    check(fd >= 0, "open " + dir);
    check(::syncfs(fd) == 0, "syncfs " + dir);
    ::close(fd);
  };
  double min_resident_cold = 0;
  for (int r = 0; r < reps + 1; ++r) {  // repetition 0 is a warm-up
    const bool lib_first = r % 2 == 0;
    // save (page cache)
    for (int k = 0; k < 2; ++k) {
      clean();
      if ((k == 0) == lib_first) {
        timed("save_lib", [&] { accelerate::save_model_files(model, st_dir); });
        fsync_path(st_file);
      } else {
        timed("save_raw", [&] { raw_save(model, raw_file, false); });
        fsync_path(raw_file);
      }
    }
    // save + fsync
    for (int k = 0; k < 2; ++k) {
      clean();
      if ((k == 0) == lib_first) {
        timed("save_fsync_lib", [&] {
          accelerate::save_model_files(model, st_dir);
          fsync_path(st_file);
        });
      } else {
        timed("save_fsync_raw", [&] { raw_save(model, raw_file, true); });
      }
    }
    // both files again, for the loads
    if (!fs::exists(st_file)) accelerate::save_model_files(model, st_dir);
    if (!fs::exists(raw_file)) raw_save(model, raw_file, false);
    // load, warm page cache (read each file once first)
    raw_load(target, raw_file);
    accelerate::load_checkpoint_in_model(target, st_dir);
    for (int k = 0; k < 2; ++k) {
      for (auto& w : target.ws) w.zero_();
      if ((k == 0) == lib_first)
        timed("load_warm_lib", [&] { accelerate::load_checkpoint_in_model(target, st_dir); });
      else
        timed("load_warm_raw", [&] { raw_load(target, raw_file); });
    }
    // load, cold
    for (int k = 0; k < 2; ++k) {
      for (auto& w : target.ws) w.zero_();
      const bool lib = (k == 0) == lib_first;
      const std::string& file = lib ? st_file : raw_file;
      evict(file);
      min_resident_cold = std::max(min_resident_cold, resident(file));
      if (lib)
        timed("load_cold_lib", [&] { accelerate::load_checkpoint_in_model(target, st_dir); });
      else
        timed("load_cold_raw", [&] { raw_load(target, raw_file); });
    }
    if (r == 0) t.clear();
  }
  const bool same = torch::equal(model.ws.front(), target.ws.front()) &&
                    torch::equal(model.ws.back(), target.ws.back());
  clean();
  fs::remove_all(dir);

  std::printf(
      "RESULT {\"bench\": \"ckpt\", \"bytes\": %.0f, \"reps\": %d, \"verified\": %s, "
      "\"resident_before_cold\": %.3f",
      bytes, reps, same ? "true" : "false", min_resident_cold);
  for (const char* op : {"save", "save_fsync", "load_warm", "load_cold"}) {
    const double lib = bench::median(t[std::string(op) + "_lib"]);
    const double raw = bench::median(t[std::string(op) + "_raw"]);
    // Paired ratios: repetition i's lib and raw runs were made side by side.
    const auto& tl = t[std::string(op) + "_lib"];
    const auto& tr = t[std::string(op) + "_raw"];
    std::vector<double> ratios;
    for (size_t i = 0; i < tl.size() && i < tr.size(); ++i) ratios.push_back(tr[i] / tl[i]);
    std::printf(
        ", \"%s_lib_s\": %.4f, \"%s_raw_s\": %.4f, \"%s_lib_GBps\": %.3f, "
        "\"%s_raw_GBps\": %.3f, \"%s_ratio\": %.3f",
        op, lib, op, raw, op, bytes / lib / 1e9, op, bytes / raw / 1e9, op, bench::median(ratios));
  }
  std::printf("}\n");
  return same ? 0 : 1;
}
