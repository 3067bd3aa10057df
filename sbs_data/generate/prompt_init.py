"""`prompt init`: a few-shot prompt file for a task, written from labelled rows of an examples version.

K exemplars are picked from one split (train by default) across the labels: the first row of each label,
then the second of each, and so on, each label's rows in an order drawn from `seed` (a hash of the seed and
the example id), so the same command writes the same file. Their answers are the gold labels, written as
the prompts write answers ("(b) choice" for multiple choice).

The rationales are either left as a placeholder (`RATIONALE_TODO ...`: generate refuses the file until they
are written) or written by a teacher: each exemplar is asked in the hinted form `rationalize` uses (the gold
answer given, "explain why"), through the same engine as every other call, so the answers are cached,
costed, limited and retried like generate's. A teacher's rationale whose label disagrees with gold, or that
mentions the hint, is not used: that exemplar keeps the placeholder, and the command says so.

The file validates against schemas/prompt.schema.json and loads with `--prompt FILE`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sbs_data import SbsError, log
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.options import RequestSpec, RunOptions
from sbs_data.generate.parse import parse
from sbs_data.generate.plan import Item, api_schema, request_params
from sbs_data.generate.prompts import (
    ANSWER_PHRASE,
    RATIONALE_TODO,
    Prompt,
    answer_text,
    fill,
    read_prompt,
)
from sbs_data.generate.run import answer, check_budget, check_facts, resolve_teacher
from sbs_data.tasks import Task, get_task
from sbs_data.teachers.base import Request
from sbs_data.text import hint_echo, hint_leak
from sbs_data.workspace import Version, Workspace

#: The placeholder rationale of an exemplar no teacher wrote.
PLACEHOLDER = f"{RATIONALE_TODO} write the step-by-step reasoning that leads to this answer"
MAX_SHOTS = 64


@dataclass
class PromptInit:
    """What `prompt init` wrote: the file, its exemplars, and what the teacher did (if asked)."""

    path: Path
    prompt: Prompt
    picked: list[dict[str, Any]] = field(default_factory=list)  # example_id, label per exemplar
    written: int = 0  # rationales a teacher wrote
    placeholders: int = 0  # rationales left as the placeholder
    summary: dict[str, Any] = field(default_factory=dict)


class _Dumper(yaml.SafeDumper):
    """Multi-line texts as literal blocks (`|-`), as a person would write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def system_text(task: Task) -> str:
    what = f"the task {task.name!r}" + (f" ({task.description.strip()})" if task.description.strip() else "")
    s = (
        f"You answer questions of {what}. Follow the format of the examples: reason step by step in a few "
        f'sentences, then end with "{ANSWER_PHRASE} <answer>."'
    )
    if task.label_space == "fixed" and task.labels:
        s += f" The answer is one of: {', '.join(task.labels)}."
    elif task.label_space == "choices":
        s += " The answer is one of the answer choices, written as (<letter>) <choice>."
    elif task.label_space == "numeric":
        s += " The answer is a number or an arithmetic expression."
    return s


def pick(ws: Workspace, ex: Version, shots: int, seed: int, split: str) -> list[tuple]:
    """(example_id, input_text, label, choices) of `shots` labelled rows of `split`, across the labels."""
    sql, params = ws.rows_query(ex, "example_id, split, input_text, label, choices")
    q = (
        "WITH r AS (SELECT example_id, input_text, label, choices, sha256(? || ':' || example_id) AS h "
        f"FROM ({sql}) WHERE split = ? AND label IS NOT NULL), "
        "ranked AS (SELECT *, row_number() OVER (PARTITION BY label ORDER BY h) AS k, "
        "min(h) OVER (PARTITION BY label) AS first_h FROM r) "
        "SELECT example_id, input_text, label, choices FROM ranked WHERE k <= ? ORDER BY k, first_h LIMIT ?"
    )
    rows = ws.all(q, [str(seed), *params, split, shots, shots])
    if not rows:
        splits = ws.all(f"SELECT split, count(label) FROM ({sql}) GROUP BY 1 ORDER BY 1", params)
        have = ", ".join(f"{s} ({n} labelled)" for s, n in splits) or "none"
        raise SbsError(
            f"{ex.ref} has no labelled rows in split {split!r} to take exemplars from (splits: {have}); "
            "choose one with --split"
        )
    return rows


