"""Following the ledger's own key rotations from the keys an auditor configured.

A rotation is two entries: ``ledger.key_added`` (a new verifier key starts signing) and
``ledger.key_retired`` (an old one stops). An auditor configured with the original key
should keep verifying after a rotation without being handed the new key, but only on the
original key's word: a ``ledger.key_added`` entry is honoured only when a checkpoint
signed by a key already trusted covers it, with the root recomputed from the entries, so
the trusted key committed to exactly that announcement. Whoever lacks the trusted keys
cannot announce a key of their own. A retired key is trusted no more, so a stolen old key
cannot sign a fork for auditors who followed the rotation. Retirements need no such
cover: they only take trust away, which fails closed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger._events import KEY_ADDED

KeyChange = tuple[int, str, str]  # (entry index, entry type, verifier key)
# covered(index, keys): a checkpoint signed by one of ``keys`` covers entry ``index``
Covered = Callable[[int, list[str]], bool]


def follow_rotations(
    configured: Sequence[str], changes: Sequence[KeyChange], covered: Covered
) -> tuple[list[str], list[str]]:
    """Return (the keys trusted after the last change, every key trusted at some point).

    ``changes`` are the key entries in log order.
    """
    trusted = list(configured)
    ever = list(configured)
    for index, kind, key in changes:
        if kind == KEY_ADDED:
            if key not in trusted and covered(index, list(trusted)):
                trusted.append(key)
                if key not in ever:
                    ever.append(key)
        elif key in trusted:
            trusted.remove(key)
    return trusted, ever
