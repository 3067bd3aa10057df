"""Apply a recipe to a scored version: a new `selection` version with keep/drop + reason per row.

Steps run in order over the rows still kept, each one a SQL statement; a row's reason is the first step
that dropped it. Rows an earlier selection dropped stay dropped with their earlier reason, so filtering
twice only ever narrows. No text is copied: the selection is (example_id, sample_idx, keep, reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbs_data import SbsError
from sbs_data.quality.recipes import Recipe, Step, load_recipe
from sbs_data.quality.signals import ScoreParams, score, sql_str
from sbs_data.workspace import Version, Workspace

EARLIER = "earlier selection"
UNSCORED = "unscored"


@dataclass
class FilterResult:
    version: Version
    scored: Version | None  # the scores version made on the way (when REF had none)
    funnel: list[dict[str, Any]]


def filter_version(
    ws: Workspace,
    ref: str,
    recipe: Recipe | str | Path,
    name: str | None = None,
    auto_score: bool = True,
    score_params: ScoreParams | None = None,
    note: str | None = None,
    info: Callable[[str], None] | None = None,
) -> FilterResult:
    """Filter REF with a recipe into a new selection version (parent = REF's scores).

    The recipe is validated before anything is read. When REF has no scores yet they are computed first
    (a scores version, as `score` would make) unless `auto_score` is False. The call is one run in
    `sbs_runs` (scoring on the way included), with the funnel in its stats.
    """
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    with ws.run(f"filter {ref} --recipe {rec.source or rec.name}") as run:
        v = ws.get(ref)
        if v.kind == "examples":
            raise SbsError(f"{v.ref} holds examples, not teacher generations; filter a generations version")
        scored = None
        if v.scores_id is None:
            if not auto_score:
                raise SbsError(f"{v.ref} has no scores yet; run `sbs-data score {v.ref}` first")
            if info:
                info(f"{v.ref} has no scores yet: scoring it first")
            scored = score(ws, v.ref, name=name, params=score_params)
            v = scored
        config = {
            "op": "filter",
            "source": v.ref,
            "scores": ws.by_id(v.scores_id).ref,
            "earlier_selection": ws.by_id(v.selection_id).ref if v.selection_id else None,
            "recipe": rec.content,
            "recipe_name": rec.name,
            "recipe_hash": rec.hash,
            "filtered_splits": list(rec.splits),
        }
        with ws.new_version(
            name or v.dataset, "selection", config, parents=[v], note=note, run_id=run.run_id
        ) as sel:
            funnel = apply_recipe(ws, v, rec)
            ws.execute(
                "INSERT INTO sbs_selections (version_id, example_id, sample_idx, keep, reason) "
                "SELECT ?, example_id, sample_idx, keep, reason FROM _sf ORDER BY rid",
                [sel.version_id],
            )
            ws.execute("DROP TABLE IF EXISTS _sf")
        out = ws.by_id(sel.version_id)
        run.stats.update({"version": out.ref, "recipe_file": rec.source, "funnel": funnel})
    return FilterResult(out, scored, funnel)


def _cond(step: Step) -> str:
    """SQL boolean for a threshold step; NULL (not applicable) resolves by `missing`."""
    col = step.signal
    parts = []
    if step.equals is not None:
        v = step.equals
        lit = (
            ("true" if v else "false")
            if isinstance(v, bool)
            else (sql_str(v) if isinstance(v, str) else repr(v))
        )
        parts.append(f"{col} = {lit}")
    if step.min is not None:
        parts.append(f"{col} >= {float(step.min)!r}")
    if step.max is not None:
        parts.append(f"{col} <= {float(step.max)!r}")
    return f"coalesce(({' AND '.join(parts)}), {'true' if step.missing == 'keep' else 'false'})"


def _order(by: tuple[tuple[str, bool], ...]) -> str:
    keys = [f"{sig} {'DESC' if desc else 'ASC'} NULLS LAST" for sig, desc in by]
    return ", ".join([*keys, "sample_idx", "rid"])


def _counts(ws: Workspace) -> dict[str, int]:
    return {
        s: n
        for s, n in ws.all(
            "SELECT split, count(*) FILTER (WHERE keep) FROM _sf GROUP BY split ORDER BY split"
        )
    }


def apply_recipe(ws: Workspace, v: Version, rec: Recipe) -> list[dict[str, Any]]:
    """Build temp table `_sf` (rid, example_id, sample_idx, split, keep, reason, signals...) and run the steps.

    Returns the funnel: one entry per stage with rows in / dropped / out, overall and per split; a recipe
    step's entry also has `applies`, the rows it could act on (0: the step applies to no row, n/a).
    """
    sigs = sorted(rec.signals() | {"majority_agree", "vote_share", "rationale_hash", "near_dup_cluster"})
    prior = ""
    params: list[Any] = [v.scores_id]
    keep0 = "s.version_id IS NOT NULL"
    reason0 = f"CASE WHEN s.version_id IS NULL THEN '{UNSCORED}' END"
    if v.selection_id is not None:
        prior = (
            "LEFT JOIN sbs_selections p ON p.version_id = ? AND p.example_id = g.example_id "
            "AND p.sample_idx = g.sample_idx"
        )
        params.append(v.selection_id)
        keep0 = f"coalesce(p.keep, false) AND {keep0}"
        reason0 = (
            f"CASE WHEN NOT coalesce(p.keep, false) THEN coalesce(p.reason, '{EARLIER}') "
            f"WHEN s.version_id IS NULL THEN '{UNSCORED}' END"
        )
    params.append(v.base_id)
    # Steps only drop rows of the recipe's splits (default: train), so evaluation splits stay unbiased.
    scope = "true" if "all" in rec.splits else f"g.split IN ({', '.join(sql_str(x) for x in rec.splits)})"
    ws.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sf AS
        SELECT row_number() OVER (ORDER BY g.example_id, g.sample_idx) AS rid,
               g.example_id, g.sample_idx, g.split, {keep0} AS keep, {reason0}::VARCHAR AS reason,
               {scope} AS in_scope,
               {", ".join(f"s.{c}" for c in sigs)}
        FROM sbs_generations g
        LEFT JOIN sbs_scores s ON s.version_id = ? AND s.example_id = g.example_id AND s.sample_idx = g.sample_idx
        {prior}
        WHERE g.version_id = ?
        """,
        params,
    )
    total = {s: n for s, n in ws.all("SELECT split, count(*) FROM _sf GROUP BY split ORDER BY split")}
    funnel: list[dict[str, Any]] = []

    def stage(step: str, rule: str, before: dict[str, int]) -> dict[str, int]:
        after = _counts(ws)
        splits = sorted(set(before) | set(total))
        by_split = {
            sp: {
                "in": before.get(sp, 0),
                "dropped": before.get(sp, 0) - after.get(sp, 0),
                "out": after.get(sp, 0),
            }
            for sp in splits
        }
        funnel.append(
            {
                "step": step,
                "rule": rule,
                "in": sum(before.values()),
                "dropped": sum(before.values()) - sum(after.values()),
                "out": sum(after.values()),
                "by_split": by_split,
            }
        )
        return after

    funnel.append(
        {
            "step": "(input)",
            "rule": f"rows of {ws.by_id(v.base_id).ref}",
            "in": sum(total.values()),
            "dropped": 0,
            "out": sum(total.values()),
            "by_split": {sp: {"in": n, "dropped": 0, "out": n} for sp, n in total.items()},
        }
    )
    current = dict(total)
    if prior or ws.one(f"SELECT count(*) FROM _sf WHERE reason = '{UNSCORED}'"):
        label = f"{EARLIER} ({ws.by_id(v.selection_id).ref})" if prior else UNSCORED
        current = stage(
            label, "rows an earlier selection dropped stay dropped" if prior else "rows without scores", total
        )

    for st in rec.steps:
        name = sql_str(st.name)
        applies = ws.one(f"SELECT count(*) FROM _sf WHERE keep AND in_scope AND {st.applies_sql()}")
        if st.kind == "threshold":
            ws.execute(
                f"UPDATE _sf SET keep = false, reason = {name} WHERE keep AND in_scope AND NOT {_cond(st)}"
            )
        elif st.kind == "majority":
            share = f" AND vote_share >= {float(st.min_share)!r}" if st.min_share else ""
            ws.execute(
                f"UPDATE _sf SET keep = false, reason = {name} "
                f"WHERE keep AND in_scope AND NOT (coalesce(majority_agree, false){share})"
            )
        else:
            if st.kind == "best_per_example":
                part, limit, where = "example_id", int(st.n), ""
            else:
                key = "rationale_hash" if st.dedup_kind == "exact" else "near_dup_cluster"
                part = f"{key}, example_id" if st.scope == "example" else key
                limit, where = 1, f" AND {key} IS NOT NULL"
            ws.execute(
                f"""
                UPDATE _sf SET keep = false, reason = {name}
                FROM (SELECT rid, row_number() OVER (PARTITION BY {part} ORDER BY {_order(st.by)}) AS rn
                      FROM _sf WHERE keep AND in_scope{where}) r
                WHERE _sf.rid = r.rid AND r.rn > {limit}
                """
            )
        current = stage(st.name, st.describe(), current)
        funnel[-1]["applies"] = int(applies)
    return funnel
