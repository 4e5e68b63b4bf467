// Runs the exact CPU solver (csrc/cpu/lap_exact.cpp) on cost files, for instruction counting
// under callgrind. File format: int64 n, int64 m, then n*m float64, row-major.
// Prints each file's optimal total and first column, so that two builds can be compared.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "cpu/lap_solvers.h"

int main(int argc, char** argv) {
  for (int a = 1; a < argc; ++a) {
    FILE* f = std::fopen(argv[a], "rb");
    if (f == nullptr) return 2;
    int64_t shape[2];
    if (std::fread(shape, sizeof(int64_t), 2, f) != 2) return 2;
    std::vector<double> cost(static_cast<size_t>(shape[0] * shape[1]));
    if (std::fread(cost.data(), sizeof(double), cost.size(), f) != cost.size()) return 2;
    std::fclose(f);
    std::vector<int64_t> row_to_col(static_cast<size_t>(shape[0]));
    immiscible::cpu::solve_lap_exact(cost.data(), shape[0], shape[1], row_to_col.data());
    double total = 0;
    for (int64_t i = 0; i < shape[0]; ++i) total += cost[i * shape[1] + row_to_col[i]];
    std::printf("%s total=%.17g first=%lld\n", argv[a], total, static_cast<long long>(row_to_col[0]));
  }
  return 0;
}
