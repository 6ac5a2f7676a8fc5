// accelerate::format: fmt's (and Python's str.format) syntax, formatted inside the library.
#include <accelerate/format.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <accelerate/errors.h>
#include <accelerate/state.h>

#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>

namespace acc = accelerate;

TEST(Format, ReplacementFieldsAndBasicSpecifications) {
  EXPECT_EQ(acc::format("epoch {} loss {:.4f}", 3, 0.25), "epoch 3 loss 0.2500");
  EXPECT_EQ(acc::format("{:.2e}", 12345.678), "1.23e+04");
  EXPECT_EQ(acc::format("{:.3E}", 0.000123456), "1.235E-04");
  EXPECT_EQ(acc::format("[{:5d}] [{:<5d}] [{:^7}] [{:>6}]", 42, 42, "ab", "cd"),
            "[   42] [42   ] [  ab   ] [    cd]");
  EXPECT_EQ(acc::format("{:08.3f} {:+d} {:*>6}", -3.14159, 5, 1.5), "-003.142 +5 ***1.5");
  EXPECT_EQ(acc::format("{:x} {:#x} {:o} {:b} {:X}", 255, 255, 8, 5, 3054), "ff 0xff 10 101 BEE");
  EXPECT_EQ(acc::format("{1} {0} {1}", "a", "b"), "b a b");
  EXPECT_EQ(acc::format("{:>{}}|{:.{}f}", "a", 3, 2.0, 2), "  a|2.00") << "nested width/precision";
  EXPECT_EQ(acc::format("{{}} {{{}}} }}{{", 1), "{} {1} }{");
  EXPECT_EQ(acc::format("no fields"), "no fields");
  EXPECT_EQ(acc::format(""), "");
}

TEST(Format, ArgumentsKeepTheirType) {
  EXPECT_EQ(acc::format("{}", 0.1f), "0.1") << "a float is not widened to a double first";
  EXPECT_EQ(acc::format("{}", 0.1), "0.1");
  EXPECT_EQ(acc::format("{}", 1e-5), "1e-05");
  EXPECT_EQ(acc::format("{}", std::numeric_limits<int64_t>::min()), "-9223372036854775808");
  EXPECT_EQ(acc::format("{}", std::numeric_limits<uint64_t>::max()), "18446744073709551615");
  EXPECT_EQ(acc::format("{} {}", true, false), "true false");
  EXPECT_EQ(acc::format("{}{}", 'c', static_cast<unsigned char>(65)), "c65");
  const std::string s = "str";
  const std::string_view v = "view";
  const char* null_text = nullptr;
  EXPECT_EQ(acc::format("{} {} {} {}", s, v, "literal", null_text), "str view literal (null)");
  // Anything operator<< writes is formatted as that text: a device, a tensor.
  EXPECT_EQ(acc::format("[{:>5}]", c10::Device(c10::kCPU)), "[  cpu]");
  const at::Tensor t = at::ones({2}, at::kLong);
  std::ostringstream written;
  written << t;
  EXPECT_EQ(acc::format("{}", t), written.str());
  EXPECT_EQ(acc::format("{}", acc::MixedPrecision::BF16), "2") << "an enum formats as its value";
}

// Every error is an InvalidArgument that names the format string.
TEST(Format, MalformedStringsAndWrongArgumentCountsAreErrors) {
  auto expect_error = [](auto fn, const std::string& format_string, const std::string& part) {
    try {
      fn();
      ADD_FAILURE() << "no error for \"" << format_string << "\"";
    } catch (const acc::InvalidArgument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("accelerate: format: the format string \"" + format_string + "\""),
                std::string::npos)
          << what;
      EXPECT_NE(what.find(part), std::string::npos) << what;
    }
  };
  expect_error([] { acc::format("epoch {} loss {}", 1); }, "epoch {} loss {}",
               "needs 2 arguments but was given 1");
  expect_error([] { acc::format("{}"); }, "{}", "needs 1 argument but was given 0");
  expect_error([] { acc::format("{2}", 1, 2); }, "{2}", "needs 3 arguments but was given 2");
  expect_error([] { acc::format("{}", 1, 2); }, "{}", "uses 1 argument but was given 2");
  expect_error([] { acc::format("plain", 1); }, "plain", "uses 0 arguments but was given 1");
  expect_error([] { acc::format("{:>{}}", "a", 3, 4); }, "{:>{}}",
               "uses 2 arguments but was given 3");
  for (const std::string bad : {"{", "}", "a { b", "{:", "{0", "x}y"})
    expect_error([&] { acc::format(bad, 1); }, bad, "is malformed");
  expect_error([] { acc::format("{:.2f}", "text"); }, "{:.2f}", "does not fit its 1 argument");
  expect_error([] { acc::format("{:d}", 1.5); }, "{:d}", "is malformed");
  // As fmt (not Python): no precision for an integer.
  expect_error([] { acc::format("{:.1f}", 7); }, "{:.1f}", "is malformed");
  expect_error([] { acc::format("{:q}", 1); }, "{:q}", "is malformed");
  expect_error([] { acc::format("{0} {}", 1, 2); }, "{0} {}", "is malformed");
  // Also through the standard base class.
  EXPECT_THROW(acc::format("{:z}", 1), std::invalid_argument);
}
