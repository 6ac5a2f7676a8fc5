// save_state / load_state / ProjectConfiguration / save_model through the Accelerator.
#include <gtest/gtest.h>
#include <torch/data/datasets/base.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>

#include <sys/resource.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

// An independent XXH3-64 (one call over a whole file) for the recorded checksums.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "temp_dir.h"
#include "test_util.h"

namespace acc = accelerate;
namespace fs = std::filesystem;
using acc::testing::run_ranks;

namespace {

struct Net : torch::nn::Module {
  Net() { fc = register_module("fc", torch::nn::Linear(3, 2)); }
  at::Tensor forward(const at::Tensor& x) { return fc(x); }
  torch::nn::Linear fc{nullptr};
};

struct Counter {
  int64_t value = 0;
  std::map<std::string, int64_t> state_dict() const { return {{"value", value}}; }
  void load_state_dict(const std::map<std::string, int64_t>& s) { value = s.at("value"); }
};

struct Indexed : torch::data::datasets::Dataset<Indexed, at::Tensor> {
  at::Tensor get(size_t i) override { return at::full({1}, static_cast<double>(i)); }
  c10::optional<size_t> size() const override { return 20; }
};

}  // namespace

// total_limit 2 with 11 saves: only checkpoint_9 and checkpoint_10 remain; load_state()
// loads checkpoint_10.
TEST(ProjectConfiguration, TotalLimitKeepsTheNewest) {
  const acc::testing::TempDir temp;
  const fs::path project = temp.path() / "limit";
  run_ranks(
      2,
      [&](acc::Accelerator& a) {
        auto counter = std::make_shared<Counter>();
        a.register_for_checkpointing(counter);
        for (int i = 0; i <= 10; ++i) {
          counter->value = 100 + i;
          a.save_state();
        }
        EXPECT_EQ(a.project_configuration().iteration(), 11);
        counter->value = -1;
        a.load_state();
        EXPECT_EQ(counter->value, 110);
      },
      acc::AcceleratorOptions().project_config(acc::ProjectConfiguration()
                                                   .project_dir(project.string())
                                                   .automatic_checkpoint_naming(true)
                                                   .total_limit(2)));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(project / "checkpoints"))
    left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"checkpoint_10", "checkpoint_9"}));
}

TEST(ProjectConfiguration, SavingIntoAnExistingCheckpointIsAnError) {
  const acc::testing::TempDir temp;
  const fs::path project = temp.path() / "exists";
  auto options = acc::AcceleratorOptions().environment({}).project_config(
      acc::ProjectConfiguration().project_dir(project.string()).automatic_checkpoint_naming(true));
  {
    acc::Accelerator a(options);
    a.save_state();  // checkpoint_0
  }
  acc::Accelerator b(options);  // iteration starts at 0 again
  try {
    b.save_state();
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint_0 already exists"), std::string::npos)
        << e.what();
  }
  // Loading the newest then continues the numbering.
  b.load_state();
  EXPECT_EQ(b.project_configuration().iteration(), 1);
  b.save_state();
  EXPECT_TRUE(fs::exists(project / "checkpoints" / "checkpoint_1" / "accelerator_state.json"));
  EXPECT_THROW(acc::Accelerator(acc::AcceleratorOptions().environment({})).save_state(),
               std::invalid_argument);
  // As Accelerate: with automatic naming a given folder is ignored, and every save_state
  // advances the iteration.
  b.save_state((temp.path() / "elsewhere").string());
  EXPECT_FALSE(fs::exists(temp.path() / "elsewhere"));
  EXPECT_TRUE(fs::exists(project / "checkpoints" / "checkpoint_2" / "accelerator_state.json"));
  EXPECT_EQ(b.project_configuration().iteration(), 3);
  acc::Accelerator c(acc::AcceleratorOptions().environment({}));
  c.save_state((temp.path() / "plain").string());
  EXPECT_EQ(c.project_configuration().iteration(), 1);
}

