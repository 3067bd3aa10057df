"""Rationale-aware quality signals, computed set-wise: DuckDB SQL, polars and numpy, no per-row Python.

Every signal is one column of `sbs_scores`, keyed by (version_id, example_id, sample_idx). Rows are
scored in chunks of whole examples (bounded memory): per chunk, DuckDB does the label, position and
arithmetic signals in a few SQL statements, and `textfeat` the text ones (each rationale tokenised once,
tokens hashed once, set work on flat uint64 arrays). Python only touches *distinct* labels and compound
arithmetic expressions, where the task's safe evaluator (`Task.normalize_label`, `mathexpr.try_evaluate`)
defines the semantics. Exact and near duplicates (MinHash-LSH, `dedup.py`) are computed once over all
rows at the end. That is what makes 1M rows take seconds instead of minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from sbs_data import SbsError
from sbs_data.tasks import Task, get_task, mathexpr
from sbs_data.text import hint_leak_sql
from sbs_data.workspace import Version, Workspace

if TYPE_CHECKING:
    from sbs_data.quality.judge import Judge

#: Bump when a signal's definition changes, so score configs (and their hashes) tell old from new.
#: 2: same definitions, new implementation: MinHash over 32-bit lanes (near-dup decisions at the
#: threshold can differ), other key values for rationale_hash / near_dup_cluster.
#: 3: adds hint_leak (and the copied `hinted` column).
SIGNALS_VERSION = 3


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
    Signal(
        "hint_leak",
        "bool",
        "the rationale says it was told the answer (the hint, we are told the answer, as given.); see sbs_data/text.py",
    ),
    Signal(
        "judge_score",
        "int",
        "an LLM judge's 1-5 grade of the rationale (`score --judge SPEC`); NULL when not judged",
    ),
)
SIGNAL_BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
THRESHOLD_SIGNALS = tuple(s.name for s in SIGNALS if s.dtype != "key")

_REFUSAL = (
    r"(i'm sorry|i am sorry|i apologi[sz]e|i cannot (help|answer|assist|provide)|i can't (help|answer|assist|provide)"
    r"|i am unable to|i'm unable to|i won't be able|as an ai( language model)?)"
)
_NUM = r"-?\d+(?:\.\d+)?"
_BINARY = rf"^\s*({_NUM})\s*([-+*/x×÷])\s*({_NUM})\s*$"
_PLAIN = r"-?\d+(\.\d+)?"
_STOP = [
    "a", "an", "is", "of", "to", "in", "on", "at", "it", "so", "be", "as", "by", "or", "if", "he", "we", "i",
    "the", "and", "for", "are", "was", "were", "that", "this", "with", "from", "has", "have", "had", "not",
    "but", "all", "any", "can", "its", "his", "her", "they", "them", "their", "there", "then", "than", "what",
    "which", "who", "will", "would", "should", "could", "been", "being", "into", "out", "only", "also", "she",
    "him", "how", "one", "answer", "because", "must", "above", "choices", "options", "option",
]  # fmt: skip


def _frame(table: pa.Table) -> pl.DataFrame:
    """A polars frame of an Arrow table (`pl.from_arrow` is typed to return a Series too)."""
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df


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
    judge: Judge | None = None,
    info: Callable[[str], None] | None = None,
) -> Version:
    """Score every generation row visible in REF into a new `scores` version (parent = REF).

    The new version belongs to REF's dataset unless `name` is given; it reads as REF's rows plus signals.
    With `judge` (a `quality.judge.Judge`), a teacher also grades each rationale (`judge_score`, 1-5);
    without it that column stays NULL. The call is one run in `sbs_runs` (the judge's calls included), or
    joins the caller's (`filter` scoring on the way).
    """
    params = params or ScoreParams()
    if not 0 < params.near_threshold <= 1:
        raise SbsError(f"near-duplicate threshold must be in (0, 1], not {params.near_threshold}")
    if params.num_perm < 4 or params.num_perm > 256:
        raise SbsError(f"num_perm must be between 4 and 256, not {params.num_perm}")
    if ws.read_only:
        raise SbsError("this workspace connection is read-only")
    command = f"score {ref}" + (f" --judge {judge.teacher}" if judge is not None else "")
    with ws.run(command) as run:
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
        judged = None
        if judge is not None:
            from sbs_data.quality.judge import run_judge

            # Calls first (their answers are committed to the cache as they arrive, so an interrupted score
            # resumes without paying twice); the version itself is still all-or-nothing below.
            judged, config["judge"], summary = run_judge(ws, v, ws.visible(v, alias="g"), task, judge)
            run.stats["judge"] = summary
            if info is not None:
                info(
                    "judge: {judged} of {rows} rows graded ({cached} cached, {called} called, {failed} failed, "
                    "{unparsed} unparsed)".format(**summary)
                )
        # a lower memory cap (only ever lowered) and no insertion-order bookkeeping: every stage orders
        # by rid explicitly where order matters
        with ws.tuned(memory_limit=MEMORY_LIMIT_BYTES, preserve_insertion_order=False), ws.scratch(*_SCRATCH):
            # Computed before the version's transaction opens, each statement committing on its own:
            # inside one transaction DuckDB keeps every replaced per-chunk temp table until the end
            # (~1.3 KB a row, 1.3 GB for 1M rows). Only the final insert needs to be all-or-nothing.
            dups = compute_scores(ws, v, task, params)
            if judged is not None:
                _stage_judge(ws, judged)
            with ws.new_version(
                name or v.dataset, "scores", config, parents=[v], note=note, run_id=run.run_id
            ) as sv:
                write_scores(ws, sv.version_id, dups)
        out = ws.by_id(sv.version_id)
        made = {"version": out.ref, "rows": out.row_count}
        run.stats.update(made) if run.command == command else run.stats.update(scored=made)
    return out


#: Rows scored per chunk: bounds memory (text, token hashes and temp tables of one chunk at a time).
CHUNK_ROWS = 50_000
#: DuckDB's memory cap while scoring. Chunking keeps its working set small; without a cap its buffer
#: pool keeps every block of the generations table it read (~0.2 GB per 100k rows), none of it needed.
MEMORY_LIMIT_BYTES = 256 * 2**20
#: DuckDB's memory cap during the (numpy) duplicate pass.
DUPS_MEMORY_LIMIT_BYTES = 64 * 2**20
_DUP_COLS = ("exact_dup", "exact_dup_count", "near_dup", "near_dup_size", "near_dup_cluster")
#: Filled after the per-chunk pass: duplicates at the end (`write_scores`), the judge's grades before it.
_LATE_COLS = (*_DUP_COLS, "judge_score")
#: Every temp table scoring makes (dropped by `ws.scratch` when it ends, also after a failure).
_SCRATCH = ("_sq_rows", "_sq_lab", "_sq_exv", "_sq_vote", "_sq_arith", "_sq_out", "_sq_ex", "_sq_exprval",
            "_sq_norm", "_sq_val_pred_label", "_sq_val_gold")  # fmt: skip


def compute_scores(
    ws: Workspace, v: Version, task: Task, params: ScoreParams, chunk_rows: int | None = None
) -> pa.Table:
    """Signals of every row visible in `v`: per-row ones into temp table `_sq_out`; returns the
    cross-row ones (rid, exact_dup, exact_dup_count, near_dup, near_dup_size, near_dup_cluster).

    Rows are numbered (rid) in (example_id, sample_idx) order and scored in chunks of whole examples, so
    per-example signals (votes, input overlap) stay within a chunk and memory stays bounded. Per chunk:
    one SQL pass for the label/position/arithmetic signals and one polars/numpy pass for the text ones
    (`textfeat`); the duplicate signals are computed once at the end from the rationale hashes and
    MinHash signatures gathered on the way. `write_scores` stores both under a version.
    """
    cache: dict[Any, Any] = {}
    rids, hashes = [], []
    # One signature matrix for the whole version, filled chunk by chunk: concatenating per-chunk pieces
    # at the end held every signature twice (2 x 128 MB at 1M rows).
    src, sp = ws.visible(v, alias="g")
    sig = np.empty((int(ws.one(f"SELECT count(*) FROM {src}", sp)), params.num_perm), dtype=np.uint32)
    filled = 0
    ws.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_out AS
        SELECT 0::BIGINT AS rid, * EXCLUDE (version_id, {", ".join(_DUP_COLS)}) FROM sbs_scores LIMIT 0
        """
    )
    for lo, hi, offset in _chunks(ws, v, chunk_rows or CHUNK_ROWS):
        _stage_rows(ws, v, lo, hi, offset)
        rows = _frame(ws.arrow("SELECT rid, example_id, rationale FROM _sq_rows ORDER BY rid"))
        _stage_labels(ws, task, cache)
        _stage_exprs(ws, task, cache, rows)
        _stage_votes(ws)
        _stage_arith(ws, task)
        rid, rhash, has, chunk_sig = _stage_text(ws, task, params, rows)
        rids.append(rid)
        hashes.append((rhash, has))
        sig[filled : filled + len(chunk_sig)] = chunk_sig
        filled += len(chunk_sig)
    # The duplicate pass is numpy only: DuckDB spills its buffers (the staged chunk results) meanwhile, so
    # that they and the LSH buckets are not in memory together (1M rows: 0.84 GB peak instead of 0.94).
    with ws.tuned(memory_limit=DUPS_MEMORY_LIMIT_BYTES):
        return _stage_dups(rids, hashes, sig[:filled], params)


