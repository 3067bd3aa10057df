"""Rationalization plans (STaR, Zelikman et al. 2022): ask the teacher again, gold answer as a hint, for the
rows of a generations version it got wrong or could not answer; then combine.

A `HintPlan` is a `Plan` over the chosen rows of GEN, not over an examples version: it selects them in SQL
(parse failed, or a label whose text differs from gold), confirms "wrong" with the task's own comparison in
Python (SVAMP compares values), and renders each hinted request in Python, a chunk at a time. The gold
answer is part of the prompt, so keys cannot come from the plan's SQL path. The plan is rebuilt from its
arguments alone (batch runs re-plan when collecting), and each request keeps the row's sample index, so a
rerun makes no calls.

`combine` builds the version a user trains on: every row of GEN, where a chosen row is replaced by its
hinted answer when that answer agrees with gold and does not mention the hint (`quality.leak`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from sbs_data import SbsError, log
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.plan import CHUNK, Item, Plan, request_params, task_of
from sbs_data.generate.prompts import ANSWER_PHRASE, Prompt, answer_text, fill, from_content, load_prompt
from sbs_data.teachers.base import Teacher
from sbs_data.text import LEAK_MAX_CHARS, hint_echo, hint_leak_sql
from sbs_data.workspace import Version, Workspace, check_name, config_hash

#: Which rows of GEN to ask again: --rows.
SELECTIONS = ("wrong", "failed", "wrong+failed")
#: Splits rationalized unless told otherwise: the hint is the gold answer, so evaluation splits never are.
DEFAULT_SPLITS = ("train",)
_MEMO_MAX = 65_536


@dataclass
class HintPlan(Plan):
    """The hinted requests for the chosen rows of `gen` (one per row, keeping its sample index)."""

    gen: Version | None = None
    select: str = "wrong+failed"
    splits: tuple[str, ...] = DEFAULT_SPLITS
    combine_name: str | None = None  # also build the combined version under this name

    def finish(self, ws: Workspace, built: Version, run_id: str | None) -> dict[str, Any]:
        if not self.combine_name:
            return {}
        c = combine(ws, self.source, built, self.combine_name, run_id=run_id, hint=self.prompt.hint_template)
        return {
            "combined": c.version.ref,
            "combined_rows": c.version.row_count,
            "recovered": sum(c.recovered.values()),
            "hint_leak_refused": c.leaked,
            "still_wrong": c.disagree,
        }

    @property
    def source(self) -> Version:
        assert self.gen is not None
        return self.gen

    @property
    def sql_keys(self) -> bool:
        return False

    def prompt_parts(self) -> tuple[str | None, str, str]:
        return self.prompt.parts(self.json_mode, hinted=True)

    def _chosen_sql(self, ws: Workspace, only: list[str] | None = None) -> tuple[str, list]:
        gsql, gp = ws.rows_query(self.source, "example_id, sample_idx, split, parse_status, pred_label")
        wrong = "(g.parse_status = 'ok' AND g.pred_label IS DISTINCT FROM e.label)"
        failed = "g.parse_status <> 'ok'"
        cond = {"wrong": wrong, "failed": failed, "wrong+failed": f"{wrong} OR {failed}"}[self.select]
        sql = (
            "SELECT g.example_id, g.sample_idx, g.split, g.parse_status, g.pred_label, e.label, e.choices, "
            f"e.input_text FROM ({gsql}) g JOIN sbs_examples e ON e.version_id = ? AND e.example_id = g.example_id "
            f"WHERE e.label IS NOT NULL AND list_contains(?::VARCHAR[], g.split) AND ({cond}) "
            + ("AND g.example_id IN (SELECT unnest(?::VARCHAR[])) " if only is not None else "")
            + "ORDER BY g.example_id, g.sample_idx"
        )
        return sql, [
            *gp,
            self.examples.version_id,
            list(self.splits),
            *([list(only)] if only is not None else []),
        ]

    def chosen(self, ws: Workspace, only: list[str] | None = None) -> Iterator[list[tuple]]:
        """Chunks of (example_id, sample_idx, split, gold, choices, input_text) to ask again (`only`: of
        these example ids)."""
        memo: dict[tuple, bool] = {}
        sql, params = self._chosen_sql(ws, only)
        for batch in ws.batches(sql, params, CHUNK):
            out = []
            for e, k, split, status, pred, gold, choices, text in zip(*batch.to_pydict().values()):
                if status == "ok":
                    key = (pred, gold, tuple(choices or ()))
                    if key not in memo:
                        if len(memo) >= _MEMO_MAX:
                            memo.clear()
                        memo[key] = self.task.same_label(pred, gold, choices)
                    if memo[key]:
                        continue  # the same label written differently ("(84 / 2)" for "( 84.0 / 2.0 )")
                out.append((e, k, split, gold, choices, text))
            if out:
                yield out

    def hint_item(
        self, example_id: str, split: str, choices: Any, input_text: str, gold: str, k: int
    ) -> Item:
        choices = list(choices) if choices is not None else None
        system, messages = self.prompt.render_hinted(
            input_text, answer_text(self.task, gold, choices), self.json_mode
        )
        req = self._request(system, messages[0]["content"], k, example_id)
        ing = cache_mod.canonical(cache_mod.ingredients(self.teacher, req))
        return Item(
            example_id, split, k, choices, req, ing, cache_mod.key_of(ing), cache_mod.subject_of(input_text)
        )

    def item_chunks(self, ws: Workspace, only: list[str] | None = None) -> Iterator[list[Item]]:
        for rows in self.chosen(ws, only):
            yield [self.hint_item(e, sp, c, t, g, k) for e, k, sp, g, c, t in rows]

    def first_item(self, ws: Workspace) -> Item | None:
        for items in self.item_chunks(ws):
            return items[0]
        return None

    def prompt_chars(self, ws: Workspace) -> tuple[int, int]:
        n = chars = 0
        for it in self.misses(ws):
            n += 1
            chars += it.req.prompt_chars
        return n, chars


def generating_prompt(ws: Workspace, gen: Version, task: Any) -> Prompt:
    """The prompt GEN was generated with, as its lineage recorded it (the nearest version whose config holds
    the prompt itself), else the task's own prompt (built-in, or the generic zero-shot one)."""
    found: dict[str, tuple[str, Prompt]] = {}  # sha -> (the first version made with it, the prompt)
    for v in ws.lineage(gen.ref):
        stored = from_content((v.config or {}).get("prompt") or {})
        if stored is not None:
            found.setdefault(stored.sha, (v.ref, stored))
    if not found:
        return load_prompt(task)
    ref, stored = next(iter(found.values()))
    log.info(f"rationalize: asking with the prompt {ref} was generated with ({stored.source}, {stored.sha})")
    if len(found) > 1:  # e.g. a merge of two generations made with different prompts
        others = "; ".join(f"{r}: {p.source}" for r, p in list(found.values())[1:])
        log.warning(
            f"warning: {gen.ref} holds rows generated with different prompts ({ref}: {stored.source}; {others}): "
            f"every row is asked with {stored.source}; pass --prompt FILE to choose"
        )
    return stored