// Model, optimizer state, scheduler, loader position and registered objects come back (the
// random states are checked with real processes in multiprocess/: rank threads share one
// generator).
TEST(SaveState, RoundTripRestoresEverything) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "roundtrip";
  std::vector<at::Tensor> saved_params;
  run_ranks(2, [&](acc::Accelerator& a) {
    auto model = std::make_shared<Net>();
    auto optimizer = std::make_shared<torch::optim::Adam>(model->parameters());
    auto scheduler = acc::get_linear_schedule_with_warmup(optimizer, 2, 10);
    acc::DataLoader<Indexed> loader(Indexed(), acc::DataLoaderOptions().batch_size(2));
    auto [m, opt, dl, sched] = a.prepare(model, optimizer, loader, scheduler);
    auto counter = std::make_shared<Counter>();
    a.register_for_checkpointing(counter);
    int seen = 0;
    for (auto& batch : *dl) {
      a.backward(m->forward(torch::ones({2, 3}) * batch.sum()).sum());
      opt->step();
      sched->step();
      opt->zero_grad();
      if (++seen == 3) break;
    }
    counter->value = 42;
    a.save_state(dir.string());
    if (a.is_main_process()) {
      for (const auto& p : m->parameters()) saved_params.push_back(p.detach().clone());
    }
    const double lr = sched->get_last_lr()[0];
    const auto position = dl->position();

    // Disturb everything, then load.
    {
      torch::NoGradGuard no_grad;
      for (auto& p : m->parameters()) p.fill_(7);
    }
    for (int i = 0; i < 3; ++i) sched->step();
    counter->value = 0;
    dl->set_epoch(5);
    a.load_state(dir.string());
    EXPECT_DOUBLE_EQ(sched->get_last_lr()[0], lr);
    EXPECT_EQ(counter->value, 42);
    EXPECT_EQ(dl->position().epoch, position.epoch);
    EXPECT_EQ(dl->position().batches, 3) << "the saved position";
    int64_t remaining = 0;
    for (auto& batch : *dl) ++remaining, (void)batch;
    EXPECT_EQ(remaining, dl->size() - 3) << "the loader continues after the saved batches";
    EXPECT_FALSE(opt->optimizer()->state().empty()) << "optimizer state not restored";
    if (a.is_main_process()) {
      auto params = m->parameters();
      for (size_t i = 0; i < params.size(); ++i)
        EXPECT_TRUE(torch::equal(params[i], saved_params[i])) << "parameter " << i;
    }
  });
}

