"""One way to print data for every command: `--format table|csv|json|jsonl`."""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json", "jsonl")


def _plain(v: Any) -> Any:
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def render(
    rows: Sequence[dict[str, Any]],
    fmt: str = "table",
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Rows (dicts) as text in the chosen format; the column order is that of the first row."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    cols = list(columns) if columns is not None else (list(rows[0].keys()) if rows else [])
    if fmt == "json":
        return json.dumps([{c: _plain(r.get(c)) for c in cols} for r in rows], indent=2, ensure_ascii=False)
    if fmt == "jsonl":
        return "\n".join(json.dumps({c: _plain(r.get(c)) for c in cols}, ensure_ascii=False) for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([_csv_cell(r.get(c)) for c in cols])
        return buf.getvalue().rstrip("\n")
    table = Table(title=title, show_lines=False)
    for c in cols:
        table.add_column(str(c), overflow="fold")
    for r in rows:
        table.add_row(*[_cell(r.get(c)) for c in cols])
    buf = io.StringIO()
    console = Console(file=buf, width=max(100, _term_width()), force_terminal=False)
    console.print(table)
    if not rows:
        console.print("(no rows)")
    return buf.getvalue().rstrip("\n")


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(_plain(v), ensure_ascii=False)
    return str(_plain(v))


def _cell(v: Any) -> str:
    if v is None:
        return "∅"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        s = json.dumps(_plain(v), ensure_ascii=False)
    else:
        s = str(_plain(v))
    return s if len(s) <= 200 else s[:197] + "..."


def _term_width() -> int:
    try:
        import shutil

        return shutil.get_terminal_size((120, 20)).columns
    except OSError:
        return 120


def emit(
    rows: Sequence[dict[str, Any]],
    fmt: str = "table",
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    sys.stdout.write(render(rows, fmt, columns, title) + "\n")


# -- one block per row (`sbs-data show`) -------------------------------------------------------------------

#: C0/C1 control characters (but tab and newline) and bidi overrides: shown as \\xNN / \\uNNNN so a
#: row's text cannot move the cursor, recolour or reorder the terminal.
_CONTROL = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in [
        *range(0x00, 0x09),
        *range(0x0B, 0x20),
        *range(0x7F, 0xA0),
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
}


def _block_value(v: Any, max_chars: int) -> str:
    if v is None:
        return "∅"
    if isinstance(v, float):
        s = f"{v:.4g}"
    elif isinstance(v, dict):
        s = "  ".join(f"{k}={_cell(x)}" for k, x in v.items() if x is not None)
    elif isinstance(v, (list, tuple)):
        s = json.dumps(_plain(v), ensure_ascii=False)
    else:
        s = str(_plain(v))
    if len(s) > max_chars:
        s = s[:max_chars] + f" … ({len(s) - max_chars:,} more characters; --format json shows all)"
    return s.translate(_CONTROL)


def render_blocks(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    width: int | None = None,
    max_chars: int = 2000,
) -> str:
    """Rows as blocks for reading: a title line per row, then one `name  value` line per column, long text
    wrapped to the terminal (paragraphs kept) and cut at `max_chars`, control characters made visible."""
    import textwrap

    cols = list(columns) if columns is not None else (list(rows[0].keys()) if rows else [])
    width = max(60, width or _term_width())
    key_w = min(max((len(c) for c in cols), default=0), 24)
    text_w = max(20, width - key_w - 2)
    out: list[str] = []
    for i, r in enumerate(rows):
        title = titles[i] if titles else f"row {i + 1}"
        out.append(f"── {title} " + "─" * max(3, width - len(title) - 4))
        for c in cols:
            lines: list[str] = []
            for para in _block_value(r.get(c), max_chars).split("\n"):
                lines += textwrap.wrap(para, text_w, break_on_hyphens=False) or [""]
            pad = " " * (key_w + 2)
            out.append(f"{c:<{key_w}}  {lines[0]}".rstrip())
            out += [(pad + ln).rstrip() for ln in lines[1:]]
        out.append("")
    if not rows:
        out.append("(no rows)")
    return "\n".join(out).rstrip("\n")
