// Experiment tracking: TensorBoard event files (checked by an independent Python reader with
// Debian's python3-crc32c), CSV, custom trackers, and the Accelerator's main-process rules.
#include <accelerate/accelerate.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "subprocess.h"
#include "temp_dir.h"
#include "test_util.h"

namespace fs = std::filesystem;
namespace acc = accelerate;

#ifndef ACCELERATE_TEST_PYTHON_DIR
#error "ACCELERATE_TEST_PYTHON_DIR must name tests/python"
#endif

namespace {

using TrackingTest = acc::testing::TempDirTest;

std::string read_all(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs the independent reader; fails the test when it rejects the file.
nlohmann::json read_events(const std::string& file) {
  const acc::testing::Outcome r = acc::testing::run_command(acc::testing::Command(
      {"/usr/bin/python3", ACCELERATE_TEST_PYTHON_DIR "/read_tfevents.py", file}));
  EXPECT_EQ(r.code(), 0) << r.output();
  if (r.code() != 0) return nlohmann::json::array();
  return nlohmann::json::parse(r.out);
}

struct Recorder : acc::GeneralTracker {
  std::string name() const override { return "recorder"; }
  void store_init_configuration(const acc::TrackerConfig& config) override {
    configs.push_back(config);
  }
  void log(const std::map<std::string, double>& values, std::optional<int64_t> step) override {
    logged.emplace_back(values, step);
  }
  void finish() override { ++finished; }
  std::vector<acc::TrackerConfig> configs;
  std::vector<std::pair<std::map<std::string, double>, std::optional<int64_t>>> logged;
  int finished = 0;
};

}  // namespace

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(acc::crc32c("123456789", 9), 0xe3069283u);  // the standard check value
  EXPECT_EQ(acc::crc32c("", 0), 0u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(acc::crc32c(zeros.data(), zeros.size()), 0x8a9136aau);  // RFC 3720 B.4
}

TEST_F(TrackingTest, TensorBoardFileReadsBack) {
  acc::TensorBoardTracker tb("run1", dir_.string());
  tb.store_init_configuration({{"lr", 0.001}, {"batch_size", 64}, {"model", "cnn"}});
  tb.log({{"loss", 0.5}, {"accuracy", 0.875}}, 10);
  tb.log({{"loss", 0.25}}, std::nullopt);  // next step: 11
  tb.log({{"lr/group 0", 1e-3}}, 3);
  tb.finish();

  const auto events = read_events(tb.event_file());
  ASSERT_EQ(events.size(), 4u) << events.dump();
  EXPECT_EQ(events[0].at("file_version"), "brain.Event:2");
  EXPECT_GT(events[0].at("wall_time").get<double>(), 1.7e9);
  EXPECT_EQ(events[1].at("step"), 10);
  EXPECT_DOUBLE_EQ(events[1]["values"]["loss"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(events[1]["values"]["accuracy"].get<double>(), 0.875);
  EXPECT_EQ(events[2].at("step"), 11);
  EXPECT_DOUBLE_EQ(events[2]["values"]["loss"].get<double>(), 0.25);
  EXPECT_EQ(events[3].at("step"), 3);
  EXPECT_FLOAT_EQ(events[3]["values"]["lr/group 0"].get<float>(), 1e-3f);
  EXPECT_EQ(fs::path(tb.event_file()).parent_path(), dir_ / "run1");
  EXPECT_EQ(fs::path(tb.event_file()).filename().string().rfind("events.out.tfevents.", 0), 0u);

  const std::string hparams = read_all(dir_ / "run1" / "hparams.yml");
  EXPECT_NE(hparams.find("lr: 0.001"), std::string::npos) << hparams;
  EXPECT_NE(hparams.find("batch_size: 64"), std::string::npos) << hparams;
  EXPECT_NE(hparams.find("model: cnn"), std::string::npos) << hparams;
}

TEST_F(TrackingTest, CorruptedEventFileIsRejectedByTheReader) {
  // The reader really checks the CRCs: flip one byte of a value.
  acc::TensorBoardTracker tb("run", dir_.string());
  tb.log({{"loss", 0.5}}, 1);
  tb.finish();
  std::fstream f(tb.event_file(), std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(-6, std::ios::end);
  f.put('\x7f');
  f.close();
  const acc::testing::Outcome r = acc::testing::run_command(acc::testing::Command(
      {"/usr/bin/python3", ACCELERATE_TEST_PYTHON_DIR "/read_tfevents.py", tb.event_file()}));
  EXPECT_NE(r.code(), 0) << r.output();
  EXPECT_FALSE(r.timed_out);
}

TEST_F(TrackingTest, CsvRowsAndConfig) {
  {
    acc::CSVTracker csv("run", dir_.string());
    csv.store_init_configuration({{"epochs", 3}});
    csv.log({{"loss", 0.125}, {"a,b", 2}}, 5);
    csv.log({{"loss", 0.0625}}, std::nullopt);
    csv.finish();
  }
  {
    acc::CSVTracker again("run", dir_.string());  // a resumed run appends
    again.log({{"loss", 0.03125}}, 7);
  }
  std::stringstream rows(read_all(dir_ / "run" / "metrics.csv"));
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(rows, line)) lines.push_back(line.substr(line.find(',') + 1));  // drop time
  EXPECT_EQ(lines, (std::vector<std::string>{"step,name,value", "5,\"a,b\",2", "5,loss,0.125",
                                             "6,loss,0.0625", "7,loss,0.03125"}));
  EXPECT_EQ(nlohmann::json::parse(read_all(dir_ / "run" / "config.json")),
            nlohmann::json({{"epochs", 3}}));
}

TEST_F(TrackingTest, AcceleratorRunsTrackersOnTheMainProcessOnly) {
  const std::string logging = dir_.string();
  auto recorders = std::make_shared<std::vector<std::shared_ptr<Recorder>>>(2);
  const auto store = acc::testing::make_store();
  acc::testing::spawn_threads(2, [&](int rank) {
    auto rec = std::make_shared<Recorder>();
    (*recorders)[rank] = rec;
    acc::Accelerator accelerator(acc::testing::rank_options(
        rank, 2, store,
        acc::AcceleratorOptions()
            .project_config(acc::ProjectConfiguration().logging_dir(logging))
            .log_with("all")
            .log_with(rec)));
    accelerator.init_trackers("exp", {{"lr", 0.1}});
    for (int step = 0; step < 3; ++step) accelerator.log({{"loss", 1.0 / (step + 1)}}, step);
    if (rank == 0) {
      ASSERT_NE(accelerator.get_tracker("tensorboard"), nullptr);
      ASSERT_NE(accelerator.get_tracker("csv"), nullptr);
      EXPECT_EQ(accelerator.get_tracker("tensorboard")->logging_dir(),
                (fs::path(logging) / "exp").string());
    } else {
      EXPECT_EQ(accelerator.get_tracker("tensorboard"), nullptr);
    }
    accelerator.end_training();
  });
  ASSERT_EQ((*recorders)[0]->configs.size(), 1u);
  EXPECT_EQ((*recorders)[0]->configs[0], acc::TrackerConfig({{"lr", 0.1}}));
  EXPECT_EQ((*recorders)[0]->logged.size(), 3u);
  EXPECT_EQ((*recorders)[0]->finished, 1);
  EXPECT_TRUE((*recorders)[1]->logged.empty());
  EXPECT_TRUE((*recorders)[1]->configs.empty());

  // One event file (only process 0 wrote), with the three steps.
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir_ / "exp"))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  const auto events = read_events(files[0].string());
  ASSERT_EQ(events.size(), 4u);
  EXPECT_FLOAT_EQ(events[3]["values"]["loss"].get<float>(), 1.0f / 3);  // stored as float32
}

TEST(TrackingOptions, ClearErrors) {
  try {
    acc::AcceleratorOptions().log_with("wandb");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'wandb'"), std::string::npos) << e.what();
  }
  try {
    acc::Accelerator a(acc::AcceleratorOptions().cpu(true).log_with("csv"));
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("project_dir or logging_dir"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(acc::CSVTracker("", "/tmp"), std::invalid_argument);
  try {
    acc::CSVTracker t("run", "/proc/no_such_dir");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/proc/no_such_dir"), std::string::npos) << e.what();
  }
}