TEST(SaveState, MismatchedObjectsAreAClearError) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "mismatch";
  {
    acc::Accelerator a(acc::AcceleratorOptions().environment({}));
    a.register_for_checkpointing(std::make_shared<Counter>());
    a.register_for_checkpointing(std::make_shared<Counter>());
    a.save_state(dir.string());
  }
  acc::Accelerator b(acc::AcceleratorOptions().environment({}));
  b.register_for_checkpointing(std::make_shared<Counter>());
  try {
    b.load_state(dir.string());
    ADD_FAILURE() << "no error";
  } catch (const acc::FileError& e) {
    EXPECT_NE(std::string(e.what()).find("holds 2 custom_objects but this Accelerator has 1"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(b.load_state((dir / "nowhere").string()), acc::FileError);
}

// The checkpoint folder has one file per prepared or registered object, listed in order in
// accelerator_state.json; loading into objects prepared in another order is a clear error.
TEST(SaveState, OneFilePerObjectInPrepareOrder) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "registry";
  acc::Accelerator a(acc::AcceleratorOptions().environment({}));
  auto model = std::make_shared<Net>();
  auto optimizer = std::make_shared<torch::optim::SGD>(model->parameters(), 0.1);
  auto scheduler = acc::get_linear_schedule_with_warmup(optimizer, 1, 4);
  acc::DataLoader<Indexed> loader(Indexed(), acc::DataLoaderOptions().batch_size(2));
  auto [m, opt, dl, sched] = a.prepare(model, optimizer, loader, scheduler);
  a.register_for_checkpointing(std::make_shared<Counter>());
  a.register_for_checkpointing(std::make_shared<Net>());
  a.save_state(dir.string());
  for (const char* file :
       {"model.safetensors", "optimizer.bin", "scheduler.json", "data_loader.json",
        "custom_checkpoint_0.bin", "custom_checkpoint_1.safetensors", "random_states_0.pt",
        "accelerator_state.json"})
    EXPECT_TRUE(fs::exists(dir / file)) << file;

  acc::Accelerator b(acc::AcceleratorOptions().environment({}));
  auto model2 = std::make_shared<Net>();
  auto optimizer2 = std::make_shared<torch::optim::SGD>(model2->parameters(), 0.1);
  auto scheduler2 = acc::get_linear_schedule_with_warmup(optimizer2, 1, 4);
  acc::DataLoader<Indexed> loader2(Indexed(), acc::DataLoaderOptions().batch_size(2));
  auto prepared = b.prepare(model2, optimizer2, loader2, scheduler2);
  b.register_for_checkpointing(std::make_shared<Net>());  // the two custom objects swapped
  b.register_for_checkpointing(std::make_shared<Counter>());
  try {
    b.load_state(dir.string());
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("custom_checkpoint_0.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("in the order they were saved"), std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

namespace {

// Lowers this process's file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a
// full disk) for the guard's lifetime; SIGXFSZ is ignored so that the write returns an error.
struct FileSizeLimit {
  rlimit saved{};
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved;
    lowered.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &lowered);
  }
  ~FileSizeLimit() { ::setrlimit(RLIMIT_FSIZE, &saved); }
};

struct Wide : torch::nn::Module {
  Wide() { fc = register_module("fc", torch::nn::Linear(100, 100)); }  // 40 KB of weights
  torch::nn::Linear fc{nullptr};
};

}  // namespace

// A write that fails (here: a file-size limit between the model's 40 KB and the optimizer's
// 80 KB, as a full disk would) is an exception naming the file, never an abort; the partial
// folder is removed and the previous checkpoint still loads.
TEST(SaveState, AWriteErrorIsAnExceptionAndThePreviousCheckpointSurvives) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "full_disk";
  acc::Accelerator a(acc::AcceleratorOptions().cpu(true).environment({}));
  auto model = std::make_shared<Wide>();
  auto adam = std::make_shared<torch::optim::Adam>(model->parameters());
  auto [m, opt] = a.prepare(model, adam);
  m->fc->forward(torch::ones({1, 100})).sum().backward();
  opt->step();
  const fs::path ckpt = dir / "ckpt";
  a.save_state(ckpt.string());
  const at::Tensor saved_weight = m->fc->weight.detach().clone();
  {
    torch::NoGradGuard no_grad;
    m->fc->weight.add_(1.0);
  }
  std::string message;
  {
    FileSizeLimit limit(60 * 1024);
    try {
      a.save_state(ckpt.string());
    } catch (const std::runtime_error& e) {
      message = e.what();
    }
  }
  EXPECT_NE(message.find("optimizer.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 0"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "ckpt.tmp"));
  a.load_state(ckpt.string());
  EXPECT_TRUE(m->fc->weight.equal(saved_weight));
}

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

nlohmann::json read_state(const fs::path& dir) {
  return nlohmann::json::parse(read_bytes(dir / "accelerator_state.json"));
}

// Makes `state_file` what save_state wrote before it recorded checksums: the same without the
// "checksums" key. False when there was none.
bool strip_checksums(const fs::path& state_file) {
  nlohmann::json state = nlohmann::json::parse(read_bytes(state_file));
  if (state.erase("checksums") != 1) return false;
  write_bytes(state_file, state.dump(2) + "\n");
  return true;
}

}  // namespace

