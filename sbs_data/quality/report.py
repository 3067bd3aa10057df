"""`sbs-data report`: the funnel, the distribution of every signal per split, per-teacher quality and cost.

One dict (`report`) feeds every output: tables, `--format json`, and a self-contained HTML page whose
charts are inline SVG drawn here (no scripts, no CDN, opens offline).
"""

from __future__ import annotations

import html
import json
from typing import Any

from sbs_data import SbsError
from sbs_data.quality.recipes import Recipe, parse_recipe
from sbs_data.quality.signals import SIGNALS
from sbs_data.workspace import Version, Workspace

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_STATS_SIGNALS = [s for s in SIGNALS if s.dtype in ("bool", "int", "float", "str")]
_HIST_BINS = 20


def report(ws: Workspace, ref: str) -> dict[str, Any]:
    """Everything `sbs-data report REF` shows, as plain data."""
    v = ws.get(ref)
    if v.kind == "examples":
        raise SbsError(f"{v.ref} holds examples; report on a generations, scores or selection version")
    out: dict[str, Any] = {
        "version": v.ref,
        "kind": v.kind,
        "task": v.task,
        "base": ws.by_id(v.base_id).ref,
        "scores": ws.by_id(v.scores_id).ref if v.scores_id else None,
        "selection": ws.by_id(v.selection_id).ref if v.selection_id else None,
        "rows": (v.stats or {}).get("rows_by_split", {}),
        "recipe": None,
        "funnel": [],
        "signals": {},
        "histograms": {},
        "teachers": [],
        "rationalization": None,
        "drop_examples": [],
        "labels": None,
        "notes": [],
    }
    if v.selection_id:
        sel = ws.by_id(v.selection_id)
        cfg = sel.config
        if "recipe" in cfg:
            out["recipe"] = {"name": cfg.get("recipe_name"), "hash": cfg.get("recipe_hash")}
        if "recipe" in cfg or cfg.get("op") == "review":
            out["funnel"] = funnel(ws, sel)
            out["drop_examples"] = drop_examples(ws, sel, [f["step"] for f in out["funnel"]])
    if v.scores_id:
        out["signals"] = signal_stats(ws, v)
        out["histograms"] = histograms(ws, v)
    else:
        out["notes"].append(f"{v.ref} has no scores: run `sbs-data score {v.ref}` for signal distributions")
    out["teachers"] = teacher_stats(ws, v)
    out["rationalization"] = rationalization(ws, v)
    out["labels"] = label_stats(ws, v)
    return out


#: The stage of a selection made by `sbs-data review apply` (its config's `op`; the rule its rows carry).
REVIEW_STAGE = ("review", "review", "a person judged the row drop (sbs-data browse, review apply)")


def funnel(ws: Workspace, sel: Version) -> list[dict[str, Any]]:
    """Rows in / dropped / out per recipe step (or, for a review selection, the human verdicts), overall and
    per split, from the stored reasons."""
    review = sel.config.get("op") == "review"
    rec: Recipe | None = (
        None if review else parse_recipe(json.dumps(sel.config["recipe"]), where=f"{sel.ref} recipe")
    )
    parent = ws.by_id(sel.parents[0]) if sel.parents else None
    earlier = parent.selection_id if parent else None
    params: list[Any] = [sel.version_id]
    join = ""
    if earlier:
        join = (
            "LEFT JOIN sbs_selections p ON p.version_id = ? AND p.example_id = s.example_id "
            "AND p.sample_idx = s.sample_idx"
        )
        params.append(earlier)
    stage = (
        "CASE WHEN s.keep THEN '~kept' "
        + ("WHEN p.keep IS NOT TRUE THEN '~earlier' " if earlier else "")
        + "ELSE s.reason END"
    )
    rows = ws.all(
        f"""SELECT g.split, {stage} AS stage, count(*), count(*) FILTER (WHERE g.hinted) FROM sbs_selections s
        JOIN sbs_generations g ON g.version_id = ? AND g.example_id = s.example_id AND g.sample_idx = s.sample_idx
        {join} WHERE s.version_id = ? GROUP BY ALL""",
        [sel.base_id, *params[1:], params[0]],
    )
    counts: dict[str, dict[str, int]] = {}
    hinted: dict[str, int] = {}  # hinted rows dropped per stage (all splits)
    for split, st, n, h in rows:
        counts.setdefault(st, {})[split] = n
        hinted[st] = hinted.get(st, 0) + h
    splits = sorted({sp for c in counts.values() for sp in c})
    current = {sp: sum(c.get(sp, 0) for c in counts.values()) for sp in splits}
    hinted_now = sum(hinted.values())
    out = [_stage("(input)", f"rows of {ws.by_id(sel.base_id).ref}", current, current)]
    show_hinted = hinted_now > 0  # rationalized rows: how many survive each step
    if show_hinted:
        out[0]["hinted_out"] = hinted_now
    stages = []
    if earlier:
        stages.append(
            (
                "~earlier",
                f"earlier selection ({ws.by_id(earlier).ref})",
                "rows an earlier selection dropped stay dropped",
            )
        )
    if "unscored" in counts:
        stages.append(("unscored", "unscored", "rows without scores"))
    stages += [REVIEW_STAGE] if rec is None else [(st.name, st.name, st.describe()) for st in rec.steps]
    applies = {} if rec is None else _applies(ws, sel, rec, earlier)
    for key, name, rule in stages:
        dropped = counts.get(key, {})
        after = {sp: current[sp] - dropped.get(sp, 0) for sp in splits}
        out.append(_stage(name, rule, current, after))
        if key in applies:
            out[-1]["applies"] = applies[key]
        hinted_now -= hinted.get(key, 0)
        if show_hinted:
            out[-1]["hinted_out"] = hinted_now
        current = after
    return out


