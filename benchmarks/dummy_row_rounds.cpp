// Round counter for the dummy-row CUDA auction that the forward/reverse one replaced (git
// 8eef8fa, csrc/cuda/auction.cuh): the problem squared with M - N zero-cost dummy rows, forward
// Jacobi rounds only. A sequential replica of that kernel's rounds (same float32 arithmetic,
// same bid rule, tie rules, eps schedule and stopping test; a Jacobi round's outcome does not
// depend on the order of its bids), used for docs/PERF.md because the thread-per-GPU-thread
// emulation is far too slow for the tens of thousands of rounds that version needs.
// Checked round-for-round against the emulated old kernel on small problems (docs/PERF.md).
//
//   g++ -std=c++20 -O2 -o dummy_row_rounds benchmarks/dummy_row_rounds.cpp
//   dummy_row_rounds COST.f32 N M   (COST.f32: raw float32 [N, M]) -> prints rounds and total
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr float kEpsDivisor = 7.0f;
constexpr int kMaxPhases = 64;
constexpr float kEpsFloorScale = 4.76837158203125e-07f;

unsigned bits(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
float from_bits(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

struct Result {
  long long rounds = 0;
  double total = 0;
  bool complete = true;
};

Result solve(const std::vector<float>& cost, int n, int m) {
  float lo = INFINITY, hi = -INFINITY, integral = 1.0f;
  for (float c : cost) {
    if (c == INFINITY) continue;
    lo = fminf(lo, c);
    hi = fmaxf(hi, c);
    if (c != rintf(c)) integral = 0.0f;
  }
  if (lo == INFINITY) lo = hi = 0.0f;
  const float range = hi - lo;
  const float penalty = static_cast<float>((static_cast<double>(range) + 1.0) * (m + 1));
  auto at = [&](int i, int j) -> float {
    if (i >= n) return 0.0f;
    const float c = cost[static_cast<size_t>(i) * m + j];
    return c == INFINITY ? penalty : c - lo;
  };
  const int64_t cap64 = 64 * static_cast<int64_t>(m) + 100000;
  const int max_rounds = static_cast<int>(cap64 < INT32_MAX / 2 ? cap64 : INT32_MAX / 2);
  std::vector<float> price(m, 0.0f);
  std::vector<int> owner(m), x(m), target(m);
  std::vector<unsigned long long> key(m);
  const float scale = range > 0.0f ? range : 1.0f;
  const float eps_floor = scale * kEpsFloorScale;
  float eps = scale / 4.0f;
  Result out;
  for (int phase = 0; phase < kMaxPhases; ++phase) {
    std::fill(owner.begin(), owner.end(), -1);
    std::fill(x.begin(), x.end(), -1);
    std::vector<int> list(m), next;
    for (int j = 0; j < m; ++j) list[j] = j;
    int round = 0;
    for (;; ++round) {
      if (list.empty()) break;
      if (round >= max_rounds) {
        out.complete = false;
        break;
      }
      std::fill(key.begin(), key.end(), 0ull);
      for (int row : list) {
        float best = INFINITY, second = INFINITY;
        int col = 0;
        for (int j = 0; j < m; ++j) {
          const float t = at(row, j) + price[j];
          if (t < second) {
            if (t < best) {
              second = best;
              best = t;
              col = j;
            } else {
              second = t;
            }
          }
        }
        const float old = price[col];
        const float step = (second == INFINITY ? 0.0f : second - best) + eps;
        float bid = old + step;
        if (!(bid > old)) bid = nextafterf(old, INFINITY);
        target[row] = col;
        const unsigned long long k =
            (static_cast<unsigned long long>(bits(bid)) << 32) | static_cast<unsigned>(~row);
        if (k > key[col]) key[col] = k;
      }
      next.clear();
      for (int row : list)
        if (static_cast<unsigned>(key[target[row]]) != static_cast<unsigned>(~row)) next.push_back(row);
      for (int j = 0; j < m; ++j) {
        if (key[j] == 0ull) continue;
        const int row = ~static_cast<int>(static_cast<unsigned>(key[j]));
        if (owner[j] >= 0) {
          x[owner[j]] = -1;
          next.push_back(owner[j]);
        }
        owner[j] = row;
        x[row] = j;
        price[j] = from_bits(static_cast<unsigned>(key[j] >> 32));
      }
      list.swap(next);
    }
    out.rounds += round;
    if (!out.complete) {  // as the kernel did: complete the assignment greedily
      int free_col = 0;
      for (int i = 0; i < m; ++i) {
        if (x[i] >= 0) continue;
        while (owner[free_col] >= 0) ++free_col;
        owner[free_col] = i;
        x[i] = free_col;
      }
      break;
    }
    double primal = 0.0, dual = 0.0;
    float pmin = INFINITY;
    for (int i = 0; i < m; ++i) {
      float best = INFINITY;
      for (int j = 0; j < m; ++j) best = fminf(best, at(i, j) + price[j]);
      dual += best;
      primal += at(i, x[i]);
    }
    for (int j = 0; j < m; ++j) {
      dual -= price[j];
      pmin = fminf(pmin, price[j]);
    }
    for (int j = 0; j < m; ++j) price[j] -= pmin;
    const double gap = primal - dual;
    const double total_cost = primal + static_cast<double>(n) * lo;
    double target_gap = 1e-6 * std::fabs(total_cost);
    if (integral == 1.0f) target_gap = std::fmin(target_gap, 0.5);
    if (gap <= target_gap || eps <= eps_floor) break;
    eps = fmaxf(fminf(eps, static_cast<float>(gap / m)) / kEpsDivisor, eps_floor);
  }
  for (int i = 0; i < n; ++i) out.total += cost[static_cast<size_t>(i) * m + x[i]];
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s COST.f32 N M\n", argv[0]);
    return 2;
  }
  const int n = std::atoi(argv[2]), m = std::atoi(argv[3]);
  std::vector<float> cost(static_cast<size_t>(n) * m);
  FILE* f = std::fopen(argv[1], "rb");
  if (f == nullptr || std::fread(cost.data(), sizeof(float), cost.size(), f) != cost.size()) {
    std::fprintf(stderr, "cannot read %zu floats from %s\n", cost.size(), argv[1]);
    return 2;
  }
  std::fclose(f);
  const Result r = solve(cost, n, m);
  std::printf("rounds=%lld total=%.9g complete=%d\n", r.rounds, r.total, r.complete ? 1 : 0);
  return 0;
}