// Damaged state files: the error names the file and the key.
TEST(LoadState, DamagedStateFilesNameTheFileAndTheKey) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "damaged";
  acc::Accelerator a(acc::AcceleratorOptions().cpu(true).environment({}));
  auto model = a.prepare_model(std::make_shared<Wide>());
  a.save_state((dir / "ckpt").string());
  auto message = [&] {
    try {
      a.load_state((dir / "ckpt").string());
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const fs::path state_file = dir / "ckpt" / "accelerator_state.json";
  std::ifstream in(state_file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const auto at = text.find("\"step\": 0");
  ASSERT_NE(at, std::string::npos) << text;
  std::string damaged = text;
  damaged.replace(at, 9, "\"step\": \"zero\"");
  std::ofstream(state_file) << damaged;
  std::string m = message();
  EXPECT_NE(m.find(state_file.string()), std::string::npos) << m;
  EXPECT_NE(m.find("\"step\""), std::string::npos) << m;
  std::ofstream(state_file) << text;  // repaired

  // A random-state file that is not an archive: refused by its checksum first; in a folder
  // without checksums (written before them), by the reader, naming the file.
  const fs::path rng = dir / "ckpt" / "random_states_0.pt";
  std::ofstream(rng, std::ios::binary | std::ios::trunc) << "not a torch archive";
  m = message();
  EXPECT_NE(m.find(rng.string() + " is damaged"), std::string::npos) << m;
  ASSERT_TRUE(strip_checksums(state_file));
  m = message();
  EXPECT_NE(m.find(rng.string()), std::string::npos) << m;
  EXPECT_NE(m.find("random state"), std::string::npos) << m;
}

// Two ranks, one of which cannot write (rank 0's optimizer.bin exceeds the file-size limit;
// rank 1 writes only its small random-state file, which fits): both throw the same error
// naming rank 0 and the file, and nothing is left half-written.
TEST(SaveState, AFailureOnOneRankIsAnErrorOnEveryRank) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "one_rank_fails";
  std::vector<std::string> messages(2);
  FileSizeLimit limit(60 * 1024);  // process-wide: the ranks are threads of this process
  run_ranks(2, [&](acc::Accelerator& a) {
    auto model = std::make_shared<Wide>();
    auto adam = std::make_shared<torch::optim::Adam>(model->parameters());
    auto [m, opt] = a.prepare(model, adam);
    a.backward(m->fc->forward(torch::ones({1, 100})).sum());
    opt->step();
    try {
      a.save_state((dir / "ckpt").string());
    } catch (const std::runtime_error& e) {
      messages[a.process_index()] = e.what();
    }
  });
  EXPECT_EQ(messages[0], messages[1]);
  EXPECT_NE(messages[0].find("rank 0: "), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("optimizer.bin"), std::string::npos) << messages[0];
  EXPECT_EQ(messages[0].find("rank 1: "), std::string::npos) << messages[0];
  EXPECT_FALSE(fs::exists(dir / "ckpt.tmp"));
  EXPECT_FALSE(fs::exists(dir / "ckpt"));
}

// ---- save_state / load_state pre-hooks, get_state_dict, save_on_each_node ----

// The save hook sees the prepared models and the dicts about to be written (and its change is
// what is written); the load hook sees the models and can take one out of load_state; a
// removed hook is not called again.
TEST(StateHooks, SaveHookEditsWhatIsWrittenAndLoadHookCanSkipAModel) {
  const acc::testing::TempDir temp;
  const std::string dir = (temp.path() / "hooked").string();
  run_ranks(2, [&](acc::Accelerator& a) {
    auto model = a.prepare_model(std::make_shared<Net>());
    int saves = 0, loads = 0;
    auto save_handle = a.register_save_state_pre_hook(
        [&](const std::vector<std::shared_ptr<torch::nn::Module>>& models,
            std::vector<acc::StateDict>& weights, const std::string& output_dir) {
          ++saves;
          EXPECT_EQ(output_dir, dir);
          ASSERT_EQ(models.size(), 1u);
          EXPECT_EQ(models[0].get(), model.get());
          ASSERT_EQ(weights.size(), 1u);
          ASSERT_EQ(weights[0].size(), 2u);
          EXPECT_EQ(weights[0][0].first, "fc.weight");
          weights[0].emplace_back("extra", at::full({2}, 7.0));
        });
    a.save_state(dir);
    EXPECT_EQ(saves, 1);
    const auto written = acc::load_safetensors(dir + "/model.safetensors");
    ASSERT_EQ(written.count("extra"), 1u);
    EXPECT_TRUE(written.at("extra").equal(at::full({2}, 7.0)));
    EXPECT_TRUE(written.at("fc.bias").equal(model->fc->bias.detach()));

    save_handle.remove();
    save_handle.remove();  // twice: nothing
    const std::string plain = dir + "_plain";
    a.save_state(plain);
    EXPECT_EQ(saves, 1);
    EXPECT_EQ(acc::load_safetensors(plain + "/model.safetensors").count("extra"), 0u);

    const at::Tensor saved_bias = model->fc->bias.detach().clone();
    {
      torch::NoGradGuard no_grad;
      model->fc->bias.fill_(-3.0);
    }
    auto load_handle = a.register_load_state_pre_hook(
        [&](std::vector<std::shared_ptr<torch::nn::Module>>& models, const std::string& input_dir) {
          ++loads;
          EXPECT_EQ(input_dir, plain);
          ASSERT_EQ(models.size(), 1u);
          EXPECT_EQ(models[0].get(), model.get());
          models[0] = nullptr;  // "loaded by the hook"
        });
    a.load_state(plain);
    EXPECT_EQ(loads, 1);
    EXPECT_TRUE(model->fc->bias.detach().equal(at::full({2}, -3.0)));  // skipped
    load_handle.remove();
    a.load_state(plain);
    EXPECT_EQ(loads, 1);
    EXPECT_TRUE(model->fc->bias.detach().equal(saved_bias));  // loaded again
  });
}

TEST(StateHooks, AHookThatDropsADictIsAClearError) {
  const acc::testing::TempDir temp;
  run_ranks(2, [&](acc::Accelerator& a) {
    a.prepare_model(std::make_shared<Net>());
    a.register_save_state_pre_hook([](const auto&, std::vector<acc::StateDict>& weights,
                                      const std::string&) { weights.clear(); });
    try {
      a.save_state((temp.path() / "dropped").string());
      ADD_FAILURE() << "no exception";
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("pre-hook left 0 state dicts for 1 models"),
                std::string::npos)
          << e.what();
    }
    EXPECT_THROW(a.register_load_state_pre_hook(nullptr), acc::InvalidArgument);
  });
}

