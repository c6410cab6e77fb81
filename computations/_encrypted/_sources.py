"""The source files whose digest is the code hash of the HE computations.

``encrypted_group_sum`` and ``encrypted_linear_score`` run the same PSI matching, HE
loading and randomisation code, so a change to any of it is a new computation for both.
"""

from __future__ import annotations

from computations._computation import CORE_SOURCES, PACKAGE_ROOT, package_sources, source_digest


def he_code_hash() -> str:
    """The digest of everything an HE computation over a PSI session runs."""
    sources = (
        *package_sources("_encrypted"),
        *package_sources("_psi"),
        *package_sources("_he"),
        "_aggregate/_noise.py",  # the PSI package imports it
        *CORE_SOURCES,
    )
    return source_digest(PACKAGE_ROOT, sources)
