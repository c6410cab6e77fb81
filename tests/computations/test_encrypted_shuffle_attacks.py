"""A malicious enterprise's PSI replies against the worker's shuffle-proof check.

Each test performs one attack of the security review on ``encrypted_group_sum`` (copy one
offered list into every reply list, move an element across groups, duplicates under a
second key, a compensated garbage point, replayed proofs, flipped bits, a wrong ``A``)
and asserts the job is refused with :class:`PsiError` *before anything is matched*: the
spy on the matching step sees no call. With the verification disabled, the same replies
run (the multi-copy one gives one report per group about its target).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import tenseal as ts

import computations._encrypted._group_sum_job as job_module
import computations._encrypted._keys as keys
from computations import DatasetSpec, PsiError, digest_of, get_computation, session_of
from computations._encrypted import frame_vectors, prepare_group_sum
from computations._encrypted._blobs import frame_proofs, unframe_proofs
from computations._encrypted._session import session_binding
from computations._psi import _arith as ar
from computations._psi._group import blind, hash_to_group, random_point, random_scalar
from computations._psi._shuffle import key_commitment, prove_shuffle

KEYS = ["north", "south", "east", "west", "harbour"]
JOB = "job_" + "0" * 32


@pytest.fixture()
def enclave_secret() -> Iterator[None]:
    keys.set_enclave_secret(secrets.token_bytes(32))
    yield
    keys._wrapping_key = None


@pytest.fixture(scope="module")
def spec(dp_residents: DatasetSpec) -> DatasetSpec:
    columns = [
        c.model_copy(update={"keys": tuple(KEYS)}) if c.name == "district" else c
        for c in dp_residents.columns
    ]
    privacy = dp_residents.privacy.model_copy(update={"epsilon_per_job": 10.0})
    return dp_residents.model_copy(update={"columns": tuple(columns), "privacy": privacy})


@pytest.fixture(scope="module")
def secret_context() -> Any:
    context = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[35, 34, 40])
    context.global_scale = 2**26
    context.generate_galois_keys()
    return context


class World:
    """40 residents in north (odd ids), 40 in south, one in harbour; its offer."""

    def __init__(self, spec: DatasetSpec, connect: Any, tmp_path: Path, context: Any) -> None:
        table = pa.table(
            {
                "resident_id": pa.array([*range(1, 81), 999], pa.int64()),
                "district": pa.array(["north", "south"] * 40 + ["harbour"], pa.string()),
            }
        )
        self.con: duckdb.DuckDBPyConnection = connect({"residents": table})
        self.spec, self.tmp_path, self.context = spec, tmp_path, context
        psi = get_computation("psi")
        plan = psi.check({"dimension": "district", "nonce": "n" * 22}, spec)
        self.offer = psi.execute(plan, self.con, table="residents", dataset=spec).table
        self.session = session_of(self.offer)
        self.groups = [str(g) for g in self.session["groups"]]
        self.length = int(self.session["length"])
        points = self.offer.column("point").to_pylist()
        self.offered = [
            tuple(points[g * self.length : (g + 1) * self.length]) for g in range(len(self.groups))
        ]
        self.binding = session_binding(self.session)

    def honest(self, identifiers: list[int]) -> dict[str, bytes]:
        prepared = prepare_group_sum(
            self.offer, identifiers, [1.0] * len(identifiers), self.context
        )
        return dict(prepared.uploads)

    def crafted(
        self,
        request: list[bytes],
        reply: list[tuple[bytes, ...]],
        key: bytes,
        proofs: list[bytes],
        offered: list[tuple[bytes, ...]] | None = None,
    ) -> dict[str, bytes]:
        """Uploads an attacker builds by hand (values: one per request item)."""
        vector = ts.ckks_vector(self.context, [1.0] * len(request) + [0.0] * (2048 - len(request)))
        public = self.context.copy()
        public.make_context_public()
        return {
            "request": b"".join(request),
            "reply": b"".join(p for group in reply for p in group),
            "proof": frame_proofs(key, offered or self.offered, proofs),
            "context": bytes(public.serialize(save_galois_keys=True)),
            "values": frame_vectors([bytes(vector.serialize())]),
        }

    def run(self, uploads: dict[str, bytes], session: dict[str, Any] | None = None) -> pa.Table:
        paths = {}
        for name, data in uploads.items():
            path = self.tmp_path / f"{name}-{digest_of(data).removeprefix('sha256:')}"
            path.write_bytes(data)
            paths[name] = str(path)
        job = get_computation("encrypted_group_sum")
        params = {
            "session": JOB,
            **{name: digest_of(data) for name, data in uploads.items()},
            "resolved_session": session or self.session,
            "resolved_blobs": paths,
        }
        plan = job.check(params, self.spec)
        return job.execute(plan, self.con, table="residents", dataset=self.spec).table


@pytest.fixture()
def world(
    enclave_secret: None, spec: DatasetSpec, connect: Any, tmp_path: Path, secret_context: Any
) -> World:
    return World(spec, connect, tmp_path, secret_context)


@pytest.fixture()
def matched(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Every call of the matching step, with its outcomes."""
    seen: list[list[int]] = []
    real = job_module._outcomes

    def spy(*args: Any) -> list[int]:
        outcomes = real(*args)
        seen.append(list(outcomes))
        return outcomes

    monkeypatch.setattr(job_module, "_outcomes", spy)
    return seen