// get_state_dict: Python's keys, CPU tensors equal to the model's, the same dict save_model
// writes.
TEST(GetStateDict, PythonKeysOnTheCpuAsSaveModelWrites) {
  const acc::testing::TempDir temp;
  acc::Accelerator a(acc::AcceleratorOptions().cpu(true).environment(acc::Environment{}));
  auto model = a.prepare_model(std::make_shared<Net>());
  const acc::StateDict dict = a.get_state_dict(model);
  ASSERT_EQ(dict.size(), 2u);
  EXPECT_EQ(dict[0].first, "fc.weight");
  EXPECT_EQ(dict[1].first, "fc.bias");
  EXPECT_TRUE(dict[0].second.equal(model->fc->weight.detach()));
  EXPECT_EQ(dict[0].second.device(), c10::Device(c10::kCPU));
  EXPECT_FALSE(dict[0].second.requires_grad());
  a.save_model(model, (temp.path() / "m").string());
  const auto written = acc::load_safetensors((temp.path() / "m" / "model.safetensors").string());
  ASSERT_EQ(written.size(), dict.size());
  for (const auto& [name, tensor] : dict) EXPECT_TRUE(written.at(name).equal(tensor)) << name;
  EXPECT_EQ(a.get_state_dict(model, /*unwrap=*/false).size(), dict.size());
  std::shared_ptr<Net> none;
  EXPECT_THROW(a.get_state_dict(none), acc::InvalidArgument);
}

namespace {

// Rank `rank` of 4 on two faked machines of 2 processes each (LOCAL_RANK restarts at 2).
acc::AcceleratorOptions two_machines(int rank, const c10::intrusive_ptr<c10d::Store>& store,
                                     bool save_on_each_node, const fs::path& project) {
  return acc::AcceleratorOptions()
      .cpu(true)
      .store(store)
      .timeout(std::chrono::seconds(60))
      .environment(acc::Environment{{"RANK", std::to_string(rank)},
                                    {"WORLD_SIZE", "4"},
                                    {"LOCAL_RANK", std::to_string(rank % 2)},
                                    {"LOCAL_WORLD_SIZE", "2"},
                                    {"OMP_NUM_THREADS", "1"}})
      .project_config(acc::ProjectConfiguration()
                          .project_dir(project.string())
                          .save_on_each_node(save_on_each_node));
}

}  // namespace

