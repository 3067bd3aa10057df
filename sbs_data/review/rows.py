"""The rows of a version as the browser pages see them: a narrow per-server table, filtered, sorted and paged in SQL.

The first look at a version builds a temp table of its rows (every row of its content, kept or dropped, with
the gold label, the selection's keep/rule and every signal; no long text) once, numbered in the default order
(example, sample). Pages then filter, count and sort that table, take one page with LIMIT/OFFSET (or a
range of the row number when nothing narrows the order), and fetch the long text of that page's rows only,
by the content tables' row ids. Text search (`q`) scans the rationale, the input and the example id once
per query with ILIKE (not the raw completion, which repeats the rationale). Every value a request sends is a bound parameter; column names come from a whitelist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sbs_data import SbsError
from sbs_data.quality.signals import SIGNAL_BY_NAME, SIGNALS
from sbs_data.workspace import Version, Workspace

from . import store

#: Columns a page can sort and filter by, besides the signals (name -> SQL over the narrow table `b`).
BASE_COLUMNS = {
    "example_id": "b.example_id",
    "sample": "b.sample_idx",
    "split": "b.split",
    "teacher": "b.teacher",
    "hinted": "b.hinted",
    "status": "b.parse_status",
    "label": "b.pred_label",
    "gold": "b.gold",
    "agree": "b.agree",
    "kept": "b.keep",
    "rule": "b.rule",
}
PAGE_SIZES = (25, 50, 100, 200)
#: The highest page number a request may ask for (its OFFSET must stay a BIGINT: far past any real version).
MAX_PAGE = 10**9
Q_MAX_CHARS = 200
TEXT_PREVIEW_CHARS = 600


def _esc_like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _bool_arg(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y"):
        return True
    if v in ("0", "false", "no", "n"):
        return False
    raise SbsError(f"{name} must be true or false, not {value[:40]!r}")


@dataclass
class Query:
    """A page request, parsed and validated: filters, the sort, the page."""

    eq: dict[str, Any] = field(default_factory=dict)  # BASE_COLUMNS key -> value
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # signal -> (lo, hi)
    bools: dict[str, bool] = field(default_factory=dict)  # bool signal -> value
    q: str = ""
    verdict: str = ""
    sort: str = ""
    desc: bool = False
    page: int = 1
    size: int = 50

    def narrows(self) -> bool:
        return bool(self.eq or self.ranges or self.bools or self.q or self.verdict)


class RowsTable:
    """The narrow table of one version's rows, built once per server (see the module docstring)."""

    def __init__(self, ws: Workspace, v: Version):
        self.ws, self.v = ws, v
        self.name = f"_browse_rows_{v.version_id}"
        self.signals: list[str] = []
        self.total = 0
        self._facets: dict[str, list[Any]] | None = None
        self._build()
        self.facets()

    def _build(self) -> None:
        ws, v = self.ws, self.v
        params: list[Any] = []
        score_cols, sjoin = "", ""
        if v.scores_id is not None:
            have = {
                c
                for (c,) in ws.all(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'sbs_scores'"
                )
            }
            self.signals = [s.name for s in SIGNALS if s.dtype != "key" and s.name in have]
            score_cols = "".join(f", s.{c}" for c in self.signals)
            sjoin = (
                "LEFT JOIN sbs_scores s ON s.version_id = ? AND s.example_id = g.example_id "
                "AND s.sample_idx = g.sample_idx"
            )
            params.append(v.scores_id)
        keep, rule, seljoin = "true", "NULL", ""
        if v.selection_id is not None:
            seljoin = (
                "LEFT JOIN sbs_selections k ON k.version_id = ? AND k.example_id = g.example_id "
                "AND k.sample_idx = g.sample_idx"
            )
            params.append(v.selection_id)
            keep = "coalesce(k.keep, false)"
            rule = "CASE WHEN k.keep THEN NULL ELSE coalesce(k.reason, 'not in selection') END"
        agree = (
            "coalesce(s.gold_match, CASE WHEN e.label IS NULL OR g.pred_label IS NULL THEN NULL "
            "ELSE g.pred_label = e.label END)"
            if "gold_match" in self.signals
            else "CASE WHEN e.label IS NULL OR g.pred_label IS NULL THEN NULL ELSE g.pred_label = e.label END"
        )
        params += [v.examples_id, v.base_id]
        ws.execute(f"DROP TABLE IF EXISTS temp.{self.name}")
        ws.execute(
            f"""CREATE TEMP TABLE {self.name} AS
            SELECT row_number() OVER (ORDER BY g.example_id, g.sample_idx) AS rid,
                   g.example_id, g.sample_idx, g.split, g.teacher, coalesce(g.hinted, false) AS hinted,
                   g.parse_status, g.pred_label, e.label AS gold, {agree} AS agree,
                   {keep} AS keep, {rule} AS rule, g.rowid AS g_row, e.rowid AS e_row{score_cols}
            FROM sbs_generations g
            {sjoin}
            {seljoin}
            LEFT JOIN sbs_examples e ON e.version_id = ? AND e.example_id = g.example_id
            WHERE g.version_id = ?
            ORDER BY rid""",
            params,
        )
        self.total = int(self.ws.one(f"SELECT count(*) FROM temp.{self.name}") or 0)

    # -- request parsing -----------------------------------------------------------------------------
    def columns(self) -> dict[str, str]:
        return {**BASE_COLUMNS, **{s: f"b.{s}" for s in self.signals}}

    def parse(self, args: dict[str, str]) -> Query:
        """Validate a page's query parameters against the known columns and signals."""
        qy = Query()
        for key in ("split", "teacher", "status", "rule", "label", "gold", "example_id"):
            val = args.get(key, "")
            if val:
                qy.eq[key] = val[:1000]
        for key in ("agree", "kept", "hinted"):
            val = args.get(key, "")
            if val:
                qy.eq[key] = _bool_arg(key, val)
        if args.get("verdict"):
            qy.verdict = args["verdict"]
            store.verdict_filter(self.v, qy.verdict, "b")  # validates
        for key, val in args.items():
            if not val or "." not in key:
                continue
            op, _, sig = key.partition(".")
            if op not in ("min", "max", "is"):
                continue
            if sig not in self.signals:
                raise SbsError(
                    f"unknown signal {sig[:60]!r} in {key[:80]!r}; known: {', '.join(self.signals)}"
                )
            if op == "is":
                qy.bools[sig] = _bool_arg(key, val)
                continue
            try:
                num = float(val)
            except ValueError:
                raise SbsError(f"{key} must be a number, not {val[:40]!r}") from None
            lo, hi = qy.ranges.get(sig, (None, None))
            qy.ranges[sig] = (num, hi) if op == "min" else (lo, num)
        qy.q = args.get("q", "").strip()[:Q_MAX_CHARS]
        sort = args.get("sort", "")
        if sort.startswith("-"):
            qy.desc, sort = True, sort[1:]
        if sort and sort not in self.columns():
            raise SbsError(f"cannot sort by {sort[:60]!r}; known columns: {', '.join(self.columns())}")
        qy.sort = sort
        if args.get("dir") in ("desc", "asc"):
            qy.desc = args["dir"] == "desc"
        try:
            qy.page = max(1, int(args.get("page") or 1))
            qy.size = int(args.get("n") or 50)
        except ValueError:
            raise SbsError("page and n must be integers") from None
        if qy.page > MAX_PAGE:
            raise SbsError(f"page must be at most {MAX_PAGE:,}")
        if qy.size not in PAGE_SIZES:
            raise SbsError(f"n must be one of {', '.join(map(str, PAGE_SIZES))}")
        return qy

    def _where(self, qy: Query) -> tuple[str, list[Any]]:
        cols = self.columns()
        conds, params = [], []
        for key, val in qy.eq.items():
            conds.append(f"{cols[key]} = ?")
            params.append(val)
        for sig, (lo, hi) in qy.ranges.items():
            if lo is not None:
                conds.append(f"{cols[sig]} >= ?")
                params.append(lo)
            if hi is not None:
                conds.append(f"{cols[sig]} <= ?")
                params.append(hi)
        for sig, val in qy.bools.items():
            conds.append(f"{cols[sig]} = ?")
            params.append(val)
        if qy.verdict:
            cond, p = store.verdict_filter(self.v, qy.verdict, "b")
            conds.append(cond)
            params += p
        if qy.q:
            pat = _esc_like(qy.q)
            conds.append(
                "(b.g_row IN (SELECT rowid FROM sbs_generations WHERE version_id = ? "
                "AND rationale ILIKE ? ESCAPE '\\') "
                "OR b.e_row IN (SELECT rowid FROM sbs_examples WHERE version_id = ? "
                "AND input_text ILIKE ? ESCAPE '\\') OR b.example_id ILIKE ? ESCAPE '\\')"
            )
            params += [self.v.base_id, pat, self.v.examples_id, pat, pat]
        return (" WHERE " + " AND ".join(conds)) if conds else "", params

    # -- reading -------------------------------------------------------------------------------------
    def page(self, qy: Query) -> tuple[int, list[dict[str, Any]]]:
        """(rows matching, the page's rows with their text and verdicts)."""
        where, params = self._where(qy)
        src = f"temp.{self.name} b"
        offset = (qy.page - 1) * qy.size
        if not qy.narrows() and not qy.sort:
            total = self.total
            keys = self.ws.query(
                f"SELECT * FROM {src} WHERE b.rid > ? AND b.rid <= ? ORDER BY b.rid",
                [offset, offset + qy.size],
            )
        else:
            total = int(self.ws.one(f"SELECT count(*) FROM {src}{where}", params) or 0)
            order = "b.rid"
            if qy.sort:
                order = f"{self.columns()[qy.sort]} {'DESC' if qy.desc else 'ASC'} NULLS LAST, b.rid"
            keys = self.ws.query(
                f"SELECT * FROM {src}{where} ORDER BY {order} LIMIT ? OFFSET ?", [*params, qy.size, offset]
            )
        cols, rows = keys
        out = [dict(zip(cols or [], r)) for r in rows]
        self._attach_text(out)
        verdicts = store.verdict_map(self.ws, self.v, [(r["example_id"], r["sample_idx"]) for r in out])
        for r in out:
            r["verdict"], r["verdict_reason"] = verdicts.get((r["example_id"], r["sample_idx"]), (None, None))
        return total, out

    def _attach_text(self, rows: list[dict[str, Any]], full: bool = False) -> None:
        """Fetch the long text of these rows only, by row id (a lookup, not a scan)."""
        if not rows:
            return
        # A page of rows reads previews cut in SQL (a huge completion is never read whole); a row page, all.
        rationale, raw, text = (
            ("rationale", "raw", "input_text")
            if full
            else (f"left(rationale, {TEXT_PREVIEW_CHARS})", "NULL", f"left(input_text, {TEXT_PREVIEW_CHARS})")
        )
        g_ids = [r["g_row"] for r in rows]
        gtext = {
            rid: (rat, raw, fin, err)
            for rid, rat, raw, fin, err in self.ws.all(
                f"SELECT rowid, {rationale}, {raw}, finish_reason, error FROM sbs_generations "
                "WHERE rowid IN (SELECT unnest(?))",
                [g_ids],
            )
        }
        e_ids = [r["e_row"] for r in rows if r["e_row"] is not None]
        etext = {
            rid: txt
            for rid, txt in (
                self.ws.all(
                    f"SELECT rowid, {text} FROM sbs_examples WHERE rowid IN (SELECT unnest(?))", [e_ids]
                )
                if e_ids
                else []
            )
        }
        for r in rows:
            rat, raw, fin, err = gtext.get(r["g_row"], (None, None, None, None))
            r["rationale"], r["raw"] = rat, raw
            r["finish_reason"], r["error"] = fin, err
            r["input_text"] = etext.get(r["e_row"])

    def example(self, example_id: str) -> list[dict[str, Any]]:
        """Every row of one example in this version (all samples, teachers, hinted and not), full text."""
        cols, rows = self.ws.query(
            f"SELECT * FROM temp.{self.name} b WHERE b.example_id = ? ORDER BY b.hinted, b.teacher, b.sample_idx",
            [example_id],
        )
        out = [dict(zip(cols or [], r)) for r in rows]
        self._attach_text(out, full=True)
        verdicts = store.verdict_map(self.ws, self.v, [(r["example_id"], r["sample_idx"]) for r in out])
        for r in out:
            r["verdict"], r["verdict_reason"] = verdicts.get((r["example_id"], r["sample_idx"]), (None, None))
        return out

    def neighbours(self, example_id: str) -> tuple[str | None, str | None]:
        """The previous and next example (default order), for j/k across row pages."""
        prev = self.ws.one(f"SELECT max(example_id) FROM temp.{self.name} WHERE example_id < ?", [example_id])
        nxt = self.ws.one(f"SELECT min(example_id) FROM temp.{self.name} WHERE example_id > ?", [example_id])
        return prev, nxt

    def facets(self) -> dict[str, list[Any]]:
        """The distinct values of the small columns, for the filter menus (capped; read once: the rows of a
        committed version never change)."""
        if self._facets is not None:
            return self._facets
        out: dict[str, list[Any]] = {}
        for col in ("split", "teacher", "parse_status", "rule"):
            out[col] = [
                r[0]
                for r in self.ws.all(
                    f"SELECT DISTINCT {col} FROM temp.{self.name} WHERE {col} IS NOT NULL ORDER BY 1 LIMIT 50"
                )
            ]
        self._facets = out
        return out


