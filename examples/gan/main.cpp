// A GAN on Fashion-MNIST: two models with BatchNorm (a generator of transposed convolutions and
// a convolutional discriminator), two optimizers, trained with data parallelism and resumable
// from the checkpoints it saves every few steps.
//
//   accelerate-cpp launch --num_processes 2 build/examples/gan \
//       [--max_steps 400] [--batch_size 64] [--checkpoint_every 100] [--project gan_run] \
//       [--resume] [--data /usr/share/datasets/fashion-mnist]
//
// Stop it at any point and start it again with --resume: it continues from the newest
// checkpoint (models, optimizers, random states and the data loader's position), as if it had
// not stopped.
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <map>

#include "../fashion_mnist/fashion_mnist.h"

namespace acc = accelerate;

namespace {

constexpr int64_t kNoise = 64;

// Noise [B, 64] -> image [B, 1, 28, 28] in [-1, 1].
struct Generator : torch::nn::Module {
  Generator() {
    fc = register_module("fc", torch::nn::Linear(kNoise, 128 * 7 * 7));
    bn0 = register_module("bn0", torch::nn::BatchNorm1d(128 * 7 * 7));
    up1 = register_module("up1",
                          torch::nn::ConvTranspose2d(
                              torch::nn::ConvTranspose2dOptions(128, 64, 4).stride(2).padding(1)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(64));
    up2 = register_module("up2",
                          torch::nn::ConvTranspose2d(
                              torch::nn::ConvTranspose2dOptions(64, 1, 4).stride(2).padding(1)));
  }
  at::Tensor forward(const at::Tensor& z) {
    auto x = torch::relu(bn0(fc(z))).view({-1, 128, 7, 7});  // 7 x 7
    x = torch::relu(bn1(up1(x)));                            // 14 x 14
    return torch::tanh(up2(x));                              // 28 x 28
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn0{nullptr};
  torch::nn::ConvTranspose2d up1{nullptr}, up2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
};

// Image [B, 1, 28, 28] -> logit [B, 1] of "real".
struct Discriminator : torch::nn::Module {
  Discriminator() {
    conv1 = register_module(
        "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 64, 4).stride(2).padding(1)));
    conv2 = register_module(
        "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(64, 128, 4).stride(2).padding(1)));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(128));
    fc = register_module("fc", torch::nn::Linear(128 * 7 * 7, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = torch::leaky_relu(conv1(x), 0.2);
    h = torch::leaky_relu(bn2(conv2(h)), 0.2);
    return fc(h.flatten(1));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn2{nullptr};
  torch::nn::Linear fc{nullptr};
};

// The step count, saved with every checkpoint (register_for_checkpointing); the loader saves
// its own epoch and position.
struct Progress {
  int64_t step = 0;
  std::map<std::string, int64_t> state_dict() const { return {{"step", step}}; }
  void load_state_dict(const std::map<std::string, int64_t>& s) { step = s.at("step"); }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("A GAN on Fashion-MNIST with accelerate-cpp");
  int64_t max_steps = 400, batch_size = 64, checkpoint_every = 100;
  bool resume = false;
  std::string data = fashion_mnist::kDefaultFolder, project = "gan_run";
  app.add_option("--max_steps", max_steps, "training steps in all")->check(CLI::PositiveNumber);
  app.add_option("--batch_size", batch_size, "per process")->check(CLI::PositiveNumber);
  app.add_option("--checkpoint_every", checkpoint_every)->check(CLI::PositiveNumber);
  app.add_option("--project", project, "folder of the checkpoints and the saved generator");
  app.add_flag("--resume", resume, "continue from the newest checkpoint in the project folder");
  app.add_option("--data", data, "folder of the gzipped IDX files");
  CLI11_PARSE(app, argc, argv);

  acc::Accelerator accelerator(
      acc::AcceleratorOptions().project_config(acc::ProjectConfiguration()
                                                   .project_dir(project)
                                                   .automatic_checkpoint_naming(true)
                                                   .total_limit(2)));
  // Each process draws its own noise; prepare copies process 0's initial weights to all.
  acc::set_seed(1234 + accelerator.process_index());

  auto images = accelerator.local_main_process_first(
      [&] { return fashion_mnist::FashionMnist(fashion_mnist::Split::kTrain, data); });
  acc::DataLoader<fashion_mnist::FashionMnist> loader(
      images, acc::DataLoaderOptions().batch_size(batch_size).shuffle(true).drop_last(true));
  auto generator = std::make_shared<Generator>();
  auto discriminator = std::make_shared<Discriminator>();
  auto g_optimizer = std::make_shared<torch::optim::Adam>(
      generator->parameters(), torch::optim::AdamOptions(2e-4).betas({0.5, 0.999}));
  auto d_optimizer = std::make_shared<torch::optim::Adam>(
      discriminator->parameters(), torch::optim::AdamOptions(2e-4).betas({0.5, 0.999}));
  auto [g, d, g_opt, d_opt, dl] =
      accelerator.prepare(generator, discriminator, g_optimizer, d_optimizer, loader);
  auto progress = std::make_shared<Progress>();
  accelerator.register_for_checkpointing(progress);

  const auto checkpoints = std::filesystem::path(project) / "checkpoints";
  if (resume && std::filesystem::exists(checkpoints) && !std::filesystem::is_empty(checkpoints)) {
    accelerator.load_state();  // the newest checkpoint_N, the loader's position included
    accelerator.print("resumed at step", progress->step, "(epoch", dl->epoch(), ")");
  }

  auto bce = [](const at::Tensor& logits, double label) {
    return torch::binary_cross_entropy_with_logits(logits, torch::full_like(logits, label));
  };
  double d_loss_value = 0, g_loss_value = 0;
  while (progress->step < max_steps) {
    for (auto& batch : *dl) {
      // Back from Fashion-MNIST's normalisation to [-1, 1], the generator's range.
      const at::Tensor real =
          (batch.data * fashion_mnist::FashionMnist::kStd + fashion_mnist::FashionMnist::kMean) *
              2 -
          1;
      const at::Tensor noise =
          torch::randn({real.size(0), kNoise}, torch::TensorOptions().device(accelerator.device()));
      const at::Tensor fake = g->forward(noise);

      // The discriminator: real images towards 0.9 (label smoothing), generated ones towards 0.
      // Two forwards through its BatchNorm before one backward.
      auto d_loss = bce(d->forward(real), 0.9) + bce(d->forward(fake.detach()), 0.0);
      accelerator.backward(d_loss);
      d_opt->step();
      d_opt->zero_grad();

      // The generator: make the discriminator say "real". The backward also reaches the
      // discriminator's parameters; their gradients are cleared before its next step.
      auto g_loss = bce(d->forward(fake), 1.0);
      accelerator.backward(g_loss);
      g_opt->step();
      g_opt->zero_grad();
      d_opt->zero_grad();

      ++progress->step;
      if (progress->step % 50 == 0 || progress->step == max_steps) {
        d_loss_value = accelerator.reduce(d_loss.detach(), "mean").item<double>();
        g_loss_value = accelerator.reduce(g_loss.detach(), "mean").item<double>();
        accelerator.print("step", progress->step, "| discriminator loss", d_loss_value,
                          "| generator loss", g_loss_value);
      }
      if (progress->step % checkpoint_every == 0 || progress->step == max_steps) {
        accelerator.save_state();
        accelerator.print("step", progress->step, "| saved",
                          accelerator.project_configuration().iteration() - 1);
      }
      if (progress->step == max_steps) break;
    }
  }
  accelerator.save_model(g, (std::filesystem::path(project) / "generator").string());
  // Every process holds the same weights and process 0's BatchNorm statistics.
  torch::NoGradGuard no_grad;
  auto stats = d->named_buffers()["bn2.running_var"].reshape({1, -1});
  const double spread = (accelerator.gather(stats) - stats).abs().max().item<double>();
  accelerator.print("done at step", progress->step,
                    "| buffers equal on every process:", spread == 0 ? "yes" : "no");
  return spread == 0 ? 0 : 1;
}