// Machines without a shared file system, faked by a folder per machine: with
// save_on_each_node each machine's local main process writes the whole checkpoint (and its
// processes' random states) into its own folder, which load_state then reads; without it only
// process 0 writes. The same holds for save_model and save.
TEST(SaveOnEachNode, EveryMachineWritesItsOwnCopy) {
  const acc::testing::TempDir temp;
  for (const bool each : {true, false}) {
    const fs::path root = temp.path() / (each ? "each" : "main_only");
    const auto store = acc::testing::make_store();
    acc::testing::spawn_threads(4, [&](int rank) {
      acc::Accelerator a(two_machines(rank, store, each, root));
      auto counter = std::make_shared<Counter>();
      a.register_for_checkpointing(counter);
      auto model = a.prepare_model(std::make_shared<Net>());
      const fs::path machine = root / ("machine_" + std::to_string(rank / 2));
      counter->value = 42;
      // Without save_on_each_node, machine 1's processes would find no folder for their random
      // states: save_state needs the folder process 0 makes, i.e. a shared file system.
      if (each) a.save_state((machine / "ckpt").string());
      a.save_model(model, (machine / "model").string());
      a.save(at::ones({2}),
             (machine / ("tensor_" + std::to_string(rank) + ".safetensors")).string());
      a.wait_for_everyone();
      if (each) {
        counter->value = 0;
        a.load_state((machine / "ckpt").string());
        EXPECT_EQ(counter->value, 42);
      }
    });
    for (int m = 0; m < 2; ++m) {
      const fs::path machine = root / ("machine_" + std::to_string(m));
      const bool written = each || m == 0;
      EXPECT_EQ(fs::exists(machine / "ckpt" / "accelerator_state.json"), each) << machine;
      EXPECT_EQ(fs::exists(machine / "ckpt" / "model.safetensors"), each) << machine;
      EXPECT_EQ(fs::exists(machine / "model" / "model.safetensors"), written) << machine;
      // save: the local main process of the machine (rank 2m) writes; the others never.
      EXPECT_EQ(fs::exists(machine / ("tensor_" + std::to_string(2 * m) + ".safetensors")), written)
          << machine;
      EXPECT_FALSE(fs::exists(machine / ("tensor_" + std::to_string(2 * m + 1) + ".safetensors")));
      for (int r = 2 * m; r < 2 * m + 2 && each; ++r)
        EXPECT_TRUE(fs::exists(machine / "ckpt" / ("random_states_" + std::to_string(r) + ".pt")));
      EXPECT_FALSE(fs::exists(machine / "ckpt.tmp")) << machine;
      if (!each) continue;
      // Each machine's folder records the checksums of the files in it: its own processes'
      // random states, not the other machine's.
      std::vector<std::string> recorded;
      const nlohmann::json state = read_state(machine / "ckpt");
      for (const auto& item : state.at("checksums").items()) recorded.push_back(item.key());
      const std::string first = "random_states_" + std::to_string(2 * m) + ".pt",
                        second = "random_states_" + std::to_string(2 * m + 1) + ".pt";
      EXPECT_EQ(recorded, (std::vector<std::string>{"custom_checkpoint_0.bin", "model.safetensors",
                                                    first, second}))
          << machine;
    }
  }
}

// Machines that do share the folder, with save_on_each_node: still one complete checkpoint
// (every rank's random states, no marker files left) that loads, saved twice in a row.
TEST(SaveOnEachNode, ASharedFolderGetsOneCompleteCheckpoint) {
  const acc::testing::TempDir temp;
  const fs::path ckpt = temp.path() / "shared" / "ckpt";
  const auto store = acc::testing::make_store();
  acc::testing::spawn_threads(4, [&](int rank) {
    acc::Accelerator a(two_machines(rank, store, true, temp.path() / "shared"));
    auto counter = std::make_shared<Counter>();
    a.register_for_checkpointing(counter);
    for (int round = 0; round < 2; ++round) {
      counter->value = 10 + round;
      a.save_state(ckpt.string());
      counter->value = -1;
      a.load_state(ckpt.string());
      EXPECT_EQ(counter->value, 10 + round);
    }
    a.save_model(a.prepare_model(std::make_shared<Net>()), (temp.path() / "shared_model").string());
  });
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(ckpt))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"accelerator_state.json", "custom_checkpoint_0.bin",
                                             "random_states_0.pt", "random_states_1.pt",
                                             "random_states_2.pt", "random_states_3.pt"}));
  std::vector<std::string> recorded{"accelerator_state.json"};  // every file but itself
  const nlohmann::json state = read_state(ckpt);
  for (const auto& item : state.at("checksums").items()) recorded.push_back(item.key());
  EXPECT_EQ(recorded, names);
  EXPECT_FALSE(fs::exists(ckpt.string() + ".tmp"));
  EXPECT_TRUE(fs::exists(temp.path() / "shared_model" / "model.safetensors"));
}

// ---- checksums (Note [checkpoint checksums] in accelerator_checkpoint.cpp) ----

namespace {

std::string xxh3_hex(const std::string& bytes) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx",
                static_cast<unsigned long long>(XXH3_64bits(bytes.data(), bytes.size())));
  return text;
}

// A model, an Adam optimizer with state, a scheduler, a loader and a registered object: every
// kind of file of a checkpoint folder.
struct Job {
  std::shared_ptr<Wide> model;
  std::shared_ptr<acc::AcceleratedOptimizer> optimizer;
  std::shared_ptr<Counter> counter = std::make_shared<Counter>();
  std::shared_ptr<acc::AcceleratedScheduler> scheduler;

