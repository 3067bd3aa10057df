"""Version building: a plan plus the cache (and the run's failures) -> one generations version.

Used by online generate, batch collect and anything else that answers a plan. Rows stream from one query
(the plan's keys joined with the cache) in chunks; each chunk is parsed once and appended to a version that
stays pending (invisible) until the last chunk is in, so memory stays flat and a crash never shows a half
version.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from sbs_data import SbsError, log
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.parse import parse
from sbs_data.generate.plan import CHUNK, Plan
from sbs_data.workspace import Version, Workspace, check_name, config_hash

STATUSES = ("ok", "no_answer", "empty", "invalid_json", "content_filter", "failed")
#: The finish reason of an answer the provider's content filter stopped (Anthropic's `refusal` maps onto it).
CONTENT_FILTER = "content_filter"
#: Suffix of the version a stopped run builds, so it never shadows a complete version of the plain name.
PARTIAL_SUFFIX = "-partial"

_SCHEMA = {
    "example_id": pl.Utf8,
    "sample_idx": pl.Int32,
    "split": pl.Utf8,
    "teacher": pl.Utf8,
    "raw": pl.Utf8,
    "rationale": pl.Utf8,
    "pred_label": pl.Utf8,
    "parse_status": pl.Utf8,
    "finish_reason": pl.Utf8,
    "prompt_tokens": pl.Int32,
    "cached_tokens": pl.Int32,
    "cache_write_tokens": pl.Int32,
    "completion_tokens": pl.Int32,
    "reasoning_tokens": pl.Int32,
    "cost_usd": pl.Float64,
    "latency_ms": pl.Float64,
    "cache_key": pl.Utf8,
    "error": pl.Utf8,
    "repaired": pl.Boolean,
    "hinted": pl.Boolean,
    "usage_estimated": pl.Boolean,
    "teacher_reasoning": pl.Utf8,
    "service_tier": pl.Utf8,
    "served_model": pl.Utf8,
}
_CACHE_VALUES = (
    "finish_reason",
    "prompt_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "repaired",
    "usage_estimated",
    "teacher_reasoning",
    "service_tier",
    "served_model",
)
_ROW_KEY = "example_id, sample_idx, split, cache_key"


@dataclass
class GenerateResult:
    """What a generate command made (no version for --dry-run and batch submission) and its summary."""

    version: Version | None
    summary: dict[str, Any]
    dry_run: bool = False
    preview: tuple[str | None, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def partial_name(name: str) -> str:
    return name if name.endswith(PARTIAL_SUFFIX) else f"{name}{PARTIAL_SUFFIX}"


#: The plan's rows, keyed, while a version is built (a plain table: the reading cursor is another connection).
_STAGE = "_sbs_build_rows"
#: Cache keys are uniform hex: joining one leading digit at a time holds a sixteenth of the answers at once.
_KEY_PARTS = "0123456789abcdef"


def _rows_sql(run_id: str | None, part: str) -> tuple[str, list]:
    """The staged rows whose key starts with `part`, with their answer (if any) and this run's failure."""
    cols = ", ".join(f"c.{c}" for c in _CACHE_VALUES)
    return (
        "SELECT p.example_id, p.sample_idx, p.split, p.choices, p.cache_key, c.cache_key IS NOT NULL AS hit, "
        f"c.text, {cols}, f.kind, f.error "
        f"FROM (SELECT * FROM {_STAGE} WHERE starts_with(cache_key, ?)) p "
        f"LEFT JOIN {cache_mod.answers_with_prefix()} c ON c.cache_key = p.cache_key "
        "LEFT JOIN (SELECT cache_key, arg_max(kind, created_at) AS kind, arg_max(error, created_at) AS error "
        "FROM sbs_failures WHERE run_id = ? GROUP BY cache_key) f ON f.cache_key = p.cache_key",
        [part, part, run_id],
    )