def prompt_init(
    ws: Workspace,
    task: str,
    source: str,
    out: str | Path,
    *,
    shots: int = 6,
    seed: int = 0,
    split: str = "train",
    force: bool = False,
    teacher: RequestSpec | None = None,
    run: RunOptions | None = None,
) -> PromptInit:
    """Write a few-shot prompt file for `task` (a built-in name or a task YAML path) from `shots` labelled
    rows of the examples version `source` (NAME or NAME@N); `teacher` writes the rationales (else they are
    placeholders). Refuses to overwrite `out` unless `force`."""
    path = Path(out)
    if path.suffix not in (".yaml", ".yml"):
        raise SbsError(f"--out {path}: a prompt file is YAML: name it .yaml")
    if path.exists() and not force:
        raise SbsError(f"--out {path}: the file exists; pass --force to overwrite it")
    if not 1 <= shots <= MAX_SHOTS:
        raise SbsError(f"--shots must be between 1 and {MAX_SHOTS}, not {shots}")
    ex = ws.get(source)
    if ex.kind != "examples":
        if ex.examples_id is None:
            raise SbsError(f"{ex.ref} holds {ex.kind}, not examples")
        ex = ws.by_id(ex.examples_id)
    # A YAML task's name also works once it is ingested: the examples version stores its definition.
    t = get_task(task, stored=(ex.config or {}).get("task_def") if task == ex.task else None)
    if ex.task != t.name:
        raise SbsError(f"{ex.ref} is task {ex.task!r}, not {t.name!r}")
    rows = pick(ws, ex, shots, seed, split)
    base = Prompt(path.stem, str(path), system_text(t), "{input}\nA:", ())
    answers = [answer_text(t, label, list(ch) if ch is not None else None) for _, _, label, ch in rows]
    rationales: list[str | None] = [None] * len(rows)
    summary: dict[str, Any] = {"out": str(path), "source": ex.ref, "task": t.name, "shots": len(rows)}
    if teacher is not None:
        run = run or RunOptions(command=f"prompt init {task} --from {source} --out {path}")
        rationales, asked = _teacher_rationales(ws, t, base, rows, answers, teacher, run)
        summary.update(asked)
    exemplars = []
    for (ex_id, text, _, _), ans, r in zip(rows, answers, rationales, strict=True):
        exemplars.append({"input": text, "rationale": r or PLACEHOLDER, "answer": ans, "example_id": ex_id})
    written = sum(r is not None for r in rationales)
    data = {"task": t.name, "system": base.system, "template": base.template, "exemplars": exemplars}
    head = (
        f"# A few-shot prompt for task {t.name!r}, written by `sbs-data prompt init` from {len(rows)} labelled "
        f"rows of {ex.ref} (split {split}, seed {seed}).\n# Edit freely; use it with "
        f"`sbs-data generate ... --prompt {path.name}` (checked against schemas/prompt.schema.json).\n"
    )
    if written < len(rows):
        # a rerun with the same teacher reads the same answers from the cache: only other rows (--seed) help
        again = "--teacher SPEC --force" if teacher is None else "another --seed (other rows) --force"
        head += (
            f"# {len(rows) - written} rationale(s) are placeholders ({RATIONALE_TODO} ...): write them, or rerun "
            f"with {again}. `generate` refuses this file until they are written.\n"
        )
    text = head + yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100_000)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # read back as YAML before it replaces `path`
    tmp.write_text(text, encoding="utf-8")
    prompt = read_prompt(tmp)  # what generate will read: it must load and validate
    tmp.replace(path)
    summary.update(
        labels=len({label for _, _, label, _ in rows}),
        rationales_written=written,
        placeholders=len(rows) - written,
        prompt_sha=prompt.sha,
    )
    if written < len(rows):
        log.warning(
            f"warning: {len(rows) - written} of {len(rows)} exemplar rationales in {path} are placeholders "
            f"({RATIONALE_TODO} ...): write them"
            + (
                ", or rerun with --teacher SPEC --force"
                if teacher is None
                else ", or rerun with another --seed --force"
            )
            + "; `generate --prompt` refuses the file until then"
        )
    picked = [{"example_id": e, "label": label} for e, _, label, _ in rows]
    return PromptInit(path, prompt, picked, written, len(rows) - written, summary)


