// bench_empty_torch: linked against LibTorch and touching it once, so that its shared
// libraries are loaded and statically initialised; prints when main() starts.
#include <ATen/ATen.h>

#include "common.h"

int main() {
  bench::stamp("main");
  return at::get_num_threads() > 0 ? 0 : 1;
}
