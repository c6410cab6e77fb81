"""Where each group's sum lands in the reply: channels, diagonal blocks and the slot
algebra of the packed group sum, written once over a narrow arithmetic interface.

The same :func:`block_sum` runs on numpy arrays (:class:`PlainSlots`, the model the tests
check against direct sums) and on CKKS ciphertexts (``computations/_he/_seal.py``).

**Channels.** CKKS slots are complex, so one mask carries two groups: channel ``h`` has
the report bits of group ``2h`` as its real part and of group ``2h + 1`` as its imaginary
part (``H = ⌈G/2⌉`` channels). For real values ``v``, ``Σ v_i (a_i + j b_i)`` holds both
groups' sums; whatever the enterprise encrypted, each part is a fixed linear function of
the reports (post-processing).

**Diagonal block of period P** (a power of two dividing the slot count ``S``, carrying up
to ``P`` channels). Chunk ``k`` holds items ``kS … kS + S − 1``; for ``d = 0 … P − 1`` the
mask ``M_{k,d}[s]`` is channel ``(s − d) mod P`` of item ``kS + s`` (zero for a channel the
block does not carry), and::

    z_d = Σ_k  x_k ⊙ M_{k,d}            (plaintext products)
    y   = Σ_d  rot(z_d, d)              (Horner: y ← rot(y, 1) + z_d, P − 1 rotations)
    out = Σ_j  rot(y, P·j)              (rotate-and-add by P, 2P, …, S/2)

with ``rot(x, r)[t] = x[(t + r) mod S]``. Slot ``t`` of ``y`` collects, from every slot
``u = t + d``, channel ``t mod P`` (``(u − d) mod P = t mod P``); the last step adds the
slots ``≡ t (mod P)``, and as ``t + d`` runs over them and ``d`` over ``0 … P − 1``, ``u``
meets every slot exactly once. So ``out[t]`` is channel ``t mod P``'s full sum
``Σ_i v_i·C_i[t mod P]``, in *every* slot: each slot is a copy of one channel's total (or
zero, for a channel the block does not carry), never a partial sum.

**Plan.** A block of period ``P`` costs ``K·P`` plaintext products and
``P − 1 + log₂(S/P)`` rotations. :func:`plan` either pads the ``H`` channels to one block
of the next power of two, or splits ``H`` into its binary digits (one block, hence one
ciphertext, per digit), whichever its cost model says is cheaper; the choice depends only
on the public ``G``, ``S`` and ``K``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeVar

import numpy as np

from indomain.errors import InternalError

#: One rotation (key switch) costs about this many plaintext products (encode, multiply,
#: add); measured with SEAL through TenSEAL at n = 8192: 2.5 (one prime) to 3 (three).
ROTATION_COST: Final = 3.0

Value = TypeVar("Value")


class SlotArithmetic(Protocol[Value]):
    """What :func:`block_sum` needs: products of the chunks with plaintext masks, sums,
    rotations (``rotate(x, r)[t] = x[(t + r) mod S]``) and a zero."""

    def product(self, chunk: int, mask: np.ndarray) -> Value: ...

    def add(self, into: Value, other: Value) -> Value: ...

    def rotate(self, value: Value, steps: int) -> Value: ...

    def zero(self) -> Value: ...


@dataclass(frozen=True)
class Block:
    """Channels ``first … first + channels − 1``, summed with period ``period``."""

    first: int
    channels: int
    period: int

    def __post_init__(self) -> None:
        if not (self.period >= 1 and self.period & (self.period - 1) == 0):
            raise InternalError("a block's period must be a power of two")
        if not 0 < self.channels <= self.period:
            raise InternalError("a block carries 1 to period channels")


@dataclass(frozen=True)
class Place:
    """Where group ``g``'s sum is: ``part`` of slot ``slot`` of ciphertext ``block`` (and
    of every slot congruent to it modulo that block's period)."""

    block: int
    slot: int
    part: Literal["real", "imag"]


def rotation_steps(slots: int) -> list[int]:
    """The left rotations :func:`block_sum` may use: every power of two below ``slots``
    (the Galois keys the enterprise must send, and all it need send)."""
    return [1 << i for i in range(max(0, slots.bit_length() - 1))]


def channel_count(groups: int) -> int:
    """``⌈groups / 2⌉``: two groups per complex channel."""
    return (groups + 1) // 2


