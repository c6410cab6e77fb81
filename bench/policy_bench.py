"""Policy decision latency with 10, 100 and 1,000 policies, against bare cedarpy.

    python -m bench.policy_bench [--decisions 2000]

Both sides decide the same request over the same policies with the same schema and
entities: ``policies.decide`` (licence guard, request building, obligations merge) against
one ``cedarpy.is_authorized`` call over the whole set with prebuilt arguments. Goal:
median <= 200 us at 1,000 policies and overhead <= 1.5x bare Cedar. ``decide`` hands Cedar
only the policies whose principal scope can match (see ``Compiled.for_principal``), so
with one grant per enterprise it can be faster than the bare call over every policy.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import cedarpy
from rich.console import Console
from rich.table import Table

import indomain
import policies
from policies._entities import cedar_request, entities

SCHEMA = (Path(indomain.__file__).parent / "demo" / "policies" / "schema.cedarschema").read_text()


def _policy_set(count: int) -> policies.PolicySet:
    text = []
    for n in range(count):
        text.append(
            f'@id("grant-{n}") @min_group_size("{10 + n % 7}") @budget("5.0/month")\n'
            f'permit (principal == Enterprise::"E{n}", action == Action::"aggregate",'
            f' resource == Dataset::"residents")\n'
            f'when {{ context.purpose == "research" && '
            f'context.now < datetime("2030-01-01T00:00:00Z") }};\n'
        )
    return policies.PolicySet.from_files(
        {"schema.cedarschema": SCHEMA, "grants.cedar": "".join(text)}
    )


def _timings(fn: object, decisions: int) -> list[float]:
    out = []
    for _ in range(decisions):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99) - 1] * 1e6


def policy_table(decisions: int = 2000) -> Table:
    """Measure and return the table (10, 100 and 1,000 policies)."""
    table = Table(
        "policies", "decide median µs", "p99 µs", "bare cedarpy median µs", "p99 µs", "overhead"
    )
    for count in (10, 100, 1000):
        ps = _policy_set(count)
        request = policies.AccessRequest(
            enterprise=f"E{count // 2}",
            computation="aggregate",
            dataset="residents",
            purpose="research",
            time=datetime(2026, 11, 22, tzinfo=UTC),
            enterprise_attrs={"status": "active", "licence_number": "L-1"},
            dataset_attrs={"sensitivity": 3},
            epsilon=Decimal("0.5"),
            columns=("district",),
        )
        assert policies.decide(ps, request).allowed
        handles = ps._handles()
        request_json, entity_list = cedar_request(request), entities(request)
        bare = _timings(
            lambda h=handles, r=request_json, e=entity_list: cedarpy.is_authorized(
                r, h.policies, e, schema=h.schema
            ),
            decisions,
        )
        ours = _timings(lambda p=ps, r=request: policies.decide(p, r), decisions)
        (om, op), (bm, bp) = _stats(ours), _stats(bare)
        table.add_row(
            str(count), f"{om:.0f}", f"{op:.0f}", f"{bm:.0f}", f"{bp:.0f}", f"{om / bm:.2f}x"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=2000)
    args = parser.parse_args()
    Console().print(policy_table(args.decisions))


if __name__ == "__main__":
    main()
