"""Validate a whole arrow table against a JSON Schema for one row, column by column.

Per-row `jsonschema` costs ~50 us a row; on 100k-row exports that dominates. The row schema only uses a
handful of keywords (type, enum, const, minLength, minimum, items, additionalProperties), and each has an
exact columnar equivalent, so the table is checked with arrow kernels. If the schema ever gains a keyword
this module does not translate, every row is validated with `jsonschema` instead (slower, never wrong).
When a column check fails, the offending rows are re-validated with `jsonschema` for a precise message.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sbs_data import SbsError
from sbs_data.schemas import load_schema, validator

_ANNOTATIONS = {"description", "title", "$comment", "default", "examples", "$schema", "$id"}
_KNOWN = {
    "type",
    "enum",
    "const",
    "minLength",
    "minimum",
    "items",
    "additionalProperties",
    "properties",
    "required",
}


def _types(spec: dict) -> set[str]:
    t = spec.get("type")
    if t is None:
        return {"string", "number", "integer", "boolean", "array", "object", "null"}
    return {t} if isinstance(t, str) else set(t)


def _translatable(spec: dict, top: bool = False) -> bool:
    keys = set(spec) - _ANNOTATIONS
    if not keys <= _KNOWN:
        return False
    if not top and ("properties" in keys or "required" in keys):
        return False
    for sub in ("items", "additionalProperties"):
        v = spec.get(sub)
        if isinstance(v, dict) and not _translatable(v):
            return False
    return True


def _type_ok(arrow_type: pa.DataType, allowed: set[str]) -> bool:
    if pa.types.is_null(arrow_type):
        return "null" in allowed
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    ):
        return "string" in allowed
    if pa.types.is_boolean(arrow_type):
        return "boolean" in allowed
    if pa.types.is_integer(arrow_type):
        return bool(allowed & {"integer", "number"})
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "number" in allowed
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "array" in allowed
    if pa.types.is_struct(arrow_type) or pa.types.is_map(arrow_type):
        return "object" in allowed
    return False


def _check_array(arr: pa.ChunkedArray | pa.Array, spec: dict, where: str) -> pa.Array | None:
    """Return a boolean mask of bad rows (True = bad), or raise for a type mismatch."""
    allowed = _types(spec)
    if not _type_ok(arr.type, allowed):
        raise SbsError(
            f"shard column {where}: arrow type {arr.type} does not match schema type {sorted(allowed)}"
        )
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    bad = pa.array([False] * len(arr)) if len(arr) else pa.array([], pa.bool_())
    if pa.types.is_null(arr.type):
        return None
    if "null" not in allowed and arr.null_count:
        bad = pc.or_(bad, pc.is_null(arr))
    valid = pc.is_valid(arr)

    def flag(ok: pa.Array) -> None:
        nonlocal bad
        # Rows that are null already passed or failed the null check; only judge present values.
        bad = pc.or_(bad, pc.and_(valid, pc.invert(pc.fill_null(ok, True))))

    if "minLength" in spec and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        flag(pc.greater_equal(pc.utf8_length(arr), spec["minLength"]))
    if "minimum" in spec and (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        flag(pc.greater_equal(arr, spec["minimum"]))
    if "enum" in spec:
        flag(pc.is_in(arr, value_set=pa.array([v for v in spec["enum"] if v is not None], arr.type)))
    if "const" in spec:
        flag(pc.equal(arr, pa.scalar(spec["const"], arr.type)))
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        items = spec.get("items")
        if isinstance(items, dict):
            inner = _check_array(arr.flatten(), items, f"{where}[]")
            if inner is not None and pc.any(inner).as_py():
                parents = pc.list_parent_indices(arr)
                bad_parents = pc.filter(parents, inner)
                flag(
                    pc.invert(
                        pc.is_in(
                            pa.array(range(len(arr)), pa.int64()), value_set=bad_parents.cast(pa.int64())
                        )
                    )
                )
    if pa.types.is_struct(arr.type):
        sub = spec.get("additionalProperties")
        if sub is False and arr.type.num_fields:
            raise SbsError(f"shard column {where}: schema allows no properties but the struct has fields")
        if isinstance(sub, dict):
            for i in range(arr.type.num_fields):
                child = arr.field(i)
                inner = _check_array(child, sub, f"{where}.{arr.type.field(i).name}")
                if inner is not None:
                    flag(pc.invert(inner))
    return bad


def validate_table(table: pa.Table, schema_name: str = "shard", key_columns: tuple[str, ...] = ()) -> int:
    """Check every row of `table` against `schemas/<schema_name>.schema.json`; return the rows checked.

    Raises SbsError naming the row (by `key_columns`) and the field for the first few violations.
    """
    schema = load_schema(schema_name)
    props: dict[str, Any] = schema.get("properties", {})
    cols = set(table.column_names)
    missing = [c for c in schema.get("required", []) if c not in cols]
    if missing:
        raise SbsError(f"shard rows lack required field(s): {', '.join(missing)}")
    if schema.get("additionalProperties") is False:
        extra = sorted(cols - set(props))
        if extra:
            raise SbsError(f"shard rows hold field(s) the schema does not allow: {', '.join(extra)}")
    if (
        schema.get("type") not in (None, "object")
        or not _translatable(schema, top=True)
        or not all(_translatable(props[c]) for c in table.column_names if c in props)
    ):
        return _validate_rows(table, None, key_columns, None, schema_name)
    bad_any = None
    for name in table.column_names:
        mask = _check_array(table.column(name), props.get(name, {}), name)
        if mask is not None:
            bad_any = mask if bad_any is None else pc.or_(bad_any, mask)
    if bad_any is not None and pc.any(bad_any).as_py():
        idx = pc.indices_nonzero(bad_any).to_pylist()
        _validate_rows(table, idx[:20], key_columns, 20, schema_name)
        raise SbsError(
            f"{len(idx)} shard row(s) violate the schema (first at row {idx[0]})"
        )  # pragma: no cover
    return table.num_rows


def _validate_rows(
    table: pa.Table, indices: Any, key_columns: tuple[str, ...], limit: int | None, schema_name: str
) -> int:
    v = validator(schema_name)
    errors: list[str] = []
    n = 0

    def rows() -> Any:
        if indices is None:
            i = 0
            for batch in table.to_batches(max_chunksize=8192):
                for row in batch.to_pylist():
                    yield i, row
                    i += 1
        else:
            for i in indices:
                yield i, table.slice(i, 1).to_pylist()[0]

    for i, row in rows():
        n += 1
        for e in v.iter_errors(row):
            key = ", ".join(f"{k}={row.get(k)!r}" for k in key_columns) or f"row {i}"
            path = ".".join(str(p) for p in e.absolute_path) or "(row)"
            errors.append(f"{key}: {path}: {e.message}")
        if limit is not None and len(errors) >= limit:
            break
    if errors:
        raise SbsError(f"rows violate schemas/{schema_name}.schema.json:\n  " + "\n  ".join(errors[:20]))
    return n
