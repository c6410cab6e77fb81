"""Check one upload in a process of its own: ``python -m`` this module.

TenSEAL and SEAL parse untrusted bytes in C++, and checking millions of points costs tens
of CPU seconds. A parser crash or runaway here costs this short-lived process (no core
dump, capped CPU and memory), never the gateway. Reads one JSON request on stdin,
``{"kind": "points"|"proof"|"context"|"values", "path": …, "context_path": …}``, writes
``{"ok": true, …}`` or ``{"ok": false, "error": "<why>"}`` on stdout.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

from computations._encrypted._blobs import split_points, unframe_proofs, unframe_vectors
from computations._he import HeError, load_ckks_vector, load_public_context
from computations._psi import PsiRequest
from computations._psi._group import check_point
from computations._psi._shuffle import ShuffleProof
from indomain.errors import IndomainError

_CPU_SECONDS = 120
_MEMORY_BYTES = 4 << 30


def check(request: dict[str, Any]) -> dict[str, Any]:
    """Load the object the way the enclave will; returns what was found.

    Raises :class:`computations.HeError`, :class:`computations.PsiError` or
    :class:`computations.ComputationError` naming what is wrong.
    """
    if request["kind"] == "points":
        # Canonical, distinct, non-identity ristretto255 encodings (PsiRequest checks).
        points = split_points(Path(request["path"]).read_bytes())
        PsiRequest(points)
        return {"points": len(points)}
    if request["kind"] == "proof":
        # Shape and encodings only (canonical points, scalars below the order): whether
        # the proofs verify depends on the session's offer, checked in the worker.
        key, offered, proofs = unframe_proofs(Path(request["path"]).read_bytes())
        check_point(key)
        PsiRequest(tuple(p for group in offered for p in group))
        for proof in proofs:
            ShuffleProof.from_bytes(proof, len(offered[0]))
        return {"groups": len(offered), "length": len(offered[0])}
    context = load_public_context(Path(request["context_path"]).read_bytes())
    found: dict[str, Any] = {
        "scheme": context.scheme,
        "poly_modulus_degree": context.poly_modulus_degree,
        "coeff_modulus_bits": context.coeff_modulus_bits,
        "galois_keys": bool(context.context.has_galois_keys()),
    }
    if request["kind"] == "values":
        vectors = unframe_vectors(Path(request["path"]).read_bytes())
        slots = context.poly_modulus_degree // 2
        for vector in vectors:
            if int(load_ckks_vector(context, vector).size()) != slots:
                raise HeError(f"every CKKS vector must hold exactly {slots} slots (pad with zeros)")
        found["vectors"] = len(vectors)
    return found


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (_CPU_SECONDS, _CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, _MEMORY_BYTES))
    try:
        answer: dict[str, Any] = {"ok": True, **check(json.loads(sys.stdin.buffer.read()))}
    except IndomainError as exc:
        answer = {"ok": False, "error": str(exc)}
    except Exception as exc:
        answer = {
            "ok": False,
            "error": f"the HE object could not be checked ({type(exc).__name__})",
        }
    out.write(json.dumps(answer))
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
