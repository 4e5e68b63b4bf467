"""The CUDA launcher's decisions (csrc/cuda/launch_config.h: shared-memory size, threads per block,
block vs grid regime, grid size, round cap), through the host emulation module that compiles the
same header."""

import pytest

testing = pytest.importorskip("immiscible_ops.testing")
try:
    lib = testing.launch_config()
except RuntimeError as error:  # pragma: no cover
    pytest.skip(str(error), allow_module_level=True)

AUTO, BLOCK, GRID = 0, 1, 2
# CUDA's default shared memory per block without an opt-in: the hardware's limit, not ours.
DEFAULT_SMEM = 48 * 1024
H100_SMS = 132


@pytest.mark.parametrize("m", [1, 2, 3, 7, 64, 255, 256, 1023, 1024, 1100, 1200, 4097, 1 << 20])
def test_state_bytes_cover_the_layout(m):
    # layout_end is where carve_state (auction.cuh) puts the end of its last array.
    used = lib.immiscible_launch_state_layout_end(m)
    size = lib.immiscible_launch_state_bytes(m)
    assert used <= size <= used + 16
    assert size % 8 == 0  # the per-problem workspace slices stay 8-byte aligned


def test_state_leaves_shared_memory_once_and_for_good():
    fits = [bool(lib.immiscible_launch_state_in_smem(m)) for m in range(1, 4000)]
    switch = fits.index(False) + 1  # first m whose state goes to global memory
    assert fits[0] and all(fits[:switch - 1]) and not any(fits[switch - 1:])
    # What stays in shared memory fits under the default limit with room for the static scratch.
    assert lib.immiscible_launch_state_bytes(switch - 1) < DEFAULT_SMEM
    assert 1000 < switch < 1200  # the "about 1100 columns" of docs/GPU.md


def test_block_threads_are_whole_warps_within_cuda_limits():
    threads = [lib.immiscible_launch_block_threads(m) for m in range(1, 5000, 7)]
    assert all(t % 32 == 0 and 32 <= t <= 1024 for t in threads)
    assert threads == sorted(threads)  # more columns never get fewer threads


def test_parse_mode():
    assert lib.immiscible_launch_parse_mode(b"block") == BLOCK
    assert lib.immiscible_launch_parse_mode(b"grid") == GRID
    assert lib.immiscible_launch_parse_mode(None) == AUTO
    assert lib.immiscible_launch_parse_mode(b"Grid") == AUTO
    assert lib.immiscible_launch_parse_mode(b"") == AUTO


def test_auto_mode_grid_for_one_large_problem_block_for_many_small():
    choose = lib.immiscible_launch_choose_mode
    assert choose(AUTO, 4096, 1, H100_SMS, 1) == GRID
    assert choose(AUTO, 64, 1000, H100_SMS, 1) == BLOCK
    assert choose(AUTO, 4096, 1000, H100_SMS, 1) == BLOCK  # many large ones: a block each
    assert choose(AUTO, 64, 1, H100_SMS, 1) == BLOCK  # grid barriers cost more than they give


@pytest.mark.parametrize("m", [64, 1000, 1023, 1024, 1025, 4096, 1 << 16])
@pytest.mark.parametrize("problems", [1, 2, 32, 33, 34, 1000])
def test_auto_mode_is_monotone(m, problems):
    choose = lib.immiscible_launch_choose_mode
    if choose(AUTO, m, problems, H100_SMS, 1) == GRID:
        assert choose(AUTO, 2 * m, problems, H100_SMS, 1) == GRID  # larger problems too
        assert choose(AUTO, m, max(1, problems - 1), H100_SMS, 1) == GRID  # fewer of them too
        assert choose(AUTO, m, problems, 2 * H100_SMS, 1) == GRID  # on a larger GPU too


@pytest.mark.parametrize("forced", [AUTO, BLOCK, GRID])
@pytest.mark.parametrize("m,problems", [(16, 1000), (16384, 1), (4096, 8)])
def test_forced_mode_honoured_and_grid_needs_cooperative_launch(forced, m, problems):
    choose = lib.immiscible_launch_choose_mode
    assert choose(forced, m, problems, H100_SMS, 0) == BLOCK
    if forced != AUTO:
        assert choose(forced, m, problems, H100_SMS, 1) == forced


def test_round_cap_grows_with_size_and_never_overflows():
    sizes = (1, 10, 1 << 10, 1 << 20, 1 << 29, 1 << 40)
    caps = [lib.immiscible_launch_max_rounds(m) for m in sizes]
    assert caps == sorted(caps)
    # An auction needs at least one round per row it assigns; two phases' caps add up in int32.
    assert all(cap >= m for cap, m in zip(caps[:4], sizes[:4], strict=True))
    assert 2 * max(caps) < 2**31


@pytest.mark.parametrize("error,falls_back", [
    (720, True),   # cudaErrorCooperativeLaunchTooLarge: the grid cannot be resident (MPS limits)
    (801, True),   # cudaErrorNotSupported: no cooperative launch on this device or mode
    (0, False),
    (2, False),    # cudaErrorMemoryAllocation: a real error
    (98, False),   # cudaErrorInvalidDeviceFunction
    (700, False),  # cudaErrorIllegalAddress: sticky, never retried
])
def test_refused_cooperative_launch_falls_back_to_block_mode(error, falls_back):
    assert bool(lib.immiscible_launch_grid_falls_back(error)) is falls_back