def check_splits(splits: list[str] | tuple[str, ...] | None, allow_eval: bool) -> tuple[str, ...]:
    """The splits to rationalize; validation and test only with `allow_eval` (their gold would leak into
    training data made from them, and into nothing else, but an evaluation set must stay unhinted)."""
    from sbs_data.ingest import canonical_split

    out = tuple(dict.fromkeys(canonical_split(s) for s in (splits or DEFAULT_SPLITS)))
    evals = [s for s in out if s != "train"]
    if evals and not allow_eval:
        raise SbsError(
            f"--split {', '.join(evals)}: rationalizing puts the gold answer into the teacher's prompt, so "
            "evaluation splits are never hinted by default; pass --allow-eval-splits if you really mean it"
        )
    return out


def hint_plan(
    ws: Workspace,
    ref: str,
    teacher: Teacher,
    *,
    rows: str = "wrong+failed",
    splits: list[str] | tuple[str, ...] | None = None,
    allow_eval: bool = False,
    prompt_path: str | Path | None = None,
    json_mode: bool = False,
    params: dict[str, Any] | None = None,
    combine: str | None = None,
) -> HintPlan:
    """What `rationalize GEN` would ask (one pass over GEN to count the rows; nothing called or written)."""
    if rows not in SELECTIONS:
        raise SbsError(f"--rows must be one of {', '.join(SELECTIONS)}, not {rows!r}")
    gen = ws.get(ref)
    if gen.kind == "examples" or gen.base_id is None:
        raise SbsError(
            f"{gen.ref} holds examples; rationalize a generations version (made by generate or import-original)"
        )
    sp = check_splits(splits, allow_eval)
    ex = ws.by_id(gen.examples_id)
    task = task_of(ex)
    prompt = load_prompt(task, prompt_path) if prompt_path is not None else generating_prompt(ws, gen, task)
    gsql, gp = ws.rows_query(gen, "split, sample_idx")
    have = dict(ws.all(f"SELECT split, max(sample_idx) + 1 FROM ({gsql}) GROUP BY split", gp))
    missing = [s for s in sp if s not in have]
    if missing:
        raise SbsError(
            f"{gen.ref} has no rows in split {', '.join(missing)} (splits: {', '.join(sorted(have)) or 'none'})"
        )
    esql, ep = ws.rows_query(ex, "split, label")
    if not ws.one(
        f"SELECT count(label) FROM ({esql}) WHERE list_contains(?::VARCHAR[], split)", [*ep, list(sp)]
    ):
        # the hint is the gold answer: with none, every row would be skipped and two empty versions built
        raise SbsError(
            f"{gen.ref}: its examples ({ex.ref}) have no gold labels in split {', '.join(sp)}, and rationalize "
            "gives the teacher the gold answer as a hint; ingest the rows with their labels to rationalize them"
        )
    # GEN's samples per example decide the default temperature, as for generate --samples K.
    p = request_params(teacher, params, max(int(have[s]) for s in sp))
    config = {
        "op": "rationalize",
        "source": gen.ref,
        "source_version_id": gen.version_id,
        "examples": ex.ref,
        "task": task.name,
        "teacher": teacher.lineage(),
        "prompt": {**prompt.to_config(), "hint_sha": prompt.hint_sha},
        "params": p,
        "json": json_mode,
        "rows": rows,
        "splits": list(sp),
    }
    if combine is not None:
        check_name(combine)
    plan = HintPlan(
        ex,
        task,
        prompt,
        teacher,
        p,
        1,
        json_mode,
        None,
        None,
        0,
        config,
        True,
        gen=gen,
        select=rows,
        splits=sp,
        combine_name=combine,
    )
    plan.rows = sum(len(c) for c in plan.chosen(ws))
    return plan


