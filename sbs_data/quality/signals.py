"""Rationale-aware quality signals, computed set-wise in DuckDB SQL.

Every signal is one column of `sbs_scores`, keyed by (version_id, example_id, sample_idx). The text work
(tokens, sentences, label mentions, arithmetic steps) is done by DuckDB in one pass per stage; Python only
touches *distinct* labels and compound arithmetic expressions, where the task's safe evaluator
(`Task.normalize_label`, `mathexpr.try_evaluate`) defines the semantics, and the MinHash near-duplicate
pass (`dedup.py`, numpy). That is what makes 1M rows take seconds instead of minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from sbs_data import SbsError
from sbs_data.tasks import Task, get_task, mathexpr
from sbs_data.workspace import Version, Workspace

#: Bump when a signal's definition changes, so score configs (and their hashes) tell old from new.
SIGNALS_VERSION = 1


@dataclass(frozen=True)
class Signal:
    name: str
    dtype: str  # bool | int | float | str | key (keys group rows for dedup; they are not thresholds)
    description: str


SIGNALS: tuple[Signal, ...] = (
    Signal("parse_ok", "bool", "the completion parsed into rationale + label (parse_status = ok)"),
    Signal("truncated", "bool", "generation stopped at the token limit (finish_reason length/max_tokens)"),
    Signal("refusal", "bool", "the completion opens with refusal text (I'm sorry / I cannot / as an AI)"),
    Signal("label_in_space", "bool", "the predicted label is in the task's label space / the row's choices"),
    Signal(
        "gold_match", "bool", "predicted label equals gold (task-aware; SVAMP by value); NULL without gold"
    ),
    Signal(
        "conclusion_match", "bool", "the answer the rationale itself concludes equals the predicted label"
    ),
    Signal(
        "answer_first_pos",
        "float",
        "relative position (0-1) of the first mention of the label in the rationale",
    ),
    Signal("starts_with_answer", "bool", "the rationale opens with the label or 'the answer is' (leakage)"),
    Signal("n_samples", "int", "samples (K) of this example in the scored version"),
    Signal("majority_label", "str", "most frequent label among the example's samples"),
    Signal("majority_agree", "bool", "this sample's label is the example's majority label"),
    Signal("vote_share", "float", "share of the example's samples that give this sample's label"),
    Signal("vote_entropy", "float", "entropy (bits) of the example's label votes; 0 = unanimous"),
    Signal("words", "int", "rationale length in words (runs of letters/digits)"),
    Signal("sentences", "int", "rationale length in sentences"),
    Signal("repeated_sentences", "int", "sentences that repeat an earlier sentence of the same rationale"),
    Signal("ngram_repetition", "float", "share of word 3-grams that repeat within the rationale"),
    Signal(
        "input_overlap",
        "float",
        "share of the rationale's distinct non-stopwords found in the input (1 = restates it)",
    ),
    Signal("arith_steps", "int", "'a op b = c' steps found in the rationale (numeric tasks)"),
    Signal(
        "arith_correct_frac", "float", "share of those steps that are arithmetically right; NULL when none"
    ),
    Signal("final_number_match", "bool", "the rationale's last number equals the gold value (numeric tasks)"),
    Signal("exact_dup", "bool", "the normalised rationale already occurred in an earlier row"),
    Signal("exact_dup_count", "int", "rows sharing this normalised rationale (1 = unique)"),
    Signal("near_dup", "bool", "a near-duplicate (MinHash-LSH) of an earlier row's rationale"),
    Signal("near_dup_size", "int", "rows in this rationale's near-duplicate cluster (1 = unique)"),
    Signal("rationale_hash", "key", "hash of the normalised rationale (exact-duplicate groups)"),
    Signal("near_dup_cluster", "key", "near-duplicate cluster id (the first member's position)"),
)
SIGNAL_BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
THRESHOLD_SIGNALS = tuple(s.name for s in SIGNALS if s.dtype != "key")

_REFUSAL = (
    r"(i'm sorry|i am sorry|i apologi[sz]e|i cannot (help|answer|assist|provide)|i can't (help|answer|assist|provide)"
    r"|i am unable to|i'm unable to|i won't be able|as an ai( language model)?)"
)
_NUM = r"-?\d+(?:\.\d+)?"
# Same steps as mathexpr.arithmetic_steps; RE2 has no look-behind, so a non-capturing prefix stands in.
_STEP = (
    rf"(?:^|[^\w.])((?:\(?\s*{_NUM}\s*\)?\s*[-+*/x×÷]\s*)+\(?\s*{_NUM}\s*\)?)\s*(?:=|is|equals)\s*({_NUM})"
)
_EXPR = rf"(?:\(?\s*{_NUM}\s*\)?\s*[-+*/x×÷]\s*)+\(?\s*{_NUM}\s*\)?"
_BINARY = rf"^\s*({_NUM})\s*([-+*/x×÷])\s*({_NUM})\s*$"
_PLAIN = r"-?\d+(\.\d+)?"
_STOP = [
    "a", "an", "is", "of", "to", "in", "on", "at", "it", "so", "be", "as", "by", "or", "if", "he", "we", "i",
    "the", "and", "for", "are", "was", "were", "that", "this", "with", "from", "has", "have", "had", "not",
    "but", "all", "any", "can", "its", "his", "her", "they", "them", "their", "there", "then", "than", "what",
    "which", "who", "will", "would", "should", "could", "been", "being", "into", "out", "only", "also", "she",
    "him", "how", "one", "answer", "because", "must", "above", "choices", "options", "option",
]  # fmt: skip


def sql_str(s: str) -> str:
    """A SQL string literal (for the few constants spliced into generated SQL)."""
    return "'" + str(s).replace("'", "''") + "'"


def task_for(ws: Workspace, v: Version) -> Task:
    """The task a version answers, including user tasks recorded in the examples version's config."""
    if not v.task:
        raise SbsError(f"{v.ref} records no task; cannot score it")
    stored = None
    if v.examples_id is not None:
        stored = ws.by_id(v.examples_id).config.get("task_def")
    return get_task(v.task, stored=stored)


