"""Submitting batch jobs: a run's context, staging a round, recording its jobs, creating them at the provider.

A round is staged first (each request's part and size in a DuckDB temp table, rendered once, in chunks), its
jobs recorded in one transaction (`store.record_round`), then each job's request lines are rendered again from
its recorded (example, sample) rows, one job at a time, and the job is created. A crash between create and
record is healed by reconciling: the provider's batch list is searched for the job (OpenAI: metadata sbs_job;
Anthropic: an unclaimed batch of the same size created after the intent; Gemini: the job id as display name)
before anything is sent again. A job goes up as a file first where its API says so (`BatchAPI.uploads`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from sbs_data import SbsError
from sbs_data.generate.batches import store
from sbs_data.generate.batches.store import BatchRun, Job, JobRequest
from sbs_data.generate.build import GenerateResult
from sbs_data.generate.plan import CHUNK, Item, Plan, plan
from sbs_data.teachers.base import Teacher, TeacherError, redact
from sbs_data.teachers.batch_api import RETRYABLE_KINDS, BatchAPI, BatchInfo
from sbs_data.teachers.models import estimate_tokens
from sbs_data.teachers.registry import batch_api, parse_spec
from sbs_data.workspace import Workspace, config_hash


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


def _epoch(dt: datetime) -> float:
    return dt.replace(tzinfo=timezone.utc).timestamp()


# -- the context of a run: re-planned requests, teacher, API, price ---------------------------------
@dataclass
class Ctx:
    run: BatchRun
    plan: Any
    teacher: Teacher
    api: BatchAPI


#: Providers whose batch runs were all sent through Chat Completions before runs recorded their API.
_CHAT_BEFORE_API = ("openai", "openai-compat")


def context(ws: Workspace, run_id: str, settings: BatchSettings, api: BatchAPI | None = None) -> Ctx:
    r = store.load_run(ws, run_id)
    a = r.args
    teacher = parse_spec(
        r.teacher,
        base_urls=[a["base_url"]] if a.get("base_url") else (),
        ws=ws,
        prompt_cache=a.get("prompt_cache", True),
        prices_path=a.get("prices_path"),
        # the API the run was submitted with (runs recorded before `api` existed were all chat)
        api=a["api"] if "api" in a else ("chat" if r.provider in _CHAT_BEFORE_API else None),
        cache_ttl=a.get("cache_ttl"),
    )
    if a.get("rationalize") is not None:  # `rationalize --mode batch`: the hinted plan over GEN's rows
        from sbs_data.generate.hints import hint_plan

        p: Plan = hint_plan(
            ws,
            r.source,
            teacher,
            **a["rationalize"],
            prompt_path=a.get("prompt_path"),
            json_mode=a.get("json_mode", False),
            params=a.get("params"),
        )
    else:
        p = plan(
            ws,
            r.source,
            teacher,
            split=a.get("split"),
            limit=a.get("limit"),
            samples=a.get("samples", 1),
            prompt_path=a.get("prompt_path"),
            json_mode=a.get("json_mode", False),
            params=a.get("params"),
        )
    if _plan_hash(p.config) != r.config_hash:
        raise SbsError(
            f"batch run {run_id}: the requests no longer render as submitted (prompt file "
            f"{a.get('prompt_path') or p.prompt.source} or the examples changed); restore it, or cancel the run"
        )
    return Ctx(r, p, teacher, api or batch_api(teacher, settings.call_timeout))


def job_items(ws: Workspace, p: Plan, rows: list[JobRequest]) -> Iterator[Item]:
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


def sendable(ws: Workspace, run_id: str | None, items: Iterable[Item]) -> Iterator[Item]:
    """`items` less those an open job (of any run) may still answer and those whose latest failure in this
    run is permanent; asked of SQL a chunk at a time, so no set of keys is held."""
    retryable = sorted(RETRYABLE_KINDS)
    buf: list[Item] = []

    def flush() -> Iterator[Item]:
        drop = store.unsendable(ws, [it.key for it in buf], run_id, retryable)
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
def _stage(ws: Workspace, api: BatchAPI, items: Iterable[Item], s: BatchSettings) -> list[tuple[int, int]]:
    """Assign each request to a part within the provider's limits, keeping its row in a DuckDB temp table
    rather than in Python: (requests, bytes) per part."""
    max_n = min(s.max_requests or api.max_requests, api.max_requests)
    max_b = min(s.max_bytes or api.max_bytes, api.max_bytes)
    store.stage_open(ws)
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
            store.stage_add(ws, buf)
            buf = []
    if n:
        parts.append((n, size))
    if buf:
        store.stage_add(ws, buf)
    return parts


def _record_round(ws: Workspace, ctx: Ctx, round_: int, parts: list[tuple[int, int]]) -> None:
    store.record_round(ws, ctx.run.run_id, ctx.teacher.provider, ctx.teacher.model, round_, parts)


def _job_lines(ws: Workspace, ctx: Ctx, job: Job) -> Callable[[], list[dict]]:
    """A job's request lines, rendered once when first needed (a reconciled job needs none)."""
    memo: list[list[dict]] = []

    def lines() -> list[dict]:
        if not memo:
            rows = store.job_requests(ws, job.job_id)
            out = [ctx.api.line(it.key, it.req) for it in job_items(ws, ctx.plan, rows)]
            if len(out) != job.n_requests:
                raise SbsError(
                    f"batch job {job.job_id}: {job.n_requests - len(out)} of its {job.n_requests} "
                    f"requests no longer render as recorded; `sbs-data batches cancel {job.run_id}` gives up"
                )
            memo.append(out)
        return memo[0]

    return lines


