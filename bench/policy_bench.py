"""Policy decision latency with 10, 100 and 1,000 policies, against bare cedarpy.

    python -m bench.policy_bench [--decisions 2000]

Every side decides the same request over the same policies:

* ``decide``: ``policies.decide`` (licence guard, Licence/Grant entities, cached Cedar
  arguments, obligations merge, the ``Decision``);
* ``floor``: the one ``cedarpy.is_authorized`` call ``decide`` makes, with its prepared
  arguments (the policies whose principal scope can match, the parsed entities, the
  request already schema-checked for this action): what Cedar itself costs, so
  ``decide / floor`` is what indomain adds;
* ``whole set``: ``cedarpy.is_authorized`` over every policy with the schema and the
  entities as a list, the way a caller without those caches calls it.

Samples of the three are interleaved, in a rotating order, so load from other processes
on the machine and each call's effect on the CPU caches hit them alike. Goal: median
<= 200 us at 1,000 policies and ``decide / floor`` <= 1.5x.
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
from policies._cache import prepared as _prepared
from policies._entities import cedar_request, entities

SCHEMA = (Path(indomain.__file__).parent / "demo" / "policies" / "schema.cedarschema").read_text()


def _policy_set(count: int, *, registry_grants: bool = False) -> policies.PolicySet:
    """One grant per enterprise: in the Cedar text, or naming a registry grant G<n>."""
    text = []
    for n in range(count):
        if registry_grants:
            text.append(
                f'@id("grant-{n}") @min_group_size("{10 + n % 7}")\n'
                f'permit (principal in Grant::"G{n}", action == Action::"aggregate",'
                f' resource in Grant::"G{n}");\n'
            )
            continue
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


def _stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99) - 1] * 1e6


def policy_table(decisions: int = 2000) -> Table:
    """Measure and return the table (10, 100 and 1,000 policies in the Cedar text, then
    1,000 naming registry grants)."""
    table = Table(
        "policies",
        "decide median µs",
        "p99 µs",
        "floor median µs",
        "p99 µs",
        "decide / floor",
        "whole set median µs",
    )
    for count, registry_grants in ((10, False), (100, False), (1000, False), (1000, True)):
        ps = _policy_set(count, registry_grants=registry_grants)
        grant = {
            "purpose": "research",
            "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
            "valid_until": datetime(2030, 1, 1, tzinfo=UTC),
            "status": "active",
            "datasets": ["residents"],
            "obligations": {"budget": "5.0/month"},
        }
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
            grants={f"G{count // 2}": grant} if registry_grants else {},
        )
        assert policies.decide(ps, request).allowed  # also fills decide's caches
        handles = ps._handles()
        subset, parsed = _prepared(handles, request)
        request_json, entity_list = cedar_request(request), entities(request)
        sides = {
            "decide": lambda p=ps, r=request: policies.decide(p, r),
            "floor": lambda s=subset, e=parsed, r=request: cedarpy.is_authorized(
                cedar_request(r), s, e
            ),
            "whole": lambda h=handles, r=request_json, e=entity_list: cedarpy.is_authorized(
                r, h.policies, e, schema=h.schema
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in sides}
        # The whole set is slow at 1,000 policies: fewer samples of it.
        whole_every = max(1, count // 100)
        names = list(sides)
        for n in range(decisions):
            # Rotate the order, so each side follows each other side (and its effect on
            # the CPU caches) equally often.
            for name in names[n % 3 :] + names[: n % 3]:
                fn = sides[name]
                if name == "whole" and n % whole_every:
                    continue
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
        (om, op), (fm, fp) = _stats(samples["decide"]), _stats(samples["floor"])
        wm, _ = _stats(samples["whole"])
        table.add_row(
            f"{count} (registry grants)" if registry_grants else str(count),
            f"{om:.0f}",
            f"{op:.0f}",
            f"{fm:.0f}",
            f"{fp:.0f}",
            f"{om / fm:.2f}x",
            f"{wm:.0f}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=2000)
    args = parser.parse_args()
    Console().print(policy_table(args.decisions))


if __name__ == "__main__":
    main()
