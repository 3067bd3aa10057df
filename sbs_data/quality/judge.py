"""The LLM-judge signal: a teacher grades each rationale from 1 to 5 (`sbs-data score --judge SPEC`).

Judge requests go through the generation engine, so they are cached like any call (a re-score makes no
network calls), retried, rate limited, costed and resumable. The prompt is `recipes/judge.yaml` or the
user's own file with the same keys; its hash goes into the scores version's config.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from sbs_data import RECIPES_DIR, SbsError, log
from sbs_data.configfile import key_node, parse_yaml, read_text, stray_placeholders, value_line
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.plan import Item
from sbs_data.generate.run import Settings, answer, check_budget, check_facts
from sbs_data.tasks import Task
from sbs_data.teachers.base import Request
from sbs_data.teachers.registry import parse_spec
from sbs_data.workspace import Version, Workspace

DEFAULT_PROMPT = RECIPES_DIR / "judge.yaml"
_FIELDS = ("input", "rationale", "label")
# "Score: 4", "**Score:** 4", "score = **4**": one whitespace run per gap, so a miss costs linear time
_SCORE = re.compile(r"score\s*[:=]\s*(?:\*+\s*)?([1-5])\b", re.IGNORECASE)
_PLACEHOLDERS = re.compile(r"\{(input|rationale|label)\}")
#: Characters of a judge's reply that `parse_score` reads (the grade line is short and near the end).
MAX_REPLY_CHARS = 16_384


@dataclass(frozen=True)
class JudgePrompt:
    system: str | None
    template: str
    source: str
    sha: str

    def render(self, input_text: str, rationale: str, label: str | None) -> str:
        values = {
            "input": input_text,
            "rationale": rationale,
            "label": label if label is not None else "(none)",
        }
        # one pass over the template, not str.format (rationales and inputs contain braces) nor chained
        # str.replace (a "{label}" inside a rationale would be expanded too)
        return _PLACEHOLDERS.sub(lambda m: values[m.group(1)], self.template)

    def content_sql(self, columns: dict[str, str]) -> tuple[str, list[str]]:
        """`render` as a SQL expression over `columns` (placeholder -> SQL), with its literal pieces as
        parameters: the same text, character for character."""
        parts = _PLACEHOLDERS.split(self.template)  # literal, name, literal, ..., literal
        sql, params = [], []
        for i, part in enumerate(parts):
            if i % 2:
                col = columns[part]
                sql.append(f"coalesce({col}, '(none)')" if part == "label" else col)
            else:
                sql.append("?")
                params.append(part)
        return "(" + " || ".join(sql) + ")", params


def load_judge_prompt(path: str | Path | None = None) -> JudgePrompt:
    """`recipes/judge.yaml`, or the user's file: a mapping with `template` (using {input}, {rationale} and
    {label}) and an optional `system`."""
    p = Path(path) if path is not None else DEFAULT_PROMPT
    if not p.is_file():
        raise SbsError(f"{p}: judge prompt file not found")
    text = read_text(p, what="judge prompt")
    data, root = parse_yaml(text, where=str(p), what="judge prompt")
    if not isinstance(data, dict):
        raise SbsError(f"{p}: expected a mapping with 'template' (and optionally 'system')")
    unknown = sorted(set(data) - {"system", "template"})
    if unknown:
        raise SbsError(f"{p}: unknown field(s) {', '.join(unknown)}; expected 'template' and 'system'")
    template, system = data.get("template"), data.get("system")
    if not isinstance(template, str) or not template.strip():
        raise SbsError(f"{p}: 'template' must be a non-empty string")
    if system is not None and not isinstance(system, str):
        raise SbsError(f"{p}: 'system' must be a string")
    missing = [f"{{{f}}}" for f in _FIELDS if "{" + f + "}" not in template]
    if missing:
        raise SbsError(f"{p}: 'template' must use {', '.join(missing)}")
    stray = stray_placeholders(template, _FIELDS)
    if stray:
        line, _ = value_line(key_node(root, "template"))
        raise SbsError(
            f"{p}:{line}: 'template' uses unknown placeholder(s) {', '.join(f'{{{n}}}' for n in stray)}; "
            "the placeholders are {input}, {rationale} and {label}"
        )
    sha = hashlib.sha256(text.encode()).hexdigest()
    return JudgePrompt(system, template, str(p), sha)


def parse_score(text: str | None) -> int | None:
    """The last "Score: N" (N = 1..5) in a judge's reply; a bare digit reply counts too; else None.

    A reply longer than MAX_REPLY_CHARS is read by its last MAX_REPLY_CHARS characters.
    """
    if not text:
        return None
    text = text[-MAX_REPLY_CHARS:]
    found = _SCORE.findall(text)
    if found:
        return int(found[-1])
    bare = text.strip().rstrip(".")
    return int(bare) if bare in ("1", "2", "3", "4", "5") else None


@dataclass
class Judge:
    """What `score --judge` needs: the teacher spec and how to call it."""

    teacher: str
    prompt_path: str | Path | None = None
    base_urls: tuple[str, ...] = ()
    settings: Settings = field(default_factory=Settings)
    max_tokens: int = 256
    offline: bool = False
    max_usd: float | None = None
    prices_path: str | Path | None = None


#: Graded rows read, rendered and looked up per chunk.
CHUNK = 4096


@dataclass
class _Rows:
    """The rows to grade, read a chunk at a time; each pass renders its chunk again rather than keep a
    request (or a key) per row, so memory follows the chunk, not the version."""

    ws: Workspace
    sql: str
    params: list[Any]
    prompt: JudgePrompt
    teacher: Any
    req_params: dict[str, Any]

    def chunks(self) -> Iterator[list[tuple[Item, bool]]]:
        """(request, whether another row asks exactly the same thing) per row, in (example, sample) order."""
        for batch in self.ws.batches(self.sql, self.params, CHUNK):
            out = []
            for example_id, sample_idx, input_text, rationale, label, dup in zip(*batch.to_pydict().values()):
                req = Request(
                    ({"role": "user", "content": self.prompt.render(input_text, rationale, label)},),
                    self.prompt.system,
                    self.req_params,
                    None,
                    0,
                    example_id,
                )
                ing = cache_mod.canonical(cache_mod.ingredients(self.teacher, req))
                subject = cache_mod.subject_of(input_text)
                it = Item(example_id, "", sample_idx, None, req, ing, cache_mod.key_of(ing), subject)
                out.append((it, dup))
            yield out

    def misses(self, counts: dict[str, Any] | None = None) -> Iterator[Item]:
        """The requests not in the cache, each key once. Only keys of rows asking the same as another row
        are remembered (as 32-byte digests)."""
        seen: set[bytes] = set()
        for chunk in self.chunks():
            hits = cache_mod.present(self.ws, [it.key for it, _ in chunk])
            for it, dup in chunk:
                if counts is not None:
                    counts["rows"] += 1
                if it.key in hits:
                    continue
                if dup:
                    d = bytes.fromhex(it.key)
                    if d in seen:
                        continue
                    seen.add(d)
                yield it

    def scores(self) -> tuple[pl.DataFrame, int, int]:
        """(example_id, sample_idx, judge_score) of every row from the cached replies; graded, unparsed."""
        frames, judged, unparsed = [], 0, 0
        for chunk in self.chunks():
            texts = cache_mod.texts(self.ws, [it.key for it, _ in chunk])
            scores = [parse_score(texts.get(it.key)) for it, _ in chunk]
            judged += sum(x is not None for x in scores)
            unparsed += sum(x is None and it.key in texts for x, (it, _) in zip(scores, chunk, strict=True))
            frames.append(
                pl.DataFrame(
                    {
                        "example_id": [it.example_id for it, _ in chunk],
                        "sample_idx": [it.sample_idx for it, _ in chunk],
                        "judge_score": scores,
                    },
                    schema=_SCORE_SCHEMA,
                )
            )
        df = pl.concat(frames) if frames else pl.DataFrame(schema=_SCORE_SCHEMA)
        return df, judged, unparsed


_SCORE_SCHEMA = {"example_id": pl.Utf8, "sample_idx": pl.Int32, "judge_score": pl.Int32}


def run_judge(
    ws: Workspace, v: Version, visible_sql: tuple[str, list[Any]], task: Task, judge: Judge
) -> tuple[pl.DataFrame, dict[str, Any], dict[str, Any]]:
    """Grade every visible row that has a rationale. Returns (DataFrame of example_id, sample_idx,
    judge_score; the config that goes into lineage; a summary). Rows without a rationale are not sent."""
    prompt = load_judge_prompt(judge.prompt_path)
    teacher = parse_spec(
        judge.teacher,
        base_urls=judge.base_urls,
        ws=ws,
        timeout=judge.settings.timeout,
        prices_path=judge.prices_path,
    )
    params = {"temperature": 0.0, "max_tokens": judge.max_tokens}
    src, sp = visible_sql
    content, cp = prompt.content_sql(
        {"input": "coalesce(e.input_text, '')", "rationale": "g.rationale", "label": "g.pred_label"}
    )
    # `dup`: another row renders the same prompt, so its key is remembered when sending each key once
    sql = f"""
        SELECT g.example_id, g.sample_idx, coalesce(e.input_text, '') AS input_text, g.rationale, g.pred_label,
               count(*) OVER (PARTITION BY {content}) > 1 AS dup
        FROM (SELECT g.* FROM {src}) g
        LEFT JOIN (SELECT * FROM sbs_examples WHERE version_id = ?) e USING (example_id)
        WHERE g.rationale IS NOT NULL AND trim(g.rationale) <> ''
        ORDER BY g.example_id, g.sample_idx
        """
    rows = _Rows(ws, sql, [*cp, *sp, v.examples_id], prompt, teacher, params)
    config = {
        "teacher": teacher.lineage(),
        "prompt": prompt.source,
        "prompt_sha": prompt.sha,
        "params": params,
    }
    counts: dict[str, Any] = {"rows": 0}
    n_miss, first = 0, None
    for it in rows.misses(counts):  # a counting pass: what the engine is about to be asked
        n_miss += 1
        first = first or it
    n_rows = counts["rows"]
    if first is not None and judge.offline and teacher.network:
        raise SbsError(
            f"--offline: {n_miss} of {n_rows} judge requests are not in the cache "
            f"(first: example {first.example_id!r}); run without --offline"
        )
    if n_miss:  # nothing to pay for (or warn about) when every grade is cached
        check_facts(teacher, judge.max_usd)
        if judge.max_usd is not None and first is not None:
            check_budget(teacher, judge.max_usd, first.req)
        teacher.preflight()
    command = f"judge {v.ref} --judge {teacher.spec}"
    with ws.run(command) as run:  # inside `score`, this joins its run
        engine = answer(
            ws,
            teacher,
            rows.misses() if n_miss else (),
            judge.settings,
            task=task,
            max_usd=judge.max_usd,
            run=run,
            total=n_rows,
            cached=n_rows - n_miss,
            expected=n_miss,
            label="judge",
        )
        df, judged, unparsed = rows.scores()
        summary = {
            "judged": judged,
            "rows": n_rows,
            "cached": n_rows - n_miss,
            "called": engine.counters.called,
            "failed": engine.counters.failed,
            "unparsed": unparsed,
            "skipped": engine.counters.skipped,
            "spent_usd": round(engine.counters.spend, 6) if engine.counters.spend_known else None,
        }
        if engine.stop_reason:
            summary["stopped"] = engine.stop_reason
        if run.command == command:  # a run of its own
            run.stats.update(summary)
            run.status = "stopped" if engine.stop_reason else "ok"
    if engine.stop_reason:
        log.warning(f"judge stopped: {engine.stop_reason}; rows not graded keep judge_score NULL")
    return df, config, summary
