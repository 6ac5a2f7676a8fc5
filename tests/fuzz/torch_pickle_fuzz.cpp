// libFuzzer target over the torch.save pickle reader (`load_pytorch_bin`): the input is the
// `data.pkl` of a zip archive that also holds records data/0 .. data/15 of 4096 bytes each.
// Any input may be refused with std::runtime_error / std::invalid_argument, nothing else (no
// crash, leak, other exception or sanitizer report).
//
// Built and run by tests/fuzz/run_fuzz.cmake -DFUZZ_TARGET=torch_pickle.
#include <accelerate/model_files.h>
#include <caffe2/serialize/inline_container.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace {

// A scratch archive per process, removed at exit.
struct ScratchFile {
  std::string path = (std::filesystem::temp_directory_path() /
                      ("torch_pickle_fuzz_" + std::to_string(::getpid()) + ".bin"))
                         .string();
  ~ScratchFile() { std::remove(path.c_str()); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ScratchFile scratch;
  static const std::string blob(4096, '\x01');
  {
    caffe2::serialize::PyTorchStreamWriter writer(scratch.path);
    writer.writeRecord("data.pkl", data, size);
    for (int k = 0; k < 16; ++k) {
      writer.writeRecord("data/" + std::to_string(k), blob.data(), blob.size());
    }
    writer.writeEndOfFile();
  }
  try {
    accelerate::load_pytorch_bin(scratch.path);
  } catch (const std::runtime_error&) {
  } catch (const std::invalid_argument&) {
  }
  return 0;
}
