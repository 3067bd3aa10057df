"""`sbs-data show NAME[@N]`: the rows of one version, to look at.

One function, `show`, selects the rows a version shows (examples; generations with the gold label and the
input; the quality signals of a scored version; every row of a selection with its keep/drop and the rule
that dropped it), filtered by a user's SQL predicate and cut to a few columns. The predicate runs as part
of one SELECT statement that `Workspace.check_read_only` accepts, so it reads and never writes; the CLI
also locks the connection (`Workspace.sandbox`) as `sbs-data sql` does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import duckdb

from sbs_data import SbsError
from sbs_data.workspace import Version, Workspace

#: Columns shown when `columns` is not given, per kind of rows (those absent from the rows are skipped).
DEFAULT_COLUMNS = {
    "examples": ("example_id", "split", "label", "choices", "input_text", "fields"),
    "generations": (
        "example_id",
        "sample_idx",
        "split",
        "teacher",
        "parse_status",
        "gold_label",
        "pred_label",
        "input_text",
        "rationale",
    ),  # fmt: skip
}
#: Generation columns that are keys or copies; the rest of `sbs_scores` are signals.
_SCORE_KEYS = ("version_id", "example_id", "sample_idx", "split", "teacher", "hinted")
_UNKNOWN_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')
DEFAULT_LIMIT = 10


@dataclass
class Shown:
    """The rows `show` selected: `columns` in order, `rows` as dicts, `available` = every column
    `where` and `columns` may name; `total` = rows matching (before the limit)."""

    ref: str
    kind: str
    columns: list[str]
    rows: list[dict[str, Any]]
    available: list[str]
    total: int
    #: each row's example_id (and sample_idx), whatever `columns` kept: what names a row
    keys: list[dict[str, Any]] = field(default_factory=list)


def _cols(ws: Workspace, sql: str, params: list[Any]) -> list[str]:
    return ws.query(f"SELECT * FROM ({sql}) LIMIT 0", params)[0] or []


def _score_signals(ws: Workspace) -> list[str]:
    rows = ws.all(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' "
        "AND table_name = 'sbs_scores' ORDER BY ordinal_position"
    )
    return [r[0] for r in rows if r[0] not in _SCORE_KEYS]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rows_sql(ws: Workspace, v: Version) -> tuple[str, list[Any], list[str]]:
    """SQL (with params) of every row `v` shows, one column per field, and its default columns."""
    if v.kind == "examples":
        src, params = ws.visible(v, alias="t")
        return f"SELECT t.* EXCLUDE (version_id) FROM {src}", params, list(DEFAULT_COLUMNS["examples"])
    defaults = list(DEFAULT_COLUMNS["generations"])
    head: list[Any] = []  # parameters of the SELECT list, which come first
    if v.kind == "selection":
        # every row the selection decided on, kept or dropped, with the rule that dropped it
        from sbs_data.quality.recipes import parse_recipe

        sel = ws.by_id(v.selection_id)
        rules: list[tuple[str, str]] = []
        if "recipe" in sel.config:
            rec = parse_recipe(json.dumps(sel.config["recipe"]), where=f"{sel.ref} recipe")
            rules = [(st.name, st.describe()) for st in rec.steps]
        rule = "NULL::VARCHAR"
        if rules:
            rule = "CASE g.reason " + " ".join("WHEN ? THEN ?" for _ in rules) + " END"
            head += [x for pair in rules for x in pair]
        inner = (
            "SELECT t.*, d.keep, d.reason FROM sbs_generations t JOIN sbs_selections d ON d.version_id = ? "
            "AND d.example_id = t.example_id AND d.sample_idx = t.sample_idx WHERE t.version_id = ?"
        )
        inner_params: list[Any] = [v.selection_id, v.base_id]
        extra = f", {rule} AS rule"
        defaults[3:3] = ["keep", "reason", "rule"]
    else:
        src, inner_params = ws.visible(v, alias="t")
        inner = f"SELECT t.* FROM {src}"
        extra = ""
    cols = f"g.* EXCLUDE (version_id){extra}, e.label AS gold_label, e.input_text, e.choices"
    joins = "LEFT JOIN sbs_examples e ON e.version_id = ? AND e.example_id = g.example_id"
    params = [*head, *inner_params, v.examples_id]
    if v.scores_id is not None:
        from sbs_data.quality.signals import SIGNAL_BY_NAME

        signals = _score_signals(ws)
        # the one-glance `signals` column leaves out the grouping keys (hashes, cluster ids)
        glance = [c for c in signals if getattr(SIGNAL_BY_NAME.get(c), "dtype", "") != "key"]
        struct = "{" + ", ".join(f"'{c}': q.{_quote(c)}" for c in glance) + "}"
        cols += ", " + ", ".join(f"q.{_quote(c)}" for c in signals)
        cols += f", CASE WHEN q.example_id IS NULL THEN NULL ELSE {struct} END AS signals"
        joins += (
            " LEFT JOIN sbs_scores q ON q.version_id = ? AND q.example_id = g.example_id "
            "AND q.sample_idx = g.sample_idx"
        )
        params.append(v.scores_id)
        defaults.append("signals")
    return f"SELECT {cols} FROM ({inner}) g {joins}", params, defaults


def _columns(wanted: list[str] | None, available: list[str], defaults: list[str]) -> list[str]:
    if not wanted:
        return [c for c in defaults if c in available]
    names = [c.strip() for w in wanted for c in w.split(",") if c.strip()]
    if names == ["*"]:
        return [c for c in available if c != "signals"]
    unknown = [c for c in names if c not in available]
    if unknown:
        raise SbsError(
            f"--columns: unknown column(s) {', '.join(map(repr, unknown))}; the rows have: {', '.join(available)}"
        )
    return names


def show(
    ws: Workspace,
    ref: str,
    *,
    limit: int | None = DEFAULT_LIMIT,
    where: str | None = None,
    columns: list[str] | None = None,
) -> Shown:
    """The rows version `ref` shows, in (example_id, sample_idx) order: at most `limit` (None or 0 = all)
    matching the SQL predicate `where` (over any of the rows' columns), cut to `columns` (names, or
    comma-separated names; `*` = all; default: the columns a person reads first)."""
    v = ws.get(ref)
    sql, params, defaults = rows_sql(ws, v)
    available = _cols(ws, sql, params)
    cols = _columns(columns, available, defaults)
    cond = ""
    if where is not None and where.strip():
        cond = f" WHERE ({where})"
        stmt = f"SELECT * FROM ({sql}) r{cond}"
        try:
            n = ws.statement_count(stmt)
        except SbsError as e:
            raise SbsError(f"--where {where!r}: {e}") from e
        if n != 1:
            raise SbsError(f"--where {where!r}: one SQL condition, not several statements")
        ws.check_read_only(stmt)
    order = "example_id, sample_idx" if "sample_idx" in available else "example_id"
    key_cols = [c for c in ("example_id", "sample_idx") if c in available]
    picked = cols + [c for c in key_cols if c not in cols]
    proj = ", ".join(_quote(c) for c in picked)
    lim = f" LIMIT {int(limit)}" if limit else ""
    try:
        total = ws.one(f"SELECT count(*) FROM ({sql}) r{cond}", params)
        rows = ws.all(f"SELECT {proj} FROM ({sql}) r{cond} ORDER BY {order}{lim}", params)
    except duckdb.Error as e:
        m = _UNKNOWN_COLUMN.search(str(e))
        if m:
            raise SbsError(
                f"--where: unknown column {m.group(1)!r}; the rows of {v.ref} have: {', '.join(available)}"
            ) from e
        raise SbsError(f"--where {where!r}: {str(e).splitlines()[0]}") from e
    full = [dict(zip(picked, r)) for r in rows]
    if not columns and "choices" in cols and all(r["choices"] is None for r in full):
        cols.remove("choices")  # a task with fixed labels or numbers has none: no empty line per row
    return Shown(
        v.ref,
        v.kind,
        cols,
        [{c: r[c] for c in cols} for r in full],
        available,
        int(total),
        [{c: r[c] for c in key_cols} for r in full],
    )