def other_generations(ws: Workspace, v: Version, example_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The example's rows in other teacher versions over the same examples (other teachers, hinted runs)."""
    if v.examples_id is None:
        return []
    cols, rows = ws.query(
        """SELECT w.dataset || '@' || w.num AS ref, g.sample_idx, g.teacher, coalesce(g.hinted, false) AS hinted,
                  g.parse_status, g.pred_label, g.rationale
           FROM sbs_generations g JOIN sbs_versions w ON w.version_id = g.version_id
           WHERE g.example_id = ? AND w.status = 'committed' AND w.examples_id = ? AND w.base_id = w.version_id
             AND g.version_id <> ?
           ORDER BY w.dataset, w.num, g.sample_idx LIMIT ?""",
        [example_id, v.examples_id, v.base_id, limit],
    )
    return [dict(zip(cols or [], r)) for r in rows]


def describe(signal: str) -> str:
    s = SIGNAL_BY_NAME.get(signal)
    return s.description if s else ""


class Tables:
    """The narrow tables this server has built, one per version browsed, built on first use (callers hold
    the server's lock)."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._by_vid: dict[int, RowsTable] = {}

    def get(self, v: Version) -> RowsTable:
        t = self._by_vid.get(v.version_id)
        if t is None:
            t = self._by_vid[v.version_id] = RowsTable(self.ws, v)
        return t