def _comparable(ws: Workspace, p: Plan, out_name: str) -> Version | None:
    """The latest version of `out_name` when this plan could rebuild it row for row: same config, same row
    count, and complete (not partial)."""
    try:
        last = ws.get(out_name)
    except SbsError:
        return None
    if (
        last.kind != "generations"
        or last.config_hash != config_hash(p.config)
        or last.row_count != p.total
        or last.note
    ):
        return None
    return last


def _unchanged(ws: Workspace, p: Plan, out_name: str) -> Version | None:
    """The latest version of `out_name` when this plan would rebuild it exactly: every request answered
    from the cache, and the same (example, sample, split, key) rows, none of them failed. One SQL pass, no
    parsing: answers in the cache never change, so neither would the parsed rows."""
    last = _comparable(ws, p, out_name)
    if last is None or not p.sql_keys:
        return None
    keyed, kp = p.keyed(ws)
    new = ws.all(
        f"SELECT bit_xor(hash({_ROW_KEY})), count(*) FILTER (WHERE {cache_mod.missing_condition()}) "
        f"FROM ({keyed})",
        kp,
    )[0]
    old = ws.all(
        f"SELECT bit_xor(hash({_ROW_KEY})), count(*) FILTER (WHERE parse_status = 'failed') "
        "FROM sbs_generations WHERE version_id = ?",
        [last.base_id],
    )[0]
    return last if new[1] == 0 and old[1] == 0 and new[0] == old[0] else None


def build_version(
    ws: Workspace,
    p: Plan,
    out_name: str,
    *,
    run_id: str | None,
    stop_reason: str | None = None,
) -> tuple[Version, dict[str, int]]:
    """One row per (example, sample): answered rows parsed, failed and unrequested rows marked 'failed'.

    A rerun that would change nothing returns the version it already made. A stopped run (`stop_reason`)
    builds `NAME-partial`, noted as partial, so the plain name keeps pointing at the last complete version.
    """
    if stop_reason:
        out_name = partial_name(out_name)
    check_name(out_name)
    if not stop_reason:
        same = _unchanged(ws, p, out_name)
        if same is not None:
            counts = dict(
                ws.all(
                    "SELECT parse_status, count(*) FROM sbs_generations WHERE version_id = ? GROUP BY 1",
                    [same.base_id],
                )
            )
            return same, {k: int(counts.get(k, 0)) for k in STATUSES}
    counts = dict.fromkeys(STATUSES, 0)
    note = f"partial: {stop_reason}" if stop_reason else None
    spec = p.teacher.spec
    digest_old = None if stop_reason else _last_digest(ws, out_name, p)
    try:
        # Streamed: pending (invisible) until its last chunk is in, each chunk committed on its own, since
        # DuckDB holds a transaction's new rows in memory; a failure or a kill leaves nothing visible.
        with ws.new_version(
            out_name,
            "generations",
            p.config,
            parents=[p.source],
            task=p.task.name,
            note=note,
            run_id=run_id,
            streamed=True,
        ) as v:
            for cols in _chunks(ws, p, run_id):
                ws.append("sbs_generations", v, _parse_chunk(p, cols, spec, stop_reason, counts))
            _cost_once_per_answer(ws, v.version_id)
            if digest_old is not None and digest_old[1] == _digest(ws, "sbs_generations", v.version_id):
                raise _Same(digest_old[0])
    except _Same as same:  # a rerun that changes nothing: the new version was rolled back
        return same.version, counts
    return ws.by_id(v.version_id), counts


def _cost_once_per_answer(ws: Workspace, version_id: int) -> None:
    """Rows that share a cache key share one answer, paid for once: only the first of them (by example and
    sample) carries its cost, so the version's `cost_usd` adds up to the bill (the report and card sum it)."""
    ws.execute(
        "UPDATE sbs_generations SET cost_usd = 0 WHERE version_id = ? AND cost_usd IS NOT NULL AND "
        "(example_id, sample_idx) IN (SELECT example_id, sample_idx FROM (SELECT example_id, sample_idx, "
        "row_number() OVER (PARTITION BY cache_key ORDER BY example_id, sample_idx) AS n FROM sbs_generations "
        "WHERE version_id = ? AND cost_usd IS NOT NULL) WHERE n > 1)",
        [version_id, version_id],
    )


