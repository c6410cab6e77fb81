"""Encrypted views: packed group sums against one ciphertext per row, PSI throughput per
side, and the accuracy of the debiased answers.

    python -m bench.encrypted_bench [--items 100000] [--groups 10] [--naive 1000]
                                    [--psi 20000] [--epsilon 1.0] [--small-ring]
                                    [--proof-lists 10]

1. ``encrypted_group_sum`` on ``--items`` matched items and ``--groups`` groups, CKKS
   n = 8192, coefficient modulus [60, 40, 40, 60], scale 2^40 (128-bit). End to end in one
   process: the enterprise encrypts its values as ``prepare_group_sum`` does (secret-key,
   seeded); the sandbox parses the public context (Galois keys for left rotations by
   powers of two, as the client sends it) and the vectors (the hygiene checks),
   randomises the memberships (``secrets`` draws, OpenDP's privacy map), multiplies
   complex masks, adds, rotates (``_layout.py``) and serialises; the enterprise decrypts
   and debiases. Wall and CPU seconds per stage (the machine may be shared). As in the
   enclave's pre-started workers, TenSEAL and OpenDP are imported before the clock starts
   (``warm_up``). A second row runs the same with modulus [60, 60, 60] (the products are
   never rescaled, so two data primes hold scale 2^80 and the sums; fewer primes make
   every step cheaper). ``--small-ring`` uses n = 4096, [35, 34, 40], scale 2^26 instead
   (the enterprise then scales its values to at most 1, since only 69 bits of modulus
   hold the products). HTTP, the worker start and PSI are not in this number (PSI is item
   2; the aggregate bench measures a job's fixed cost). Bytes on the wire: the values
   upload and the results; the public context is listed on its own, sent once per
   session. The baseline, measured in the same run on ``--naive`` rows and scaled
   linearly: one ciphertext per row, encrypted alike, serialised, parsed, added into its
   group's sum (no multiplication needed), the same randomisation.
2. PSI throughput in identifiers per second per side (``n`` / that side's total time,
   both sets of ``--psi`` identifiers), on one core and on every core (blinding forked
   per core, ``computations/_psi/_parallel.py``): the sandbox hashes and blinds its
   identifiers (the offer) and blinds the enterprise's request; the enterprise hashes and
   blinds its identifiers and re-blinds the offer; then the same with the shuffle proofs
   proved and verified. Beside them libsodium's cost per step and the ceiling it sets (two
   scalar multiplications and a hash per identifier per side). The shuffle proofs are
   also timed on their own: for the bench's shape (``--groups`` lists of the padded
   length for ``--items`` items, 16,384 by default), the enterprise proves and the
   sandbox verifies ``--proof-lists`` of them on one core (all of them by default; fewer
   are scaled up, and the table says so), with libsodium's scalar multiplication and
   point addition timed beside them (why no Pippenger sum: it trades a multiplication
   for many additions, and libsodium adds only encoded points).
3. Accuracy at ``--epsilon`` per report (the demo manifest's epsilon per job): per group,
   the debiased sum against the plaintext truth, and the standard deviation the result
   states; and the budget a job is charged: ``epsilon``, one report per person once the
   reply's shuffle proofs verify (docs/threat-model.md).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import resource
import secrets
import statistics
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

RINGS = {8192: ([60, 40, 40, 60], 2**40), 4096: ([35, 34, 40], 2**26)}
#: The same degree and scale with the modulus this computation needs: one product of scale
#: 2^80 that is never rescaled, plus the sums' ~30 bits, fits two 60-bit data primes.
LEAN_RING = ([60, 60, 60], 2**40)


def _context(degree: int, ring: tuple[list[int], int] | None = None) -> Any:
    """The enterprise's secret context (Galois keys are made for the upload, below)."""
    import tenseal as ts

    bits, scale = ring or RINGS[degree]
    context = ts.context(ts.SCHEME_TYPE.CKKS, degree, coeff_mod_bit_sizes=bits)
    context.global_scale = scale
    return context


