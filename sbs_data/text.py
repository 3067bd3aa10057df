"""Make untrusted text storable: every string that reaches the workspace, a shard or the cache goes through here.

Python strings can hold what UTF-8 cannot: a lone surrogate (`"\\ud800"` from a JSON escape, or bytes decoded
with `surrogateescape`) makes DuckDB, Arrow and every encoder raise. NUL characters store fine but break
C-string tools downstream (tokenizers, terminals, other databases), so they are removed. Both repairs are
reported, so callers can count and flag repaired rows. Imports nothing from sbs_data, so any module can use it.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def storable(s: str) -> tuple[str, bool]:
    """`s` with lone surrogates replaced by U+FFFD and NULs removed, and whether anything changed.

    Linear time; a valid surrogate pair (two halves that belong together) is joined into its code point.
    """
    if s.isascii():
        if "\x00" not in s:
            return s, False
        return s.replace("\x00", ""), True
    try:
        s.encode("utf-8")
        fixed = s
    except UnicodeEncodeError:
        fixed = s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if "\x00" in fixed:
        fixed = fixed.replace("\x00", "")
    return fixed, fixed != s


def storable_value(value: Any) -> tuple[Any, bool]:
    """`storable` applied to every string (keys too) inside nested dicts / lists / tuples."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        out, changed = {}, False
        for k, v in value.items():
            k2, ck = storable(k) if isinstance(k, str) else (k, False)
            v2, cv = storable_value(v)
            out[k2] = v2
            changed = changed or ck or cv
        return out, changed
    if isinstance(value, (list, tuple)):
        items, changed = [], False
        for v in value:
            v2, cv = storable_value(v)
            items.append(v2)
            changed = changed or cv
        return (items if isinstance(value, list) else tuple(items)), changed
    return value, False