def _applies(ws: Workspace, sel: Version, rec: Recipe, earlier: int | None) -> dict[str, int]:
    """Per recipe step, the rows it could act on (`Step.applies_sql`) among those still kept when it ran, in
    the recipe's splits: what `filter` counted, recomputed from the stored reasons and the scores."""
    if not rec.steps or sel.scores_id is None:
        return {}
    names = [st.name for st in rec.steps]
    params: list[Any] = []
    join = ""
    alive_earlier = "true"
    if earlier:
        join = (
            "LEFT JOIN sbs_selections p ON p.version_id = ? AND p.example_id = s.example_id "
            "AND p.sample_idx = s.sample_idx"
        )
        params.append(earlier)
        alive_earlier = "coalesce(p.keep, false)"
    skip = "version_id, example_id, sample_idx, split, teacher, hinted"
    splits = list(rec.splits)  # canonical already (parse_recipe)
    scope = "true" if "all" in splits else "_split IN (SELECT unnest(?::VARCHAR[]))"
    aggs = []
    for i, st in enumerate(rec.steps):
        later = ", ".join("'" + n.replace("'", "''") + "'" for n in names[i:])
        aggs.append(
            f"count(*) FILTER (WHERE (_keep OR (_alive AND _reason IN ({later}))) AND {st.applies_sql()})"
        )
    row = ws.all(
        f"""SELECT {", ".join(aggs)} FROM (
              SELECT s.keep AS _keep, s.reason AS _reason, {alive_earlier} AS _alive, g.split AS _split,
                     q.* EXCLUDE ({skip})
              FROM sbs_selections s
              JOIN sbs_generations g ON g.version_id = ? AND g.example_id = s.example_id AND g.sample_idx = s.sample_idx
              JOIN sbs_scores q ON q.version_id = ? AND q.example_id = s.example_id AND q.sample_idx = s.sample_idx
              {join} WHERE s.version_id = ?) WHERE {scope}""",
        [sel.base_id, sel.scores_id, *params, sel.version_id, *([] if "all" in splits else [splits])],
    )[0]
    return {n: int(c) for n, c in zip(names, row)}


