// tests/numpy_random.h: NumPy's `np.random.default_rng(seed).normal(...)`, draw for draw, so
// that the C++ ports of Accelerate's test scripts train on the very data Python does.
//
// `default_rng(seed)` is a PCG64 generator (128-bit LCG, XSL-RR output) seeded through
// NumPy's SeedSequence; `normal` is the 256-layer ziggurat of NumPy's
// `random_standard_normal`. The ziggurat tables are computed here from the layer recurrence
// (Marsaglia & Tsang) rather than listed; tests/python/accelerate_reference.py records NumPy's
// own draws in the fixture and accelerate_scripts_test checks them against these.
//
// Example:
//   accelerate::testing::NumpyGenerator rng(42);
//   double z = rng.standard_normal();      // np.random.default_rng(42).standard_normal()
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace accelerate::testing {

class NumpyGenerator {
 public:
  /// np.random.default_rng(seed), for a seed that fits in 32 bits (as 42 does).
  explicit NumpyGenerator(uint32_t seed) {
    const std::array<uint32_t, 4> pool = seed_sequence_pool(seed);
    // SeedSequence.generate_state(4, uint64): 8 words of 32 bits, pairs read little-endian.
    uint32_t hash = kInitB;
    std::array<uint64_t, 4> words{};
    for (int i = 0; i < 8; ++i) {
      uint32_t value = pool[static_cast<size_t>(i % 4)];
      value ^= hash;
      hash *= kMultB;
      value *= hash;
      value ^= value >> 16;
      words[static_cast<size_t>(i / 2)] |= static_cast<uint64_t>(value) << (32 * (i % 2));
    }
    const Uint128 initstate = (static_cast<Uint128>(words[0]) << 64) | words[1];
    const Uint128 initseq = (static_cast<Uint128>(words[2]) << 64) | words[3];
    state_ = 0;
    increment_ = (initseq << 1) | 1;
    advance();
    state_ += initstate;
    advance();
  }

  /// The next 64 random bits (PCG64's XSL-RR output of the advanced state).
  uint64_t next_uint64() {
    advance();
    const auto high = static_cast<uint64_t>(state_ >> 64);
    const auto low = static_cast<uint64_t>(state_);
    const auto rotation = static_cast<unsigned>(state_ >> 122);
    const uint64_t x = high ^ low;
    return rotation == 0 ? x : (x >> rotation) | (x << (64 - rotation));
  }

  /// A double in [0, 1) from the top 53 bits.
  double next_double() {
    return static_cast<double>(next_uint64() >> 11) * (1.0 / 9007199254740992.0);
  }

  /// One standard normal draw (NumPy's ziggurat).
  double standard_normal() {
    const Tables& t = tables();
    for (;;) {
      uint64_t r = next_uint64();
      const int index = static_cast<int>(r & 0xff);
      r >>= 8;
      const bool negative = (r & 1) != 0;
      const uint64_t magnitude = (r >> 1) & 0x000fffffffffffffULL;
      double x = static_cast<double>(magnitude) * t.w[static_cast<size_t>(index)];
      if (negative) x = -x;
      if (magnitude < t.k[static_cast<size_t>(index)]) return x;
      if (index == 0) {  // the tail beyond r
        for (;;) {
          const double xx = -(1.0 / kR) * std::log1p(-next_double());
          const double yy = -std::log1p(-next_double());
          if (yy + yy > xx * xx) return ((magnitude >> 8) & 1) ? -(kR + xx) : kR + xx;
        }
      }
      const size_t i = static_cast<size_t>(index);
      if ((t.f[i - 1] - t.f[i]) * next_double() + t.f[i] < std::exp(-0.5 * x * x)) return x;
    }
  }

  /// rng.normal(loc, scale, size=n) as float32 (`.astype(np.float32)`).
  std::vector<float> normal_float32(int64_t n, double loc = 0.0, double scale = 1.0) {
    std::vector<float> out(static_cast<size_t>(n));
    for (auto& v : out) v = static_cast<float>(loc + scale * standard_normal());
    return out;
  }

 private:
  using Uint128 = unsigned __int128;
  static constexpr uint32_t kInitA = 0x43b0d7e5, kMultA = 0x931e8875;
  static constexpr uint32_t kInitB = 0x8b51f9dd, kMultB = 0x58f38ded;
  static constexpr uint32_t kMixL = 0xca01f9dd, kMixR = 0x4973f715;
  static constexpr double kR = 3.6541528853610087963519472518;  // where the tail starts
  static constexpr double kV = 4.928673233974655e-3;            // area of each layer

  // SeedSequence(seed).pool: the entropy [seed] hashed and mixed into four words.
  static std::array<uint32_t, 4> seed_sequence_pool(uint32_t seed) {
    uint32_t hash = kInitA;
    auto hashmix = [&hash](uint32_t value) {
      value ^= hash;
      hash *= kMultA;
      value *= hash;
      value ^= value >> 16;
      return value;
    };
    auto mix = [](uint32_t x, uint32_t y) {
      uint32_t result = kMixL * x - kMixR * y;
      return result ^ (result >> 16);
    };
    std::array<uint32_t, 4> pool{};
    for (size_t i = 0; i < 4; ++i) pool[i] = hashmix(i == 0 ? seed : 0u);
    for (size_t src = 0; src < 4; ++src)
      for (size_t dst = 0; dst < 4; ++dst)
        if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
    return pool;
  }

  void advance() {
    const Uint128 multiplier =
        (static_cast<Uint128>(2549297995355413924ULL) << 64) | 4865540595714422341ULL;
    state_ = state_ * multiplier + increment_;
  }

  // Layer i (1..255) spans [0, x_i] with x_1 < ... < x_255 = r; layer 0 is the base strip of
  // width v / f(r) plus the tail. k: 2^52 × the part of a layer under the curve for sure;
  // w: x / 2^52; f: the density at x.
  struct Tables {
    std::array<uint64_t, 256> k{};
    std::array<double, 256> w{}, f{};
  };
  static const Tables& tables() {
    static const Tables t = [] {
      auto density = [](double x) { return std::exp(-0.5 * x * x); };
      std::array<double, 257> x{};  // x[0] = base width, x[1] = r, decreasing to x[256] = 0
      x[0] = kV / density(kR);
      x[1] = kR;
      for (size_t i = 2; i < 256; ++i)
        x[i] = std::sqrt(-2.0 * std::log(kV / x[i - 1] + density(x[i - 1])));
      x[256] = 0.0;
      const double two52 = 4503599627370496.0;
      Tables out;
      out.k[0] = static_cast<uint64_t>(two52 * (x[1] / x[0]));
      out.w[0] = x[0] / two52;
      out.f[0] = 1.0;
      for (size_t i = 1; i < 256; ++i) {
        out.k[i] = static_cast<uint64_t>(two52 * (x[257 - i] / x[256 - i]));
        out.w[i] = x[256 - i] / two52;
        out.f[i] = density(x[256 - i]);
      }
      return out;
    }();
    return t;
  }

  Uint128 state_ = 0;
  Uint128 increment_ = 0;
};

}  // namespace accelerate::testing