def _teacher_rationales(
    ws: Workspace,
    task: Task,
    base: Prompt,
    rows: list[tuple],
    answers: list[str],
    spec: RequestSpec,
    run: RunOptions,
) -> tuple[list[str | None], dict[str, Any]]:
    """Each exemplar's rationale from the teacher, asked with the gold answer as a hint (the hinted form
    `rationalize` sends); None where the answer disagrees with gold or echoes the hint."""
    if run.dry_run or run.mode != "online":
        raise SbsError("prompt init asks its teacher online: no --dry-run or --mode batch")
    t, _ = resolve_teacher(ws, spec, run)
    params = request_params(t, spec.params, 1)
    items = []
    for (ex_id, text, _, _), ans in zip(rows, answers, strict=True):
        system, messages = base.render_hinted(text, ans, spec.json_mode)
        schema = api_schema() if spec.json_mode else None
        req = Request(messages, system, params, schema, 0, ex_id)
        ing = cache_mod.canonical(cache_mod.ingredients(t, req))
        items.append(Item(ex_id, "", 0, None, req, ing, cache_mod.key_of(ing), cache_mod.subject_of(text)))
    hits = cache_mod.present(ws, [it.key for it in items])
    misses = list({it.key: it for it in items if it.key not in hits}.values())
    if misses:
        if run.offline and t.network:
            raise SbsError(
                f"--offline: {len(misses)} of {len(items)} rationale requests are not in the cache; run "
                "without --offline"
            )
        check_facts(t, run.max_usd)
        if run.max_usd is not None:
            check_budget(t, run.max_usd, misses[0].req)
        t.preflight()
    t0 = time.perf_counter()
    with ws.run(run.command) as record:
        engine = answer(
            ws,
            t,
            misses,
            run.settings,
            task=task,
            json_mode=spec.json_mode,
            max_usd=run.max_usd,
            run=record,
            total=len(items),
            cached=len(items) - len(misses),
            expected=len(misses),
            label="prompt init",
        )
        c = engine.counters
        record.stats.update(requests=len(items), called=c.called, failed=c.failed)
    if engine.fatal:
        raise SbsError(f"{t.spec}: stopped: {engine.stop_reason}:\n{engine.fatal}")
    texts = cache_mod.texts(ws, [it.key for it in items])
    hint_words = fill(base.hint_template, "", "{answer}")
    out: list[str | None] = []
    refused = 0
    for it, (_, _, gold, choices), ans in zip(items, rows, answers, strict=True):
        ch = list(choices) if choices is not None else None
        parsed, _ = parse(task, texts.get(it.key), ch, spec.json_mode)
        ok = parsed.status == "ok" and parsed.rationale and task.same_label(parsed.label, gold, ch)
        if ok and (
            hint_leak(parsed.rationale)
            or hint_echo(
                parsed.rationale, hint_words.replace("{answer}", ans), allowed=f"{ANSWER_PHRASE} {ans}"
            )
        ):
            ok = False
        refused += not ok
        out.append(parsed.rationale.strip() if ok and parsed.rationale else None)
    asked = {
        "teacher": t.spec,
        "requests": len(items),
        "cached": len(items) - len(misses),
        "called": c.called,
        "failed": c.failed,
        "refused": refused,
        "spent_usd": round(c.spend, 6) if c.spend_known else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if refused:
        log.warning(
            f"warning: {refused} of {len(items)} teacher rationales were not used (no answer, an answer that "
            "disagrees with gold, or one that mentions the hint): those exemplars keep the placeholder"
        )
    return out, asked