def _stage(step: str, rule: str, before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    return {
        "step": step,
        "rule": rule,
        "in": sum(before.values()),
        "dropped": sum(before.values()) - sum(after.values()),
        "out": sum(after.values()),
        "by_split": {
            sp: {"in": before[sp], "dropped": before[sp] - after[sp], "out": after[sp]} for sp in before
        },
    }


def signal_stats(ws: Workspace, v: Version) -> dict[str, dict[str, dict[str, Any]]]:
    """{split | 'all': {signal: {count, mean or rate, quantiles...}}} over the rows visible in `v`."""
    sql, params = ws.rows_query(v, rows="scores")
    aggs, keys = [], []
    for s in _STATS_SIGNALS:
        c = s.name
        if s.dtype == "bool":
            aggs += [f"count({c})", f"avg({c}::INTEGER)"]
            keys.append((c, "bool"))
        elif s.dtype == "str":
            aggs += [f"count({c})", f"count(DISTINCT {c})"]
            keys.append((c, "str"))
        else:
            qs = ", ".join(str(q) for q in QUANTILES)
            aggs += [f"count({c})", f"avg({c})", f"min({c})", f"max({c})", f"quantile_cont({c}, [{qs}])"]
            keys.append((c, "num"))
    rows = ws.all(
        f"SELECT coalesce(split, '~all'), count(*), {', '.join(aggs)} FROM ({sql}) "
        "GROUP BY GROUPING SETS ((split), ()) ORDER BY 1",
        params,
    )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        split = "all" if row[0] == "~all" else row[0]
        vals = list(row[2:])
        d: dict[str, dict[str, Any]] = {}
        for name, kind in keys:
            if kind == "bool":
                n, rate = vals[:2]
                vals = vals[2:]
                d[name] = {"type": "bool", "count": n, "rate": _r(rate)}
            elif kind == "str":
                n, distinct = vals[:2]
                vals = vals[2:]
                d[name] = {"type": "str", "count": n, "distinct": distinct}
            else:
                n, mean, lo, hi, qs = vals[:5]
                vals = vals[5:]
                d[name] = {
                    "type": "number",
                    "count": n,
                    "mean": _r(mean),
                    "min": _r(lo),
                    "max": _r(hi),
                    "quantiles": {f"p{int(q * 100):02d}": _r(x) for q, x in zip(QUANTILES, qs or [None] * 5)},
                }
        d["_rows"] = {"type": "rows", "count": row[1]}
        out[split] = d
    return dict(sorted(out.items(), key=lambda kv: (kv[0] == "all", kv[0])))


def histograms(ws: Workspace, v: Version) -> dict[str, dict[str, Any]]:
    """Equal-width histograms of every numeric signal over the rows visible in `v` (all splits)."""
    sql, params = ws.rows_query(v, rows="scores")
    out = {}
    for s in _STATS_SIGNALS:
        if s.dtype not in ("int", "float"):
            continue
        c = s.name
        lo, hi = ws.all(f"SELECT min({c}), max({c}) FROM ({sql})", params)[0]
        if lo is None:
            continue
        lo, hi = float(lo), float(hi)
        if lo == hi:  # a constant: one bar over the value itself, not a made-up range
            n = ws.one(f"SELECT count({c}) FROM ({sql})", params)
            out[c] = {"edges": [_r(lo - 0.5), _r(lo + 0.5)], "counts": [int(n)], "constant": _r(lo)}
            continue
        if s.dtype == "int" and hi - lo + 1 <= _HIST_BINS:
            nb, width = int(hi - lo + 1), 1.0
            lo -= 0.5
        else:
            nb = _HIST_BINS
            width = (hi - lo) / nb or 1.0
        rows = ws.all(
            f"SELECT least(CAST(floor(({c} - ?) / ?) AS INTEGER), ?) AS b, count(*) FROM ({sql}) "
            f"WHERE {c} IS NOT NULL GROUP BY b ORDER BY b",
            [lo, width, nb - 1, *params],
        )
        counts = [0] * nb
        for b, n in rows:
            counts[max(0, min(nb - 1, b))] += n
        out[c] = {"edges": [_r(lo + i * width) for i in range(nb + 1)], "counts": counts}
        if s.dtype == "int" and width == 1.0 and lo % 1 == 0.5:
            out[c]["integer"] = True  # one bar per value: label the values, not the bin edges
    return out


#: Example rows shown per drop rule, and the characters kept of each text (teacher text is untrusted).
DROP_EXAMPLES = 3
_TEXT_CAP = {"input": 400, "rationale": 600, "pred_label": 120, "gold_label": 120}


def drop_examples(ws: Workspace, sel: Version, order: list[str] | None = None) -> list[dict[str, Any]]:
    """A few rows per reason a selection dropped rows for: input, rationale, teacher and gold label, each
    cut to a few hundred characters in SQL (so a huge completion is never read whole)."""
    cut = ", ".join(f"left({k}, {n}) AS {k}, length({k}) > {n} AS {k}_cut" for k, n in _TEXT_CAP.items())
    rows = ws.all(
        f"""SELECT reason, n, example_id, sample_idx, split, teacher, parse_status, {cut}
            FROM (SELECT s.reason, s.example_id, s.sample_idx, g.split, g.teacher, g.parse_status,
                         e.input_text AS input, g.rationale, g.pred_label, e.label AS gold_label,
                         count(*) OVER (PARTITION BY s.reason) AS n,
                         row_number() OVER (PARTITION BY s.reason ORDER BY s.example_id, s.sample_idx) AS rn
                  FROM sbs_selections s
                  JOIN sbs_generations g ON g.version_id = ? AND g.example_id = s.example_id
                       AND g.sample_idx = s.sample_idx
                  LEFT JOIN sbs_examples e ON e.version_id = ? AND e.example_id = s.example_id
                  WHERE s.version_id = ? AND NOT s.keep)
            WHERE rn <= ? ORDER BY reason, example_id, sample_idx""",
        [sel.base_id, sel.examples_id, sel.version_id, DROP_EXAMPLES],
    )
    by_reason: dict[str, dict[str, Any]] = {}
    for r in rows:
        reason, n, eid, sidx, split, teacher, status = r[:7]
        vals = r[7:]
        d = {
            "example_id": eid,
            "sample_idx": sidx,
            "split": split,
            "teacher": teacher,
            "parse_status": status,
        }
        for i, k in enumerate(_TEXT_CAP):
            text, cut = vals[2 * i], vals[2 * i + 1]
            d[k] = None if text is None else text + ("…" if cut else "")
        entry = by_reason.setdefault(str(reason), {"step": str(reason), "dropped": int(n), "rows": []})
        entry["rows"].append(d)
    rank = {name: i for i, name in enumerate(order or [])}
    return sorted(by_reason.values(), key=lambda e: (rank.get(e["step"], len(rank)), e["step"]))


#: Labels shown by name in the label distribution and the confusion matrix; the rest are "(other)".
TOP_LABELS = 20
OTHER, NO_LABEL = "(other)", "(no label)"


def label_stats(ws: Workspace, v: Version) -> dict[str, Any] | None:
    """Teacher against gold over all generated rows of the version's base: the label distribution and, for
    tasks with named labels, a confusion matrix (the TOP_LABELS commonest labels, the rest as "(other)";
    an unparsed answer as "(no label)"). Numeric tasks (svamp) get the agreement only: every number is
    its own label. None for rows without gold labels."""
    from sbs_data.quality.signals import task_for

    try:
        space = task_for(ws, v).label_space
    except SbsError:
        space = None
    base = [v.base_id, v.examples_id]
    src = (
        "FROM sbs_generations g JOIN sbs_examples e ON e.version_id = ? AND e.example_id = g.example_id "
        "WHERE g.version_id = ? AND e.label IS NOT NULL"
    )
    labelled = ws.one(f"SELECT count(*) {src}", base[::-1])
    if not labelled:
        return None
    out: dict[str, Any] = {"label_space": space, "rows": int(labelled), "agreement": None}
    if v.scores_id:  # the task's own comparison (numeric values, choice letters), as `score` computed it
        agree, n = ws.all(
            f"SELECT count(*) FILTER (WHERE q.gold_match), count(*) {src.replace('WHERE', 'JOIN sbs_scores q ON q.version_id = ? AND q.example_id = g.example_id AND q.sample_idx = g.sample_idx WHERE', 1)}",
            [v.examples_id, v.scores_id, v.base_id],
        )[0]
    else:
        agree, n = ws.all(
            f"SELECT count(*) FILTER (WHERE g.pred_label = e.label), count(*) {src}", base[::-1]
        )[0]
    out["agreement"] = _r(agree / n) if n else None
    if space == "numeric":
        return out
    top = [
        r[0]
        for r in ws.all(
            f"""SELECT label, sum(n) FROM (
                  SELECT e.label AS label, count(*) AS n {src} GROUP BY 1
                  UNION ALL SELECT g.pred_label, count(*) {src} AND g.pred_label IS NOT NULL GROUP BY 1)
                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?""",
            [*base[::-1], *base[::-1], TOP_LABELS + 1],
        )
    ]
    named = top if len(top) <= TOP_LABELS else top[:TOP_LABELS]
    bucket = "CASE WHEN {x} IS NULL THEN ? WHEN list_contains(?, {x}) THEN {x} ELSE ? END"
    cells = ws.all(
        f"""SELECT {bucket.format(x="e.label")} AS gold, {bucket.format(x="g.pred_label")} AS teacher, count(*)
            {src} GROUP BY ALL""",
        [NO_LABEL, named, OTHER, NO_LABEL, named, OTHER, *base[::-1]],
    )
    order = named + [x for x in (OTHER, NO_LABEL) if any(x in (g, t) for g, t, _ in cells)]
    idx = {x: i for i, x in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for g, t, n in cells:
        matrix[idx[g]][idx[t]] += int(n)
    out["labels"] = order
    out["confusion"] = matrix  # rows: gold label, columns: teacher label
    out["distribution"] = [
        {"label": x, "gold": sum(matrix[i]), "teacher": sum(row[i] for row in matrix)}
        for i, x in enumerate(order)
    ]
    out["distinct_labels"] = int(
        ws.one(
            f"SELECT count(DISTINCT x) FROM (SELECT e.label AS x {src} UNION SELECT g.pred_label {src})",
            base[::-1] * 2,
        )
    )
    return out


def _kept(v: Version, rows: str, params: list[Any]) -> tuple[str, str]:
    """The join of the rows aliased `rows` onto the version's selection (its id appended to `params`) and
    the SQL of "this row is kept"; without a selection, no join and every row is kept."""
    if not v.selection_id:
        return "", "true"
    params.append(v.selection_id)
    join = (
        f"LEFT JOIN sbs_selections k ON k.version_id = ? AND k.example_id = {rows}.example_id "
        f"AND k.sample_idx = {rows}.sample_idx"
    )
    return join, "coalesce(k.keep, false)"


def teacher_stats(ws: Workspace, v: Version) -> list[dict[str, Any]]:
    """Per teacher over all generated rows of the base: quality rates, kept share, tokens and cost."""
    params: list[Any] = []
    score_cols = "NULL AS parse_ok, NULL AS label_in_space, NULL AS gold_match, NULL AS words"
    sjoin = ""
    if v.scores_id:
        sjoin = (
            "LEFT JOIN sbs_scores s ON s.version_id = ? AND s.example_id = g.example_id "
            "AND s.sample_idx = g.sample_idx"
        )
        params.append(v.scores_id)
        score_cols = "s.parse_ok, s.label_in_space, s.gold_match, s.words"
    kjoin, kept = _kept(v, "g", params)
    params.append(v.base_id)
    rows = ws.all(
        f"""
        SELECT teacher, count(*) AS rows, count(*) FILTER (WHERE kept) AS kept,
               avg((parse_status = 'ok')::INTEGER) AS parse_ok_rate,
               avg(label_in_space::INTEGER) AS label_in_space_rate,
               avg(gold_match::INTEGER) AS gold_match_rate,
               avg(words) AS mean_words,
               sum(prompt_tokens) AS prompt_tokens,
               sum(cached_tokens) / nullif(sum(prompt_tokens) FILTER (WHERE cached_tokens IS NOT NULL), 0)
                   AS cached_input_share,
               sum(reasoning_tokens) AS reasoning_tokens,
               sum(completion_tokens) AS completion_tokens,
               sum(cost_usd) AS cost_usd,
               avg(latency_ms) AS mean_latency_ms
        FROM (SELECT g.*, {score_cols}, {kept} AS kept FROM sbs_generations g {sjoin} {kjoin}
              WHERE g.version_id = ?)
        GROUP BY teacher ORDER BY teacher
        """,
        params,
    )
    cols = [
        "teacher", "rows", "kept", "parse_ok_rate", "label_in_space_rate", "gold_match_rate", "mean_words",
        "prompt_tokens", "cached_input_share", "reasoning_tokens", "completion_tokens", "cost_usd",
        "mean_latency_ms",
    ]  # fmt: skip
    out = []
    for r in rows:
        d = {c: (_r(x) if isinstance(x, float) else x) for c, x in zip(cols, r)}
        d["cost_per_kept_usd"] = (
            _r(d["cost_usd"] / d["kept"]) if d["cost_usd"] is not None and d["kept"] else None
        )
        out.append(d)
    return out


def rationalization(ws: Workspace, v: Version) -> dict[str, Any] | None:
    """What `rationalize` recovered, per split and teacher (for a combined version), and hinted against
    unhinted quality per split (when scored); None when the version's rows hold no hinted answer."""
    base = ws.by_id(v.base_id)
    cfg = base.config or {}
    combined = cfg.get("op") == "rationalize-combine"
    if not combined and not ws.one(
        "SELECT count(*) FROM sbs_generations WHERE version_id = ? AND hinted", [v.base_id]
    ):
        return None
    out: dict[str, Any] = {
        "source": cfg.get("source"),
        "hinted": cfg.get("hinted"),
        "recovered": [],
        "quality": [],
    }
    if combined:
        from sbs_data.text import hint_leak_sql

        gen_base = ws.by_id(cfg["source_version_id"]).base_id
        cols = "split, teacher, hint_teacher, asked, answered, leaked, recovered".split(", ")
        rows = ws.all(
            f"""
            SELECT h.split, g.teacher, h.teacher, count(*),
                   count(*) FILTER (WHERE h.parse_status = 'ok'),
                   count(*) FILTER (WHERE h.parse_status = 'ok' AND coalesce({hint_leak_sql("h.rationale")}, false)),
                   count(*) FILTER (WHERE c.hinted)
            FROM sbs_generations h
            JOIN sbs_generations g ON g.version_id = ? AND g.example_id = h.example_id AND g.sample_idx = h.sample_idx
            JOIN sbs_generations c ON c.version_id = ? AND c.example_id = h.example_id AND c.sample_idx = h.sample_idx
            WHERE h.version_id = ? GROUP BY ALL ORDER BY ALL
            """,
            [gen_base, v.base_id, cfg["hinted_version_id"]],
        )
        for r in rows:
            d = dict(zip(cols, r))
            d["recovered_rate"] = _r(d["recovered"] / d["asked"]) if d["asked"] else None
            out["recovered"].append(d)
    if v.scores_id:
        params: list[Any] = []
        kjoin, kept = _kept(v, "s", params)
        cols = (
            "split, hinted, rows, kept, parse_ok_rate, gold_match_rate, conclusion_match_rate, hint_leak_rate, "
            "starts_with_answer_rate, mean_words, mean_arith_correct_frac"
        ).split(", ")
        rows = ws.all(
            f"""
            SELECT s.split, coalesce(s.hinted, false), count(*), count(*) FILTER (WHERE {kept}),
                   avg(s.parse_ok::INTEGER), avg(s.gold_match::INTEGER), avg(s.conclusion_match::INTEGER),
                   avg(s.hint_leak::INTEGER), avg(s.starts_with_answer::INTEGER), avg(s.words),
                   avg(s.arith_correct_frac)
            FROM sbs_scores s {kjoin} WHERE s.version_id = ? GROUP BY ALL ORDER BY ALL
            """,
            [*params, v.scores_id],
        )
        out["quality"] = [{c: (_r(x) if isinstance(x, float) else x) for c, x in zip(cols, r)} for r in rows]
    return out


def _r(x: Any, nd: int = 6) -> Any:
    if x is None:
        return None
    try:
        return round(float(x), nd)
    except (TypeError, ValueError):
        return x


# -- flat views for tables / csv -------------------------------------------------------------------------


def signal_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (split, signal) for table/csv output."""
    out = []
    for split, sigs in rep["signals"].items():
        for name, d in sigs.items():
            if name == "_rows":
                continue
            q = d.get("quantiles") or {}
            out.append(
                {
                    "split": split,
                    "signal": name,
                    "count": d["count"],
                    "mean/rate": d.get("rate", d.get("mean")),
                    **{k: q.get(k) for k in ("p05", "p25", "p50", "p75", "p95")},
                    "distinct": d.get("distinct"),
                }
            )
    return out


def signal_table(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """Compact table view: all-splits distribution, plus the mean/rate per split."""
    sigs = rep["signals"]
    splits = [sp for sp in sigs if sp != "all"]
    out = []
    for name, d in sigs.get("all", {}).items():
        if name == "_rows":
            continue
        q = d.get("quantiles") or {}
        row = {
            "signal": name,
            "count": d["count"],
            "mean/rate": d.get("rate", d.get("mean")),
            **{k: q.get(k) for k in ("p05", "p50", "p95")},
        }
        if len(splits) > 1:
            for sp in splits:
                x = sigs[sp].get(name, {})
                # a text signal (majority_label) has no mean: its distinct count here read as one
                row[f"mean:{sp}"] = x.get("rate", x.get("mean"))
        out.append(row)
    return out


def dropped_cell(f: dict[str, Any]) -> int | str:
    """A funnel step's dropped count, or "n/a" for a recipe step that applies to no row (its signal is NULL
    on every row it saw, its splits are absent, every example has one sample for `majority`...)."""
    return "n/a" if f.get("applies") == 0 else f["dropped"]


def funnel_rows(rep: dict[str, Any]) -> list[dict[str, Any]]:
    splits = sorted({sp for f in rep["funnel"] for sp in f["by_split"]})
    out = []
    for f in rep["funnel"]:
        row = {
            "step": f["step"],
            "rule": f["rule"],
            "in": f["in"],
            "dropped": dropped_cell(f),
            "out": f["out"],
        }
        if "hinted_out" in f:
            row["hinted out"] = f["hinted_out"]
        for sp in splits:
            row[f"out:{sp}"] = f["by_split"].get(sp, {}).get("out")
        out.append(row)
    return out


# -- HTML ---------------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em;overflow-wrap:anywhere}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1.05em;margin:1.2em 0 .3em}
.scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}td:first-child{overflow-wrap:anywhere;min-width:6em}
th{background:#f4f4f4;font-weight:600}td:first-child,th:first-child{text-align:left}.meta{color:#555;overflow-wrap:anywhere}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
figure{margin:0;border:1px solid #eee;padding:6px;border-radius:4px}figcaption{font-size:12px;color:#444}
svg{max-width:100%;height:auto}
table.rows{table-layout:fixed;width:100%}table.rows td,table.rows th{text-align:left;vertical-align:top}
table.rows td{white-space:pre-wrap;overflow-wrap:anywhere}
table.rows tr>:nth-child(1){width:12em}table.rows tr>:nth-child(4),table.rows tr>:nth-child(5){width:9em}
table.cm td{min-width:2.5em}table.cm th.gold{text-align:left}
details{margin:.8em 0}summary{cursor:pointer;font-weight:600}.na{color:#888}
"""


def _svg_funnel(funnel: list[dict[str, Any]]) -> str:
    if not funnel:
        return ""
    w, bar_h, label_w = 760, 22, 220
    top = max(f["in"] for f in funnel) or 1
    h = bar_h * len(funnel) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="funnel">'
    ]
    for i, f in enumerate(funnel):
        y = 5 + i * bar_h
        kept_w = (w - label_w - 90) * f["out"] / top
        drop_w = (w - label_w - 90) * f["dropped"] / top
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(f["step"][:34])}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{kept_w:.1f}" height="{bar_h - 6}" fill="#4c78a8"/>'
        )
        parts.append(
            f'<rect x="{label_w + kept_w:.1f}" y="{y + 3}" width="{drop_w:.1f}" height="{bar_h - 6}" fill="#e45756"/>'
        )
        note = " (n/a)" if f.get("applies") == 0 else (f" (-{f['dropped']:,})" if f["dropped"] else "")
        parts.append(
            f'<text x="{label_w + kept_w + drop_w + 4:.1f}" y="{y + 15}" font-size="11">{f["out"]:,}{note}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _num(x: float) -> str:
    return f"{x:.4g}"


def _num4(x: Any) -> str:
    """A statistic at 4 significant digits (None as itself)."""
    return _num(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def _svg_hist(name: str, h: dict[str, Any]) -> str:
    """A histogram with a count axis (0, half, max) and value labels: the value itself for a constant,
    each value for small integer ranges, else the low, middle and high edges."""
    counts, edges = h["counts"], h["edges"]
    w, ht, left, bottom = 250, 120, 34, 18
    top = max(counts) or 1
    plot_w = w - left - 2
    bw = plot_w / len(counts)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ht + bottom}" '
        f'viewBox="0 0 {w} {ht + bottom}" role="img" aria-label="{html.escape(name)}">'
    ]
    # y axis: counts
    for frac in (0.0, 0.5, 1.0):
        y = ht - (ht - 8) * frac
        val = top * frac
        label = f"{val:,.0f}" if frac in (0.0, 1.0) or val == int(val) else f"{val:,.1f}"
        parts.append(f'<line x1="{left - 3}" y1="{y:.1f}" x2="{w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 3:.1f}" font-size="9" text-anchor="end">{label}</text>')
    parts.append(f'<line x1="{left}" y1="4" x2="{left}" y2="{ht}" stroke="#999"/>')
    parts.append(f'<line x1="{left}" y1="{ht}" x2="{w}" y2="{ht}" stroke="#999"/>')
    for i, c in enumerate(counts):
        bh = (ht - 8) * c / top
        tip = f"[{edges[i]:.4g}, {edges[i + 1]:.4g}): {c:,}"
        if "constant" in h:
            tip = f"every value = {h['constant']:.4g}: {c:,}"
        elif h.get("integer"):
            tip = f"{edges[i] + 0.5:.4g}: {c:,}"
        parts.append(
            f'<rect x="{left + 1 + i * bw:.1f}" y="{ht - bh:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}" '
            f'fill="#4c78a8"><title>{html.escape(tip)}</title></rect>'
        )
    ticks: list[tuple[float, str]]
    if "constant" in h:
        ticks = [(left + plot_w / 2, f"= {_num(h['constant'])}")]
    elif h.get("integer"):
        step = max(1, round(len(counts) / 6))
        ticks = [(left + (i + 0.5) * bw, _num(edges[i] + 0.5)) for i in range(0, len(counts), step)]
    else:
        ticks = [
            (left, _num(edges[0])),
            (left + plot_w / 2, _num((edges[0] + edges[-1]) / 2)),
            (w - 1, _num(edges[-1])),
        ]
    for x, label in ticks:
        anchor = "start" if x <= left + 1 else "end" if x >= w - 2 else "middle"
        parts.append(f'<text x="{x:.1f}" y="{ht + 13}" font-size="10" text-anchor="{anchor}">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_rates(given: list[tuple[str, float | None]]) -> str:
    rates = [(n, r) for n, r in given if r is not None]
    if not rates:
        return ""
    w, bar_h, label_w = 560, 18, 170
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{bar_h * len(rates) + 6}" role="img" aria-label="rates">'
    ]
    for i, (n, r) in enumerate(rates):
        y = 3 + i * bar_h
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{html.escape(n)}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{(w - label_w - 60):.1f}" height="{bar_h - 5}" fill="#eee"/>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{(w - label_w - 60) * r:.1f}" height="{bar_h - 5}" fill="#54a24b"/>'
        )
        parts.append(f'<text x="{w - 55}" y="{y + 13}" font-size="11">{r:.1%}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _head(c: str) -> str:
    """A column header that may wrap after its underscores (cost_per_kept_usd), so wide tables fit."""
    return html.escape(str(c)).replace("_", "_<wbr>")


def _table(rows: list[dict[str, Any]], cls: str = "") -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{_head(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            x = r.get(c)
            s = "" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))
            cells.append(f"<td class='na'>{s}</td>" if s == "n/a" else f"<td>{html.escape(s)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    attr = f" class='{cls}'" if cls else ""
    return f"<div class='scroll'><table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _drop_examples_html(rep: dict[str, Any]) -> str:
    """A few dropped rows per rule, every text escaped (teacher output is untrusted) and already capped."""
    e = html.escape
    rules = {f["step"]: f["rule"] for f in rep["funnel"]}
    out = []
    for entry in rep.get("drop_examples") or []:
        step = entry["step"]
        shown = len(entry["rows"])
        out.append(
            f"<h3>{e(step)}</h3><p class='meta'>{e(rules.get(step, 'an earlier selection or no scores'))} · "
            f"dropped {entry['dropped']:,} · {shown} shown</p>"
        )
        body = []
        for r in entry["rows"]:
            ident = f"{r['example_id']} #{r['sample_idx']} ({r['split']})"
            cells = [ident, r.get("input"), r.get("rationale"), r.get("pred_label"), r.get("gold_label")]
            body.append(
                "<tr>" + "".join(f"<td>{e('∅' if x is None else str(x))}</td>" for x in cells) + "</tr>"
            )
        out.append(
            "<div class='scroll'><table class='rows'><thead><tr><th>row</th><th>input</th><th>rationale</th>"
            "<th>teacher label</th><th>gold label</th></tr></thead><tbody>"
            + "".join(body)
            + "</tbody></table></div>"
        )
    return "".join(out)


def _labels_html(lab: dict[str, Any]) -> str:
    e = html.escape
    agree = lab.get("agreement")
    says = (
        f"The teacher agrees with gold on {agree:.1%} of {lab['rows']:,} rows with a gold label"
        if agree is not None
        else ""
    )
    if lab.get("label_space") == "numeric" or "confusion" not in lab:
        return f"<p>{says} (numeric answers: compared by value; no confusion matrix).</p>" if says else ""
    labels, m = lab["labels"], lab["confusion"]
    parts = [f"<p>{says}, over every generated row.</p>"]
    many = lab.get("distinct_labels", 0) > len([x for x in labels if x not in (OTHER, NO_LABEL)])
    if many:
        parts.append(
            f"<p class='meta'>{lab['distinct_labels']:,} distinct labels: the {TOP_LABELS} commonest are shown, "
            f"the rest as {e(OTHER)}.</p>"
        )
    parts.append("<h3>Label distribution</h3>" + _table(lab["distribution"]))
    top = max((x for row in m for x in row), default=0) or 1
    head = "".join(f"<th>{e(x)}</th>" for x in labels)
    body = []
    for i, gold in enumerate(labels):
        if not sum(m[i]):
            continue  # no gold row has this label (e.g. "(no label)": only the teacher gives none)
        cells = []
        for j, n in enumerate(m[i]):
            alpha = 0.08 + 0.6 * n / top if n else 0
            color = "84,162,75" if i == j else "228,87,86"
            style = f" style='background:rgba({color},{alpha:.2f})'" if n else ""
            cells.append(f"<td{style}>{n:,}</td>")
        body.append(f"<tr><th class='gold'>{e(gold)}</th>{''.join(cells)}</tr>")
    parts.append(
        "<h3>Confusion matrix (rows: gold label, columns: teacher label)</h3>"
        f"<div class='scroll'><table class='cm'><thead><tr><th>gold \\ teacher</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
    return "".join(parts)


def to_html(rep: dict[str, Any]) -> str:
    """A self-contained HTML page: inline CSS and SVG only, nothing fetched."""
    e = html.escape
    title = f"sbs-data report: {rep['version']}"
    meta = (
        f"kind {e(rep['kind'])} · task {e(str(rep['task']))} · rows of {e(rep['base'])} · "
        f"scores {e(str(rep['scores']))} · selection {e(str(rep['selection']))}"
    )
    if rep.get("recipe"):
        meta += f" · recipe {e(str(rep['recipe']['name']))} ({e(str(rep['recipe']['hash']))})"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1><p class='meta'>{meta}</p>",
    ]
    for n in rep.get("notes", []):
        parts.append(f"<p><b>Note:</b> {e(n)}</p>")
    if rep["funnel"]:
        parts.append("<h2>Funnel</h2>" + _svg_funnel(rep["funnel"]) + _table(funnel_rows(rep)))
        if any(f.get("applies") == 0 for f in rep["funnel"]):
            parts.append(
                "<p class='meta'>n/a: the rule applies to no row it saw (its signal is empty for all of "
                "them, its splits are absent, or each example has a single sample).</p>"
            )
    if rep.get("drop_examples"):
        parts.append("<h2>Dropped rows, a few per rule</h2>" + _drop_examples_html(rep))
    if rep.get("labels"):
        parts.append("<h2>Labels: teacher against gold</h2>" + _labels_html(rep["labels"]))
    if rep["signals"]:
        all_sigs = rep["signals"].get("all", {})
        rates = [(n, d.get("rate")) for n, d in all_sigs.items() if d.get("type") == "bool"]
        parts.append("<h2>Boolean signals (rate over visible rows)</h2>" + _svg_rates(rates))
        parts.append("<h2>Numeric signals (rows per value)</h2><div class='grid'>")
        for name, h in rep["histograms"].items():
            d = all_sigs.get(name, {})
            mean, median = d.get("mean"), (d.get("quantiles") or {}).get("p50")
            cap = f"{name}: mean {_num4(mean)}, median {_num4(median)}, n {d.get('count')}"
            parts.append(f"<figure>{_svg_hist(name, h)}<figcaption>{e(cap)}</figcaption></figure>")
        rows = signal_rows(rep)
        parts.append(
            f"</div><h2>Signals per split</h2><details><summary>{len(rows):,} rows: every signal's count, "
            f"mean or rate and quantiles, per split</summary>" + _table(rows) + "</details>"
        )
    rz = rep.get("rationalization")
    if rz:
        parts.append(
            f"<h2>Rationalization</h2><p>Hinted answers (the teacher saw the gold answer) from "
            f"{e(str(rz.get('hinted')))} for the wrong or failed rows of {e(str(rz.get('source')))}.</p>"
        )
        if rz["recovered"]:
            parts.append("<h3>Recovered per split and teacher</h3>" + _table(rz["recovered"]))
        if rz["quality"]:
            parts.append("<h3>Hinted against unhinted rows</h3>" + _table(rz["quality"]))
    parts.append("<h2>Per teacher: quality and cost</h2>" + _table(rep["teachers"]))
    parts.append("</body></html>")
    return "\n".join(parts)
