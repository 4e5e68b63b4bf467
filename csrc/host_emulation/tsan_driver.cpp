// Race check of the CUDA auction through the host shim: built with -fsanitize=thread by
// .ci/tsan_auction.sh. Runs a small matrix (both worker groups, square, rectangular, +inf,
// ties, NaN) and checks every answer against brute force; ThreadSanitizer reports any race.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "host_emulation/auction_host.h"

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Optimal total of an n x m problem (n <= 7) by trying every injective row -> column map.
double brute_force(const std::vector<float>& c, int n, int m) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<int> cols(m);
  for (int j = 0; j < m; ++j) cols[j] = j;
  // Every permutation of the m columns, its first n entries as the assignment; repeats are fine.
  do {
    double t = 0;
    for (int i = 0; i < n; ++i) t += c[i * m + cols[i]];
    best = std::min(best, t);
    std::reverse(cols.begin() + n, cols.end());  // skip orderings of the unused tail
  } while (std::next_permutation(cols.begin(), cols.end()));
  return best;
}

struct Case {
  std::string name;
  int problems, n, m;
  std::vector<float> cost;
  int want_status;
};

std::vector<Case> matrix() {
  std::mt19937 rng(12345);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<Case> cases;
  auto make = [&](std::string name, int problems, int n, int m, int want) {
    Case k{std::move(name), problems, n, m, std::vector<float>(size_t(problems) * n * m), want};
    for (auto& v : k.cost) v = uniform(rng);
    return k;
  };
  cases.push_back(make("uniform 3x6x6", 3, 6, 6, 0));
  cases.push_back(make("rectangular 2x5x8", 2, 5, 8, 0));
  cases.push_back(make("wide 2x4x24", 2, 4, 24, 0));
  Case wide_ties = make("wide ties 2x5x12", 2, 5, 12, 0);
  for (auto& v : wide_ties.cost) v = std::floor(v * 3.0f);
  cases.push_back(wide_ties);
  Case ties = make("ties 2x6x6", 2, 6, 6, 0);
  for (auto& v : ties.cost) v = std::floor(v * 3.0f);
  cases.push_back(ties);
  // Integers 0..1, seven in eight of them 0: a row's minimum repeats about 10 times in 12, so
  // eps starts at its floor (entries_at_row_minima). Small enough for the brute force.
  Case few_values = make("few values 2x5x12", 2, 5, 12, 0);
  for (auto& v : few_values.cost) v = std::floor(v * 1.15f);
  cases.push_back(few_values);
  Case inf = make("inf feasible 2x6x7", 2, 6, 7, 0);
  for (int p = 0; p < 2; ++p)
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 7; ++j)
        if (j != (i + p) % 7 && uniform(rng) < 0.6f) inf.cost[(p * 6 + i) * 7 + j] = kInf;
  cases.push_back(inf);
  Case infeasible = make("inf infeasible 1x5x6", 1, 5, 6, 1);
  for (int j = 0; j < 6; ++j) infeasible.cost[2 * 6 + j] = kInf;
  cases.push_back(infeasible);
  Case nan = make("nan 1x4x4", 1, 4, 4, 2);
  nan.cost[5] = std::numeric_limits<float>::quiet_NaN();
  cases.push_back(nan);
  return cases;
}

}  // namespace

int main() {
  int failures = 0;
  struct Launch {
    int grid, threads, blocks;
  };
  const Launch launches[] = {{0, 64, 2}, {1, 64, 2}, {1, 64, 3}};
  for (const Case& k : matrix()) {
    for (const Launch& l : launches) {
      std::vector<int64_t> row_to_col(size_t(k.problems) * k.n, -7);
      std::vector<int32_t> status(k.problems, -7), rounds(2 * k.problems, -7);
      const int rc = immiscible_auction_on_host(k.cost.data(), k.problems, k.n, k.m, l.grid,
                                                l.threads, l.blocks, -1.0f, 0, row_to_col.data(),
                                                status.data(), rounds.data());
      for (int p = 0; p < k.problems && rc == 0; ++p) {
        bool ok = status[p] == k.want_status;
        if (ok && k.want_status == 0) {
          const float* c = k.cost.data() + size_t(p) * k.n * k.m;
          std::vector<char> used(k.m, 0);
          double got = 0;
          for (int i = 0; i < k.n && ok; ++i) {
            const int64_t j = row_to_col[size_t(p) * k.n + i];
            ok = j >= 0 && j < k.m && !used[j];
            if (ok) used[j] = 1, got += c[i * k.m + j];
          }
          const std::vector<float> one(c, c + size_t(k.n) * k.m);
          const double best = brute_force(one, k.n, k.m);
          ok = ok && got <= best + 1e-5 * std::max(1.0, std::fabs(best));
        }
        if (!ok) {
          std::printf("FAIL %s grid=%d threads=%d blocks=%d problem %d status %d\n",
                      k.name.c_str(), l.grid, l.threads, l.blocks, p, status[p]);
          ++failures;
        }
      }
      if (rc != 0) {
        std::printf("FAIL %s: launcher returned %d\n", k.name.c_str(), rc);
        ++failures;
      }
    }
    std::printf("ok %s\n", k.name.c_str());
  }
  std::printf(failures ? "%d failures\n" : "all cases solved\n", failures);
  return failures ? 1 : 0;
}