def write_scores(ws: Workspace, out_version_id: int, dups: pa.Table) -> int:
    """Insert `_sq_out` joined with the duplicate signals into sbs_scores under `out_version_id`."""
    with ws.registered("_sq_dup", dups):
        ws.execute(
            f"""
            INSERT INTO sbs_scores BY NAME
            SELECT {int(out_version_id)} AS version_id, o.* EXCLUDE (rid), d.* EXCLUDE (rid)
            FROM _sq_out o JOIN _sq_dup d USING (rid)
            """
        )
    return dups.num_rows


def _stage_judge(ws: Workspace, judged: pl.DataFrame) -> None:
    """Copy the judge's grades into `_sq_out` (rows it did not grade keep NULL)."""
    with ws.registered("_sq_judge", judged):
        ws.execute(
            "UPDATE _sq_out SET judge_score = j.judge_score FROM _sq_judge j "
            "WHERE _sq_out.example_id = j.example_id AND _sq_out.sample_idx = j.sample_idx"
        )


# -- stages --------------------------------------------------------------------------------------


def _chunks(ws: Workspace, v: Version, chunk_rows: int) -> list[tuple[str, str | None, int]]:
    """(first example_id, next chunk's first example_id or None, rows before) per chunk of whole examples."""
    src, params = ws.visible(v, alias="g")
    starts = ws.all(
        f"""
        WITH c AS (SELECT g.example_id, count(*) AS n FROM {src} GROUP BY g.example_id),
        w AS (SELECT example_id, (sum(n) OVER (ORDER BY example_id) - n)::BIGINT AS before FROM c)
        SELECT example_id, before FROM w
        QUALIFY row_number() OVER (PARTITION BY before // {max(1, int(chunk_rows))} ORDER BY example_id) = 1
        ORDER BY example_id
        """,
        params,
    )
    return [
        (ex, starts[i + 1][0] if i + 1 < len(starts) else None, off) for i, (ex, off) in enumerate(starts)
    ]


