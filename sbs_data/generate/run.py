"""`generate`: an examples version + a teacher -> a generations version, never paying twice.

Thin orchestration over the rooms that do the work: `plan` (which requests, their keys, which are cached),
`engine` (limits, retries, budget, the attempt loop), `cache` (durable writes, journal), `build` (the
version), `progress` (the bar) and `batch` (provider batch APIs). `answer` is the engine entry point other
commands share (the LLM judge).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sbs_data import SbsError, log
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.answer import repaired_warning
from sbs_data.generate.build import GenerateResult, build_version, usefulness
from sbs_data.generate.cache import CacheWriter
from sbs_data.generate.engine import Counters, Engine, Settings, execute, worst_cost
from sbs_data.generate.options import MODES, PlanSpec, RequestSpec, RunOptions
from sbs_data.generate.plan import Item, Plan, default_name, plan, sanitize_name
from sbs_data.generate.progress import Progress
from sbs_data.generate.prompts import generic_warning, is_generic
from sbs_data.teachers.base import Request, Teacher
from sbs_data.teachers.models import estimate_tokens
from sbs_data.teachers.registry import check_cache_ttl, parse_spec, supports_batch
from sbs_data.workspace import Run, Workspace, check_name

#: DuckDB's memory cap while a plan runs: the key pass, the cache join and the version build spill past it
#: instead of holding a million rows (DuckDB's buffer pool otherwise keeps every block it touched). Row
#: order is not kept either (a version's rows are a set; keeping order buffers whole results).
DUCKDB_MEMORY_BYTES = 384 * 2**20

__all__ = [
    "GenerateResult",
    "PlanSpec",
    "RequestSpec",
    "RunOptions",
    "Settings",
    "answer",
    "explain",
    "generate",
    "plan",
    "sanitize_name",
]


def check_facts(teacher: Teacher, max_usd: float | None) -> None:
    """Say once when the model is not in the table; --max-usd needs a price."""
    facts = teacher.facts
    msg = facts.warning()
    if msg:
        log.warning(f"warning: {msg}")
    if max_usd is not None:
        if not (max_usd >= 0 and max_usd < float("inf")):
            raise SbsError(f"--max-usd must be a finite amount of 0 or more, not {max_usd}")
        if facts.cost(0, 0) is None:
            raise SbsError(
                f"--max-usd needs a price for {teacher.spec}{facts.did_you_mean()}: add it to "
                "recipes/prices.yaml (or drop --max-usd)"
            )


def check_budget(teacher: Teacher, max_usd: float, req: Request) -> None:
    """Refuse, before any call, a --max-usd that cannot pay for one request at its worst case (which the
    engine must reserve before sending it): such a run could only stop at once."""
    worst = worst_cost(teacher.facts, req, teacher.service_tier)
    if worst is not None and worst > max_usd:
        budget = req.params.get("max_tokens") or teacher.facts.default_max_tokens
        raise SbsError(
            f"--max-usd {max_usd:g} is below what one request may cost at worst (${worst:.4f}: its prompt "
            f"and up to {budget} completion tokens); raise --max-usd, or lower --max-tokens"
        )


def answer(
    ws: Workspace,
    teacher: Teacher,
    misses: Iterable[Item],
    settings: Settings,
    *,
    task: Any,
    json_mode: bool = False,
    max_usd: float | None = None,
    run: Run,
    total: int,
    cached: int,
    expected: int = 0,
    label: str = "generate",
) -> Engine:
    """Call the teacher for `misses` (cache misses, each key once; `expected` of them, of `total` requests of
    which `cached` were answered already) with limits, retries, durable cache writes and a progress bar;
    returns the engine (its counters and stop reason). Answers land in the cache, failures in sbs_failures
    under the run (`ws.run`'s). On an error the run's stats get the counters so far, and `ws.run` records
    it as failed or interrupted."""
    settings.check()
    cache_mod.replay_journals(ws)
    writer = CacheWriter(ws, teacher, run.run_id, flush_interval=settings.flush_interval)
    progress = Progress(  # counts calls: requests that share a key are one call
        expected if expected else total - cached,
        0,
        settings.progress if settings.progress is not None else sys.stderr.isatty(),
        label,
    )
    engine = Engine(
        teacher,
        settings,
        writer,
        task=task,
        json_mode=json_mode,
        max_usd=max_usd,
        run_id=run.run_id,
        on_progress=progress.update if progress.enabled else None,
    )
    engine.counters.total = total
    engine.counters.cached = cached
    t0 = time.perf_counter()
    try:
        execute(engine, misses, expected)
    except BaseException:
        progress.close()
        run.stats.update(counters(engine.counters, time.perf_counter() - t0))
        raise
    progress.close()
    return engine


def resolve_teacher(ws: Workspace, spec: RequestSpec, run: RunOptions) -> tuple[Teacher, bool]:
    """(the teacher of a spec, whether --mode is batch), refusing batch mode for teachers without a batch API."""
    if run.mode not in MODES:
        raise SbsError(f"--mode must be online or batch, not {run.mode!r}")
    if run.mode == "batch" and run.service_tier is not None:
        raise SbsError(
            "--service-tier applies to online calls; --mode batch has its own price (the Batch API's)"
        )
    teacher = spec.teacher
    if isinstance(teacher, str):
        teacher = parse_spec(
            teacher,
            base_urls=spec.base_urls,
            ws=ws,
            timeout=run.settings.timeout,
            prompt_cache=run.prompt_cache,
            prices_path=spec.prices_path,
            api=spec.api,
            service_tier=run.service_tier,
            cache_ttl=run.cache_ttl,
        )
    else:
        if spec.api is not None:
            teacher.use_api(spec.api)
        if run.service_tier is not None:
            teacher.use_service_tier(run.service_tier)
        if run.cache_ttl is not None:
            check_cache_ttl(run.cache_ttl)
            teacher.cache_ttl = run.cache_ttl
    if run.cache_ttl is not None and teacher.prompt_cache_ttl() is None:
        log.warning(
            f"warning: --cache-ttl has no effect on {teacher.spec}: it sets the lifetime of the prompt-cache "
            "marks anthropic: teachers send (with prompt caching on)"
        )
    if run.mode == "batch" and not supports_batch(teacher):
        from sbs_data.teachers.registry import batch_api

        batch_api(teacher)  # raises the clear error naming the providers that have one
    return teacher, run.mode == "batch"


def spec_plan(ws: Workspace, ref: str, teacher: Teacher, spec: PlanSpec) -> Plan:
    """The plan of `spec`'s requests about the examples version `ref`."""
    return plan(
        ws,
        ref,
        teacher,
        split=spec.split,
        limit=spec.limit,
        samples=spec.samples,
        **spec.prompt_args(),
    )


def generate(
    ws: Workspace, ref: str, spec: PlanSpec, run: RunOptions | None = None, *, name: str | None = None
) -> GenerateResult:
    """Answer an examples version with a teacher; returns the new generation version and a summary.

    `run.mode="batch"` submits the cache misses as provider batch jobs and returns without a version;
    `sbs_data.generate.batch.collect` builds it later (see that module)."""
    run = run or RunOptions()
    run.settings.check()
    started = time.perf_counter()
    teacher, _ = resolve_teacher(ws, spec, run)
    p = spec_plan(ws, ref, teacher, spec)
    if is_generic(p.prompt):
        log.warning(generic_warning(p.task, p.examples.dataset, not p.examples.config.get("no_labels")))
    out_name = check_name(name or default_name(p.examples, teacher))
    ws.check_target(out_name, "generations", p.task.name, source=p.source)
    if spec.samples > 1 and not p.params.get("temperature") and not teacher.facts.reasoning:
        log.warning("warning: --samples > 1 at temperature 0 asks for the same answer several times")
    return run_plan(
        ws,
        p,
        teacher,
        out_name,
        run,
        batch_args={
            "split": spec.split,
            "limit": spec.limit,
            "samples": spec.samples,
            **plan_args(p, spec, run),
        },
        explain=f"sbs-data cache explain {ref} --teacher {teacher.spec}",
        started=started,
    )


def plan_args(p: Plan, spec: RequestSpec, run: RunOptions) -> dict[str, Any]:
    """The `batch_args` every re-plannable command records (absolute paths: `batches` may run elsewhere;
    the API as resolved, so `batches collect` reads the answers with the API they were sent to)."""
    api = spec.api or getattr(p.teacher, "api", None)
    return {
        "prompt_path": str(Path(spec.prompt_path).resolve()) if spec.prompt_path else None,
        "json_mode": spec.json_mode,
        "params": p.params,
        "prices_path": str(Path(spec.prices_path).resolve()) if spec.prices_path else None,
        "prompt_cache": run.prompt_cache,
        "api": api,
        "cache_ttl": run.cache_ttl,
    }


def run_plan(
    ws: Workspace,
    p: Plan,
    teacher: Teacher,
    out_name: str,
    run: RunOptions,
    *,
    batch_args: dict[str, Any] | None = None,
    explain: str = "sbs-data cache explain",
    started: float | None = None,
) -> GenerateResult:
    """Answer a plan (generate's, or another command's such as rationalize's): dry run, offline check,
    batch submission (`batch_args` must let the batch collector re-plan it), or online calls, then the
    version (`build_version`) and the plan's own follow-up (`Plan.finish`)."""
    check_name(out_name)
    s = run.settings.check()
    batch = run.mode == "batch"
    clock = {"start": started if started is not None else time.perf_counter()}
    with ws.tuned(memory_limit=DUCKDB_MEMORY_BYTES, preserve_insertion_order=False):
        clock["planned"] = time.perf_counter()
        if not run.dry_run and not ws.read_only:
            cache_mod.replay_journals(ws)  # answers a killed run paid for are cache hits now
        n_missing, n_keys = p.count_misses(ws)
        clock["looked_up"] = time.perf_counter()
        summary: dict[str, Any] = {
            "source": p.source.ref,
            "teacher": teacher.spec,
            "output": out_name,
            "requests": p.total,
            "cached": p.total - n_missing,
            "to_call": n_keys,
        }
        if n_missing > n_keys:
            summary["shared_prompt"] = n_missing - n_keys
        log.info(plan_line(p, n_missing, n_keys))
        if run.dry_run:
            return _dry_run(ws, p, teacher, summary, batch)
        check_facts(teacher, run.max_usd)
        if n_keys and run.max_usd is not None and not batch:  # a batch checks its whole worst case
            check_budget(teacher, run.max_usd, next(iter(p.misses(ws))).req)
        if n_keys and run.offline and teacher.network:
            first = next(iter(p.misses(ws)))
            raise SbsError(
                f"--offline: {n_missing} of {p.total} requests are not in the cache (first: example "
                f"{first.example_id!r} sample {first.sample_idx}); run without --offline, or see why with "
                f"`{explain}`"
            )
        if n_keys:
            teacher.preflight()
        if batch and n_keys:
            from sbs_data.generate import batches as batch_mod

            return batch_mod.submit(
                ws,
                p,
                teacher,
                out_name=out_name,
                summary=summary,
                args=batch_args or {},
                max_usd=run.max_usd,
                settings=run.batch,
                command=run.command,
            )
        with ws.run(run.command) as record:
            t0 = time.perf_counter()
            engine = answer(
                ws,
                teacher,
                p.misses(ws) if n_keys else (),
                s,
                task=p.task,
                json_mode=p.json_mode,
                max_usd=run.max_usd,
                run=record,
                total=p.total,
                cached=summary["cached"],
                expected=n_keys,
            )
            clock["called"] = time.perf_counter()
            c = engine.counters
            if engine.fatal:
                record.stats.update(counters(c, time.perf_counter() - t0))
                raise SbsError(
                    f"{teacher.spec}: stopped, no version built: {engine.stop_reason}:\n{engine.fatal}"
                )
            v, by_status = build_version(
                ws, p, out_name, run_id=record.run_id, stop_reason=engine.stop_reason
            )
            follow = {} if engine.stop_reason else p.finish(ws, v, record.run_id)
            clock["built"] = time.perf_counter()
            elapsed = time.perf_counter() - t0
            timings = {
                "plan_s": clock["planned"] - clock["start"],
                "lookup_s": clock["looked_up"] - clock["planned"],
                "calls_s": clock["called"] - t0,
                "build_s": clock["built"] - clock["called"],
                "total_s": clock["built"] - clock["start"],
            }
            timings = {k: round(x, 3) for k, x in timings.items()}
            record.stats.update(counters(c, elapsed))
            record.stats.update(by_status)
            record.stats.update(follow)
            record.stats["timings"] = timings
            record.status = "ok" if not engine.stop_reason else "stopped"
    summary.update(
        version=v.ref,
        rows=v.row_count,
        **by_status,
        **usefulness(ws, v, p.task, is_generic(p.prompt)),
        called=c.called,
        retries=c.retries,
        rate_limited=c.rate_limited,
        spent_usd=round(c.spend, 6) if c.spend_known else None,
        seconds=round(elapsed, 2),
        rows_per_s=round(n_keys / elapsed, 1) if n_keys and elapsed > 0 else None,
        **follow,
    )
    if c.usage_estimated:
        summary["usage_estimated"] = c.usage_estimated
    if c.served_other:
        summary["served_other_model"] = c.served_other
    if c.repaired:
        summary["repaired"] = c.repaired
        if c.text_cut:
            summary["text_cut"] = c.text_cut
        log.warning(repaired_warning(c.text_cut, c.repaired - c.text_cut))
    if engine.stop_reason:
        summary["stopped"] = engine.stop_reason
        log.warning(
            f"warning: run stopped ({engine.stop_reason}); the rows it has are in {v.ref}, a partial version "
            f"that does not replace {out_name}"
        )
    return GenerateResult(v, summary, timings=timings)


def plan_line(p: Plan, n_missing: int, n_keys: int) -> str:
    """ "300 rows, 232 calls: 68 rows repeat another row's prompt and share its call" (and what is cached)."""
    what = "rows" if p.samples == 1 else "requests"
    cached = p.total - n_missing
    line = f"{p.total:,} {what}, {n_keys:,} call{'s' if n_keys != 1 else ''}"
    if cached:
        line += f" ({cached:,} answered from the cache)"
    if n_missing > n_keys:
        line += f": {n_missing - n_keys:,} {what} repeat another {what[:-1]}'s prompt and share its call"
    return line


def _dry_run(
    ws: Workspace, p: Plan, teacher: Teacher, summary: dict[str, Any], batch: bool
) -> GenerateResult:
    """What the run would ask and cost. Providers that cache prompt prefixes (OpenAI and Gemini by themselves;
    Anthropic when marked) read the shared few-shot block from their cache after the first request."""
    facts = teacher.facts
    if facts.warning():
        log.warning(f"warning: {facts.warning()}")
    n, chars = p.prompt_chars(ws)
    est_in = estimate_tokens(chars) if n else 0
    system, prefix, _ = p.prompt_parts()
    shared = estimate_tokens(len(system or "") + len(prefix)) if prefix else 0
    caches = teacher.provider in ("openai", "gemini") or (
        teacher.provider == "anthropic" and teacher.prompt_cache
    )
    cached_in = shared * max(0, n - 1) if caches and shared >= facts.min_cache_tokens else 0
    write_in = shared if caches and teacher.provider == "anthropic" and cached_in else 0
    write_1h = write_in if teacher.prompt_cache_ttl(batch) == "1h" else 0
    max_out = n * int(p.params.get("max_tokens") or 0)
    tier = teacher.service_tier  # priced as asked for (`auto`: the standard price)
    est = facts.cost(est_in, 0, cached_in, write_in, cache_write_1h_tokens=write_1h, batch=batch, tier=tier)
    worst = facts.cost(
        est_in, max_out, cached_in, write_in, cache_write_1h_tokens=write_1h, batch=batch, tier=tier
    )
    summary.update(
        est_prompt_tokens=est_in,
        est_cached_prompt_tokens=cached_in,
        max_completion_tokens=max_out,
        est_cost_usd=None if est is None else round(est, 4),
        max_cost_usd=None if worst is None else round(worst, 4),
        prompt=p.prompt.source,
        prompt_sha=p.prompt.sha,
    )
    first = p.first_item(ws)
    preview = (first.req.system, first.req.messages[-1]["content"]) if first else None
    asyncio.run(teacher.aclose())
    if batch:
        summary["mode"] = "batch"
    if tier is not None:
        summary["service_tier"] = tier
    return GenerateResult(None, summary, dry_run=True, preview=preview)


def counters(c: Counters, elapsed: float) -> dict[str, Any]:
    return {
        "requests": c.total,
        "cached": c.cached,
        "called": c.called,
        "attempts": c.attempts,
        "retries": c.retries,
        "rate_limited": c.rate_limited,
        "failed": c.failed,
        "skipped": c.skipped,
        "repaired": c.repaired,
        "text_cut": c.text_cut,
        "usage_estimated": c.usage_estimated,
        "served_other_model": c.served_other,
        "spent_usd": c.spend if c.spend_known else None,
        "seconds": round(elapsed, 3),
    }


def explain(
    ws: Workspace, ref: str, spec: PlanSpec, *, limit_rows: int = 20, only_misses: bool = True
) -> list[dict[str, Any]]:
    """For each request a generate command would make: hit, or why it missed (the ingredients that differ)."""
    teacher = spec.teacher
    if isinstance(teacher, str):
        teacher = parse_spec(
            teacher, base_urls=spec.base_urls, ws=ws, prices_path=spec.prices_path, api=spec.api
        )
    elif spec.api is not None:
        teacher.use_api(spec.api)
    p = spec_plan(ws, ref, teacher, spec)
    out: list[dict[str, Any]] = []
    for items in p.item_chunks(ws):
        hits = cache_mod.present(ws, [it.key for it in items])
        for it in items:
            if only_misses and it.key in hits:
                continue
            e = cache_mod.explain_one(ws, it.key, json.loads(it.ingredients_json), it.subject)
            out.append({"example_id": it.example_id, "sample_idx": it.sample_idx, "key": it.key[:16], **e})
            if len(out) >= limit_rows:
                return out
    return out