def _blocks_cost(blocks: Sequence[Block], slots: int, chunks: int) -> float:
    return sum(
        chunks * b.period + ROTATION_COST * (b.period - 1 + math.log2(slots // b.period))
        for b in blocks
    )


def plan(groups: int, slots: int, chunks: int) -> tuple[Block, ...]:
    """The blocks for ``groups`` groups, ``slots`` slots per ciphertext and ``chunks``
    ciphertexts (module docstring). Raises :class:`InternalError` if the channels do not
    fit in the slots or ``slots`` is not a power of two."""
    if groups < 1 or chunks < 1 or slots < 1 or slots & (slots - 1):
        raise InternalError("a layout needs groups, chunks and a power-of-two slot count")
    channels = channel_count(groups)
    padded = 1 << (channels - 1).bit_length()
    if padded > slots:
        raise InternalError("more groups than the ciphertext has slots for")
    one = (Block(0, channels, padded),)
    digits: list[Block] = []
    first = 0
    for bit in reversed(range(channels.bit_length())):
        if channels >> bit & 1:
            digits.append(Block(first, 1 << bit, 1 << bit))
            first += 1 << bit
    split = tuple(digits)
    return one if _blocks_cost(one, slots, chunks) <= _blocks_cost(split, slots, chunks) else split


def places(groups: int, blocks: Sequence[Block]) -> list[Place]:
    """Per group, where its sum is under ``blocks``."""
    out = []
    for g in range(groups):
        channel = g // 2
        for index, block in enumerate(blocks):
            if block.first <= channel < block.first + block.channels:
                out.append(Place(index, channel - block.first, "imag" if g % 2 else "real"))
                break
        else:
            raise InternalError("a group has no block")
    return out


def channels(bits: np.ndarray) -> np.ndarray:
    """The ``n × ⌈G/2⌉`` complex channels of ``n × G`` 0/1 report ``bits``."""
    n, groups = bits.shape
    out = np.zeros((n, channel_count(groups)), dtype=np.complex128)
    out[:, :] = bits[:, 0::2]
    out[:, : groups // 2] += 1j * bits[:, 1::2]
    return out


def diagonal_masks(rows: np.ndarray, period: int) -> np.ndarray:
    """The ``period × S`` masks of one chunk: ``M[d, s] = rows[s, (s − d) mod period]``,
    zero where that channel is past ``rows``' columns (``rows``: ``S × c``, ``c ≤ period``)."""
    slots, carried = rows.shape
    padded = np.zeros((slots, period), dtype=np.complex128)
    padded[:, :carried] = rows
    s = np.arange(slots)
    masks: np.ndarray = padded[s[None, :], (s[None, :] - np.arange(period)[:, None]) % period]
    return masks


def block_sum(
    arithmetic: SlotArithmetic[Value],
    masks_of: Callable[[int], np.ndarray],
    *,
    chunks: int,
    period: int,
    slots: int,
) -> Value:
    """``out`` of the module docstring for one block: ``masks_of(k)`` gives chunk ``k``'s
    ``period × S`` diagonal masks. An all-zero mask is skipped (a zero plaintext would
    make a transparent ciphertext); if every mask is zero the result is ``zero()``."""
    diagonals: list[Value | None] = [None] * period
    for k in range(chunks):
        masks = masks_of(k)
        for d in range(period):
            if not masks[d].any():
                continue
            product = arithmetic.product(k, masks[d])
            current = diagonals[d]
            diagonals[d] = product if current is None else arithmetic.add(current, product)
    total: Value | None = None
    for d in reversed(range(period)):
        if total is not None:
            total = arithmetic.rotate(total, 1)
        diagonal = diagonals[d]
        if diagonal is not None:
            total = diagonal if total is None else arithmetic.add(total, diagonal)
    if total is None:
        return arithmetic.zero()
    step = period
    while step < slots:
        total = arithmetic.add(total, arithmetic.rotate(total, step))
        step *= 2
    return total


def packed_sums(
    arithmetic: SlotArithmetic[Value], bits: np.ndarray, *, chunks: int, slots: int
) -> tuple[list[Value], list[Place]]:
    """Every block's ``out`` for the ``n × G`` report ``bits`` (item ``i`` in slot
    ``i mod S`` of chunk ``i div S``; rows past ``n`` are zero), and each group's place."""
    items, groups = bits.shape
    if items > chunks * slots:
        raise InternalError("more items than the chunks hold")
    blocks = plan(groups, slots, chunks)
    every = np.zeros((chunks * slots, channel_count(groups)), dtype=np.complex128)
    every[:items] = channels(bits)
    outs = []
    for block in blocks:
        carried = every[:, block.first : block.first + block.channels]

        def masks_of(
            k: int, carried: np.ndarray = carried, period: int = block.period
        ) -> np.ndarray:
            return diagonal_masks(carried[k * slots : (k + 1) * slots], period)

        outs.append(
            block_sum(arithmetic, masks_of, chunks=chunks, period=block.period, slots=slots)
        )
    return outs, places(groups, blocks)


class PlainSlots:
    """:class:`SlotArithmetic` on numpy arrays: the model of the encrypted computation."""

    def __init__(self, chunks: Sequence[np.ndarray]) -> None:
        self.chunks = [np.asarray(c, dtype=np.complex128) for c in chunks]

    def product(self, chunk: int, mask: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.chunks[chunk] * mask
        return out

    def add(self, into: np.ndarray, other: np.ndarray) -> np.ndarray:
        out: np.ndarray = into + other
        return out

    def rotate(self, value: np.ndarray, steps: int) -> np.ndarray:
        return np.roll(value, -steps)

    def zero(self) -> np.ndarray:
        return np.zeros_like(self.chunks[0])