# -- the combined version -----------------------------------------------------------------------------
@dataclass
class Combined:
    version: Version
    asked: dict[str, int]  # per split: rows asked again (the hinted version's rows)
    recovered: dict[str, int]  # per split: rows replaced by their hinted answer
    leaked: int  # hinted answers refused because the rationale mentions the hint
    disagree: int  # hinted answers that did not parse or still disagree with gold


def combine(
    ws: Workspace, gen: Version, hinted: Version, name: str, *, run_id: str | None = None, hint: str = ""
) -> Combined:
    """Every row of `gen`; a row `hinted` answered is replaced when that answer agrees with gold, passes
    hint_leak, and does not echo the hint it was shown (`hint`: the hinted question template; its words
    with the row's answer filled in, the question left out). Row counts per split are `gen`'s. Rebuilding an
    unchanged combination returns the old version."""
    check_name(name)
    if hinted.examples_id != gen.examples_id:
        raise SbsError(f"{hinted.ref} does not answer the examples of {gen.ref}")
    task = task_of(ws.by_id(gen.examples_id))
    hsql, hp = ws.rows_query(hinted, "example_id, sample_idx, split, parse_status, pred_label, rationale")
    leak = hint_leak_sql("h.rationale")
    q = (
        f"SELECT h.example_id, h.sample_idx, h.split, h.parse_status = 'ok' AS ok, coalesce({leak}, false) AS leak, "
        "h.pred_label, e.label, e.choices, left(h.rationale, ?) FROM (" + hsql + ") h JOIN sbs_examples e "
        "ON e.version_id = ? AND e.example_id = h.example_id ORDER BY h.example_id, h.sample_idx"
    )
    hint_words = fill(hint, "", "{answer}") if hint else ""
    asked: dict[str, int] = {}
    recovered: dict[str, int] = {}
    leaked = disagree = 0
    memo: dict[tuple, bool] = {}
    ws.execute("CREATE OR REPLACE TEMP TABLE _rz_ok (example_id VARCHAR, sample_idx INTEGER)")
    try:
        for batch in ws.batches(q, [LEAK_MAX_CHARS, *hp, gen.examples_id], CHUNK):
            keep_e, keep_k = [], []
            for e, k, split, ok, lk, pred, gold, choices, rationale in zip(*batch.to_pydict().values()):
                asked[split] = asked.get(split, 0) + 1
                if ok:
                    key = (pred, gold, tuple(choices or ()))
                    if key not in memo:
                        if len(memo) >= _MEMO_MAX:
                            memo.clear()
                        memo[key] = task.same_label(pred, gold, choices)
                    ok = memo[key]
                if ok and not lk and hint_words:
                    answer = answer_text(task, gold, list(choices) if choices is not None else None)
                    shown = hint_words.replace("{answer}", answer)
                    lk = bool(hint_echo(rationale, shown, allowed=f"{ANSWER_PHRASE} {answer}"))
                if not ok:
                    disagree += 1
                elif lk:
                    leaked += 1
                else:
                    recovered[split] = recovered.get(split, 0) + 1
                    keep_e.append(e)
                    keep_k.append(k)
            if keep_e:
                frame = pl.DataFrame(
                    {"example_id": keep_e, "sample_idx": keep_k},
                    schema={"example_id": pl.Utf8, "sample_idx": pl.Int32},
                )
                ws.insert_frame("_rz_ok", frame)
        config = {
            "op": "rationalize-combine",
            "source": gen.ref,
            "source_version_id": gen.version_id,
            "hinted": hinted.ref,
            "hinted_version_id": hinted.version_id,
            "accept": "hinted label agrees with gold and hint_leak is false",
            "asked": dict(sorted(asked.items())),
            "recovered": dict(sorted(recovered.items())),
            "leaked": leaked,
            "disagree": disagree,
        }
        same = _same_version(ws, name, config)
        if same is not None:
            return Combined(same, asked, recovered, leaked, disagree)
        gsql, gp = ws.rows_query(gen)
        h_all, hp_all = ws.rows_query(hinted)
        using = "USING (example_id, sample_idx)"
        # Streamed: the version stays pending until both inserts are in (each commits on its own).
        with ws.new_version(
            name, "generations", config, parents=[gen, hinted], task=gen.task, run_id=run_id, streamed=True
        ) as v:
            ws.execute(
                f"INSERT INTO sbs_generations BY NAME SELECT ? AS version_id, g.* EXCLUDE (version_id, hinted), "
                f"coalesce(g.hinted, false) AS hinted FROM ({gsql}) g ANTI JOIN _rz_ok {using}",
                [v.version_id, *gp],
            )
            ws.execute(
                f"INSERT INTO sbs_generations BY NAME SELECT ? AS version_id, h.* EXCLUDE (version_id, hinted), "
                f"true AS hinted FROM ({h_all}) h SEMI JOIN _rz_ok {using}",
                [v.version_id, *hp_all],
            )
    finally:
        ws.execute("DROP TABLE IF EXISTS _rz_ok")
    return Combined(ws.by_id(v.version_id), asked, recovered, leaked, disagree)


def _same_version(ws: Workspace, name: str, config: dict) -> Version | None:
    try:
        last = ws.get(name)
    except SbsError:
        return None
    return last if last.config_hash == config_hash(config) and not last.note else None


def default_names(gen: Version) -> tuple[str, str]:
    """(hinted answers, combined version) names for GEN: `GEN-hinted`, `GEN-rationalized`."""
    return f"{gen.dataset}-hinted", f"{gen.dataset}-rationalized"