def _stage_rows(ws: Workspace, v: Version, lo: str, hi: str | None, offset: int) -> None:
    """One chunk of the rows visible in `v` (examples lo <= id < hi), numbered globally, with their gold."""
    src, params = ws.visible(v, alias="g")
    rng = "g.example_id >= ?" + ("" if hi is None else " AND g.example_id < ?")
    bounds = [lo] if hi is None else [lo, hi]
    ws.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_rows AS
        SELECT ({int(offset)} + row_number() OVER (ORDER BY g.example_id, g.sample_idx) - 1)::BIGINT AS rid,
               g.example_id, g.sample_idx, g.split, g.teacher, coalesce(g.hinted, false) AS hinted,
               g.parse_status, g.finish_reason,
               left(g.raw, 400) AS raw_head, g.pred_label, coalesce(g.rationale, '') AS rationale,
               e.label AS gold, e.choices, coalesce(e.input_text, '') AS input_text
        FROM (SELECT g.* FROM {src} AND {rng}) g
        LEFT JOIN (SELECT * FROM sbs_examples e WHERE e.version_id = ? AND {rng.replace("g.", "e.")}) e
          ON e.example_id = g.example_id
        """,
        [*params, *bounds, v.examples_id, *bounds],
    )


def _lookup(ws: Workspace, name: str, df: pl.DataFrame) -> None:
    """Materialise a small Python-computed lookup table as a DuckDB temp table."""
    with ws.registered("_sq_tmp", df.to_arrow()):
        ws.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _sq_tmp")


def _cached(cache: dict[Any, Any], kind: str, keys: list[Any], fn: Any) -> list[Any]:
    """fn(key) per key, computed once per scoring run (labels repeat across chunks)."""
    out = []
    for k in keys:
        ck = (kind, k)
        if ck not in cache:
            cache[ck] = fn(k)
        out.append(cache[ck])
    return out


def _values(ws: Workspace, column: str, cache: dict[Any, Any]) -> None:
    """Numeric value of every distinct non-plain label in `column`, by the safe AST evaluator."""
    rows = ws.all(
        f"SELECT DISTINCT {column} FROM _sq_rows WHERE {column} IS NOT NULL "
        f"AND NOT regexp_full_match(trim({column}), '{_PLAIN}')"
    )
    labels = [r[0] for r in rows]
    df = pl.DataFrame(
        {"label": labels, "value": _cached(cache, "value", labels, mathexpr.try_evaluate)},
        schema={"label": pl.Utf8, "value": pl.Float64},
    )
    _lookup(ws, f"_sq_val_{column}", df)


def _stage_labels(ws: Workspace, task: Task, cache: dict[Any, Any]) -> None:
    """Per row: canonical predicted label, numeric values (numeric tasks), and the vote key.

    Labels are canonicalised once per distinct value with the task's own `normalize_label` /
    `label_value`, so the SQL comparisons below agree with `Task.same_label` / `Task.in_label_space`.
    """
    if task.label_space == "numeric":
        _values(ws, "pred_label", cache)
        _values(ws, "gold", cache)

        def val(col: str) -> str:
            return (
                f"CASE WHEN r.{col} IS NULL THEN NULL WHEN regexp_full_match(trim(r.{col}), '{_PLAIN}') "
                f"THEN CAST(trim(r.{col}) AS DOUBLE) ELSE v_{col}.value END"
            )

        ws.execute(
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
        ws.execute("DROP TABLE IF EXISTS _sq_val_pred_label")
        ws.execute("DROP TABLE IF EXISTS _sq_val_gold")
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
                "canon": _cached(
                    cache,
                    "choice",
                    [(r[0], tuple(r[1] or ())) for r in rows],
                    lambda k: task.normalize_label(k[0], list(k[1])),
                ),
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
            {
                "label": [r[0] for r in rows],
                "canon": _cached(cache, "label", [r[0] for r in rows], task.normalize_label),
            },
            schema={"label": pl.Utf8, "canon": pl.Utf8},
        )
        _lookup(ws, "_sq_norm", df)
        canon = "n.canon"
        join = "LEFT JOIN _sq_norm n ON n.label = r.pred_label"
    ws.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_lab AS
        SELECT r.rid, {canon} AS canon, NULL::DOUBLE AS pv, NULL::DOUBLE AS gv,
               {canon} AS vkey, {canon} AS vtext
        FROM _sq_rows r {join}
        """
    )
    ws.execute("DROP TABLE IF EXISTS _sq_norm")