def _refused(world: World, uploads: dict[str, bytes], matched: list[list[int]]) -> str:
    with pytest.raises(PsiError) as refused:
        world.run(uploads)
    assert matched == [], "the reply was matched before its proofs were checked"
    return str(refused.value)


def _proved(world: World, key: bytes, lists: list[tuple[bytes, ...]]) -> tuple[list, list]:
    replies, proofs = [], []
    for label, offered in zip(world.groups, lists, strict=True):
        reply, proof = prove_shuffle(key, offered, session=world.binding, label=label)
        replies.append(reply)
        proofs.append(proof.to_bytes())
    return replies, proofs


def test_an_honest_reply_is_matched_and_charged_epsilon_once(
    world: World, matched: list[list[int]], tmp_path: Path
) -> None:
    ids = [*range(1, 41), *range(5000, 5010)]
    result = world.run(world.honest(ids))
    assert len(matched) == 1 and sum(1 for o in matched[0] if o) == 40
    plan_epsilon = world.spec.privacy.epsilon_per_job
    assert len(world.groups) > 1
    (tmp_path / "request").write_bytes(bytes(32 * len(ids)))  # the check counts its points
    cost = job_module.plan_cost(
        get_computation("encrypted_group_sum").check(
            {
                "session": JOB,
                **{
                    k: "sha256:" + "0" * 64
                    for k in ("request", "reply", "proof", "context", "values")
                },
                "resolved_session": world.session,
                "resolved_blobs": {
                    k: str(tmp_path / k) for k in ("request", "reply", "proof", "context", "values")
                },
            },
            world.spec,
        )
    )
    assert cost == (plan_epsilon, 0.0)
    assert b"indomain.privacy" in (result.schema.metadata or {})


def test_multi_copy_of_one_offered_list_is_refused(world: World, matched: list[list[int]]) -> None:
    """Review HIGH 2: list ``h`` of the reply is the north list raised to its own ``r_h``
    and the request holds ``r_h·H(t)``; unproved, target ``t`` was reported once per group.
    The attacker proves each copy under its own key and publishes ``A = r_0·G``."""
    north = world.offered[world.groups.index("north")]
    scalars = [random_scalar() for _ in world.groups]
    target, known = 1, [i for i in range(3, 81, 2)]
    request = [blind(r, hash_to_group(str(target).encode())) for r in scalars]
    request += [blind(scalars[0], hash_to_group(str(i).encode())) for i in known]
    replies, proofs = [], []
    for label, r in zip(world.groups, scalars, strict=True):
        reply, proof = prove_shuffle(r, north, session=world.binding, label=label)
        replies.append(reply)
        proofs.append(proof.to_bytes())
    key = key_commitment(scalars[0])
    message = _refused(world, world.crafted(request, replies, key, proofs), matched)
    assert "does not verify" in message
    # Claiming the copied list was offered in every group does not get past the digest.
    fake = world.crafted(request, replies, key, proofs, offered=[north] * len(world.groups))
    assert "other than this session's offer" in _refused(world, fake, matched)


def test_one_element_moved_across_groups_is_refused(world: World, matched: list[list[int]]) -> None:
    uploads = world.honest([*range(1, 41)])
    reply = bytearray(uploads["reply"])
    size = 32 * world.length
    first, second = bytes(reply[:32]), bytes(reply[size : size + 32])
    reply[:32], reply[size : size + 32] = second, first
    uploads["reply"] = bytes(reply)
    assert "does not verify" in _refused(world, uploads, matched)


