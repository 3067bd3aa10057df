"""Planning: which requests a generate command makes, their cache keys, and which are already answered.

A plan is a query, not a list. The rows of the examples version are rendered into prompts and hashed into
cache keys by DuckDB (`replace`, `sha256`) in one streaming pass, so a cached rerun of a million requests is
one SQL scan instead of a million Python renders, and memory does not grow with the job. Python renders
the full request only for the cache misses it is about to send, and checks there that its key is the one
SQL computed. Teachers whose key needs more than the request (replay keys by example id) are keyed in
Python, chunk by chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbs_data import SbsError
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.prompts import Prompt, load_prompt
from sbs_data.tasks import Task, get_task
from sbs_data.teachers.base import REASONING_SUMMARIES, Request, Teacher
from sbs_data.teachers.models import estimate_tokens
from sbs_data.workspace import Version, Workspace

#: The output budget for non-reasoning models when --max-tokens is not given (part of the cache key).
DEFAULT_MAX_TOKENS = 256
#: Rows fetched from DuckDB per chunk.
CHUNK = 4096
_REASONING_EFFORTS = ("minimal", "low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Item:
    """One (example, sample) request to send."""

    example_id: str
    split: str
    sample_idx: int
    choices: list[str] | None
    req: Request
    ingredients_json: str  # canonical JSON of the key's ingredients (stored with the answer, used by explain)
    key: str
    subject: str

    @property
    def est_tokens(self) -> int:
        """Prompt estimate plus the full output budget: what a provider's token limit charges up front."""
        return estimate_tokens(self.req.prompt_chars) + int(self.req.params.get("max_tokens") or 0)