class _Clock:
    """Wall and CPU seconds per stage (the machine is shared: CPU time says more)."""

    def __init__(self) -> None:
        self.stages: dict[str, tuple[float, float]] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, stage: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.stages[stage] = (wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu

    def total(self) -> tuple[float, float]:
        return (
            sum(w for w, _ in self.stages.values()),
            sum(c for _, c in self.stages.values()),
        )


def group_sum(
    items: int,
    groups: int,
    naive: int,
    epsilon: float,
    degree: int = 8192,
    ring: tuple[list[int], int] | None = None,
) -> dict[str, Any]:
    """Times, bytes and accuracy of one packed run and of the scaled naive baseline (on
    ``naive`` rows; none if 0), with the enterprise's side as ``prepare_group_sum`` and
    ``read_group_sums`` do it; ``ring`` (bits, scale) overrides ``RINGS[degree]``."""
    from computations import load_ckks_vector, load_public_context
    from computations._encrypted import debias_sum, frame_vectors, randomise, unframe_vectors
    from computations._encrypted._group_sum_job import ENCRYPTED_GROUP_SUM, answer
    from computations._encrypted._layout import rotation_steps
    from computations._he._seal import decrypt_slots, encrypt_chunks, public_context_bytes

    ENCRYPTED_GROUP_SUM.warm_up()  # what a pre-started enclave worker has done
    rng = np.random.default_rng(2026)
    values = rng.lognormal(mean=8.0, sigma=0.8, size=items).round(2)
    if degree == 4096:
        values = values / values.max()  # what the enterprise does for the small ring
    outcomes = rng.integers(1, groups + 1, size=items).tolist()  # every item matched
    secret = _context(degree, ring)
    slots = degree // 2
    context_bytes = public_context_bytes(secret, rotations=rotation_steps(slots))

    clock = _Clock()
    upload = frame_vectors(encrypt_chunks(secret, values.tolist()))
    clock.lap("encrypt")
    context = load_public_context(context_bytes)
    clock.lap("context")
    randomised, counts, sums = answer(
        outcomes,
        groups=groups,
        epsilon=epsilon,
        minimum=10,
        context=context,
        vectors=unframe_vectors(upload),
    )
    clock.lap("sandbox")
    results = list(sums.ciphertexts)
    slots_of = [decrypt_slots(secret, r) for r in results]
    decrypted = [float(getattr(slots_of[p.block][p.slot], p.part)) for p in sums.places]
    estimates = [
        debias_sum(
            d,
            total=float(values.sum()),
            total_of_squares=float((values**2).sum()),
            keep=randomised.keep,
            other=randomised.other,
        )
        for d in decrypted
    ]
    clock.lap("decrypt")
    total_s, total_cpu_s = clock.total()
    rr_start = time.perf_counter()
    randomise(outcomes, groups=groups, epsilon=epsilon)
    rr = time.perf_counter() - rr_start

    # The naive baseline: one ciphertext per row, on ``naive`` rows, encrypted alike.
    naive_start = time.perf_counter()
    rows = [encrypt_chunks(secret, [float(v)])[0] for v in values[:naive]]
    loaded = [load_ckks_vector(context, r) for r in rows]
    bits = randomise(outcomes[:naive], groups=groups, epsilon=epsilon).bits
    naive_results = []
    for g in range(groups):
        total = None
        for i, ciphertext in enumerate(loaded):
            if bits[i, g]:
                total = ciphertext if total is None else total + ciphertext
        if total is not None:
            naive_results.append(bytes(total.serialize()))
    for r in naive_results:
        decrypt_slots(secret, r)
    naive_s = time.perf_counter() - naive_start
    scale = items / naive if naive else 0.0
    truths = [float(values[np.asarray(outcomes) == g + 1].sum()) for g in range(groups)]
    return {
        "total_s": total_s,
        "total_cpu_s": total_cpu_s,
        **{f"{stage}_s": wall for stage, (wall, _) in clock.stages.items()},
        **{f"{stage}_cpu_s": cpu for stage, (_, cpu) in clock.stages.items()},
        "rr_s": rr,
        "upload_bytes": len(upload),
        "result_bytes": sum(len(r) for r in results),
        "context_bytes": len(context_bytes),
        "naive_s": naive_s * scale,
        "naive_bytes": (sum(len(r) for r in rows) + sum(len(r) for r in naive_results)) * scale,
        "relative_errors": [abs(e - t) / t for (e, _), t in zip(estimates, truths, strict=True)],
        "stated_sd": [math.sqrt(v) / t for (_, v), t in zip(estimates, truths, strict=True)],
        "counts": counts,
    }


def _clocks() -> tuple[float, float]:
    """Wall time and CPU time of this process and its reaped children (forked blinders)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return time.perf_counter(), me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _per_item_us(function: Any, items: list[Any], batches: int = 5) -> float:
    """CPU microseconds per item of ``function`` applied to a list, one process: the
    median over ``batches`` slices of ``items`` (the least mean caught moments of a
    quieter host, about a third under what a whole run sustains)."""
    size = max(1, len(items) // batches)
    means = []
    for k in range(0, len(items), size):
        chunk = items[k : k + size]
        start = time.process_time()
        function(chunk)
        means.append((time.process_time() - start) / len(chunk) * 1e6)
    return statistics.median(means)


def _psi_run(
    ids: list[bytes],
    groups: int,
    length: int,
    labels: list[str],
    proved: bool,
    shuffler: secrets.SystemRandom,
) -> dict[str, float]:
    """One session's work per side, with the code's default process counts: wall and CPU
    seconds (children included). Raises AssertionError if not every identifier matched."""
    from computations import PsiRequest
    from computations._psi import PsiClient, PsiOffer, PsiReblinded
    from computations._psi import _parallel as par
    from computations._psi._group import random_point, random_scalar
    from computations._psi._protocol import blind_distinct, reply_positions, verify_reply

    wall0, cpu0 = _clocks()
    # Sandbox, the psi job: hash, blind, one list per group, pad, shuffle.
    server_key = random_scalar()
    blinded = par.hash_and_blind(server_key, ids)
    lists = []
    for g in range(groups):
        mine = list(blinded[g::groups])
        mine += [random_point() for _ in range(length - len(mine))]
        shuffler.shuffle(mine)
        lists.append(tuple(mine))
    wall1, cpu1 = _clocks()
    # Enterprise: request, then the offer parsed and re-blinded (with proofs, the real
    # PsiClient.reblind; without, the re-blinding alone, shuffled).
    client = PsiClient(ids)
    request = client.request()
    offer = PsiOffer(tuple(lists), b"bench-session")
    if proved:
        reply = client.reblind(offer, labels=labels)
    else:
        # The client's own key (private): what reblind multiplies by, unproved.
        reblinded = par.blind_all(client._key, [p for group in offer.groups for p in group])
        shuffled = []
        for g in range(groups):
            part = list(reblinded[g * length : (g + 1) * length])
            shuffler.shuffle(part)
            shuffled.append(tuple(part))
        reply = PsiReblinded(tuple(shuffled))
    wall2, cpu2 = _clocks()
    # Sandbox, the group-sum job: parse both uploads, verify, blind the request, match.
    items = PsiRequest(request.items).items
    parsed = PsiReblinded(reply.groups, reply.key, reply.proofs)
    if proved:
        workers = par.default_workers(groups * length)
        verify_reply(parsed, lists, session=b"bench-session", labels=labels, workers=workers)
    where = reply_positions(parsed)
    matched = sum(1 for p in blind_distinct(server_key, items) if p in where)
    wall3, cpu3 = _clocks()
    if matched != len(ids):
        raise AssertionError(f"PSI bench matched {matched} of {len(ids)}")
    return {
        "sandbox_wall": (wall1 - wall0) + (wall3 - wall2),
        "sandbox_cpu": (cpu1 - cpu0) + (cpu3 - cpu2),
        "enterprise_wall": wall2 - wall1,
        "enterprise_cpu": cpu2 - cpu1,
    }


def psi(n: int, groups: int, *, proofs: bool = True) -> dict[str, Any]:
    """PSI on both sides of a session where both sets hold ``n`` identifiers, all matching
    (``groups`` lists of the padded length, as the psi job offers them), on one core and
    on every core. Identifiers per second per side = ``n`` / that side's total time.

    The sandbox hashes and blinds its identifiers, pads and shuffles (the psi job), then
    parses the request and the reply and blinds the request (the group-sum job's matching);
    the enterprise hashes and blinds its identifiers, parses the offer and re-blinds it.
    With ``proofs`` the same again with the enterprise's shuffle proofs (``PsiClient.reblind``)
    and the sandbox's verification (``verify_reply``), the work a real session does. Also
    libsodium's cost per step, and the ceiling it sets: each side does two variable-base
    scalar multiplications and one hash to the group per identifier.
    """
    from computations._encrypted import padded_length
    from computations._psi._group import (
        blind_many,
        check_point,
        hash_many,
        hash_to_group,
        random_point,
        random_scalar,
    )
    from computations._psi._protocol import group_labels

    ids = [f"resident-{i}".encode() for i in range(n)]
    sample = ids[: min(n, 2000)]
    points = [hash_to_group(i) for i in sample]
    key = random_scalar()
    steps = {  # through the calls the session makes (blind_many, hash_many: libsodium direct)
        "mul_us": _per_item_us(lambda chunk: blind_many(key, chunk), points),
        "hash_us": _per_item_us(hash_many, sample),
        "check_us": _per_item_us(lambda chunk: [check_point(p) for p in chunk], points),
        "random_us": _per_item_us(lambda chunk: [random_point() for _ in chunk], sample),
    }
    length = padded_length(math.ceil(n / groups))
    shuffler = secrets.SystemRandom()
    everywhere = sorted(os.sched_getaffinity(0))
    cores = len(everywhere)
    found: dict[str, Any] = {**steps, "cores": cores, "length": length, "runs": {}}
    labels = list(group_labels(groups))
    kinds = (False, True) if proofs else (False,)
    try:
        # Interleaved, one core then every core for each kind, so both see the same load.
        # One core is this process pinned to one CPU: then the code's own default (one
        # process per core it may use, _parallel.py) forks nothing, as on a 1-core host.
        for proved, used in itertools.product(kinds, sorted({1, cores})):
            os.sched_setaffinity(0, everywhere[:used])
            found["runs"][(used, proved)] = _psi_run(ids, groups, length, labels, proved, shuffler)
    finally:
        os.sched_setaffinity(0, everywhere)
    return found


def psi_table(n: int, groups: int) -> Table:
    """The PSI throughput table: measured identifiers per second per side on one core and
    on every core, against the ceiling libsodium's per-step costs set, and the goal."""
    found = psi(n, groups)
    cores, runs = found["cores"], found["runs"]
    per_id_us = 2 * found["mul_us"] + found["hash_us"]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    table = Table(
        "side (both sets of n identifiers)",
        "1 core",
        f"{cores} cores",
        "goal",
        title=(
            f"PSI, n = {n:,} identifiers, {groups} lists of {found['length']:,}: identifiers "
            f"per second per side = n / that side's total time, wall clock (in brackets: "
            f"n / CPU seconds × cores used, what free cores would give); load average {load}"
        ),
    )
    rows = [
        ("sandbox: offer + matching", "sandbox", False),
        ("enterprise: request + re-blinding", "enterprise", False),
        ("sandbox: the same + verifying the shuffle proofs", "sandbox", True),
        ("enterprise: the same + proving the shuffles", "enterprise", True),
    ]
    for label, side, proved in rows:
        cells = []
        for workers in (1, cores):
            run = runs[(workers, proved)]
            wall, cpu = run[f"{side}_wall"], run[f"{side}_cpu"]
            cells.append(f"{n / wall:,.0f} ({n / cpu * workers:,.0f})")
        table.add_row(label, cells[0], cells[-1] if cores > 1 else "", "20,000")
    table.add_row(
        "libsodium per step (µs, one core): scalar mult / hash to group / point check / "
        "random point",
        f"{found['mul_us']:.0f} / {found['hash_us']:.0f} / {found['check_us']:.0f} / "
        f"{found['random_us']:.0f}",
        "",
        "",
    )
    table.add_row(
        "ceiling per side: 2 scalar mults + 1 hash per identifier, nothing else",
        f"{1e6 / per_id_us:,.0f}",
        f"{cores * 1e6 / per_id_us:,.0f}" if cores > 1 else "",
        "",
    )
    table.add_row(
        "ceiling per side: the 2 scalar mults alone",
        f"{1e6 / (2 * found['mul_us']):,.0f}",
        f"{cores * 1e6 / (2 * found['mul_us']):,.0f}" if cores > 1 else "",
        f"needs {cores * 1e6 / 20_000 / 2:.0f} µs per mult",
    )
    return table


def shuffle_proofs(items: int, groups: int, lists: int) -> dict[str, float]:
    """Prove and verify ``lists`` shuffle proofs over lists of the offered length for
    ``items`` items in ``groups`` groups; seconds per list, bytes, and primitive costs."""
    from computations._encrypted import padded_length
    from computations._psi import _arith as ar
    from computations._psi._group import random_point, random_scalar
    from computations._psi._shuffle import key_commitment, proof_size, prove_shuffle, verify_shuffle

    length = padded_length(math.ceil(items / groups))
    key = random_scalar()
    prove_s = verify_s = 0.0
    for g in range(lists):
        offered = [random_point() for _ in range(length)]
        start = time.perf_counter()
        reply, proof = prove_shuffle(key, offered, session=b"bench", label=str(g))
        middle = time.perf_counter()
        verify_shuffle(key_commitment(key), offered, reply, proof, session=b"bench", label=str(g))
        prove_s += middle - start
        verify_s += time.perf_counter() - middle
    p, q, k = random_point(), random_point(), random_scalar()
    start = time.perf_counter()
    for _ in range(2000):
        ar.mul(k, p)
    mul_us = (time.perf_counter() - start) / 2000 * 1e6
    start = time.perf_counter()
    for _ in range(2000):
        ar.add(p, q)
    add_us = (time.perf_counter() - start) / 2000 * 1e6
    return {
        "length": length,
        "prove_s": prove_s / lists,
        "verify_s": verify_s / lists,
        "proof_bytes": proof_size(length),
        "mul_us": mul_us,
        "add_us": add_us,
    }


def pippenger_additions(n: int) -> int:
    """Point additions of a Pippenger sum of ``n`` 253-bit terms at its best window."""
    return min(math.ceil(253 / c) * (n + 2 ** (c + 1)) for c in range(1, 20))


def proof_table(items: int, groups: int, lists: int) -> Table:
    found = shuffle_proofs(items, groups, lists)
    length = found["length"]
    scaled = "" if lists == groups else f" (from {lists} of {groups} lists, scaled)"
    table = Table(
        "what",
        "one list",
        f"all {groups} lists{scaled}",
        title=f"shuffle proofs, {groups} lists of {length:,} points (one core)",
    )
    table.add_row(
        "enterprise: re-blind + prove",
        f"{found['prove_s']:.1f} s",
        f"{found['prove_s'] * groups:.0f} s",
    )
    table.add_row(
        "sandbox worker: verify",
        f"{found['verify_s']:.1f} s",
        f"{found['verify_s'] * groups:.0f} s",
    )
    table.add_row(
        "proof upload (A, offered lists, proofs)",
        f"{(found['proof_bytes'] + 32 * length) / 1e6:.1f} MB",
        f"{(groups * (found['proof_bytes'] + 32 * length) + 40) / 1e6:.1f} MB",
    )
    table.add_row(
        "libsodium: scalar multiplication / point addition",
        f"{found['mul_us']:.0f} µs / {found['add_us']:.0f} µs",
        "",
    )
    table.add_row(
        f"one sum of {length:,} products, direct (from the primitives)",
        f"{length * (found['mul_us'] + found['add_us']) / 1e6:.1f} s",
        "",
    )
    table.add_row(
        f"one sum of {length:,} products, Pippenger (estimated, best window)",
        f"{pippenger_additions(length) * found['add_us'] / 1e6:.1f} s",
        "",
    )
    return table


def tables(
    items: int,
    groups: int,
    naive: int,
    psi_n: int,
    epsilon: float,
    degree: int = 8192,
    proof_lists: int | None = None,
) -> list[Table]:
    result = group_sum(items, groups, naive, epsilon, degree)
    timing = Table(
        "what",
        "packed (this run)",
        "one ciphertext per row (scaled)",
        "ratio",
        title=f"encrypted_group_sum, {items:,} matched items, {groups} groups, CKKS n={degree}",
    )
    timing.add_row(
        "end-to-end time (wall; CPU)",
        f"{result['total_s']:.2f} s; {result['total_cpu_s']:.2f} s",
        f"{result['naive_s']:,.0f} s (from {naive:,} rows)",
        f"{result['naive_s'] / result['total_s']:,.0f}× faster",
    )
    for stage, label in (
        ("encrypt", "  enterprise: encrypt (secret key, seeded) + serialise"),
        ("context", "  sandbox: parse public context"),
        ("sandbox", "  sandbox: parse vectors, randomise, masks, rotations"),
        ("decrypt", "  enterprise: decrypt + debias"),
    ):
        timing.add_row(
            label, f"{result[f'{stage}_s']:.2f} s; {result[f'{stage}_cpu_s']:.2f} s", "", ""
        )
    timing.add_row(
        "    randomised response alone (secrets draws; OpenDP's map)",
        f"{result['rr_s']:.2f} s",
        "",
        "",
    )
    if degree == 8192:
        lean = group_sum(items, groups, 0, epsilon, degree, LEAN_RING)
        timing.add_row(
            f"end-to-end, modulus {LEAN_RING[0]}, scale 2^40 (the depth this needs)",
            f"{lean['total_s']:.2f} s; {lean['total_cpu_s']:.2f} s",
            "",
            f"{result['naive_s'] / lean['total_s']:,.0f}× faster",
        )
    timing.add_row(
        "bytes on the wire (values + results)",
        f"{(result['upload_bytes'] + result['result_bytes']) / 1e6:,.1f} MB",
        f"{result['naive_bytes'] / 1e9:,.1f} GB",
        f"{result['naive_bytes'] / (result['upload_bytes'] + result['result_bytes']):,.0f}× less",
    )
    timing.add_row(
        "public context with Galois keys (once per session)",
        f"{result['context_bytes'] / 1e6:,.1f} MB",
        "",
        "",
    )
    throughput = psi_table(psi_n, groups)
    accuracy = Table(
        "statistic",
        "value",
        title=f"accuracy of debiased group sums at epsilon {epsilon:g} per report",
    )
    # What the job costs: one report per person, the reply's shuffle proofs verified.
    from computations._encrypted._group_sum_job import job_epsilon

    accuracy.add_row("budget charged per job (epsilon)", f"{job_epsilon(epsilon, groups):g}")
    errors, sds = result["relative_errors"], result["stated_sd"]
    accuracy.add_row("median relative error over groups", f"{statistics.median(errors):.2%}")
    accuracy.add_row("largest relative error", f"{max(errors):.2%}")
    accuracy.add_row("median stated standard deviation (relative)", f"{statistics.median(sds):.2%}")
    proofs = proof_table(items, groups, groups if proof_lists is None else proof_lists)
    return [timing, throughput, proofs, accuracy]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--naive", type=int, default=1_000)
    parser.add_argument("--psi", type=int, default=20_000)
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--small-ring", action="store_true", help="CKKS n = 4096")
    parser.add_argument(
        "--proof-lists", type=int, default=None, help="lists to prove (default: all groups)"
    )
    args = parser.parse_args()
    console = Console()
    with console.status("benchmarking encrypted views"):
        found = tables(
            args.items,
            args.groups,
            args.naive,
            args.psi,
            args.epsilon,
            4096 if args.small_ring else 8192,
            args.proof_lists,
        )
    for table in found:
        console.print(table)


if __name__ == "__main__":
    main()
