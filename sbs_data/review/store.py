"""The review table: a person's keep/drop verdict per (version, example, sample), and `review apply`.

The only module that names the table (migration 013 creates it). A verdict is an upsert committed in its own
transaction before `record` returns, so a verdict the browser saw acknowledged survives a killed server. The
latest verdict for a row wins. `apply` turns a version's verdicts into a selection version, as `filter` makes
one: every row of the version's content gets keep/drop, rows marked drop get the rule `review`, and rows an
earlier selection dropped stay dropped with their earlier rule.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sbs_data import SbsError
from sbs_data.text import storable
from sbs_data.workspace import Version, Workspace, check_name

#: The rule (the `reason` of sbs_selections) of a row a person dropped.
RULE = "review"
VERDICTS = ("keep", "drop")
REASON_MAX_CHARS = 1000
EXAMPLE_ID_MAX_CHARS = 1000
EARLIER = "earlier selection"


def reviewable(ws: Workspace, ref: str) -> Version:
    """The version `ref` names, refused unless it holds teacher rows (examples have nothing to judge)."""
    v = ws.get(ref)
    if v.kind == "examples":
        raise SbsError(
            f"{v.ref} holds examples, not teacher rows; review a generations, scores or selection version"
        )
    return v


def _samples(ws: Workspace, v: Version, example_id: str) -> list[int]:
    return [
        s
        for (s,) in ws.all(
            "SELECT sample_idx FROM sbs_generations WHERE version_id = ? AND example_id = ? ORDER BY 1",
            [v.base_id, example_id],
        )
    ]


def record(
    ws: Workspace,
    ref: str,
    example_id: str,
    verdict: str,
    sample: int | None = None,
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """Store a verdict (and commit it) for one sample of an example, or for every sample when `sample` is None.

    Validates everything first: the version has teacher rows, the example and sample are among its rows
    (kept or dropped), the verdict is keep or drop, the reason is text of at most 1000 characters.
    Returns the stored rows.
    """
    if verdict not in VERDICTS:
        raise SbsError(f"verdict must be keep or drop, not {verdict!r}")
    if not isinstance(example_id, str) or not example_id or len(example_id) > EXAMPLE_ID_MAX_CHARS:
        raise SbsError("example_id must be a non-empty string")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)):
        raise SbsError(f"sample must be an integer, not {sample!r}")
    if reason is not None:
        if not isinstance(reason, str):
            raise SbsError("reason must be a string")
        reason = storable(reason)[0].strip()[:REASON_MAX_CHARS] or None
    v = reviewable(ws, ref)
    have = _samples(ws, v, example_id)
    if not have:
        raise SbsError(f"no example {example_id!r} in {v.ref}")
    if sample is not None and sample not in have:
        raise SbsError(f"example {example_id!r} of {v.ref} has no sample {sample} (samples: {have})")
    targets = have if sample is None else [sample]
    with ws.transaction():
        for s in targets:
            ws.execute(
                "INSERT OR REPLACE INTO sbs_verdicts (version_id, example_id, sample_idx, verdict, reason, decided_at) "
                "VALUES (?, ?, ?, ?, ?, current_timestamp)",
                [v.version_id, example_id, s, verdict, reason],
            )
    return [r for r in verdicts(ws, v.ref, example_id=example_id) if r["sample"] in targets]


def verdicts(ws: Workspace, ref: str, example_id: str | None = None) -> list[dict[str, Any]]:
    """The verdicts on `ref` (optionally of one example), by example and sample."""
    v = reviewable(ws, ref)
    where, params = "version_id = ?", [v.version_id]  # type: tuple[str, list[Any]]
    if example_id is not None:
        where += " AND example_id = ?"
        params.append(example_id)
    rows = ws.all(
        f"SELECT example_id, sample_idx, verdict, reason, decided_at FROM sbs_verdicts WHERE {where} "
        "ORDER BY example_id, sample_idx",
        params,
    )
    return [
        {
            "ref": v.ref,
            "example_id": e,
            "sample": s,
            "verdict": vd,
            "reason": r,
            "decided_at": t.isoformat(sep=" ", timespec="seconds"),
        }
        for e, s, vd, r, t in rows
    ]


def verdict_map(
    ws: Workspace, v: Version, keys: list[tuple[str, int]]
) -> dict[tuple[str, int], tuple[str, str | None]]:
    """{(example_id, sample): (verdict, reason)} for the given rows of `v` (a page's worth)."""
    if not keys:
        return {}
    eids = sorted({e for e, _ in keys})
    rows = ws.all(
        "SELECT example_id, sample_idx, verdict, reason FROM sbs_verdicts WHERE version_id = ? "
        "AND list_contains(?, example_id)",
        [v.version_id, eids],
    )
    return {(e, s): (vd, r) for e, s, vd, r in rows}


def verdict_filter(v: Version, verdict: str, alias: str) -> tuple[str, list[Any]]:
    """SQL condition (and params) on rows aliased `alias`: reviewed keep / drop, or `none` (not reviewed)."""
    if verdict not in (*VERDICTS, "none", "any"):
        raise SbsError(f"verdict filter must be keep, drop, any or none, not {verdict!r}")
    sub = (
        f"SELECT 1 FROM sbs_verdicts r WHERE r.version_id = ? AND r.example_id = {alias}.example_id "
        f"AND r.sample_idx = {alias}.sample_idx"
    )
    if verdict == "none":
        return f"NOT EXISTS ({sub})", [v.version_id]
    if verdict == "any":
        return f"EXISTS ({sub})", [v.version_id]
    return f"EXISTS ({sub} AND r.verdict = ?)", [v.version_id, verdict]


def summary(ws: Workspace, dataset: str | None = None) -> list[dict[str, Any]]:
    """Per reviewed version: its rows, how many were reviewed, kept and dropped, and the last verdict's time."""
    where, params = "", []
    if dataset:
        where, params = "WHERE v.dataset = ?", [check_name(dataset)]
    rows = ws.all(
        f"""SELECT v.dataset || '@' || v.num, v.dataset, v.num, v.row_count,
               (SELECT count(*) FROM sbs_generations g WHERE g.version_id = v.base_id),
               count(*), count(*) FILTER (WHERE r.verdict = 'keep'), count(*) FILTER (WHERE r.verdict = 'drop'),
               max(r.decided_at)
        FROM sbs_verdicts r JOIN sbs_versions v ON v.version_id = r.version_id {where}
        GROUP BY ALL ORDER BY v.dataset, v.num""",
        params,
    )
    return [
        {
            "ref": ref,
            "rows": visible,
            "generated": generated,
            "reviewed": n,
            "keep": k,
            "drop": d,
            "last": last.isoformat(sep=" ", timespec="seconds") if last else None,
        }
        for ref, _, _, visible, generated, n, k, d, last in rows
    ]


@dataclass
class ApplyResult:
    version: Version
    counts: dict[str, int]


def _fingerprint(ws: Workspace, v: Version) -> tuple[str, datetime | None]:
    """A hash of the verdicts `apply` reads (so two applies of the same review have the same config)."""
    h = hashlib.sha256()
    last = None
    for e, s, vd, t in ws.all(
        "SELECT example_id, sample_idx, verdict, decided_at FROM sbs_verdicts WHERE version_id = ? ORDER BY 1, 2",
        [v.version_id],
    ):
        h.update(f"{e}\x1f{s}\x1f{vd}\x1e".encode())
        last = t if last is None or t > last else last
    return h.hexdigest()[:16], last


def _require_verdicts(ws: Workspace, v: Version) -> None:
    """Refuse to apply a review that has no verdicts: the selection would only copy `v`, and the likely cause
    is that the rows were judged on another version of the same rows (verdicts belong to the version judged)."""
    if ws.one("SELECT count(*) FROM sbs_verdicts WHERE version_id = ?", [v.version_id]):
        return
    others = [
        r
        for (r,) in ws.all(
            "SELECT DISTINCT v.dataset || '@' || v.num FROM sbs_verdicts r JOIN sbs_versions v "
            "ON v.version_id = r.version_id WHERE v.base_id = ? AND v.status = 'committed' ORDER BY 1",
            [v.base_id],
        )
    ]
    where = f"; the same rows were judged on {', '.join(others)}" if others else ""
    raise SbsError(
        f"no verdicts on {v.ref}: nothing to apply (judge its rows in `sbs-data browse {v.ref}` first{where})"
    )


def apply(ws: Workspace, ref: str, name: str, note: str | None = None) -> ApplyResult:
    """A new selection version `name@N` over `ref`: rows marked drop dropped with rule `review`, rows an earlier
    selection dropped kept dropped with their rule, every other row kept. Its config carries the review's
    counts and a hash of the verdicts; it is one run in `sbs_runs`. A version without verdicts is refused."""
    check_name(name)
    _require_verdicts(ws, reviewable(ws, ref))
    with ws.run(f"review apply {ref} --name {name}") as run:
        v = reviewable(ws, ref)
        fp, last = _fingerprint(ws, v)
        params: list[Any] = [v.version_id]
        prior, keep0, reason0 = "", "true", "NULL"
        if v.selection_id is not None:
            prior = (
                "LEFT JOIN sbs_selections p ON p.version_id = ? AND p.example_id = g.example_id "
                "AND p.sample_idx = g.sample_idx"
            )
            params.append(v.selection_id)
            keep0 = "coalesce(p.keep, false)"
            reason0 = f"coalesce(p.reason, '{EARLIER}')"
        params.append(v.base_id)
        rows_sql = f"""
            SELECT g.example_id, g.sample_idx,
                   CASE WHEN NOT {keep0} THEN false WHEN r.verdict = 'drop' THEN false ELSE true END AS keep,
                   CASE WHEN NOT {keep0} THEN {reason0} WHEN r.verdict = 'drop' THEN '{RULE}' END AS reason,
                   {keep0} AS was_kept, r.verdict
            FROM sbs_generations g
            LEFT JOIN sbs_verdicts r ON r.version_id = ? AND r.example_id = g.example_id
                 AND r.sample_idx = g.sample_idx
            {prior}
            WHERE g.version_id = ?"""
        # params order: verdicts' version, [earlier selection], base
        counted = ws.all(
            f"""SELECT count(*), count(*) FILTER (WHERE was_kept), count(verdict),
                       count(*) FILTER (WHERE verdict = 'keep'), count(*) FILTER (WHERE verdict = 'drop'),
                       count(*) FILTER (WHERE verdict = 'drop' AND was_kept), count(*) FILTER (WHERE keep)
                FROM ({rows_sql})""",
            params,
        )[0]
        total, before, reviewed, keeps, drops, dropped, kept = (int(x) for x in counted)
        counts = {
            "rows": total,
            "kept_before": before,
            "reviewed": reviewed,
            "keep": keeps,
            "drop": drops,
            "dropped_by_review": dropped,
            "kept": kept,
        }
        config = {
            "op": "review",
            "source": v.ref,
            "scores": ws.by_id(v.scores_id).ref if v.scores_id else None,
            "earlier_selection": ws.by_id(v.selection_id).ref if v.selection_id else None,
            "review": {
                "version": v.ref,
                "verdicts_hash": fp,
                "last_verdict_at": last.isoformat(sep=" ", timespec="seconds") if last else None,
                "counts": counts,
            },
        }
        with ws.new_version(name, "selection", config, parents=[v], note=note, run_id=run.run_id) as sel:
            ws.execute(
                "INSERT INTO sbs_selections (version_id, example_id, sample_idx, keep, reason) "
                f"SELECT ?, example_id, sample_idx, keep, reason FROM ({rows_sql}) ORDER BY example_id, sample_idx",
                [sel.version_id, *params],
            )
        out = ws.by_id(sel.version_id)
        run.stats.update({"version": out.ref, "review": counts})
    return ApplyResult(out, counts)
