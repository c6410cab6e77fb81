"""A seeded generator of realistic synthetic residents for the demo and the benchmarks.

Skewed like real registers: a few large urban districts and a long tail of small rural
ones (one with only a handful of people, so suppression shows), log-normal incomes that
depend on age and district, social-insurance months that grow with age, and a health
flag whose rate rises with age. No real person is in it.

The randomness here is not privacy-relevant (it makes fake data), so a seeded NumPy
generator is right: the same seed gives the same file everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DISTRICTS = (
    ("Dongcheng", 0.21, 1.35),
    ("Xicheng", 0.17, 1.30),
    ("Haidian", 0.16, 1.45),
    ("Chaoyang", 0.14, 1.25),
    ("Fengtai", 0.10, 1.00),
    ("Shijingshan", 0.07, 0.95),
    ("Tongzhou", 0.06, 0.90),
    ("Daxing", 0.05, 0.85),
    ("Huairou", 0.025, 0.75),
    ("Miyun", 0.0149, 0.70),
    ("Yanqing", 0.0001, 0.65),
)
AGE_BANDS = ("18-29", "30-44", "45-59", "60-74", "75+")
_AGE_WEIGHTS = (0.20, 0.28, 0.26, 0.17, 0.09)
_AGE_INCOME = (0.80, 1.15, 1.10, 0.70, 0.55)
_AGE_HEALTH = (0.03, 0.06, 0.12, 0.24, 0.38)
_AGE_MIN_YEARS = (18, 30, 45, 60, 75)

MANIFEST = """\
description: Registered residents (synthetic), one row per person
privacy_unit: resident_id
min_group_size: 10
columns:
  resident_id: {class: identifier, description: Pseudonymous resident number}
  district:
    class: quasi_identifier
    dimension: true
    description: District of residence
    keys: [Dongcheng, Xicheng, Haidian, Chaoyang, Fengtai, Shijingshan, Tongzhou, Daxing,
           Huairou, Miyun, Yanqing]
  age_band: {class: quasi_identifier, dimension: true, description: Age band in years,
             keys: ["18-29", "30-44", "45-59", "60-74", "75+"]}
  sex: {class: quasi_identifier, dimension: true, description: F or M, keys: [F, M]}
  income: {class: sensitive, description: Annual income in yuan, bounds: [0, 500000]}
  insurance_months: {class: sensitive, description: Months of social-insurance contributions,
                     bounds: [0, 540]}
  health_flag: {class: sensitive, dimension: true, description: Chronic condition on record,
                keys: [true, false]}
privacy:
  epsilon_per_job: 1.0
  budget: 20/month
"""


def residents(rows: int, *, seed: int = 20261122) -> pa.Table:
    """Return ``rows`` synthetic residents as an Arrow table."""
    rng = np.random.default_rng(seed)
    weights = np.array([w for _, w, _ in DISTRICTS])
    district_idx = rng.choice(len(DISTRICTS), size=rows, p=weights / weights.sum())
    age_idx = rng.choice(len(AGE_BANDS), size=rows, p=_AGE_WEIGHTS)
    sex = rng.choice(np.array(["F", "M"]), size=rows)
    district_factor = np.array([f for _, _, f in DISTRICTS])[district_idx]
    age_factor = np.array(_AGE_INCOME)[age_idx]
    income = rng.lognormal(mean=np.log(72000), sigma=0.55, size=rows)
    income = np.round(income * district_factor * age_factor, -2).astype(np.int64)
    years_working = np.clip(
        np.array(_AGE_MIN_YEARS)[age_idx] + rng.integers(0, 15, size=rows) - 18, 0, 45
    )
    coverage = rng.beta(6, 2, size=rows)
    insurance_months = np.round(years_working * 12 * coverage).astype(np.int64)
    health_flag = rng.random(rows) < np.array(_AGE_HEALTH)[age_idx]
    ids = rng.permutation(rows) + 110_000_000
    return pa.table(
        {
            "resident_id": pa.array(ids, pa.int64()),
            "district": pa.array(np.array([d for d, _, _ in DISTRICTS])[district_idx]),
            "age_band": pa.array(np.array(AGE_BANDS)[age_idx]),
            "sex": pa.array(sex),
            "income": pa.array(income, pa.int64()),
            "insurance_months": pa.array(insurance_months, pa.int64()),
            "health_flag": pa.array(health_flag, pa.bool_()),
        }
    )


def write_residents(directory: Path, rows: int, *, seed: int = 20261122) -> tuple[Path, Path]:
    """Write ``residents.parquet`` and ``residents.manifest.yaml``; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "residents.parquet"
    manifest = directory / "residents.manifest.yaml"
    pq.write_table(residents(rows, seed=seed), data)
    manifest.write_text(MANIFEST)
    return data, manifest
