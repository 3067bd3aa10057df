"""Collecting batch jobs: poll, download ended jobs, re-submit what can be retried, finish the run.

An ended job is downloaded into the cache / failures tables in one transaction, in which the job also becomes
'collected' (never downloaded again). Failed and expired requests go out again in a follow-up round (bounded
by max_rounds), and once every request is answered or permanently failed the generation version is built with
the same `build.build_version` as online mode. Collecting a job renders only that job's rows; which keys are
still unanswered is asked of the plan (SQL for plans with SQL keys), not of a list held in Python.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sbs_data import SbsError, log
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.answer import Answer, Failure, checked_usage, served_other, served_other_warning
from sbs_data.generate.batches import store
from sbs_data.generate.batches.store import OPEN_STATES, Job
from sbs_data.generate.batches.submission import (
    BatchSettings,
    Ctx,
    context,
    job_items,
    note_info,
    resume,
    sendable,
    submit_round,
)
from sbs_data.generate.build import build_version
from sbs_data.generate.parse import parse
from sbs_data.generate.plan import CHUNK, Plan
from sbs_data.teachers.base import TeacherError, redact
from sbs_data.teachers.batch_api import BatchAPI, BatchInfo
from sbs_data.workspace import Workspace


def _prompt_chars(request: str | None) -> int:
    """The prompt's characters, from the key ingredients a cache row stores (the messages' lengths)."""
    try:
        return sum(int(m.get("chars") or 0) for m in json.loads(request or "{}").get("messages") or [])
    except (ValueError, TypeError, AttributeError):
        return 0


def poll(ws: Workspace, ctx: Ctx) -> None:
    """Refresh every submitted job of the run from the provider (a transient error: poll again later)."""
    for job in store.jobs(ws, ctx.run.run_id):
        if job.state != "submitted":
            continue
        try:
            info = ctx.api.retrieve(job.batch_id)
        except TeacherError as e:
            if e.retryable:
                log.warning(f"warning: {job.job_id}: {e} (will poll again)")
                continue
            raise SbsError(f"{job.job_id}: {e}") from None
        note_info(ws, job.job_id, info)


def _collect_job(ws: Workspace, ctx: Ctx, job: Job) -> dict[str, int]:
    """Download one ended job into the cache and failures tables; the job becomes 'collected' in the
    same transaction, so a crash means downloading again, never storing twice."""
    t, run_id, round_ = ctx.teacher, ctx.run.run_id, job.round
    last_round = round_ + 1 >= ctx.run.max_rounds
    info = BatchInfo(
        job.batch_id,
        job.provider_status or "",
        True,
        output_file_id=job.output_file_id,
        error_file_id=job.error_file_id,
    )
    rows = store.job_requests(ws, job.job_id)
    where = {key: (e, k) for key, e, k in rows}
    # what an answer row stores besides the response: only this job's requests are rendered
    meta = {it.key: (it.subject, it.ingredients_json, it.choices) for it in job_items(ws, ctx.plan, rows)}
    keys = set(where)
    answers, failures, seen = [], [], set()
    other: list[Any] = [0, None]  # answers another model served, and the first such model
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
        resp, estimated = checked_usage(resp, _prompt_chars(m[1]))
        cost = t.facts.cost_of(resp, batch=True)
        a = Answer.from_response(
            r.key, resp, latency_ms=None, cost_usd=cost, attempts=round_ + 1, usage_estimated=estimated
        )
        answers.append(cache_mod.answer_row(a, t, subject=m[0], request=m[1], run_id=run_id))
        counts["succeeded"] += 1
        if served_other(t.model, a.served_model):
            other = [other[0] + 1, other[1] or a.served_model]
    status = (job.provider_status or "").lower()
    for key in sorted(keys - seen):
        if status == "failed":
            fail(
                key,
                "batch_failed",
                None,
                f"batch {job.provider_batch_id} failed: {job.error or 'no reason'}",
            )
        elif status == "expired":
            fail(key, "expired", None, "batch expired before this request ran")
        elif status in ("cancelled", "canceled", "cancelling") or ctx.run.status == "cancelled":
            fail(key, "canceled", None, "batch cancelled before this request ran")
        else:
            fail(key, "missing", None, "no result for this request in the batch output")
    with ws.transaction():
        cache_mod.write(ws, answers, failures)
        store.update_job(
            ws,
            job.job_id,
            state="collected",
            collected_at=store.now(),
            n_succeeded=counts["succeeded"],
            n_errored=counts["errored"],
            n_expired=counts["expired"],
            n_canceled=counts["canceled"],
        )
    if other[0]:
        log.warning(served_other_warning(t.spec, t.model, other[1], other[0]))
    return counts


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


def _pending_elsewhere(ws: Workspace, ctx: Ctx) -> bool:
    """Whether another run's open job may still answer one of this plan's unanswered keys."""
    run_id = ctx.run.run_id
    return any(store.open_elsewhere(ws, run_id, keys) for keys in _unanswered_keys(ws, ctx.plan))


def _advance(ws: Workspace, ctx: Ctx, s: BatchSettings) -> str:
    """After collecting: 'pending' (jobs still open), 'resubmitted' (a follow-up round), or 'done'."""
    run_id = ctx.run.run_id
    jobs = store.jobs(ws, run_id)
    if any(j.state in OPEN_STATES for j in jobs):
        return "pending"
    if _pending_elsewhere(ws, ctx):
        return "pending"  # another run's open job will answer these
    next_round = max((j.round for j in jobs), default=-1) + 1
    if ctx.run.status == "open" and next_round < ctx.run.max_rounds:
        # the plan's unanswered requests, less those whose last failure here is permanent
        if submit_round(ws, ctx, next_round, sendable(ws, run_id, ctx.plan.misses(ws)), s):
            return "resubmitted"
    _finish(ws, ctx)
    return "done"


def _finish(ws: Workspace, ctx: Ctx) -> None:
    """Build the version (its own transaction; a rerun after a crash finds it unchanged), then close the run."""
    run_id = ctx.run.run_id
    cancelled = ctx.run.status == "cancelled"
    v, by_status = build_version(
        ws,
        ctx.plan,
        ctx.run.out_name,
        run_id=run_id,
        stop_reason="batch run cancelled" if cancelled else None,
    )
    follow = {} if cancelled else ctx.plan.finish(ws, v, run_id)
    store.close_run(ws, run_id, "cancelled" if cancelled else "done", v.version_id)
    spent = cache_mod.spent_usd(ws, run_id)
    ws.finish_run(
        run_id,
        "stopped" if cancelled else "ok",
        {"requests": ctx.plan.total, "version": v.ref, "spent_usd": spent, **by_status, **follow},
    )
    ctx.run.version_id = v.version_id
    ctx.run.status = "cancelled" if cancelled else "done"


def collect(
    ws: Workspace,
    run: str | None = None,
    *,
    settings: BatchSettings | None = None,
    api: BatchAPI | None = None,
) -> list[dict[str, Any]]:
    """Poll, download ended jobs, re-submit what can be retried, build versions of finished runs.
    Idempotent: collected jobs and finished runs make no provider calls."""
    s = settings or BatchSettings()
    out = []
    for run_id in store.select_runs(ws, run):
        r = store.load_run(ws, run_id)
        if r.version_id is not None:
            out.append(store.run_summary(ws, run_id, "done"))
            continue
        ctx = context(ws, run_id, s, api)
        try:
            resume(ws, ctx, s)
            poll(ws, ctx)
            for job in store.jobs(ws, run_id):
                if job.state == "ended":
                    _collect_job(ws, ctx, job)
            state = _advance(ws, ctx, s)
        finally:
            if api is None:
                ctx.api.close()
        out.append(store.run_summary(ws, run_id, state))
    return out
