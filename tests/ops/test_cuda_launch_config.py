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
MAX_DYNAMIC_SMEM = 44 * 1024


@pytest.mark.parametrize("m", [1, 2, 3, 7, 64, 255, 256, 1023, 1024, 1100, 1200, 4097, 1 << 20])
def test_state_bytes_cover_the_layout(m):
    used = lib.immiscible_launch_state_layout_end(m)
    size = lib.immiscible_launch_state_bytes(m)
    assert used <= size <= used + 16
    assert size % 8 == 0  # the per-problem workspace slices stay 8-byte aligned


def test_state_in_shared_memory_up_to_44_kib():
    assert lib.immiscible_launch_state_in_smem(1)
    sizes = {m: lib.immiscible_launch_state_bytes(m) for m in range(1, 2000)}
    last_in = max(m for m, s in sizes.items() if s <= MAX_DYNAMIC_SMEM)
    assert 1000 < last_in < 1200  # the "about 1100 columns" of docs/GPU.md
    for m in (last_in - 1, last_in, last_in + 1, last_in + 2):
        assert lib.immiscible_launch_state_in_smem(m) == (sizes[m] <= MAX_DYNAMIC_SMEM)


@pytest.mark.parametrize("m,threads", [(1, 128), (128, 128), (129, 256), (512, 256), (513, 512),
                                       (100000, 512)])
def test_block_threads(m, threads):
    assert lib.immiscible_launch_block_threads(m) == threads


def test_parse_mode():
    assert lib.immiscible_launch_parse_mode(b"block") == BLOCK
    assert lib.immiscible_launch_parse_mode(b"grid") == GRID
    assert lib.immiscible_launch_parse_mode(None) == AUTO
    assert lib.immiscible_launch_parse_mode(b"Grid") == AUTO
    assert lib.immiscible_launch_parse_mode(b"") == AUTO


@pytest.mark.parametrize("m,problems,sms,cooperative,expected", [
    (1024, 1, 132, 1, GRID),     # one large problem: the whole GPU
    (1023, 1, 132, 1, BLOCK),    # below the grid threshold
    (4096, 33, 132, 1, GRID),    # 4 * 33 = 132 SMs: still grid
    (4096, 34, 132, 1, BLOCK),   # more problems than a quarter of the SMs
    (16384, 1, 132, 0, BLOCK),   # no cooperative launch: never grid
])
def test_choose_mode_auto(m, problems, sms, cooperative, expected):
    assert lib.immiscible_launch_choose_mode(AUTO, m, problems, sms, cooperative) == expected


def test_choose_mode_forced():
    assert lib.immiscible_launch_choose_mode(GRID, 16, 1000, 132, 1) == GRID
    assert lib.immiscible_launch_choose_mode(BLOCK, 16384, 1, 132, 1) == BLOCK
    assert lib.immiscible_launch_choose_mode(GRID, 16384, 1, 132, 0) == BLOCK


def test_grid_blocks_and_round_cap():
    assert lib.immiscible_launch_grid_blocks(2, 132) == 264
    assert lib.immiscible_launch_grid_blocks(0, 132) == 0  # the launcher refuses this case
    assert lib.immiscible_launch_max_rounds(1) == 100064
    assert lib.immiscible_launch_max_rounds(1 << 29) == (2**31 - 1) // 2


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
