#!/usr/bin/env bash
# ThreadSanitizer over the CUDA auction's own source (csrc/cuda/auction.cuh) run through the host
# shim (csrc/host_emulation/): builds the small driver with -fsanitize=thread and fails on any
# report or wrong answer. Needs g++ >= 11 (C++20 std::barrier) with libtsan.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${TSAN_BUILD_DIR:-build/tsan}
mkdir -p "$out"
"${CXX:-g++}" -std=c++20 -O1 -g -fsanitize=thread -pthread -Wall -Wno-unknown-pragmas -Icsrc \
  csrc/host_emulation/tsan_driver.cpp csrc/host_emulation/auction_host.cpp -o "$out/tsan_auction"

log="$out/tsan_auction.log"
# halt_on_error: the first race fails the step; the exit code is then TSan's (66).
if ! TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
    "$out/tsan_auction" >"$log" 2>&1; then
  cat "$log"
  echo "tsan_auction: FAILED (race report or wrong answer above)" >&2
  exit 1
fi
if grep -q "ThreadSanitizer" "$log"; then
  cat "$log"
  echo "tsan_auction: FAILED (ThreadSanitizer report)" >&2
  exit 1
fi
cat "$log"
echo "tsan_auction: clean"
