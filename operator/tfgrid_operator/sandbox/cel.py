"""CRD validation rules (``x-kubernetes-validations``, CEL) evaluated as kube-apiserver does, for the emulator.

Each rule applies to the schema node it sits on: ``self`` is the value there; a rule that names ``oldSelf`` is a
transition rule, evaluated only on an update where the old object has a value at that place. As on Kubernetes
≥1.30 (CRD validation ratcheting), a part of the object an update leaves unchanged is not judged again: an
object stored before a rule existed can still get its finalizer removed. A rule that is
false (or fails to evaluate) is a field error ``<path>: Invalid value: "<type>": <message>``; the caller turns
them into the 422 a cluster answers. Evaluated with cel-python (``celpy``); programs are compiled once per rule.
"""

from __future__ import annotations

import functools
from typing import Any

import celpy

JSON = dict[str, Any]
_env = celpy.Environment()


@functools.lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    return _env.program(_env.compile(rule))


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), "object")


def _holds(rule: str, new: Any, old: Any) -> bool | str:
    """True when the rule holds; False when it does not; an error text when it cannot be evaluated."""
    activation = {"self": celpy.json_to_cel(new)}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = _program(rule).evaluate(activation)
    except Exception as exc:  # celpy raises CELEvalError (and lark errors for a rule that does not compile)
        return f"rule {rule!r} could not be evaluated: {exc}"
    if isinstance(result, Exception):  # celpy may return its error value instead of raising it
        return f"rule {rule!r} could not be evaluated: {result}"
    return bool(result)


def violations(schema: JSON | None, new: Any, old: Any = None, path: str = "") -> list[str]:
    """Every rule of ``schema`` (and of its properties, items, additionalProperties) that ``new`` breaks, given
    the stored ``old`` value (None on create)."""
    if not isinstance(schema, dict) or new is None or (old is not None and new == old):
        return []  # ratcheting (Kubernetes ≥1.30): a value an update leaves unchanged is not re-judged
    out: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        held = _holds(rule["rule"], new, old if transition else None)
        if held is True:
            continue
        message = held if isinstance(held, str) else rule.get("message") or f"failed rule: {rule['rule']}"
        where = path + rule.get("fieldPath", "") if rule.get("fieldPath") else path or "<root>"
        out.append(f'{where}: Invalid value: "{_type_name(new)}": {message}')
    if isinstance(new, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, value in new.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            before = old.get(key) if isinstance(old, dict) else None
            out.extend(violations(sub, value, before, f"{path}.{key}" if path else key))
    elif isinstance(new, list) and isinstance(schema.get("items"), dict):
        # items are correlated with their old selves only in map lists upstream; without that, no oldSelf
        for i, value in enumerate(new):
            out.extend(violations(schema["items"], value, None, f"{path}[{i}]"))
    return out