class _Same(Exception):
    """The new rows equal the last version's: roll the new one back and return the old."""

    def __init__(self, version: Version):
        self.version = version


def _chunks(ws: Workspace, p: Plan, run_id: str | None) -> Iterator[dict[str, list]]:
    if p.sql_keys:
        # A million answers do not fit DuckDB's memory cap in one hash join: the keyed plan (small columns)
        # is staged once, then joined with the cache a key prefix at a time.
        keyed, kp = p.keyed(ws)
        ws.execute(
            f"CREATE OR REPLACE TABLE {_STAGE} AS SELECT example_id, sample_idx, split, choices, cache_key "
            f"FROM ({keyed})",
            kp,
        )
        try:
            for part in _KEY_PARTS:
                sql, params = _rows_sql(run_id, part)
                for batch in ws.batches(sql, params, CHUNK):
                    yield batch.to_pydict()
        finally:
            ws.execute(f"DROP TABLE IF EXISTS {_STAGE}")
        return
    # Python-keyed plans (replay, rationalize): render the chunk, then read its answers and failures by key.
    for items in p.item_chunks(ws):
        keys = list({it.key for it in items})
        cached = cache_mod.answer_rows(ws, keys, list(_CACHE_VALUES))
        fails = {
            r[0]: r[1:]
            for r in ws.all(
                "SELECT cache_key, arg_max(kind, created_at), arg_max(error, created_at) FROM sbs_failures "
                "WHERE run_id = ? AND cache_key IN (SELECT unnest(?::VARCHAR[])) GROUP BY cache_key",
                [run_id, keys],
            )
        }
        out: dict[str, list] = {
            c: []
            for c in ("example_id", "sample_idx", "split", "choices", "cache_key", "text", *_CACHE_VALUES)
        }
        out["kind"], out["error"], out["hit"] = [], [], []
        none = (None,) * (1 + len(_CACHE_VALUES))
        for it in items:
            vals = cached.get(it.key, none)
            out["hit"].append(it.key in cached)
            f = fails.get(it.key, (None, None))
            for c, x in zip(
                ("example_id", "sample_idx", "split", "choices", "cache_key"),
                (it.example_id, it.sample_idx, it.split, it.choices, it.key),
            ):
                out[c].append(x)
            for c, x in zip(("text", *_CACHE_VALUES), vals):
                out[c].append(x)
            out["kind"].append(f[0])
            out["error"].append(f[1])
        yield out


def _parse_chunk(
    p: Plan, cols: dict[str, list], spec: str, stop_reason: str | None, counts: dict[str, int]
) -> pl.DataFrame:
    out: dict[str, list] = {c: [] for c in _SCHEMA}
    n = len(cols["example_id"])
    for i in range(n):
        text = cols["text"][i]
        error: str | None
        if cols["hit"][i]:
            if cols["finish_reason"][i] == CONTENT_FILTER:  # cut short by the provider: never a usable answer
                rationale = label = None
                status, error = CONTENT_FILTER, "the provider's content filter stopped the completion"
            else:
                parsed, why = parse(p.task, text, cols["choices"][i], p.json_mode)
                rationale, label, status = parsed.rationale, parsed.label, parsed.status
                error = why
            for c in _CACHE_VALUES:
                out[c].append(cols[c][i])
        else:
            kind, err = cols["kind"][i], cols["error"][i]
            rationale = label = None
            status = "failed"
            error = f"{kind}: {err}" if kind else f"not requested: {stop_reason or 'run stopped'}"
            for c in _CACHE_VALUES:
                out[c].append(None)
        counts[status] = counts.get(status, 0) + 1
        out["example_id"].append(cols["example_id"][i])
        out["sample_idx"].append(cols["sample_idx"][i])
        out["split"].append(cols["split"][i])
        out["teacher"].append(spec)
        out["raw"].append(text)
        out["rationale"].append(rationale)
        out["pred_label"].append(label)
        out["parse_status"].append(status)
        out["cache_key"].append(cols["cache_key"][i])
        out["error"].append(error)
        out["hinted"].append(p.hinted)
    return pl.DataFrame(out, schema=_SCHEMA)