@dataclass(frozen=True)
class ScoreParams:
    near_threshold: float = 0.8  # estimated Jaccard of word 3-gram sets above which rationales are near-dups
    num_perm: int = 32  # MinHash permutations (more = sharper estimate, slower)
    seed: int = 1

    def as_config(self) -> dict[str, Any]:
        return {
            "near_threshold": self.near_threshold,
            "num_perm": self.num_perm,
            "seed": self.seed,
            "shingle": "word-3gram",
        }


def score(
    ws: Workspace,
    ref: str,
    name: str | None = None,
    params: ScoreParams | None = None,
    note: str | None = None,
    run_id: str | None = None,
) -> Version:
    """Score every generation row visible in REF into a new `scores` version (parent = REF).

    The new version belongs to REF's dataset unless `name` is given; it reads as REF's rows plus signals.
    """
    params = params or ScoreParams()
    if not 0 < params.near_threshold <= 1:
        raise SbsError(f"near-duplicate threshold must be in (0, 1], not {params.near_threshold}")
    if params.num_perm < 4 or params.num_perm > 256:
        raise SbsError(f"num_perm must be between 4 and 256, not {params.num_perm}")
    v = ws.get(ref)
    if v.kind == "examples":
        raise SbsError(
            f"{v.ref} holds examples, not teacher generations; score a generations version "
            "(made by `sbs-data generate` or `sbs-data import-original`)"
        )
    task = task_for(ws, v)
    config = {
        "op": "score",
        "source": v.ref,
        "task": task.name,
        "signals_version": SIGNALS_VERSION,
        "near_dup": params.as_config(),
    }
    with ws.new_version(name or v.dataset, "scores", config, parents=[v], note=note, run_id=run_id) as sv:
        compute_scores(ws, v, task, sv.version_id, params)
    return ws.by_id(sv.version_id)


