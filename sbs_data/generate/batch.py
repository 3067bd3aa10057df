"""Batch generation: submit a plan's cache misses as provider batch jobs, then collect them later.

Why batches: half the price, and the way large rationale sets are made. Why this much bookkeeping: a batch
lives for hours while the process that submitted it may exit any number of times. So:

* `submit` renders exactly the requests online mode would (same `plan`, same cache keys, same adapter
  `build_kwargs`), skips what is cached or already pending in an open job, splits the rest within the
  provider's limits, and for each job commits an intent row ('submitting', deterministic job id) BEFORE
  calling the provider, then records the provider's batch id. A crash between create and record is healed
  by `reconcile`: the provider's batch list is searched for the job (OpenAI: metadata sbs_job; Anthropic:
  an unclaimed batch of the same size created after the intent) before anything is sent again.
* `collect` polls, downloads ended jobs into the cache / failures tables (one transaction per job, then the
  job is 'collected': never downloaded again), re-submits failed and expired requests in a follow-up round
  (bounded by max_rounds), and once every request is answered or permanently failed builds the generation
  version with the same `build.build_version` as online mode.

Memory does not grow with the run: nothing keeps a per-run map of requests. A round is staged first (each
request's part and size in a DuckDB temp table, rendered once, in chunks), its jobs recorded in one
transaction, then each job's request lines are rendered again from its recorded (example, sample) rows, one
job at a time; collecting a job renders only that job's rows. Which keys are still unanswered is asked of
the plan (SQL for plans with SQL keys), not of a list held in Python.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sbs_data import SbsError
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.answer import Answer, Failure
from sbs_data.generate.build import GenerateResult, build_version
from sbs_data.generate.parse import parse
from sbs_data.generate.plan import CHUNK, Item, Plan, plan
from sbs_data.teachers.base import Teacher, TeacherError, redact
from sbs_data.teachers.batch_api import RETRYABLE_KINDS, BatchAPI, BatchInfo
from sbs_data.teachers.models import estimate_tokens
from sbs_data.teachers.registry import batch_api, parse_spec
from sbs_data.workspace import Workspace, config_hash

OPEN_STATES = ("submitting", "submitted", "ended")
_JOB_COLS = (
    "job_id run_id provider model round part state provider_status provider_batch_id input_file_id "
    "output_file_id error_file_id n_requests bytes n_succeeded n_errored n_expired n_canceled error "
    "created_at submitted_at ended_at collected_at"
).split()


@dataclass
class BatchSettings:
    """Batch knobs; tests shrink the limits and the poll interval."""

    max_requests: int | None = None  # per job; None: the provider's limit
    max_bytes: int | None = None  # per job; None: the provider's limit
    max_rounds: int = 3  # first submission + follow-ups for failed / expired requests
    poll_interval: float = 30.0  # `wait`
    call_timeout: float = 120.0  # one management call (upload, create, retrieve, download)
    submit_attempts: int = 3  # transient errors at create: reconcile, then try again
    retry_delay: float = 2.0
    progress: bool | None = None  # None: a display when stderr is a terminal


def _now() -> datetime:
    """UTC, naive: every timestamp this module writes (the batches view shows UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _epoch(dt: datetime) -> float:
    return dt.replace(tzinfo=timezone.utc).timestamp()


# -- bookkeeping ----------------------------------------------------------------------------------
def _jobs(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    rows = ws.all(
        f"SELECT {', '.join(_JOB_COLS)} FROM sbs_batches WHERE run_id = ? ORDER BY round, part", [run_id]
    )
    return [dict(zip(_JOB_COLS, r)) for r in rows]


def _update_job(ws: Workspace, job_id: str, **fields: Any) -> None:
    fields["updated_at"] = _now()
    sets = ", ".join(f"{k} = ?" for k in fields)
    with ws.transaction():
        ws.execute(f"UPDATE sbs_batches SET {sets} WHERE job_id = ?", [*fields.values(), job_id])


def _job_rows(ws: Workspace, job_id: str) -> list[tuple[str, str | None, int | None]]:
    """(cache_key, example_id, sample_idx) of one job's requests."""
    return ws.all(
        "SELECT cache_key, example_id, sample_idx FROM sbs_batch_requests WHERE job_id = ?", [job_id]
    )


def _run_row(ws: Workspace, run_id: str) -> dict[str, Any]:
    cols = "run_id provider model teacher source out_name args config_hash requests max_rounds status version_id".split()
    rows = ws.all(f"SELECT {', '.join(cols)} FROM sbs_batch_runs WHERE run_id = ?", [run_id])
    if not rows:
        raise SbsError(f"no batch run {run_id!r}")
    r = dict(zip(cols, rows[0]))
    r["args"] = json.loads(r["args"])
    return r


def select_runs(ws: Workspace, run: str | None = None, *, only_open: bool = True) -> list[str]:
    """RUN as a run id, a unique run-id prefix or an output dataset name; none: every unfinished run."""
    if run is None:
        where = "WHERE version_id IS NULL AND status IN ('open', 'cancelled')" if only_open else ""
        return [r[0] for r in ws.all(f"SELECT run_id FROM sbs_batch_runs {where} ORDER BY created_at")]
    exact = ws.all("SELECT run_id FROM sbs_batch_runs WHERE run_id = ?", [run])
    if exact:
        return [exact[0][0]]
    pre = ws.all("SELECT run_id FROM sbs_batch_runs WHERE starts_with(run_id, ?) ORDER BY created_at", [run])
    if len(pre) == 1:
        return [pre[0][0]]
    if len(pre) > 1:
        raise SbsError(f"batch run {run!r} is ambiguous: {', '.join(r[0] for r in pre)}")
    named = ws.all(
        "SELECT run_id FROM sbs_batch_runs WHERE out_name = ? ORDER BY created_at DESC LIMIT 1", [run]
    )
    if named:
        return [named[0][0]]
    raise SbsError(f"no batch run {run!r} (see `sbs-data batches status`)")


# -- the context of a run: re-planned requests, teacher, API, price ---------------------------------
@dataclass
class _Ctx:
    run: dict[str, Any]
    plan: Any
    teacher: Teacher
    api: BatchAPI


def _context(ws: Workspace, run_id: str, settings: BatchSettings, api: BatchAPI | None = None) -> _Ctx:
    r = _run_row(ws, run_id)
    a = r["args"]
    teacher = parse_spec(
        r["teacher"],
        base_urls=[a["base_url"]] if a.get("base_url") else (),
        ws=ws,
        prompt_cache=a.get("prompt_cache", True),
        prices_path=a.get("prices_path"),
    )
    if a.get("rationalize") is not None:  # `rationalize --mode batch`: the hinted plan over GEN's rows
        from sbs_data.generate.hints import hint_plan

        p: Plan = hint_plan(
            ws,
            r["source"],
            teacher,
            **a["rationalize"],
            prompt_path=a.get("prompt_path"),
            json_mode=a.get("json_mode", False),
            params=a.get("params"),
        )
    else:
        p = plan(
            ws,
            r["source"],
            teacher,
            split=a.get("split"),
            limit=a.get("limit"),
            samples=a.get("samples", 1),
            prompt_path=a.get("prompt_path"),
            json_mode=a.get("json_mode", False),
            params=a.get("params"),
        )
    if _plan_hash(p.config) != r["config_hash"]:
        raise SbsError(
            f"batch run {run_id}: the requests no longer render as submitted (prompt file "
            f"{a.get('prompt_path') or p.prompt.source} or the examples changed); restore it, or cancel the run"
        )
    return _Ctx(r, p, teacher, api or batch_api(teacher, settings.call_timeout))


def _job_items(ws: Workspace, p: Plan, rows: list[tuple[str, str | None, int | None]]) -> Iterator[Item]:
    """The requests of one job, rendered again from its recorded (key, example, sample) rows: only those
    examples are read, so the cost follows the job, not the run."""
    want = {(e, k): key for key, e, k in rows}
    if not want:
        return
    for chunk in p.item_chunks(ws, only=sorted({e for e, _ in want if e is not None})):
        for it in chunk:
            if want.get((it.example_id, it.sample_idx)) == it.key:
                del want[(it.example_id, it.sample_idx)]
                yield it


def _unanswered_keys(ws: Workspace, p: Plan) -> Iterator[list[str]]:
    """The plan's keys with no answer in the cache, a chunk at a time (SQL only, when the plan has SQL keys)."""
    if p.sql_keys:
        sql, params = p.keyed(ws)
        q = f"SELECT DISTINCT cache_key FROM ({cache_mod.missing(sql)})"
        for batch in ws.batches(q, params, CHUNK):
            yield batch.column(0).to_pylist()
        return
    chunk: list[str] = []
    for it in p.misses(ws):
        chunk.append(it.key)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_OPEN_KEYS = (
    "SELECT r.cache_key FROM sbs_batch_requests r JOIN sbs_batches b USING (job_id) "
    f"WHERE b.state IN {OPEN_STATES}"
)


def _sendable(ws: Workspace, run_id: str | None, items: Iterable[Item]) -> Iterator[Item]:
    """`items` less those an open job (of any run) may still answer and those whose latest failure in this
    run is permanent; asked of SQL a chunk at a time, so no set of keys is held."""
    retryable = sorted(RETRYABLE_KINDS)
    q = (
        f"WITH k AS (SELECT DISTINCT unnest(?::VARCHAR[]) AS cache_key) "
        f"SELECT cache_key FROM k WHERE cache_key IN ({_OPEN_KEYS}) "
        "UNION SELECT f.cache_key FROM sbs_failures f SEMI JOIN k USING (cache_key) WHERE f.run_id = ? "
        "GROUP BY f.cache_key HAVING NOT list_contains(?::VARCHAR[], arg_max(f.kind, f.attempts))"
    )
    buf: list[Item] = []

    def flush() -> Iterator[Item]:
        drop = {r[0] for r in ws.all(q, [[it.key for it in buf], run_id, retryable])}
        return (it for it in buf if it.key not in drop)

    for it in items:
        buf.append(it)
        if len(buf) >= CHUNK:
            yield from flush()
            buf = []
    if buf:
        yield from flush()


def _plan_hash(config: dict) -> str:
    c = json.loads(json.dumps(config, default=str))
    c.get("teacher", {}).pop("base_url", None)  # where the API lives is not what is asked
    return config_hash(c)


# -- submitting ---------------------------------------------------------------------------------
_STAGE = "_sbs_batch_stage"


def _stage(ws: Workspace, api: BatchAPI, items: Iterable[Item], s: BatchSettings) -> list[tuple[int, int]]:
    """Assign each request to a part within the provider's limits, keeping its row in a DuckDB temp table
    rather than in Python: (requests, bytes) per part."""
    max_n = min(s.max_requests or api.max_requests, api.max_requests)
    max_b = min(s.max_bytes or api.max_bytes, api.max_bytes)
    ws.execute(
        f"CREATE OR REPLACE TEMP TABLE {_STAGE} (seq BIGINT, part INTEGER, cache_key VARCHAR, "
        "example_id VARCHAR, sample_idx INTEGER)"
    )
    import polars as pl

    schema = {
        "seq": pl.Int64,
        "part": pl.Int32,
        "cache_key": pl.Utf8,
        "example_id": pl.Utf8,
        "sample_idx": pl.Int32,
    }
    buf: list[tuple] = []
    parts: list[tuple[int, int]] = []
    n = size = seq = 0
    for it in items:
        b = len(json.dumps(api.line(it.key, it.req), ensure_ascii=False).encode()) + 1
        if n and (n >= max_n or size + b > max_b):
            parts.append((n, size))
            n = size = 0
        n += 1
        size += b
        buf.append((seq, len(parts), it.key, it.example_id, it.sample_idx))
        seq += 1
        if len(buf) >= CHUNK:
            ws.insert_frame(_STAGE, pl.DataFrame(buf, schema=schema, orient="row"))
            buf = []
    if n:
        parts.append((n, size))
    if buf:
        ws.insert_frame(_STAGE, pl.DataFrame(buf, schema=schema, orient="row"))
    return parts


def _record_round(ws: Workspace, ctx: _Ctx, round_: int, parts: list[tuple[int, int]]) -> None:
    """Commit the staged round: every job's intent row and its requests, in one transaction, before any
    provider call."""
    run_id, now = ctx.run["run_id"], _now()
    prefix = f"sbs-{run_id}-r{round_}-p"
    try:
        with ws.transaction():
            for i, (n, size) in enumerate(parts):
                ws.execute(
                    "INSERT INTO sbs_batches (job_id, run_id, provider, model, round, part, state, n_requests, "
                    "bytes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'submitting', ?, ?, ?, ?)",
                    [
                        f"{prefix}{i}",
                        run_id,
                        ctx.teacher.provider,
                        ctx.teacher.model,
                        round_,
                        i,
                        n,
                        size,
                        now,
                        now,
                    ],
                )
            ws.execute(
                "INSERT INTO sbs_batch_requests (job_id, cache_key, example_id, sample_idx) "
                f"SELECT ? || CAST(part AS VARCHAR), cache_key, example_id, sample_idx FROM {_STAGE} ORDER BY seq",
                [prefix],
            )
    finally:
        ws.execute(f"DROP TABLE IF EXISTS {_STAGE}")


def _job_lines(ws: Workspace, ctx: _Ctx, job: dict) -> Callable[[], list[dict]]:
    """A job's request lines, rendered once when first needed (a reconciled job needs none)."""
    memo: list[list[dict]] = []

    def lines() -> list[dict]:
        if not memo:
            rows = _job_rows(ws, job["job_id"])
            out = [ctx.api.line(it.key, it.req) for it in _job_items(ws, ctx.plan, rows)]
            if len(out) != job["n_requests"]:
                raise SbsError(
                    f"batch job {job['job_id']}: {job['n_requests'] - len(out)} of its {job['n_requests']} "
                    f"requests no longer render as recorded; `sbs-data batches cancel {job['run_id']}` gives up"
                )
            memo.append(out)
        return memo[0]

    return lines


def _payload(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(x, ensure_ascii=False).encode() + b"\n" for x in lines)


def submit_round(ws: Workspace, ctx: _Ctx, round_: int, items: Iterable[Item], s: BatchSettings) -> list[str]:
    """Stage and record every job of a round (committed) first, then submit them one by one."""
    parts = _stage(ws, ctx.api, items, s)
    if not parts:
        ws.execute(f"DROP TABLE IF EXISTS {_STAGE}")
        return []
    _record_round(ws, ctx, round_, parts)
    return _send_round(ws, ctx, round_, s)


def _send_round(ws: Workspace, ctx: _Ctx, round_: int, s: BatchSettings) -> list[str]:
    jobs = [j for j in _jobs(ws, ctx.run["run_id"]) if j["round"] == round_]
    for job in jobs:
        if job["state"] == "submitting":
            _submit_job(ws, ctx, job, _job_lines(ws, ctx, job), s, reconcile=False)
    return [j["job_id"] for j in jobs]


def _claimed(ws: Workspace) -> set[str]:
    return {
        r[0] for r in ws.all("SELECT provider_batch_id FROM sbs_batches WHERE provider_batch_id IS NOT NULL")
    }


def _submit_job(
    ws: Workspace,
    ctx: _Ctx,
    job: dict,
    lines: Callable[[], list[dict]],
    s: BatchSettings,
    *,
    reconcile: bool,
) -> None:
    """Create one job at the provider, unless reconciling finds it was created already."""
    api, job_id = ctx.api, job["job_id"]
    since = _epoch(job["created_at"])
    file_id = job.get("input_file_id")
    last: TeacherError | None = None
    for attempt in range(max(1, s.submit_attempts)):
        try:
            if reconcile or attempt:
                info = api.find(job_id, since, job["n_requests"], _claimed(ws))
                if info is not None:
                    _record_created(ws, job_id, info)
                    return
            if api.provider == "openai":
                if not file_id:
                    file_id = api.upload(job_id, _payload(lines()))
                    _update_job(ws, job_id, input_file_id=file_id)
                info = api.create(job_id, job["run_id"], file_id)
            else:
                info = api.create(job_id, job["run_id"], lines())
        except TeacherError as e:
            last = e
            _update_job(ws, job_id, error=redact(str(e), ctx.api.secrets))
            if not e.retryable:
                break
            time.sleep(e.retry_after if e.retry_after is not None else s.retry_delay * (attempt + 1))
            continue
        _record_created(ws, job_id, info)
        return
    raise SbsError(
        f"batch job {job_id} was not submitted ({last}); it stays recorded: `sbs-data batches collect "
        f"{job['run_id']}` tries again (without submitting twice), `sbs-data batches cancel {job['run_id']}` gives up"
    )


def _record_created(ws: Workspace, job_id: str, info: BatchInfo) -> None:
    _update_job(
        ws,
        job_id,
        state="ended" if info.ended else "submitted",
        provider_status=info.status,
        provider_batch_id=info.batch_id,
        submitted_at=_now(),
        error=None,
        **({"input_file_id": info.input_file_id} if info.input_file_id else {}),
    )


def resume(ws: Workspace, ctx: _Ctx, s: BatchSettings) -> int:
    """Finish the submission of jobs left 'submitting' by an earlier process (reconciling first)."""
    n = 0
    for job in _jobs(ws, ctx.run["run_id"]):
        if job["state"] != "submitting":
            continue
        if ctx.run["status"] == "cancelled":
            info = ctx.api.find(job["job_id"], _epoch(job["created_at"]), job["n_requests"], _claimed(ws))
            if info is None:
                _update_job(ws, job["job_id"], state="failed", error="run cancelled before submission")
            else:
                _record_created(ws, job["job_id"], info)
                _cancel_job(ws, ctx, {**job, "provider_batch_id": info.batch_id, "state": "submitted"})
            continue
        _submit_job(ws, ctx, job, _job_lines(ws, ctx, job), s, reconcile=True)
        n += 1
    return n


def _submit_run(
    ws: Workspace,
    run_id: str,
    p: Plan,
    teacher: Teacher,
    api: BatchAPI,
    parts: list,
    args: dict[str, Any],
    out_name: str,
    chash: str,
    s: BatchSettings,
) -> list[str]:
    """Record a batch run (its re-plannable arguments) and send its first round; the job ids sent."""
    stored = {**args, "base_url": _storable_url(getattr(teacher, "base_url", None))}
    with ws.transaction():
        ws.execute(
            "INSERT INTO sbs_batch_runs (run_id, provider, model, teacher, source, out_name, args, "
            "config_hash, requests, max_rounds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                teacher.provider,
                teacher.model,
                teacher.spec,
                p.source.ref,
                out_name,
                json.dumps(stored, default=str),
                chash,
                p.total,
                max(1, s.max_rounds),
                _now(),
            ],
        )
    ctx = _Ctx(_run_row(ws, run_id), p, teacher, api)
    if not parts:
        return []
    _record_round(ws, ctx, 0, parts)
    return _send_round(ws, ctx, 0, s)


def submit(
    ws: Workspace,
    p: Plan,
    teacher: Teacher,
    *,
    out_name: str,
    summary: dict[str, Any],
    args: dict[str, Any],
    max_usd: float | None = None,
    settings: BatchSettings | None = None,
    command: str = "generate --mode batch",
    api: BatchAPI | None = None,
) -> GenerateResult:
    """`generate --mode batch`: record and submit the plan's misses; returns a GenerateResult (no version yet)."""
    s = settings or BatchSettings()
    api = api or batch_api(teacher, s.call_timeout)
    chash = _plan_hash(p.config)
    same = ws.all(
        "SELECT run_id FROM sbs_batch_runs WHERE status = 'open' AND version_id IS NULL AND config_hash = ? "
        "AND out_name = ? ORDER BY created_at DESC LIMIT 1",
        [chash, out_name],
    )
    if same:  # the same command again before collecting: resume that run, submit nothing new
        run_id = same[0][0]
        ctx = _context(ws, run_id, s, api)
        resume(ws, ctx, s)
        jobs = _jobs(ws, run_id)
        summary.update(mode="batch", run=run_id, jobs=len(jobs), submitted_now=0, note="already submitted")
        summary["next"] = f"sbs-data batches wait {run_id}"
        return GenerateResult(None, summary)
    tally = {"misses": 0, "prompt": 0, "output": 0}

    def counted(items: Iterable[Item]) -> Iterator[Item]:
        for it in items:  # every miss, also those pending elsewhere (as they were before streaming)
            tally["misses"] += 1
            tally["prompt"] += estimate_tokens(it.req.prompt_chars)
            tally["output"] += int(it.req.params.get("max_tokens") or 0)
            yield it

    try:
        parts = _stage(ws, api, _sendable(ws, None, counted(p.misses(ws))), s)
        if max_usd is not None:  # a batch cannot stop midway: check the worst case before sending anything
            worst = teacher.facts.cost(tally["prompt"], tally["output"], batch=True)
            if worst is not None and worst > max_usd:
                raise SbsError(
                    f"--max-usd {max_usd:g}: a batch cannot stop midway and may cost up to ${worst:.4f} "
                    "(at most max_tokens per answer); raise the limit, lower --limit, or use online mode"
                )
        teacher.preflight()
        sent = sum(n for n, _ in parts)
        with ws.run(command) as run:
            run_id = run.run_id
            job_ids = _submit_run(ws, run_id, p, teacher, api, parts, args, out_name, chash, s)
            run.status = "submitted"
            run.stats.update(requests=p.total, submitted=sent, jobs=len(job_ids))
    finally:
        ws.execute(f"DROP TABLE IF EXISTS {_STAGE}")
        api.close()
    summary.update(
        mode="batch",
        run=run_id,
        jobs=len(job_ids),
        submitted_now=sent,
        pending_elsewhere=tally["misses"] - sent,
        next=f"sbs-data batches wait {run_id}",
    )
    return GenerateResult(None, summary)


def _storable_url(url: str | None) -> str | None:
    """A base URL is kept only when it carries no credentials (never store secrets)."""
    if not url or "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        return None
    return url


# -- polling, collecting, finishing ---------------------------------------------------------------
def _poll(ws: Workspace, ctx: _Ctx, warn: Callable[[str], None]) -> None:
    for job in _jobs(ws, ctx.run["run_id"]):
        if job["state"] != "submitted":
            continue
        try:
            info = ctx.api.retrieve(job["provider_batch_id"])
        except TeacherError as e:
            if e.retryable:
                warn(f"warning: {job['job_id']}: {e} (will poll again)")
                continue
            raise SbsError(f"{job['job_id']}: {e}") from None
        _note_info(ws, job["job_id"], info)


def _note_info(ws: Workspace, job_id: str, info: BatchInfo) -> None:
    c = info.counts
    fields: dict[str, Any] = {
        "provider_status": info.status,
        "n_succeeded": c.get("succeeded"),
        "n_errored": c.get("errored"),
        "n_expired": c.get("expired"),
        "n_canceled": c.get("canceled"),
    }
    if info.output_file_id:
        fields["output_file_id"] = info.output_file_id
    if info.error_file_id:
        fields["error_file_id"] = info.error_file_id
    if info.error:
        fields["error"] = info.error
    if info.ended:
        fields.update(state="ended", ended_at=_now())
    _update_job(ws, job_id, **fields)


def _collect_job(ws: Workspace, ctx: _Ctx, job: dict) -> dict[str, int]:
    """Download one ended job into the cache and failures tables; the job becomes 'collected' in the
    same transaction, so a crash means downloading again, never storing twice."""
    t, run_id, round_ = ctx.teacher, ctx.run["run_id"], job["round"]
    last_round = round_ + 1 >= ctx.run["max_rounds"]
    info = BatchInfo(
        job["provider_batch_id"],
        job["provider_status"] or "",
        True,
        output_file_id=job["output_file_id"],
        error_file_id=job["error_file_id"],
    )
    rows = _job_rows(ws, job["job_id"])
    where = {key: (e, k) for key, e, k in rows}
    # what an answer row stores besides the response: only this job's requests are rendered
    meta = {it.key: (it.subject, it.ingredients_json, it.choices) for it in _job_items(ws, ctx.plan, rows)}
    keys = set(where)
    answers, failures, seen = [], [], set()
    counts = {"succeeded": 0, "errored": 0, "expired": 0, "canceled": 0}

    def fail(key: str, kind: str, status: int | None, msg: str | None) -> None:
        e, k = where.get(key, (None, None))
        f = Failure(
            key=key,
            kind=kind,
            error=redact(msg, ctx.api.secrets) or "",
            status=status,
            attempts=round_ + 1,
            example_id=e,
            sample_idx=k,
        )
        failures.append(cache_mod.failure_row(f, t, run_id))
        counts[kind if kind in ("expired", "canceled") else "errored"] += 1

    for r in ctx.api.results(info):
        if r.key not in keys or r.key in seen:
            continue
        seen.add(r.key)
        m = meta.get(r.key)
        if r.response is None or m is None:
            fail(r.key, r.kind or "error", r.status, r.error or "no result")
            continue
        resp = r.response
        if ctx.plan.json_mode and not last_round:
            _, why = parse(ctx.plan.task, resp.text, m[2], True)
            if why is not None:  # like online mode: invalid structured output is asked again (bounded)
                fail(r.key, "invalid_output", None, f"invalid structured output: {why}")
                continue
        cost = t.facts.cost_of(resp, batch=True)
        a = Answer.from_response(r.key, resp, latency_ms=None, cost_usd=cost, attempts=round_ + 1)
        answers.append(cache_mod.answer_row(a, t, subject=m[0], request=m[1], run_id=run_id))
        counts["succeeded"] += 1
    status = (job["provider_status"] or "").lower()
    for key in sorted(keys - seen):
        if status == "failed":
            fail(
                key,
                "batch_failed",
                None,
                f"batch {job['provider_batch_id']} failed: {job['error'] or 'no reason'}",
            )
        elif status == "expired":
            fail(key, "expired", None, "batch expired before this request ran")
        elif status in ("cancelled", "canceled", "cancelling") or ctx.run["status"] == "cancelled":
            fail(key, "canceled", None, "batch cancelled before this request ran")
        else:
            fail(key, "missing", None, "no result for this request in the batch output")
    with ws.transaction():
        cache_mod.write(ws, answers, failures)
        _update_job(
            ws,
            job["job_id"],
            state="collected",
            collected_at=_now(),
            n_succeeded=counts["succeeded"],
            n_errored=counts["errored"],
            n_expired=counts["expired"],
            n_canceled=counts["canceled"],
        )
    return counts


def _pending_elsewhere(ws: Workspace, ctx: _Ctx) -> bool:
    """Whether another run's open job may still answer one of this plan's unanswered keys."""
    q = (
        "SELECT count(*) FROM sbs_batch_requests r JOIN sbs_batches b USING (job_id) "
        f"WHERE b.state IN {OPEN_STATES} AND b.run_id <> ? AND r.cache_key IN (SELECT unnest(?::VARCHAR[]))"
    )
    return any(ws.one(q, [ctx.run["run_id"], keys]) for keys in _unanswered_keys(ws, ctx.plan))


def _advance(ws: Workspace, ctx: _Ctx, s: BatchSettings) -> str:
    """After collecting: 'pending' (jobs still open), 'resubmitted' (a follow-up round), or 'done'."""
    run_id = ctx.run["run_id"]
    jobs = _jobs(ws, run_id)
    if any(j["state"] in OPEN_STATES for j in jobs):
        return "pending"
    if _pending_elsewhere(ws, ctx):
        return "pending"  # another run's open job will answer these
    next_round = max((j["round"] for j in jobs), default=-1) + 1
    if ctx.run["status"] == "open" and next_round < ctx.run["max_rounds"]:
        # the plan's unanswered requests, less those whose last failure here is permanent
        if submit_round(ws, ctx, next_round, _sendable(ws, run_id, ctx.plan.misses(ws)), s):
            return "resubmitted"
    _finish(ws, ctx)
    return "done"


def _finish(ws: Workspace, ctx: _Ctx) -> None:
    """Build the version (its own transaction; a rerun after a crash finds it unchanged), then close the run."""
    run_id = ctx.run["run_id"]
    cancelled = ctx.run["status"] == "cancelled"
    v, by_status = build_version(
        ws,
        ctx.plan,
        ctx.run["out_name"],
        run_id=run_id,
        stop_reason="batch run cancelled" if cancelled else None,
    )
    follow = {} if cancelled else ctx.plan.finish(ws, v, run_id)
    with ws.transaction():
        ws.execute(
            "UPDATE sbs_batch_runs SET status = ?, version_id = ?, finished_at = ? WHERE run_id = ?",
            ["cancelled" if cancelled else "done", v.version_id, _now(), run_id],
        )
    spent = cache_mod.spent_usd(ws, run_id)
    ws.finish_run(
        run_id,
        "stopped" if cancelled else "ok",
        {"requests": ctx.plan.total, "version": v.ref, "spent_usd": spent, **by_status, **follow},
    )
    ctx.run.update(version_id=v.version_id, status="cancelled" if cancelled else "done")


def collect(
    ws: Workspace,
    run: str | None = None,
    *,
    settings: BatchSettings | None = None,
    api: BatchAPI | None = None,
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> list[dict[str, Any]]:
    """Poll, download ended jobs, re-submit what can be retried, build versions of finished runs.
    Idempotent: collected jobs and finished runs make no provider calls."""
    s = settings or BatchSettings()
    out = []
    for run_id in select_runs(ws, run):
        r = _run_row(ws, run_id)
        if r["version_id"] is not None:
            out.append(_run_summary(ws, run_id, "done"))
            continue
        ctx = _context(ws, run_id, s, api)
        try:
            resume(ws, ctx, s)
            _poll(ws, ctx, warn)
            for job in _jobs(ws, run_id):
                if job["state"] == "ended":
                    _collect_job(ws, ctx, job)
            state = _advance(ws, ctx, s)
        finally:
            if api is None:
                ctx.api.close()
        out.append(_run_summary(ws, run_id, state))
    return out


def _run_summary(ws: Workspace, run_id: str, state: str) -> dict[str, Any]:
    r = ws.all(
        "SELECT r.teacher, r.out_name, r.requests, r.status, v.dataset || '@' || v.num FROM sbs_batch_runs r "
        "LEFT JOIN sbs_versions v ON v.version_id = r.version_id WHERE r.run_id = ?",
        [run_id],
    )[0]
    j = ws.all(
        "SELECT count(*), count(*) FILTER (WHERE state IN ('submitting', 'submitted', 'ended')), "
        "coalesce(sum(n_requests), 0), coalesce(sum(n_succeeded), 0), coalesce(sum(n_errored), 0), "
        "coalesce(sum(n_expired), 0), coalesce(sum(n_canceled), 0), max(round) FROM sbs_batches WHERE run_id = ?",
        [run_id],
    )[0]
    spent = cache_mod.spent_usd(ws, run_id)
    return {
        "run": run_id,
        "teacher": r[0],
        "output": r[1],
        "requests": r[2],
        "run_status": r[3],
        "state": state,
        "jobs": j[0],
        "open_jobs": j[1],
        "rounds": (j[7] + 1) if j[7] is not None else 0,
        "submitted": j[2],
        "succeeded": j[3],
        "errored": j[4],
        "expired": j[5],
        "canceled": j[6],
        "spent_usd": round(spent, 6) if spent is not None else None,
        "version": r[4],
    }


def status(
    ws: Workspace,
    run: str | None = None,
    *,
    poll: bool = True,
    settings: BatchSettings | None = None,
    api: BatchAPI | None = None,
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> list[dict[str, Any]]:
    """One row per job of the selected runs, refreshed from the provider (submits and downloads nothing)."""
    s = settings or BatchSettings()
    runs = select_runs(ws, run, only_open=run is None)
    if run is None and not runs:
        runs = [r[0] for r in ws.all("SELECT run_id FROM sbs_batch_runs ORDER BY created_at DESC LIMIT 1")]
    for run_id in runs:
        if poll and ws.one(
            "SELECT count(*) FROM sbs_batches WHERE run_id = ? AND state = 'submitted'", [run_id]
        ):
            ctx = _context(ws, run_id, s, api)
            try:
                _poll(ws, ctx, warn)
            finally:
                if api is None:
                    ctx.api.close()
    if not runs:
        return []
    marks = ", ".join("?" for _ in runs)
    cols = (
        "run_id job_id provider round part state provider_status provider_batch_id n_requests n_succeeded "
        "n_errored n_expired n_canceled error submitted_at ended_at collected_at"
    ).split()
    rows = ws.all(
        f"SELECT {', '.join(cols)} FROM sbs_batches WHERE run_id IN ({marks}) ORDER BY created_at, round, part",
        runs,
    )
    return [dict(zip(cols, r)) for r in rows]


def _cancel_job(ws: Workspace, ctx: _Ctx, job: dict) -> None:
    info = ctx.api.cancel(job["provider_batch_id"])
    _note_info(ws, job["job_id"], info)


def cancel(
    ws: Workspace,
    run: str | None = None,
    *,
    settings: BatchSettings | None = None,
    api: BatchAPI | None = None,
) -> list[dict[str, Any]]:
    """Ask the provider to cancel every open job of a run; answers that arrived are kept (collect them)."""
    s = settings or BatchSettings()
    runs = select_runs(ws, run)
    if run is None and len(runs) > 1:
        raise SbsError(f"several open batch runs ({', '.join(runs)}): name the one to cancel")
    if not runs:
        raise SbsError("no open batch run to cancel")
    out = []
    for run_id in runs:
        with ws.transaction():
            ws.execute(
                "UPDATE sbs_batch_runs SET status = 'cancelled' WHERE run_id = ? AND version_id IS NULL",
                [run_id],
            )
        ctx = _context(ws, run_id, s, api)
        try:
            resume(ws, ctx, s)  # a job left 'submitting' is found and cancelled, or marked never-submitted
            for job in _jobs(ws, run_id):
                if job["state"] == "submitted":
                    _cancel_job(ws, ctx, job)
        finally:
            if api is None:
                ctx.api.close()
        out.append(_run_summary(ws, run_id, "cancelled"))
    return out


def wait(
    ws: Workspace,
    run: str | None = None,
    *,
    settings: BatchSettings | None = None,
    api: BatchAPI | None = None,
    collect_results: bool = True,
    timeout: float | None = None,
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Block until the selected runs are finished (collecting and re-submitting on the way), or with
    `collect_results=False` until every submitted job has ended. A rich display shows progress."""
    s = settings or BatchSettings()
    runs = select_runs(ws, run)
    if not runs:
        return []
    t0 = time.monotonic()
    show = s.progress if s.progress is not None else sys.stderr.isatty()
    display = _WaitDisplay(show)
    try:
        while True:
            if collect_results:
                summaries = [collect(ws, r, settings=s, api=api, warn=warn)[0] for r in runs]
                finished = all(x["state"] == "done" for x in summaries)
            else:
                status(ws, run, settings=s, api=api, warn=warn)
                summaries = [_run_summary(ws, r, "waiting") for r in runs]
                finished = not any(
                    ws.one(
                        "SELECT count(*) FROM sbs_batches WHERE run_id = ? AND state IN ('submitting', 'submitted')",
                        [r],
                    )
                    for r in runs
                )
            display.update(ws, runs)
            if finished:
                return summaries
            if timeout is not None and time.monotonic() - t0 >= timeout:
                raise SbsError(
                    f"batch runs still open after {timeout:g} s; wait again later (nothing is lost)"
                )
            sleep(s.poll_interval)
    finally:
        display.close()


class _WaitDisplay:
    """One rich bar per run: requests with a result out of requests submitted, plus job states."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            refresh_per_second=2,
        )
        self.p.start()

    def update(self, ws: Workspace, runs: list[str]) -> None:
        if not self.enabled:
            return
        for run_id in runs:
            rows = ws.all(
                "SELECT state, provider_status, n_requests, coalesce(n_succeeded, 0) + coalesce(n_errored, 0) + "
                "coalesce(n_expired, 0) + coalesce(n_canceled, 0) FROM sbs_batches WHERE run_id = ?",
                [run_id],
            )
            total = sum(r[2] for r in rows) or 1
            done = sum(min(r[2], r[3]) for r in rows)
            states: dict[str, int] = {}
            for r in rows:
                states[r[1] or r[0]] = states.get(r[1] or r[0], 0) + 1
            detail = ", ".join(f"{n} {k}" for k, n in sorted(states.items()))
            if run_id not in self.tasks:
                self.tasks[run_id] = self.p.add_task(run_id, total=total, completed=done, detail=detail)
            else:
                self.p.update(self.tasks[run_id], total=total, completed=done, detail=detail)

    def close(self) -> None:
        if self.enabled:
            self.p.stop()
