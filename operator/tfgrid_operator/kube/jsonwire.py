"""JSON on the wire to the API server: orjson, with the standard library behind it for what orjson refuses.

Decoding watch events and responses was ~11 % of a burst's CPU with objects as kube-apiserver serves them; orjson
parses the same documents into the same Python values about three times faster. It refuses a few documents the
standard library reads (a number beyond a double, such as ``1e400``; NaN) and integers past 64 bits, which it
reads as floats — as kube-apiserver itself serves them (it decodes a number into an int64 or a float64). A refused
document is decoded again by ``json``, so no event an older operator read is lost to the faster parser."""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer past 64 bits, a key that is not a string: the standard library's rules
        return json.dumps(value).encode()


def dumps_exact(value: Any) -> bytes | None:
    """``value`` as orjson's JSON, of its exact size (orjson's own bytes keep its 4 KB working buffer), when
    ``loads`` gives the same values back; None for what orjson refuses (an integer past 64 bits, a key that is not a
    string), which it would read back otherwise. Values decoded by ``loads`` always come back the same (orjson never
    decodes a NaN or an infinity)."""
    try:
        return bytes(memoryview(orjson.dumps(value)))
    except TypeError:
        return None


def dumps_sorted(value: Any) -> bytes:
    """``value`` as JSON with its keys sorted (equal values give equal bytes), of its exact size (``dumps_exact``)."""
    try:
        return bytes(memoryview(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))
    except TypeError:  # as dumps
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