def compute_scores(ws: Workspace, v: Version, task: Task, out_version_id: int, params: ScoreParams) -> int:
    """Write the signals of every row visible in `v` into sbs_scores under `out_version_id`."""
    con = ws.con
    ok = False
    try:
        _stage_rows(ws, v)
        _stage_labels(ws, task)
        _stage_exprs(ws, task)
        _stage_text(ws, task)
        _stage_votes(ws)
        _stage_arith(ws, task)
        _stage_near(ws, params)
        cols = ", ".join(s.name for s in SIGNALS)
        con.execute(
            f"""
            INSERT INTO sbs_scores BY NAME
            SELECT {int(out_version_id)} AS version_id, r.example_id, r.sample_idx, r.split, r.teacher, {cols}
            FROM _sq_rows r
            JOIN _sq_text USING (rid) JOIN _sq_vote USING (rid) JOIN _sq_arith USING (rid)
            JOIN _sq_near USING (rid)
            """
        )
        n = ws.one("SELECT count(*) FROM _sq_rows")
        ok = True
        return n
    finally:
        # after an error the transaction is aborted and its rollback discards the temp tables
        for t in (
            ()
            if not ok
            else (
                "_sq_rows",
                "_sq_lab",
                "_sq_tok",
                "_sq_text",
                "_sq_vote",
                "_sq_arith",
                "_sq_near",
                "_sq_exv",
            )
        ):
            con.execute(f"DROP TABLE IF EXISTS {t}")


# -- stages --------------------------------------------------------------------------------------


