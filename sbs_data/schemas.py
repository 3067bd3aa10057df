"""JSON Schema validation with errors that name the file and the field path."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import jsonschema

from sbs_data import SCHEMAS_DIR, SbsError


@functools.cache
def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS_DIR / f"{name}.schema.json").read_text())


@functools.cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _path(err: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in err.absolute_path]
    return ".".join(parts) if parts else "(top level)"


#: Integers a config may hold: what DuckDB's BIGINT holds (and far beyond any count or limit we use).
MAX_INT = 2**63 - 1


def number_errors(data: Any) -> list[tuple[list[str | int], str]]:
    """(path, message) for every NaN, infinity or out-of-range integer in `data`.

    JSON Schema's "number" admits them (YAML spells them .nan / .inf), yet they turn comparisons off
    (x >= NaN is never true), break SQL, or overflow; no config of ours has a use for one.
    """
    out: list[tuple[list[str | int], str]] = []
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        x, path = stack.pop()
        if isinstance(x, bool):
            continue
        if isinstance(x, float) and not math.isfinite(x):
            out.append((path, f"{x} is not a finite number"))
        elif isinstance(x, int) and abs(x) > MAX_INT:
            out.append((path, f"{x} is out of range (at most {MAX_INT} in absolute value)"))
        elif isinstance(x, dict):
            stack.extend((v, [*path, k]) for k, v in reversed(list(x.items())))
        elif isinstance(x, (list, tuple)):
            stack.extend((v, [*path, i]) for i, v in reversed(list(enumerate(x))))
    return out


def _dotted(parts: list) -> str:
    return ".".join(map(str, parts)) if parts else "(top level)"


def validate(data: Any, name: str, where: str = "") -> None:
    """Raise SbsError listing every violation as `where: path.to.field: message` (non-finite numbers too)."""
    found = [(list(map(str, p)), f"{_dotted(p)}: {m}") for p, m in number_errors(data)]
    found += [
        (list(map(str, e.absolute_path)), f"{_path(e)}: {e.message}")
        for e in validator(name).iter_errors(data)
    ]
    if found:
        prefix = f"{where}: " if where else ""
        lines = [f"{prefix}{msg}" for _, msg in sorted(found, key=lambda x: x[0])[:20]]
        raise SbsError(f"invalid {name}:\n  " + "\n  ".join(lines))
