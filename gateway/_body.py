"""Reading request bodies without trusting their size or shape.

Every route that takes a body reads it through :func:`read_json`: the size is capped while
streaming (a declared Content-Length is checked first, a chunked body is counted), JSON's
non-standard constants are refused, and nesting deeper than :data:`MAX_DEPTH` is refused
before anything walks it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from gateway._errors import MalformedRequest, PayloadTooLarge

MAX_DEPTH = 32


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """Decode a request body; raises MalformedRequest for anything but plain, shallow JSON."""
    try:
        data = json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedRequest("the body is not valid JSON") from None
    if depth(data) > MAX_DEPTH:
        raise MalformedRequest(f"the body nests deeper than {MAX_DEPTH} levels")
    return data


async def read_json(request: Request, limit: int) -> Any:
    return parse_json(await read_capped(request, limit))


def depth(value: Any) -> int:
    """Nesting depth of decoded JSON, computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