  explicit Job(acc::Accelerator& a) {
    auto net = std::make_shared<Wide>();
    auto adam = std::make_shared<torch::optim::Adam>(net->parameters());
    auto schedule = acc::get_linear_schedule_with_warmup(adam, 1, 10);
    acc::DataLoader<Indexed> loader(Indexed(), acc::DataLoaderOptions().batch_size(2));
    auto [m, opt, dl, sched] = a.prepare(net, adam, loader, schedule);
    model = m;
    optimizer = opt;
    scheduler = sched;
    a.register_for_checkpointing(counter);
    a.backward(model->fc->forward(torch::ones({2, 100})).sum());
    optimizer->step();
    scheduler->step();
    counter->value = 42;
  }
  void disturb() {
    torch::NoGradGuard no_grad;
    model->fc->weight.fill_(5.0);
    counter->value = -1;
  }
  bool disturbed() const {
    return model->fc->weight.detach().eq(5.0).all().item<bool>() && counter->value == -1;
  }
};

// One way to damage a checkpoint folder: what to do to which file.
struct Damage {
  std::string name, file;
  std::function<void(const fs::path&)> apply;
};

std::vector<Damage> damages() {
  auto flip = [](std::function<size_t(const std::string&)> offset) {
    return [offset](const fs::path& path) {
      std::string bytes = read_bytes(path);
      bytes[offset(bytes)] ^= 0x10;
      write_bytes(path, bytes);
    };
  };
  // A byte in the middle of the tensor data, past the header (8 bytes + its length).
  auto safetensors_data = [](const std::string& bytes) {
    uint64_t header = 0;
    std::memcpy(&header, bytes.data(), 8);
    return static_cast<size_t>(8 + header + (bytes.size() - 8 - header) / 2);
  };
  auto middle = [](const std::string& bytes) { return bytes.size() / 2; };
  return {
      {"a tensor byte of model.safetensors", "model.safetensors", flip(safetensors_data)},
      {"a byte in the middle of optimizer.bin", "optimizer.bin", flip(middle)},
      {"a byte of rank 1's random states", "random_states_1.pt", flip(middle)},
      {"a byte of rank 0's random states", "random_states_0.pt", flip(middle)},
      {"optimizer.bin truncated to half", "optimizer.bin",
       [](const fs::path& path) { fs::resize_file(path, fs::file_size(path) / 2); }},
      {"custom_checkpoint_0.bin truncated to nothing", "custom_checkpoint_0.bin",
       [](const fs::path& path) { fs::resize_file(path, 0); }},
  };
}

// With n processes (ranks as threads): save, then for each damage, load_state throws on every
// rank the same FileError naming the file, the recorded checksum and what it got, and loads
// nothing on any rank; repaired, the folder loads.
void damaged_files_are_refused(int n) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "ckpt";
  run_ranks(n, [&](acc::Accelerator& a) {
    Job job(a);
    a.save_state(dir.string());
    const at::Tensor saved = job.model->fc->weight.detach().clone();
    const nlohmann::json checksums = read_state(dir).at("checksums");
    for (const Damage& damage : damages()) {
      const fs::path file = dir / damage.file;
      if (!fs::exists(file)) continue;  // random_states_1.pt with one process
      SCOPED_TRACE(damage.name + " with " + std::to_string(n) + " process(es)");
      std::string original;
      if (a.is_main_process()) {
        original = read_bytes(file);
        damage.apply(file);
      }
      a.wait_for_everyone();
      job.disturb();
      std::string message = "no error";
      try {
        a.load_state(dir.string());
      } catch (const acc::FileError& e) {
        message = e.what();
      }
      EXPECT_NE(message.find(file.string() + " is damaged: expected XXH3-64 checksum " +
                             checksums.at(damage.file).at("xxh3_64").get<std::string>()),
                std::string::npos)
          << message;
      EXPECT_NE(message.find(", got "), std::string::npos) << message;
      EXPECT_TRUE(job.disturbed()) << "load_state loaded something from a damaged folder";
      const auto messages = a.gather_object(message);
      for (const auto& other : messages) EXPECT_EQ(other, message) << "every rank, one error";
      if (a.is_main_process()) write_bytes(file, original);
      a.wait_for_everyone();
    }
    // A file that save_state recorded but is gone.
    const fs::path rng = dir / "random_states_0.pt";
    const std::string rng_bytes = read_bytes(rng);
    a.wait_for_everyone();
    if (a.is_main_process()) fs::remove(rng);
    a.wait_for_everyone();
    try {
      a.load_state(dir.string());
      ADD_FAILURE() << "no error";
    } catch (const acc::FileError& e) {
      EXPECT_NE(std::string(e.what()).find(rng.string() + " is missing"), std::string::npos)
          << e.what();
    }
    a.wait_for_everyone();
    // Repaired: loads.
    if (a.is_main_process()) write_bytes(rng, rng_bytes);
    a.wait_for_everyone();
    job.disturb();
    a.load_state(dir.string());
    EXPECT_TRUE(job.model->fc->weight.detach().equal(saved));
    EXPECT_EQ(job.counter->value, 42);
  });
}

}  // namespace

