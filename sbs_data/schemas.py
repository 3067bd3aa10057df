"""JSON Schema validation with errors that name the file and the field path."""

from __future__ import annotations

import functools
import json
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


def validate(data: Any, name: str, where: str = "") -> None:
    """Raise SbsError listing every violation as `where: path.to.field: message`."""
    errors = sorted(validator(name).iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        prefix = f"{where}: " if where else ""
        lines = [f"{prefix}{_path(e)}: {e.message}" for e in errors[:20]]
        raise SbsError(f"invalid {name}:\n  " + "\n  ".join(lines))