def _label_terms(task: Task) -> dict[str, list[str]]:
    """Words that name each fixed label in running text (the label and its longer aliases)."""
    terms: dict[str, list[str]] = {lab: [lab.lower()] for lab in task.labels}
    for alias, lab in task.label_aliases.items():
        a = alias.lower()
        if lab in terms and len(a) >= 5 and a.replace(" ", "").isalpha() and a not in terms[lab]:
            terms[lab].append(a)
    return terms


def _stage_text(
    ws: Workspace, task: Task, params: ScoreParams, rows: pl.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The chunk's main pass: every per-row signal into `_sq_out`.

    Word/sentence/overlap/repetition features come from `textfeat` (tokenised once, in polars/numpy);
    label, position and arithmetic signals from one SQL statement over the chunk. Returns what the
    cross-row duplicate signals need: (rid, rationale hash, has words, MinHash signatures of the rows
    that have words).
    """
    from sbs_data.quality.dedup import signatures
    from sbs_data.quality.textfeat import text_features

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
        pad = "t.pad"
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

    inputs = _frame(
        ws.arrow("SELECT example_id, any_value(input_text) AS input_text FROM _sq_rows GROUP BY ALL")
    )
    feats, grams, soff = text_features(rows, inputs, _STOP, numbers=numeric)
    del inputs
    sents = (
        "CASE WHEN trim(lr) = '' THEN []::VARCHAR[] "
        "ELSE string_split(rtrim(" + _replace_chars("lr", "!?\n\t", "..  ") + ", '. '), '. ') END"
    )
    concl = (
        "NULL::VARCHAR" if mentions == "false" else f"list_last(list_filter({sents}, lambda s: {mentions}))"
    )
    cols = ", ".join(s.name for s in SIGNALS if s.name not in _LATE_COLS)
    with ws.registered("_sq_feat", feats.to_arrow()):
        ws.execute(
            f"""
            INSERT INTO _sq_out BY NAME
            WITH t AS (
              SELECT rid, lr, rc, first_num, last_num, {concl} AS concl,
                     {"' ' || " + _replace_chars("rc", "()=$", "    ") + " || ' '" if numeric else "NULL"} AS pad
              FROM (SELECT rid, choices, lower(rationale) AS lr, replace(rationale, ',', '') AS rc FROM _sq_rows)
              JOIN _sq_feat USING (rid)
            ), x AS (
              SELECT r.rid, r.example_id, r.sample_idx, r.split, r.teacher, r.hinted,
                     r.parse_status = 'ok' AS parse_ok,
                     CASE WHEN r.finish_reason IS NULL THEN NULL
                          ELSE r.finish_reason IN ('length', 'max_tokens') END AS truncated,
                     coalesce(regexp_matches(lower(coalesce(r.raw_head, r.rationale)), {sql_str(_REFUSAL)}), false)
                         AS refusal,
                     coalesce({in_space}, false) AS label_in_space,
                     {gold} AS gold_match,
                     {conclusion} AS conclusion_match,
                     {first_pos} AS answer_first_pos,
                     coalesce({starts}, false) AS starts_with_answer,
                     {final_num} AS final_number_match,
                     CASE WHEN r.rationale <> '' THEN {hint_leak_sql("r.rationale")} END AS hint_leak
              FROM _sq_rows r JOIN t USING (rid) JOIN _sq_lab l USING (rid)
              LEFT JOIN (SELECT rid, value FROM _sq_exv WHERE kind = 'last') lx USING (rid)
            )
            SELECT rid, example_id, sample_idx, split, teacher, hinted, {cols}
            FROM x JOIN _sq_feat USING (rid) JOIN _sq_vote USING (rid) JOIN _sq_arith USING (rid)
            """
        )
    rid = feats["rid"].to_numpy().astype(np.int64)
    rhash = feats["rationale_hash"].fill_null(0).to_numpy()
    has = np.diff(soff) > 0
    keep_off = np.concatenate([[0], np.cumsum(np.diff(soff)[has])])
    sig = signatures(grams, keep_off, params.num_perm, params.seed)
    return rid, rhash.astype(np.uint64), has, sig


def _stage_dups(
    rids: list[np.ndarray],
    hashes: list[tuple[np.ndarray, np.ndarray]],
    sig: np.ndarray,
    params: ScoreParams,
) -> pa.Table:
    """Exact and near duplicates over all rows (within and across examples).

    A row is a duplicate of an *earlier* row (smaller rid); rows without words belong to no group.
    Near-duplicate clusters: MinHash-LSH over the signatures gathered per chunk (`dedup`).
    """
    from sbs_data.quality.dedup import clusters_from_signatures

    rid = np.concatenate(rids) if rids else np.empty(0, dtype=np.int64)
    rhash = np.concatenate([h for h, _ in hashes]) if hashes else np.empty(0, dtype=np.uint64)
    has = np.concatenate([m for _, m in hashes]) if hashes else np.empty(0, dtype=bool)
    n = len(rid)
    if n and not (np.diff(rid) > 0).all():
        raise AssertionError("chunks must come in rid order")
    exact_dup = np.zeros(n, dtype=bool)
    exact_count = np.zeros(n, dtype=np.int32)
    idx = np.nonzero(has)[0]
    _, first, inv, counts = np.unique(rhash[idx], return_index=True, return_inverse=True, return_counts=True)
    exact_dup[idx] = first[inv] != np.arange(len(idx))
    exact_count[idx] = counts[inv]
    rep, size = clusters_from_signatures(sig, params.near_threshold)
    cluster = np.zeros(n, dtype=np.int64)
    near_size = np.zeros(n, dtype=np.int32)
    cluster[idx] = rid[idx][rep]
    near_size[idx] = size
    missing = ~has
    return pa.table(
        {
            "rid": rid,
            "exact_dup": exact_dup,
            "exact_dup_count": pa.array(exact_count, mask=missing),
            "near_dup": has & (cluster != rid),
            "near_dup_size": pa.array(near_size, mask=missing),
            "near_dup_cluster": pa.array(cluster, mask=missing),
        }
    )


def _replace_chars(col: str, chars: str, to: str) -> str:
    """SQL `translate(col, chars, to)` as nested replace() calls (DuckDB's translate is ~10x slower)."""
    out = col
    for a, b in zip(chars, to, strict=True):
        out = f"replace({out}, {sql_str(a) if a.isprintable() else f'chr({ord(a)})'}, {sql_str(b)})"
    return out


def _close(a: str, b: str, rel: float) -> str:
    """SQL twin of math.isclose(a, b, rel_tol=rel, abs_tol=1e-6) (mathexpr.numbers_equal)."""
    return f"(abs({a} - {b}) <= greatest({rel} * greatest(abs({a}), abs({b})), 1e-6))"


def _stage_votes(ws: Workspace) -> None:
    """Self-consistency over the K samples of each example: majority label, vote share, entropy."""
    ws.execute(
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


def _stage_exprs(ws: Workspace, task: Task, cache: dict[Any, Any], rows: pl.DataFrame) -> None:
    """Numeric tasks: every `a op b = c` step and the rationale's last expression, with their values.

    The steps are found by `textfeat.arithmetic_candidates` (polars); simple binary steps are computed in
    SQL; compound expressions go once per distinct text through the safe AST evaluator (`mathexpr.try_evaluate`, never `eval`). Leaves `_sq_exv(rid, kind, claimed, value)`.
    """
    if task.label_space != "numeric":
        ws.execute(
            "CREATE OR REPLACE TEMP TABLE _sq_exv (rid BIGINT, kind VARCHAR, claimed DOUBLE, value DOUBLE)"
        )
        return
    from sbs_data.quality.textfeat import arithmetic_candidates

    _lookup(ws, "_sq_ex", arithmetic_candidates(rows))
    a = f"TRY_CAST(regexp_extract(expr, '{_BINARY}', 1) AS DOUBLE)"
    op = f"regexp_extract(expr, '{_BINARY}', 2)"
    b = f"TRY_CAST(regexp_extract(expr, '{_BINARY}', 3) AS DOUBLE)"
    binary = (
        f"CASE WHEN NOT regexp_full_match(expr, '{_BINARY}') THEN NULL "
        f"WHEN {op} = '+' THEN {a} + {b} WHEN {op} = '-' THEN {a} - {b} "
        f"WHEN {op} IN ('*', 'x', '×') THEN {a} * {b} WHEN {b} = 0 THEN NULL ELSE {a} / {b} END"
    )
    exprs = [
        r[0]
        for r in ws.all(f"SELECT DISTINCT expr FROM _sq_ex WHERE NOT regexp_full_match(expr, '{_BINARY}')")
    ]
    values = _cached(
        cache,
        "expr",
        exprs,
        lambda e: mathexpr.try_evaluate(e.replace("x", "*").replace("\u00d7", "*").replace("\u00f7", "/")),
    )
    _lookup(
        ws,
        "_sq_exprval",
        pl.DataFrame({"expr": exprs, "value": values}, schema={"expr": pl.Utf8, "value": pl.Float64}),
    )
    ws.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _sq_exv AS
        SELECT e.rid, e.kind, e.claimed, CASE WHEN x.expr IS NULL THEN {binary.replace("expr", "e.expr")} ELSE x.value END AS value
        FROM _sq_ex e LEFT JOIN _sq_exprval x ON x.expr = e.expr
        """
    )
    ws.execute("DROP TABLE IF EXISTS _sq_ex")
    ws.execute("DROP TABLE IF EXISTS _sq_exprval")


def _stage_arith(ws: Workspace, task: Task) -> None:
    """Per row: how many arithmetic steps, and the share that are right (mathexpr.numbers_equal, rel 1e-4)."""
    if task.label_space != "numeric":
        ws.execute(
            "CREATE OR REPLACE TEMP TABLE _sq_arith AS SELECT rid, NULL::INTEGER AS arith_steps, "
            "NULL::DOUBLE AS arith_correct_frac FROM _sq_rows"
        )
        return
    ok = _close("value", "claimed", 1e-4)
    ws.execute(
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