def _payload(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(x, ensure_ascii=False).encode() + b"\n" for x in lines)


def submit_round(ws: Workspace, ctx: Ctx, round_: int, items: Iterable[Item], s: BatchSettings) -> list[str]:
    """Stage and record every job of a round (committed) first, then submit them one by one."""
    parts = _stage(ws, ctx.api, items, s)
    if not parts:
        store.stage_drop(ws)
        return []
    _record_round(ws, ctx, round_, parts)
    return _send_round(ws, ctx, round_, s)


def _send_round(ws: Workspace, ctx: Ctx, round_: int, s: BatchSettings) -> list[str]:
    jobs = [j for j in store.jobs(ws, ctx.run.run_id) if j.round == round_]
    for job in jobs:
        if job.state == "submitting":
            _submit_job(ws, ctx, job, _job_lines(ws, ctx, job), s, reconcile=False)
    return [j.job_id for j in jobs]


def _submit_job(
    ws: Workspace,
    ctx: Ctx,
    job: Job,
    lines: Callable[[], list[dict]],
    s: BatchSettings,
    *,
    reconcile: bool,
) -> None:
    """Create one job at the provider, unless reconciling finds it was created already."""
    api, job_id = ctx.api, job.job_id
    since = _epoch(job.created_at)
    file_id = job.input_file_id
    last: TeacherError | None = None
    for attempt in range(max(1, s.submit_attempts)):
        try:
            if reconcile or attempt:
                info = api.find(job_id, since, job.n_requests, store.claimed_batch_ids(ws))
                if info is not None:
                    _record_created(ws, job_id, info)
                    return
            if not file_id and api.uploads(job.bytes or 0):
                file_id = api.upload(job_id, _payload(lines()))
                store.update_job(ws, job_id, input_file_id=file_id)
            info = api.create(job_id, job.run_id, file_id if file_id else lines())
        except TeacherError as e:
            last = e
            store.update_job(ws, job_id, error=redact(str(e), ctx.api.secrets))
            if not e.retryable:
                break
            time.sleep(e.retry_after if e.retry_after is not None else s.retry_delay * (attempt + 1))
            continue
        _record_created(ws, job_id, info)
        return
    raise SbsError(
        f"batch job {job_id} was not submitted ({last}); it stays recorded: `sbs-data batches collect "
        f"{job.run_id}` tries again (without submitting twice), `sbs-data batches cancel {job.run_id}` gives up"
    )


def _record_created(ws: Workspace, job_id: str, info: BatchInfo) -> None:
    store.update_job(
        ws,
        job_id,
        state="ended" if info.ended else "submitted",
        provider_status=info.status,
        provider_batch_id=info.batch_id,
        submitted_at=store.now(),
        error=None,
        **({"input_file_id": info.input_file_id} if info.input_file_id else {}),
    )


def note_info(ws: Workspace, job_id: str, info: BatchInfo) -> None:
    """Record what the provider last said about a job (its status, counts, files, error; ended or not)."""
    c = info.counts
    changes: dict[str, Any] = {
        "provider_status": info.status,
        "n_succeeded": c.get("succeeded"),
        "n_errored": c.get("errored"),
        "n_expired": c.get("expired"),
        "n_canceled": c.get("canceled"),
    }
    if info.output_file_id:
        changes["output_file_id"] = info.output_file_id
    if info.error_file_id:
        changes["error_file_id"] = info.error_file_id
    if info.error:
        changes["error"] = info.error
    if info.ended:
        changes.update(state="ended", ended_at=store.now())
    store.update_job(ws, job_id, **changes)


def cancel_job(ws: Workspace, ctx: Ctx, job: Job) -> None:
    info = ctx.api.cancel(job.batch_id)
    note_info(ws, job.job_id, info)


def resume(ws: Workspace, ctx: Ctx, s: BatchSettings) -> int:
    """Finish the submission of jobs left 'submitting' by an earlier process (reconciling first)."""
    n = 0
    for job in store.jobs(ws, ctx.run.run_id):
        if job.state != "submitting":
            continue
        if ctx.run.status == "cancelled":
            info = ctx.api.find(
                job.job_id, _epoch(job.created_at), job.n_requests, store.claimed_batch_ids(ws)
            )
            if info is None:
                store.update_job(ws, job.job_id, state="failed", error="run cancelled before submission")
            else:
                _record_created(ws, job.job_id, info)
                cancel_job(ws, ctx, replace(job, provider_batch_id=info.batch_id, state="submitted"))
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
    store.insert_run(
        ws,
        run_id=run_id,
        provider=teacher.provider,
        model=teacher.model,
        teacher=teacher.spec,
        source=p.source.ref,
        out_name=out_name,
        args=stored,
        chash=chash,
        requests=p.total,
        max_rounds=max(1, s.max_rounds),
    )
    ctx = Ctx(store.load_run(ws, run_id), p, teacher, api)
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
    same = store.open_run_like(ws, chash, out_name)
    if same is not None:  # the same command again before collecting: resume that run, submit nothing new
        run_id = same
        ctx = context(ws, run_id, s, api)
        resume(ws, ctx, s)
        jobs = store.jobs(ws, run_id)
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
        parts = _stage(ws, api, sendable(ws, None, counted(p.misses(ws))), s)
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
        store.stage_drop(ws)
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
