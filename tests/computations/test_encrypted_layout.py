"""The slot algebra of the packed group sum, on plaintext numpy arrays: every slot of
every reply ciphertext is one group pair's full sum (or zero), for any shape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computations._encrypted._layout import (
    Block,
    PlainSlots,
    channel_count,
    diagonal_masks,
    packed_sums,
    places,
    plan,
)
from indomain.errors import InternalError


def _model(values: np.ndarray, bits: np.ndarray, slots: int) -> tuple[list[np.ndarray], list]:
    chunks = max(1, -(-len(values) // slots))
    padded = np.zeros(chunks * slots, dtype=np.complex128)
    padded[: len(values)] = values
    arithmetic = PlainSlots([padded[k * slots : (k + 1) * slots] for k in range(chunks)])
    return packed_sums(arithmetic, bits, chunks=chunks, slots=slots)


@settings(max_examples=200, deadline=None)
@given(
    log_slots=st.integers(0, 6),
    groups=st.integers(1, 9),
    items=st.integers(0, 200),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_slot_holds_a_full_group_sum(
    log_slots: int, groups: int, items: int, seed: int
) -> None:
    slots = 1 << log_slots
    if channel_count(groups) > slots:
        return  # plan refuses it (tested below)
    rng = np.random.default_rng(seed)
    # Complex values: what a malicious enterprise may encrypt; integers keep it exact.
    values = rng.integers(-50, 50, items) + 1j * rng.integers(-50, 50, items)
    bits = rng.integers(0, 2, (items, groups)).astype(bool)
    outs, where = _model(values, bits, slots)
    blocks = plan(groups, slots, max(1, -(-items // slots)))
    assert len(outs) == len(blocks)
    expected_channels = [
        (values * bits[:, 2 * h]).sum()
        + (1j * (values * bits[:, 2 * h + 1]).sum() if 2 * h + 1 < groups else 0)
        for h in range(channel_count(groups))
    ]
    for block, out in zip(blocks, outs, strict=True):
        for t in range(slots):
            h = t % block.period
            want = expected_channels[block.first + h] if h < block.channels else 0
            assert out[t] == pytest.approx(want, abs=1e-9)
    # For real values the named part of the named slot is each group's sum.
    real = values.real
    outs, where = _model(real, bits, slots)
    for g, place in enumerate(where):
        slot = outs[place.block][place.slot]
        got = slot.real if place.part == "real" else slot.imag
        assert got == pytest.approx((real * bits[:, g]).sum(), abs=1e-9)


def test_the_diagonal_masks_pick_channel_s_minus_d() -> None:
    rows = np.arange(8 * 3).reshape(8, 3) + 1.0
    masks = diagonal_masks(rows, 4)
    for d in range(4):
        for s in range(8):
            channel = (s - d) % 4
            assert masks[d, s] == (rows[s, channel] if channel < 3 else 0)


def test_a_group_nobody_reported_sums_to_zero() -> None:
    outs, _ = _model(np.arange(10.0), np.zeros((10, 3), dtype=bool), 8)
    assert all(not out.any() for out in outs)


def test_the_plan_for_the_benchmark_shape() -> None:
    """10 groups are 5 channels; over 25 chunks of 4096 slots the binary split (4 + 1)
    costs 125 products and 25 rotations against 200 and 16 padded to 8."""
    assert plan(10, 4096, 25) == (Block(0, 4, 4), Block(4, 1, 1))
    assert plan(10, 4096, 1) == (Block(0, 5, 8),)
    assert plan(2, 4096, 25) == (Block(0, 1, 1),)
    assert [(p.block, p.slot, p.part) for p in places(3, plan(3, 16, 1))] == [
        (0, 0, "real"),
        (0, 0, "imag"),
        (0, 1, "real"),
    ]


def test_impossible_layouts_are_refused() -> None:
    with pytest.raises(InternalError):
        plan(9, 4, 1)  # five channels in four slots
    with pytest.raises(InternalError):
        plan(2, 6, 1)
    with pytest.raises(InternalError):
        Block(0, 3, 3)