@dataclass
class Plan:
    examples: Version
    task: Task
    prompt: Prompt
    teacher: Teacher
    params: dict[str, Any]
    samples: int
    json_mode: bool
    split: str | None
    limit: int | None
    rows: int  # examples selected
    config: dict[str, Any] = field(default_factory=dict)
    #: Whether the teacher was shown the gold answer (rationalize plans); stored on every row it builds.
    hinted: bool = False

    @property
    def total(self) -> int:
        return self.rows * self.samples

    @property
    def source(self) -> Version:
        """The version the plan answers (lineage parent of what it builds; re-planned from in batch runs)."""
        return self.examples

    # -- SQL ----------------------------------------------------------------------------------------
    def _source(self, ws: Workspace) -> tuple[str, list]:
        sql, params = ws.rows_query(self.examples, "example_id, split, input_text, choices, row_idx")
        where, wp = "", []
        if self.split:
            where, wp = " WHERE split = ?", [self.split]
        lim = f" LIMIT {int(self.limit)}" if self.limit else ""
        return f"SELECT * FROM ({sql}){where}{lim}", params + wp

    def keyed(self, ws: Workspace) -> tuple[str, list]:
        """Every request as (example_id, split, choices, input_text, sample_idx, cache_key), in the examples'
        stored order; keys computed by DuckDB exactly as `cache.key_of` computes them."""
        src, sp = self._source(ws)
        system, prefix, template = self.prompt.parts(self.json_mode)
        a, b, c, d = _key_frame(self.teacher, self._request(system, "", 0))
        # `length` counts code points and `sha256` hashes UTF-8, as Python's len() and hashlib do.
        sql = (
            "WITH r AS (SELECT example_id, split, choices, input_text, "
            "? || replace(?, '{input}', input_text) AS content FROM (" + src + ")), "
            "h AS (SELECT example_id, split, choices, input_text, "
            "? || CAST(length(content) AS VARCHAR) || ? || sha256(content) || ? AS pre, "
            "unnest(range(?)) AS sample_idx FROM r) "
            "SELECT example_id, split, choices, input_text, CAST(sample_idx AS INTEGER) AS sample_idx, "
            "sha256(pre || CAST(sample_idx AS VARCHAR) || ?) AS cache_key FROM h"
        )
        return sql, [prefix, template, *sp, a, b, c, self.samples, d]

    def prompt_parts(self) -> tuple[str | None, str, str]:
        """(system, prefix, template) of this plan's prompt (`Prompt.parts`)."""
        return self.prompt.parts(self.json_mode)

    def _request(self, system: str | None, content: str, k: int, example_id: str | None = None) -> Request:
        prefix = self.prompt_parts()[1]
        schema = api_schema() if self.json_mode else None
        return Request(
            ({"role": "user", "content": content},),
            system,
            self.params,
            schema,
            k,
            example_id,
            prefix_chars=len(prefix),
        )

    def item(self, example_id: str, split: str, choices: Any, input_text: str, k: int) -> Item:
        """The full request for one (example, sample), rendered and keyed in Python."""
        system, messages = self.prompt.render(input_text, self.json_mode)
        req = self._request(system, messages[0]["content"], k, example_id)
        ing = cache_mod.canonical(cache_mod.ingredients(self.teacher, req))
        return Item(
            example_id,
            split,
            k,
            list(choices) if choices is not None else None,
            req,
            ing,
            cache_mod.key_of(ing),
            cache_mod.subject_of(input_text),
        )

    @property
    def sql_keys(self) -> bool:
        """Whether DuckDB can compute the keys (the teacher adds no per-request key ingredients)."""
        probe = self._request(None, "", 0, "x")
        return not self.teacher.key_extra(probe)

    def finish(self, ws: Workspace, built: Version, run_id: str | None) -> dict[str, Any]:
        """What the plan's command does once its version is built (nothing for generate); summary fields."""
        return {}

    def item_chunks(self, ws: Workspace, only: list[str] | None = None) -> Iterator[list[Item]]:
        """Every request, rendered and keyed in Python, a chunk of examples at a time, in stored order;
        `only`: just the requests of these example ids (a batch job's, without rendering the whole plan)."""
        src, sp = self._source(ws)
        where = ""
        if only is not None:
            where, sp = " WHERE example_id IN (SELECT unnest(?::VARCHAR[]))", [*sp, list(only)]
        q = f"SELECT example_id, split, choices, input_text FROM ({src}){where}"
        for batch in ws.batches(q, sp, CHUNK):
            rows = zip(*batch.to_pydict().values())
            yield [self.item(e, s, c, t, k) for e, s, c, t in rows for k in range(self.samples)]

    def misses(self, ws: Workspace) -> Iterator[Item]:
        """The requests not in the cache, each key once, in order, rendered in Python chunk by chunk. Reads
        through its own cursor (`ws.batches`), since the cache writer commits on the main connection."""
        seen: set[bytes] = set()  # only misses, as 32-byte digests
        if self.sql_keys:
            sql, params = self.keyed(ws)
            # Identical requests (two examples with the same text) are sent once. Only keys SQL finds
            # twice are remembered, so memory does not grow with the job.
            dupes = {
                r[0]
                for r in ws.all(
                    f"SELECT cache_key FROM ({cache_mod.missing(sql)}) GROUP BY 1 HAVING count(*) > 1", params
                )
            }
            q = cache_mod.missing(
                sql, "p.example_id, p.split, p.choices, p.input_text, p.sample_idx, p.cache_key"
            )
            for batch in ws.batches(q, params, CHUNK):
                for example_id, split, choices, input_text, k, key in zip(*batch.to_pydict().values()):
                    if key in dupes:
                        d = bytes.fromhex(key)
                        if d in seen:
                            continue
                        seen.add(d)
                    it = self.item(example_id, split, choices, input_text, k)
                    if it.key != key:
                        raise SbsError(
                            f"internal error: the planner's SQL key for example {example_id!r} differs from "
                            "Python's; please report this (with the example's text) to the sbs-data developers"
                        )
                    yield it
            return
        for items in self.item_chunks(ws):
            hits = cache_mod.present(ws, [it.key for it in items])
            for it in items:
                d = bytes.fromhex(it.key)
                if it.key in hits or d in seen:
                    continue
                seen.add(d)
                yield it

    def count_misses(self, ws: Workspace) -> tuple[int, int]:
        """(requests not in the cache, distinct keys among them): one SQL pass."""
        if not self.sql_keys:
            keys = {it.key for it in self.misses(ws)}
            return len(keys), len(keys)
        sql, params = self.keyed(ws)
        row = ws.all(f"SELECT count(*), count(DISTINCT cache_key) FROM ({cache_mod.missing(sql)})", params)[0]
        return int(row[0]), int(row[1])

    def first_item(self, ws: Workspace) -> Item | None:
        src, sp = self._source(ws)
        rows = ws.all(f"SELECT example_id, split, choices, input_text FROM ({src}) LIMIT 1", sp)
        if not rows:
            return None
        example_id, split, choices, input_text = rows[0]
        return self.item(example_id, split, choices, input_text, 0)

    def prompt_chars(self, ws: Workspace) -> tuple[int, int]:
        """(requests not in the cache, characters of their prompts) for --dry-run estimates, in SQL."""
        system, prefix, template = self.prompt.parts(self.json_mode)
        sql, params = self.keyed(ws)
        n, chars = ws.all(
            "SELECT count(*), coalesce(sum(length(replace(?, '{input}', input_text))), 0) "
            f"FROM ({cache_mod.missing(sql)})",
            [template, *params],
        )[0]
        return int(n), int(chars) + int(n) * (len(system or "") + len(prefix))