def test_duplicates_under_a_second_key_are_refused(world: World, matched: list[list[int]]) -> None:
    """One slot of the north list holds ``a_k·L_j`` beside ``a·L_j``, and the request both
    ``a·H(t)`` and ``a_k·H(t)``: two reports about ``t`` if unproved."""
    a, a_k = random_scalar(), random_scalar()
    replies, proofs = _proved(world, a, world.offered)
    north = world.groups.index("north")
    replies[north] = (*replies[north][:-1], blind(a_k, world.offered[north][0]))
    request = [blind(a, hash_to_group(str(i).encode())) for i in range(1, 81)]
    request += [blind(a_k, hash_to_group(b"1"))]
    uploads = world.crafted(request, replies, key_commitment(a), proofs)
    assert "does not verify" in _refused(world, uploads, matched)


def test_a_garbage_point_compensated_in_the_sum_is_refused(
    world: World, matched: list[list[int]]
) -> None:
    a = random_scalar()
    replies, proofs = _proved(world, a, world.offered)
    garbage = random_point()
    group = list(replies[0])
    group[0], group[1] = ar.add(group[0], garbage), ar.sub(group[1], garbage)
    assert ar.point_sum(group) == ar.point_sum(replies[0])  # the plain sum is unchanged
    replies[0] = tuple(group)
    request = [blind(a, hash_to_group(str(i).encode())) for i in range(1, 81)]
    uploads = world.crafted(request, replies, key_commitment(a), proofs)
    assert "does not verify" in _refused(world, uploads, matched)


def test_proofs_replayed_for_another_group_or_session_are_refused(
    world: World, matched: list[list[int]]
) -> None:
    a = random_scalar()
    replies, proofs = _proved(world, a, world.offered)
    request = [blind(a, hash_to_group(str(i).encode())) for i in range(1, 81)]
    # Groups 0 and 1 exchanged with their proofs: each a true shuffle of the other list.
    order = [1, 0, *range(2, len(replies))]
    swapped = world.crafted(
        request, [replies[g] for g in order], key_commitment(a), [proofs[g] for g in order]
    )
    assert "does not verify" in _refused(world, swapped, matched)
    # Proofs made for another session (another psi job over the same data).
    psi = get_computation("psi")
    plan = psi.check({"dimension": "district", "nonce": "m" * 22}, world.spec)
    other = psi.execute(plan, world.con, table="residents", dataset=world.spec).table
    elsewhere = prepare_group_sum(other, [*range(1, 41)], [1.0] * 40, world.context).uploads
    uploads = world.honest([*range(1, 41)])
    uploads["proof"] = elsewhere["proof"]
    assert "other than this session's offer" in _refused(world, uploads, matched)
    uploads = dict(elsewhere)  # all of it, against this session
    assert "other than this session's offer" in _refused(world, uploads, matched)


def test_a_flipped_bit_in_any_proof_field_is_refused(
    world: World, matched: list[list[int]]
) -> None:
    uploads = world.honest([*range(1, 41)])
    proof = uploads["proof"]
    groups, length = len(world.groups), world.length
    proofs_at = 8 + 32 * (1 + groups * length)
    per_proof = 128 * length + 160
    # A, an offered point, and in the last group's proof: c_1, ĉ_N, e, s1..s4, ŝ_1, s'_N.
    last = proofs_at + (groups - 1) * per_proof
    words = [8, 8 + 32 * 5, last, last + 32 * (2 * length - 1)]
    words += [last + 64 * length + 32 * k for k in range(5)]
    words += [last + 64 * length + 160, len(proof) - 32]
    for offset in words:
        flipped = bytearray(proof)
        flipped[offset + 3] ^= 0x10
        uploads["proof"] = bytes(flipped)
        _refused(world, uploads, matched)


def test_a_wrong_key_commitment_is_refused(world: World, matched: list[list[int]]) -> None:
    uploads = world.honest([*range(1, 41)])
    _, offered, proofs = unframe_proofs(uploads["proof"])
    uploads["proof"] = frame_proofs(key_commitment(random_scalar()), offered, list(proofs))
    assert "does not verify" in _refused(world, uploads, matched)