def _stage_rows(ws: Workspace, v: Version) -> None:
    """The rows visible in `v`, numbered in (example_id, sample_idx) order, with their gold example."""
    sel_join, sel_where, params = "", "", [v.base_id]
    if v.selection_id is not None:
        sel_join = (
            "JOIN sbs_selections s ON s.version_id = ? AND s.example_id = g.example_id "
            "AND s.sample_idx = g.sample_idx AND s.keep"
        )
        params = [v.selection_id, v.base_id]
    ws.con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_rows AS
        SELECT (row_number() OVER (ORDER BY g.example_id, g.sample_idx) - 1)::BIGINT AS rid,
               g.example_id, g.sample_idx, g.split, g.teacher, g.parse_status, g.finish_reason,
               left(g.raw, 400) AS raw_head, g.pred_label, coalesce(g.rationale, '') AS rationale,
               e.label AS gold, e.choices, coalesce(e.input_text, '') AS input_text
        FROM sbs_generations g {sel_join}
        LEFT JOIN sbs_examples e ON e.version_id = ? AND e.example_id = g.example_id
        WHERE g.version_id = ? {sel_where}
        """,
        [*params[:-1], v.examples_id, params[-1]],
    )


def _lookup(ws: Workspace, name: str, df: pl.DataFrame) -> None:
    """Materialise a small Python-computed lookup table as a DuckDB temp table."""
    ws.con.execute("SELECT 1").fetchall()
    ws.con.register("_sq_tmp", df.to_arrow())
    try:
        ws.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _sq_tmp")
    finally:
        ws.con.unregister("_sq_tmp")


def _values(ws: Workspace, column: str) -> None:
    """Numeric value of every distinct non-plain label in `column`, by the safe AST evaluator."""
    rows = ws.all(
        f"SELECT DISTINCT {column} FROM _sq_rows WHERE {column} IS NOT NULL "
        f"AND NOT regexp_full_match(trim({column}), '{_PLAIN}')"
    )
    labels = [r[0] for r in rows]
    df = pl.DataFrame(
        {"label": labels, "value": [mathexpr.try_evaluate(x) for x in labels]},
        schema={"label": pl.Utf8, "value": pl.Float64},
    )
    _lookup(ws, f"_sq_val_{column}", df)


def _stage_labels(ws: Workspace, task: Task) -> None:
    """Per row: canonical predicted label, numeric values (numeric tasks), and the vote key.

    Labels are canonicalised once per distinct value with the task's own `normalize_label` /
    `label_value`, so the SQL comparisons below agree with `Task.same_label` / `Task.in_label_space`.
    """
    con = ws.con
    if task.label_space == "numeric":
        _values(ws, "pred_label")
        _values(ws, "gold")

        def val(col: str) -> str:
            return (
                f"CASE WHEN r.{col} IS NULL THEN NULL WHEN regexp_full_match(trim(r.{col}), '{_PLAIN}') "
                f"THEN CAST(trim(r.{col}) AS DOUBLE) ELSE v_{col}.value END"
            )

        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _sq_lab AS
            SELECT rid, pred_label AS canon, pv, gv,
                   CASE WHEN pv IS NULL THEN NULL ELSE CAST(round(pv, 6) AS VARCHAR) END AS vkey,
                   CASE WHEN pv IS NULL THEN NULL WHEN pv = trunc(pv) AND abs(pv) < 1e15
                        THEN CAST(CAST(pv AS BIGINT) AS VARCHAR) ELSE CAST(round(pv, 6) AS VARCHAR) END AS vtext
            FROM (
              SELECT r.rid, r.pred_label, {val("pred_label")} AS pv, {val("gold")} AS gv
              FROM _sq_rows r
              LEFT JOIN _sq_val_pred_label v_pred_label ON v_pred_label.label = r.pred_label
              LEFT JOIN _sq_val_gold v_gold ON v_gold.label = r.gold
            )
            """
        )
        con.execute("DROP TABLE IF EXISTS _sq_val_pred_label")
        con.execute("DROP TABLE IF EXISTS _sq_val_gold")
        return
    if task.label_space == "choices":
        rows = ws.all(
            "SELECT DISTINCT pred_label, choices FROM _sq_rows WHERE pred_label IS NOT NULL "
            "AND NOT coalesce(list_contains(choices, pred_label), false)"
        )
        df = pl.DataFrame(
            {
                "label": [r[0] for r in rows],
                "ckey": ["\x1f".join(r[1] or []) for r in rows],
                "canon": [task.normalize_label(r[0], r[1]) for r in rows],
            },
            schema={"label": pl.Utf8, "ckey": pl.Utf8, "canon": pl.Utf8},
        )
        _lookup(ws, "_sq_norm", df)
        canon = "CASE WHEN coalesce(list_contains(r.choices, r.pred_label), false) THEN r.pred_label ELSE n.canon END"
        join = (
            "LEFT JOIN _sq_norm n ON n.label = r.pred_label AND n.ckey = array_to_string(r.choices, chr(31))"
        )
    else:
        rows = ws.all("SELECT DISTINCT pred_label FROM _sq_rows WHERE pred_label IS NOT NULL")
        df = pl.DataFrame(
            {"label": [r[0] for r in rows], "canon": [task.normalize_label(r[0]) for r in rows]},
            schema={"label": pl.Utf8, "canon": pl.Utf8},
        )
        _lookup(ws, "_sq_norm", df)
        canon = "n.canon"
        join = "LEFT JOIN _sq_norm n ON n.label = r.pred_label"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_lab AS
        SELECT r.rid, {canon} AS canon, NULL::DOUBLE AS pv, NULL::DOUBLE AS gv,
               {canon} AS vkey, {canon} AS vtext
        FROM _sq_rows r {join}
        """
    )
    con.execute("DROP TABLE IF EXISTS _sq_norm")


def _label_terms(task: Task) -> dict[str, list[str]]:
    """Words that name each fixed label in running text (the label and its longer aliases)."""
    terms: dict[str, list[str]] = {lab: [lab.lower()] for lab in task.labels}
    for alias, lab in task.label_aliases.items():
        a = alias.lower()
        if lab in terms and len(a) >= 5 and a.replace(" ", "").isalpha() and a not in terms[lab]:
            terms[lab].append(a)
    return terms


def _stage_text(ws: Workspace, task: Task) -> None:
    """The main pass: parse/space/gold/conclusion/leakage/length/repetition/overlap/exact-dup signals."""
    numeric = task.label_space == "numeric"
    # conclusion: the last sentence that names any label / choice is where the rationale concludes; it
    # concludes the predicted label when that sentence names it ("Of the above choices, only X is ...")
    mentions = "false"
    if task.label_space == "fixed":
        terms = _label_terms(task)
        mentions = " OR ".join(f"contains(s, {sql_str(w)})" for ws_ in terms.values() for w in ws_)
        names = " ".join(
            f"WHEN {sql_str(lab)} THEN ({' OR '.join(f'contains(t.concl, {sql_str(w)})' for w in ws_)})"
            for lab, ws_ in terms.items()
        )
        names_label = f"CASE l.canon {names} ELSE false END"
    elif task.label_space == "choices":
        mentions = "coalesce(list_bool_or(list_transform(choices, lambda c: contains(s, lower(c)))), false)"
        names_label = "contains(t.concl, lower(l.canon))"
    concl = f"list_last(list_filter(sents, lambda s: {mentions}))"
    if numeric:
        # the rationale ends on the label's value: its last number, or its last expression ("109 * 74")
        conclusion = (
            "CASE WHEN l.pv IS NULL OR (t.last_num IS NULL AND lx.value IS NULL) THEN NULL "
            f"ELSE coalesce({_close('t.last_num', 'l.pv', 1e-6)}, false) "
            f"OR coalesce({_close('lx.value', 'l.pv', 1e-6)}, false) END"
        )
    elif task.label_space in ("fixed", "choices"):
        conclusion = f"CASE WHEN l.canon IS NULL OR t.concl IS NULL THEN NULL ELSE {names_label} END"
    else:
        conclusion = "NULL::BOOLEAN"

    if numeric:
        # first space-delimited mention of the value ("is 450.", "= 450 ", "(450)")
        pad = "(' ' || translate(t.rc, '()=$', '    ') || ' ')"
        v = "ltrim(l.vtext, '-')"
        first_pos = (
            "CASE WHEN l.vtext IS NULL OR length(t.rc) = 0 THEN NULL ELSE "
            f"least(nullif(strpos({pad}, ' ' || {v} || ' '), 0), nullif(strpos({pad}, ' ' || {v} || '.'), 0)) END"
        )
        first_pos = f"({first_pos} - 1) / length(t.rc)"
        starts = (
            "(regexp_matches(t.lr, '^\\W*(so |therefore |thus )?(the )?(final )?answer\\s*(is|:)') "
            f"OR (regexp_matches(t.rc, '^\\W*-?\\d') AND l.pv IS NOT NULL AND {_close('t.first_num', 'l.pv', 1e-6)}))"
        )
        in_space = "l.pv IS NOT NULL"
        gold = f"CASE WHEN r.gold IS NULL THEN NULL WHEN l.pv IS NULL OR l.gv IS NULL THEN false ELSE {_close('l.pv', 'l.gv', 1e-6)} END"
        final_num = (
            "CASE WHEN l.gv IS NULL OR t.last_num IS NULL THEN NULL ELSE "
            f"{_close('t.last_num', 'l.gv', 1e-6)} END"
        )
    else:
        first_pos = (
            "CASE WHEN l.canon IS NULL OR length(t.lr) = 0 THEN NULL ELSE "
            "(nullif(strpos(t.lr, lower(l.canon)), 0) - 1) / length(t.lr) END"
        )
        starts = (
            "(regexp_matches(t.lr, '^\\W*(so |therefore |thus )?(the )?(final )?answer\\s*(is|:)') "
            "OR (l.canon IS NOT NULL AND starts_with(ltrim(t.lr, ' \"''(*-:'), lower(l.canon))))"
        )
        if task.label_space == "fixed":
            in_space = "list_contains(" + "[" + ", ".join(sql_str(x) for x in task.labels) + "], l.canon)"
        elif task.label_space == "choices":
            in_space = "coalesce(list_contains(r.choices, l.canon), false)"
        else:
            in_space = "l.canon IS NOT NULL"
        gold = "CASE WHEN r.gold IS NULL THEN NULL WHEN l.canon IS NULL THEN false ELSE l.canon = r.gold END"
        final_num = "NULL::BOOLEAN"

    stop = "[" + ", ".join(sql_str(w) for w in _STOP) + "]"
    ws.con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _sq_tok AS
        SELECT rid, CASE
                 WHEN len(toks) >= 3 THEN list_transform(range(1, len(toks) - 1),
                                            lambda i: hash(toks[i], toks[i + 1], toks[i + 2]))
                 WHEN len(toks) > 0 THEN [hash(array_to_string(toks, ' '))]
                 ELSE []::UBIGINT[] END AS sh
        FROM (SELECT rid, regexp_extract_all(lower(rationale), '[\\pL\\pN]+') AS toks FROM _sq_rows)
        """
    )
    ws.con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_text AS
        WITH inp AS (
          -- the input's content words, once per example (not once per sample)
          SELECT example_id, list_distinct(regexp_extract_all(lower(any_value(input_text)), '[\\pL\\pN]+')) AS iw0
          FROM _sq_rows GROUP BY example_id
        ), t0 AS (
          SELECT x.*, list_distinct(toks) AS rw0, inp.iw0,
                 TRY_CAST(nums[1] AS DOUBLE) AS first_num, TRY_CAST(list_last(nums) AS DOUBLE) AS last_num,
                 CASE WHEN len(toks) = 0 THEN NULL ELSE hash(array_to_string(toks, ' ')) END AS rationale_hash
          FROM (
            SELECT rid, example_id, choices, lr, rc,
                   regexp_extract_all(lr, '[\\pL\\pN]+') AS toks,
                   regexp_extract_all(rc, '(^|[^\\d])({_NUM})', 2) AS nums,
                   CASE WHEN trim(lr) = '' THEN []::VARCHAR[]
                        ELSE string_split(rtrim(translate(lr, '!?' || chr(10) || chr(9), '..  '), '. '), '. ') END AS sents
            FROM (SELECT rid, example_id, choices, lower(rationale) AS lr, replace(rationale, ',', '') AS rc FROM _sq_rows)
          ) x LEFT JOIN inp USING (example_id)
        ), t1 AS (
          SELECT *, len(toks) AS words, list_intersect(rw0, {stop}) AS rstop FROM t0
        ), t AS (SELECT *, {concl} AS concl FROM t1)
        SELECT r.rid,
               r.parse_status = 'ok' AS parse_ok,
               CASE WHEN r.finish_reason IS NULL THEN NULL
                    ELSE r.finish_reason IN ('length', 'max_tokens') END AS truncated,
               coalesce(regexp_matches(lower(coalesce(r.raw_head, r.rationale)), {sql_str(_REFUSAL)}), false) AS refusal,
               coalesce({in_space}, false) AS label_in_space,
               {gold} AS gold_match,
               {conclusion} AS conclusion_match,
               {first_pos} AS answer_first_pos,
               coalesce({starts}, false) AS starts_with_answer,
               t.words::INTEGER AS words,
               len(t.sents)::INTEGER AS sentences,
               (len(t.sents) - len(list_distinct(t.sents)))::INTEGER AS repeated_sentences,
               CASE WHEN len(k.sh) = 0 THEN 0.0 ELSE 1.0 - len(list_distinct(k.sh)) / len(k.sh) END
                   AS ngram_repetition,
               CASE WHEN len(t.rw0) - len(t.rstop) = 0 THEN NULL
                    ELSE (len(list_intersect(t.rw0, t.iw0)) - len(list_intersect(t.rstop, t.iw0)))
                         / (len(t.rw0) - len(t.rstop)) END AS input_overlap,
               {final_num} AS final_number_match,
               t.rationale_hash,
               CASE WHEN t.rationale_hash IS NULL THEN NULL
                    ELSE (count(*) OVER (PARTITION BY t.rationale_hash))::INTEGER END AS exact_dup_count,
               CASE WHEN t.rationale_hash IS NULL THEN false
                    ELSE row_number() OVER (PARTITION BY t.rationale_hash ORDER BY r.rid) > 1 END AS exact_dup
        FROM _sq_rows r JOIN t USING (rid) JOIN _sq_lab l USING (rid) JOIN _sq_tok k USING (rid)
        LEFT JOIN (SELECT rid, value FROM _sq_exv WHERE kind = 'last') lx USING (rid)
        """
    )


def _close(a: str, b: str, rel: float) -> str:
    """SQL twin of math.isclose(a, b, rel_tol=rel, abs_tol=1e-6) (mathexpr.numbers_equal)."""
    return f"(abs({a} - {b}) <= greatest({rel} * greatest(abs({a}), abs({b})), 1e-6))"


def _stage_votes(ws: Workspace) -> None:
    """Self-consistency over the K samples of each example: majority label, vote share, entropy."""
    ws.con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _sq_vote AS
        WITH b AS (
          SELECT r.rid, r.example_id, r.sample_idx, l.vkey, l.vtext FROM _sq_rows r JOIN _sq_lab l USING (rid)
        ), c AS (
          SELECT example_id, vkey, count(*) AS n, min(sample_idx) AS first_idx,
                 first(vtext ORDER BY sample_idx) AS vtext
          FROM b WHERE vkey IS NOT NULL GROUP BY example_id, vkey
        ), e AS (
          SELECT example_id, first(vkey ORDER BY n DESC, first_idx) AS mkey,
                 first(vtext ORDER BY n DESC, first_idx) AS mtext, sum(n) AS voted,
                 -sum((n / sum_n) * log2(n / sum_n)) AS entropy
          FROM (SELECT *, sum(n) OVER (PARTITION BY example_id) AS sum_n FROM c) GROUP BY example_id
        ), k AS (
          SELECT example_id, count(*) AS k FROM b GROUP BY example_id
        )
        SELECT b.rid, k.k::INTEGER AS n_samples, e.mtext AS majority_label,
               coalesce(b.vkey = e.mkey, false) AS majority_agree,
               coalesce(c.n / k.k, 0.0) AS vote_share,
               coalesce(abs(e.entropy), 0.0) AS vote_entropy
        FROM b JOIN k USING (example_id) LEFT JOIN e USING (example_id)
        LEFT JOIN c ON c.example_id = b.example_id AND c.vkey = b.vkey
        """
    )