_DIGEST_COLS = "example_id, sample_idx, split, cache_key, raw, parse_status, error"


def _digest(ws: Workspace, table: str, version_id: int | None) -> Any:
    return ws.one(f"SELECT bit_xor(hash({_DIGEST_COLS})) FROM {table} WHERE version_id = ?", [version_id])


def _last_digest(ws: Workspace, out_name: str, p: Plan) -> tuple[Version, Any] | None:
    """(latest version of `out_name`, its row digest) when it could equal what this plan builds."""
    last = _comparable(ws, p, out_name)
    return None if last is None else (last, _digest(ws, "sbs_generations", last.base_id))


#: Distinct (label, gold, choices) comparisons remembered while counting (a cap, not a need).
_MEMO_MAX = 65_536


def label_summary(ws: Workspace, v: Version, task: Any) -> tuple[dict[str, dict[str, int]], str | None]:
    """Per split of `v`: rows, answers (`ok`), answers whose label lies in the task's label space
    (`in_label_space`), rows with a gold label (`gold`) and answers that agree with it (`agree_gold`, the
    task's comparison: SVAMP compares values); and one label found outside the label space (or None).

    One streamed pass over distinct (split, label, gold, choices) combinations, so memory stays bounded."""
    gsql, gp = ws.rows_query(v, "example_id, split, parse_status, pred_label")
    q = (
        "SELECT g.split, g.parse_status = 'ok' AS ok, g.pred_label, e.label, e.choices, count(*) "
        f"FROM ({gsql}) g LEFT JOIN sbs_examples e ON e.version_id = ? AND e.example_id = g.example_id "
        "GROUP BY ALL"
    )
    out: dict[str, dict[str, int]] = {}
    outside: str | None = None
    memo: dict[tuple, tuple[bool, bool]] = {}
    for batch in ws.batches(q, [*gp, v.examples_id], CHUNK):
        for split, ok, pred, gold, choices, n in zip(*batch.to_pydict().values()):
            s = out.setdefault(
                split, dict.fromkeys(("rows", "ok", "in_label_space", "gold", "agree_gold"), 0)
            )
            s["rows"] += n
            s["gold"] += n if gold is not None else 0
            if not ok:
                continue
            s["ok"] += n
            key = (pred, gold, tuple(choices or ()))
            if key not in memo:
                if len(memo) >= _MEMO_MAX:
                    memo.clear()
                ch = list(choices) if choices is not None else None
                memo[key] = (
                    task.in_label_space(pred, ch),
                    gold is not None and task.same_label(pred, gold, ch),
                )
            inside, agree = memo[key]
            s["in_label_space"] += n if inside else 0
            s["agree_gold"] += n if agree else 0
            if not inside and outside is None and pred is not None:
                outside = pred[:80]
    return dict(sorted(out.items())), outside


def usefulness(ws: Workspace, v: Any, task: Any, generic_prompt: bool = False) -> dict[str, Any]:
    """The summary's truth about usefulness: answers in the label space and agreeing with gold, in all and
    per split (`by_split`); warns when most answers lie outside the label space."""
    by_split, outside = label_summary(ws, v, task)
    ok = sum(s["ok"] for s in by_split.values())
    inside = sum(s["in_label_space"] for s in by_split.values())
    gold = sum(s["gold"] for s in by_split.values())
    out: dict[str, Any] = {
        "in_label_space": inside,
        "agree_gold": sum(s["agree_gold"] for s in by_split.values()) if gold else None,
        "by_split": by_split,
    }
    if ok and inside * 2 < ok:
        log.warning(
            f"warning: {ok - inside} of {ok} answers are outside the label space of task {task.name!r} "
            f"(e.g. {outside!r}), the usual sign of a wrong prompt: look at the first request with --dry-run"
            + (
                ", and give the teacher a few-shot prompt (`sbs-data prompt init`, then --prompt FILE)"
                if generic_prompt
                else ", and at the answers the prompt's exemplars write"
            )
        )
    return out
