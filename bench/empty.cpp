// bench_empty: no LibTorch: process creation and the launcher alone; prints when main() starts.
#include <cstdio>
#include <ctime>

int main() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  std::printf("STAMP main %.6f\n", ts.tv_sec + 1e-9 * ts.tv_nsec);
  return 0;
}