def _stage_exprs(ws: Workspace, task: Task) -> None:
    """Numeric tasks: every `a op b = c` step and the rationale's last expression, with their values.

    Simple binary steps are computed in SQL; compound expressions go once per distinct text through the
    safe AST evaluator (`mathexpr.try_evaluate`, never `eval`). Leaves `_sq_exv(rid, kind, claimed, value)`.
    """
    con = ws.con
    if task.label_space != "numeric":
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _sq_exv (rid BIGINT, kind VARCHAR, claimed DOUBLE, value DOUBLE)"
        )
        return
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_ex AS
        WITH r AS (SELECT rid, replace(rationale, ',', '') AS rc FROM _sq_rows WHERE regexp_matches(rationale, '\\d'))
        SELECT rid, 'step' AS kind, trim(expr) AS expr, CAST(claimed AS DOUBLE) AS claimed
        FROM (
          SELECT rid, unnest(regexp_extract_all(rc, '{_STEP}', 1)) AS expr,
                      unnest(regexp_extract_all(rc, '{_STEP}', 2)) AS claimed
          FROM r WHERE rc LIKE '%=%' OR rc LIKE '% is %' OR rc LIKE '%equals%'
        )
        UNION ALL
        SELECT rid, 'last', trim(list_last(regexp_extract_all(rc, '{_EXPR}'))), NULL FROM r
        WHERE regexp_matches(rc, '{_EXPR}')
        """
    )
    a = f"TRY_CAST(regexp_extract(expr, '{_BINARY}', 1) AS DOUBLE)"
    op = f"regexp_extract(expr, '{_BINARY}', 2)"
    b = f"TRY_CAST(regexp_extract(expr, '{_BINARY}', 3) AS DOUBLE)"
    binary = (
        f"CASE WHEN NOT regexp_full_match(expr, '{_BINARY}') THEN NULL "
        f"WHEN {op} = '+' THEN {a} + {b} WHEN {op} = '-' THEN {a} - {b} "
        f"WHEN {op} IN ('*', 'x', '×') THEN {a} * {b} WHEN {b} = 0 THEN NULL ELSE {a} / {b} END"
    )
    rows = ws.all(f"SELECT DISTINCT expr FROM _sq_ex WHERE NOT regexp_full_match(expr, '{_BINARY}')")
    exprs = [r[0] for r in rows]
    values = [
        mathexpr.try_evaluate(e.replace("x", "*").replace("\u00d7", "*").replace("\u00f7", "/"))
        for e in exprs
    ]
    _lookup(
        ws,
        "_sq_exprval",
        pl.DataFrame({"expr": exprs, "value": values}, schema={"expr": pl.Utf8, "value": pl.Float64}),
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_exv AS
        SELECT e.rid, e.kind, e.claimed, CASE WHEN x.expr IS NULL THEN {binary.replace("expr", "e.expr")} ELSE x.value END AS value
        FROM _sq_ex e LEFT JOIN _sq_exprval x ON x.expr = e.expr
        """
    )
    con.execute("DROP TABLE IF EXISTS _sq_ex")
    con.execute("DROP TABLE IF EXISTS _sq_exprval")