def _key_frame(teacher: Teacher, req: Request) -> tuple[str, str, str, str]:
    """The canonical key JSON cut around its three per-request values (message length, message sha,
    sample index): DuckDB glues the pieces back together around its own values."""
    ing = cache_mod.ingredients(teacher, req)
    ing["messages"] = [{"role": "user", "sha": "@@SBS-SHA@@", "chars": 987654321}]
    ing["sample_idx"] = 123456789
    text = cache_mod.canonical(ing)
    if text.count("987654321") != 1 or text.count("@@SBS-SHA@@") != 1 or text.count("123456789") != 1:
        raise SbsError("internal error: cannot build the SQL key frame")  # pragma: no cover
    a, rest = text.split("987654321")
    b, rest = rest.split("@@SBS-SHA@@")
    c, d = rest.split("123456789")
    return a, b, c, d


# -- building a plan ---------------------------------------------------------------------------------
def sanitize_name(text: str) -> str:
    """A model name as a dataset-name part: letters, digits, '.', '_' and '-'."""
    s = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.")
    return re.sub(r"-{2,}", "-", s) or "model"


def default_name(examples: Version, teacher: Teacher) -> str:
    """`NAME-<model>`; a model part that already starts with NAME (e.g. `replay:NAME-palm@1`) is not
    repeated: `NAME-palm-1`, not `NAME-NAME-palm-1`."""
    model = teacher.model
    if teacher.provider == "hf" and Path(model).exists():
        model = Path(model).resolve().name
    model = sanitize_name(model)
    return model if model.startswith(f"{examples.dataset}-") else f"{examples.dataset}-{model}"


def task_of(v: Version) -> Task:
    if not v.task:
        raise SbsError(f"{v.ref} has no task recorded")
    try:
        return get_task(v.task)
    except SbsError:
        stored = (v.config or {}).get("task_def")
        if stored:
            return get_task(v.task, stored=stored)
        raise


def api_schema() -> dict:
    """The output schema as sent to providers (strict-mode friendly: types only)."""
    return {
        "type": "object",
        "properties": {"rationale": {"type": "string"}, "label": {"type": "string"}},
        "required": ["rationale", "label"],
        "additionalProperties": False,
    }