// save_state records the size and XXH3-64 of every file of the folder, each rank's random
// states too, equal to the file's bytes on disk hashed at once; nothing else is written.
TEST(Checksums, EveryFileOfEveryRankIsRecordedAsWritten) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "ckpt", off = temp.path() / "off";
  run_ranks(2, [&](acc::Accelerator& a) {
    Job job(a);
    a.save_state(dir.string());
  });
  const nlohmann::json checksums = read_state(dir).at("checksums");
  std::vector<std::string> files, recorded;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename() != "accelerator_state.json")
      files.push_back(entry.path().filename().string());
  for (const auto& item : checksums.items()) recorded.push_back(item.key());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(recorded, files);
  EXPECT_EQ(files,
            (std::vector<std::string>{"custom_checkpoint_0.bin", "data_loader.json",
                                      "model.safetensors", "optimizer.bin", "random_states_0.pt",
                                      "random_states_1.pt", "scheduler.json"}));
  for (const auto& file : files) {
    const std::string bytes = read_bytes(dir / file);
    EXPECT_EQ(checksums.at(file).at("size").get<uint64_t>(), bytes.size()) << file;
    EXPECT_EQ(checksums.at(file).at("xxh3_64").get<std::string>(), xxh3_hex(bytes)) << file;
  }
  // Turned off: none recorded.
  run_ranks(
      2,
      [&](acc::Accelerator& a) {
        Job job(a);
        a.save_state(off.string());
      },
      acc::AcceleratorOptions().project_config(acc::ProjectConfiguration().checksums(false)));
  EXPECT_FALSE(read_state(off).contains("checksums"));
  EXPECT_TRUE(read_state(off).contains("objects"));
}

TEST(Checksums, ADamagedFileIsRefusedWithOneProcess) { damaged_files_are_refused(1); }

TEST(Checksums, ADamagedFileIsRefusedOnEveryRank) { damaged_files_are_refused(2); }

// A folder written before checksums (the same files, no "checksums" key) loads, exactly,
// unverified: damage then goes unnoticed, as it did before checksums. So does a folder with
// checksums loaded with ProjectConfiguration().checksums(false).
TEST(Checksums, AFolderWithoutChecksumsLoadsUnverified) {
  const acc::testing::TempDir temp;
  const fs::path dir = temp.path() / "ckpt";
  at::Tensor saved;
  run_ranks(2, [&](acc::Accelerator& a) {
    Job job(a);
    a.save_state(dir.string());
    if (a.is_main_process()) saved = job.model->fc->weight.detach().clone();
  });
  const std::string intact = read_bytes(dir / "model.safetensors");
  damages()[0].apply(dir / "model.safetensors");  // a tensor byte
  // Loads a damaged file without a word, unless the checksums are verified.
  auto load = [&](const acc::AcceleratorOptions& options, bool expect_intact) {
    run_ranks(
        2,
        [&](acc::Accelerator& a) {
          Job job(a);
          job.disturb();
          a.load_state(dir.string());
          EXPECT_EQ(job.model->fc->weight.detach().equal(saved), expect_intact);
          EXPECT_EQ(job.counter->value, 42);
        },
        options);
  };
  {
    SCOPED_TRACE("checksums(false)");
    load(acc::AcceleratorOptions().project_config(acc::ProjectConfiguration().checksums(false)),
         false);
  }
  ASSERT_TRUE(strip_checksums(dir / "accelerator_state.json"));
  {
    SCOPED_TRACE("a folder without checksums, damaged");
    load(acc::AcceleratorOptions(), false);
  }
  write_bytes(dir / "model.safetensors", intact);
  {
    SCOPED_TRACE("a folder without checksums");
    load(acc::AcceleratorOptions(), true);
  }
}