def _stage_arith(ws: Workspace, task: Task) -> None:
    """Per row: how many arithmetic steps, and the share that are right (mathexpr.numbers_equal, rel 1e-4)."""
    if task.label_space != "numeric":
        ws.con.execute(
            "CREATE OR REPLACE TEMP TABLE _sq_arith AS SELECT rid, NULL::INTEGER AS arith_steps, "
            "NULL::DOUBLE AS arith_correct_frac FROM _sq_rows"
        )
        return
    ok = _close("value", "claimed", 1e-4)
    ws.con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_arith AS
        WITH agg AS (
          SELECT rid, count(*)::INTEGER AS n,
                 avg(CASE WHEN value IS NOT NULL AND {ok} THEN 1.0 ELSE 0.0 END) AS frac
          FROM _sq_exv WHERE kind = 'step' GROUP BY rid
        )
        SELECT r.rid, coalesce(agg.n, 0) AS arith_steps, agg.frac AS arith_correct_frac
        FROM _sq_rows r LEFT JOIN agg USING (rid)
        """
    )
    ws.con.execute("DROP TABLE IF EXISTS _sq_exv")


def _stage_near(ws: Workspace, params: ScoreParams) -> None:
    """Near-duplicate clusters over all rows (within and across examples) with MinHash-LSH."""
    from sbs_data.quality.dedup import near_duplicate_clusters

    reader = ws.con.sql("SELECT rid, sh FROM _sq_tok WHERE len(sh) > 0 ORDER BY rid").to_arrow_reader(200_000)
    table = near_duplicate_clusters(
        reader, threshold=params.near_threshold, num_perm=params.num_perm, seed=params.seed
    )
    ws.con.execute("SELECT 1").fetchall()
    ws.con.register("_sq_near_arrow", table)
    try:
        ws.con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _sq_near AS
            SELECT r.rid, n.cluster AS near_dup_cluster, n.size AS near_dup_size,
                   coalesce(n.cluster <> r.rid, false) AS near_dup
            FROM _sq_rows r LEFT JOIN _sq_near_arrow n USING (rid)
            """
        )
    finally:
        ws.con.unregister("_sq_near_arrow")
    ws.con.execute("DROP TABLE IF EXISTS _sq_tok")