def request_params(teacher: Teacher, params: dict[str, Any] | None, samples: int) -> dict[str, Any]:
    """The generation params to send, checked against what the model accepts before any call.

    Reasoning models (OpenAI o-series, gpt-5) accept only their default temperature and top_p: sbs-data sends
    neither unless asked, and refuses when asked (a silently dropped flag would be a lie in the lineage). Their
    reasoning tokens count against the output budget, so their default budget is the model table's."""
    facts = teacher.facts
    p = {k: v for k, v in (params or {}).items() if v is not None}
    for k, v in p.items():
        if isinstance(v, float) and not (v == v and abs(v) != float("inf")):
            raise SbsError(f"--{k.replace('_', '-')} must be a finite number, not {v}")
    if p.get("temperature") is not None and p["temperature"] < 0:
        raise SbsError(f"--temperature must be 0 or more, not {p['temperature']}")
    if p.get("top_p") is not None and not 0 < p["top_p"] <= 1:
        raise SbsError(f"--top-p must be in (0, 1], not {p['top_p']}")
    if p.get("max_tokens") is not None and int(p["max_tokens"]) < 1:
        raise SbsError(f"--max-tokens must be at least 1, not {p['max_tokens']}")
    effort = p.get("reasoning_effort")
    if effort is not None:
        if effort not in _REASONING_EFFORTS:
            raise SbsError(
                f"--reasoning-effort must be one of {', '.join(_REASONING_EFFORTS)}, not {effort!r}"
            )
        if "reasoning_effort" not in facts.params:
            raise SbsError(
                f"{teacher.spec} takes no --reasoning-effort (it is for reasoning models such as openai:gpt-5-mini)"
            )
    summary = p.get("reasoning_summary")
    if summary is not None:
        if summary not in REASONING_SUMMARIES:
            raise SbsError(
                f"--reasoning-summary must be one of {', '.join(REASONING_SUMMARIES)}, not {summary!r}"
            )
        if not facts.reasoning:
            raise SbsError(
                f"{teacher.spec} is not a reasoning model (the models table says so): there is no reasoning "
                "to summarize; drop --reasoning-summary"
            )
    budget = p.get("thinking_budget")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < -1:
            raise SbsError(
                f"--thinking-budget must be a number of tokens, 0 (off) or -1 (dynamic), not {budget!r}"
            )
        if "thinking_budget" not in facts.params:
            raise SbsError(
                f"{teacher.spec} takes no --thinking-budget (it is for thinking models such as gemini:gemini-2.5-flash)"
            )
        if effort is not None:
            raise SbsError(
                "give --reasoning-effort or --thinking-budget, not both: the model takes one of them"
            )
    for k in ("temperature", "top_p", "seed", "stop"):
        if p.get(k) is not None and k not in facts.params:
            what = "a reasoning model: it only runs at its default" if facts.reasoning else "a model that"
            raise SbsError(
                f"{teacher.spec} is {what} and accepts no --{k.replace('_', '-')}; drop --{k.replace('_', '-')}"
            )
    if p.get("max_tokens") is None:
        p["max_tokens"] = facts.default_max_tokens if facts.reasoning else DEFAULT_MAX_TOKENS
    if facts.max_output_tokens and int(p["max_tokens"]) > facts.max_output_tokens:
        raise SbsError(
            f"--max-tokens {p['max_tokens']} is more than {teacher.spec} can write ({facts.max_output_tokens})"
        )
    if budget is not None and budget >= int(p["max_tokens"]):  # thoughts count against the output budget
        raise SbsError(
            f"--thinking-budget {budget} leaves no room for the answer within --max-tokens {p['max_tokens']}"
        )
    if p.get("temperature") is None and "temperature" in facts.params and not facts.reasoning:
        p["temperature"] = 0.7 if samples > 1 else 0.0
    teacher.check_params(p)  # what the teacher's API cannot send (e.g. --seed to the Responses API)
    return p


def plan(
    ws: Workspace,
    ref: str,
    teacher: Teacher,
    *,
    split: str | None = None,
    limit: int | None = None,
    samples: int = 1,
    prompt_path: str | Path | None = None,
    json_mode: bool = False,
    params: dict[str, Any] | None = None,
) -> Plan:
    """What a generate command would ask (no calls, no writes, nothing rendered yet)."""
    ex = ws.get(ref)
    if ex.kind != "examples":
        raise SbsError(f"{ex.ref} is a {ex.kind} version; generate answers an examples version")
    if samples < 1:
        raise SbsError("--samples must be at least 1")
    if limit is not None and limit < 1:
        raise SbsError("--limit must be at least 1")
    task = task_of(ex)
    prompt = load_prompt(task, prompt_path)
    p = request_params(teacher, params, samples)
    sql, sp = ws.rows_query(ex, "split")
    if split:
        n = ws.one(f"SELECT count(*) FROM ({sql}) WHERE split = ?", sp + [split])
        if not n:
            splits = [r[0] for r in ws.all(f"SELECT DISTINCT split FROM ({sql}) ORDER BY 1", sp)]
            raise SbsError(f"{ex.ref} has no rows in split {split!r} (splits: {', '.join(splits)})")
    else:
        n = ws.one(f"SELECT count(*) FROM ({sql})", sp)
    rows = min(int(n), limit) if limit else int(n)
    config = {
        "source": ex.ref,
        "source_version_id": ex.version_id,
        "task": task.name,
        "teacher": teacher.lineage(),
        "prompt": prompt.to_config(),
        "params": p,
        "samples": samples,
        "json": json_mode,
        "split": split,
        "limit": limit,
    }
    return Plan(ex, task, prompt, teacher, p, samples, json_mode, split, limit, rows, config)
