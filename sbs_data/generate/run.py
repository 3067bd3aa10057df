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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sbs_data import SbsError
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.build import GenerateResult, build_version
from sbs_data.generate.cache import CacheWriter
from sbs_data.generate.engine import Counters, Engine, Settings, execute
from sbs_data.generate.plan import Item, Plan, default_name, plan, sanitize_name
from sbs_data.generate.progress import Progress
from sbs_data.teachers.base import Teacher
from sbs_data.teachers.models import estimate_tokens
from sbs_data.teachers.registry import parse_spec, supports_batch
from sbs_data.workspace import Run, Workspace, check_name

#: DuckDB's memory cap while a plan runs: the key pass, the cache join and the version build spill past it
#: instead of holding a million rows (DuckDB's buffer pool otherwise keeps every block it touched). Row
#: order is not kept either (a version's rows are a set; keeping order buffers whole results).
DUCKDB_MEMORY_BYTES = 384 * 2**20

__all__ = ["GenerateResult", "Settings", "answer", "explain", "generate", "plan", "sanitize_name"]


def check_facts(teacher: Teacher, max_usd: float | None, warn: Callable[[str], None]) -> None:
    """Say once when the model is not in the table; --max-usd needs a price."""
    facts = teacher.facts
    msg = facts.warning()
    if msg:
        warn(f"warning: {msg}")
    if max_usd is not None:
        if not (max_usd >= 0 and max_usd < float("inf")):
            raise SbsError(f"--max-usd must be a finite amount of 0 or more, not {max_usd}")
        if facts.cost(0, 0) is None:
            raise SbsError(
                f"--max-usd needs a price for {teacher.spec}: add it to recipes/prices.yaml (or drop --max-usd)"
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
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> Engine:
    """Call the teacher for `misses` (cache misses, each key once; `expected` of them, of `total` requests of
    which `cached` were answered already) with limits, retries, durable cache writes and a progress bar;
    returns the engine (its counters and stop reason). Answers land in the cache, failures in sbs_failures
    under the run (`ws.run`'s). On an error the run's stats get the counters so far, and `ws.run` records
    it as failed or interrupted."""
    run_id = run.run_id
    settings.check()
    cache_mod.replay_journals(ws)
    writer = CacheWriter(ws, teacher, run_id, flush_interval=settings.flush_interval)
    progress = Progress(
        total,
        cached,
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
        run_id=run_id,
        on_progress=progress.update if progress.enabled else None,
        warn=warn,
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


def resolve_teacher(
    ws: Workspace,
    teacher: str | Teacher,
    settings: Settings,
    mode: str,
    *,
    base_urls: list[str] | tuple[str, ...] = (),
    prompt_cache: bool = True,
    prices_path: str | Path | None = None,
) -> tuple[Teacher, bool]:
    """(the teacher of a spec, whether --mode is batch), refusing batch mode for teachers without a batch API."""
    if mode not in ("online", "batch"):
        raise SbsError(f"--mode must be online or batch, not {mode!r}")
    if isinstance(teacher, str):
        teacher = parse_spec(
            teacher,
            base_urls=base_urls,
            ws=ws,
            timeout=settings.timeout,
            prompt_cache=prompt_cache,
            prices_path=prices_path,
        )
    if mode == "batch" and not supports_batch(teacher):
        from sbs_data.teachers.registry import batch_api

        batch_api(teacher)  # raises the clear error naming the providers that have one
    return teacher, mode == "batch"


def generate(
    ws: Workspace,
    ref: str,
    teacher: str | Teacher,
    *,
    split: str | None = None,
    limit: int | None = None,
    samples: int = 1,
    prompt_path: str | Path | None = None,
    json_mode: bool = False,
    params: dict[str, Any] | None = None,
    base_urls: list[str] | tuple[str, ...] = (),
    settings: Settings | None = None,
    dry_run: bool = False,
    offline: bool = False,
    max_usd: float | None = None,
    name: str | None = None,
    prices_path: str | Path | None = None,
    prompt_cache: bool = True,
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    command: str = "generate",
    mode: str = "online",
    batch_settings: Any = None,
) -> GenerateResult:
    """Answer an examples version with a teacher; returns the new generation version and a summary.

    `mode="batch"` submits the cache misses as provider batch jobs and returns without a version;
    `sbs_data.generate.batches.collect` builds it later (see that package)."""
    s = (settings or Settings()).check()
    clock = {"start": time.perf_counter()}
    teacher, batch = resolve_teacher(
        ws, teacher, s, mode, base_urls=base_urls, prompt_cache=prompt_cache, prices_path=prices_path
    )
    p = plan(
        ws,
        ref,
        teacher,
        split=split,
        limit=limit,
        samples=samples,
        prompt_path=prompt_path,
        json_mode=json_mode,
        params=params,
    )
    out_name = check_name(name or default_name(p.examples, teacher))
    if samples > 1 and not p.params.get("temperature") and not teacher.facts.reasoning:
        warn("warning: --samples > 1 at temperature 0 asks for the same answer several times")
    return run_plan(
        ws,
        p,
        teacher,
        out_name,
        settings=s,
        dry_run=dry_run,
        offline=offline,
        max_usd=max_usd,
        warn=warn,
        command=command,
        batch=batch,
        batch_settings=batch_settings,
        batch_args={
            "split": split,
            "limit": limit,
            "samples": samples,
            **plan_args(p, prompt_path, json_mode, prices_path, prompt_cache),
        },
        explain=f"sbs-data cache explain {ref} --teacher {teacher.spec}",
        started=clock["start"],
    )


def plan_args(
    p: Plan,
    prompt_path: str | Path | None,
    json_mode: bool,
    prices_path: str | Path | None,
    prompt_cache: bool,
) -> dict[str, Any]:
    """The `batch_args` every re-plannable command records (absolute paths: `batches` may run elsewhere)."""
    return {
        "prompt_path": str(Path(prompt_path).resolve()) if prompt_path else None,
        "json_mode": json_mode,
        "params": p.params,
        "prices_path": str(Path(prices_path).resolve()) if prices_path else None,
        "prompt_cache": prompt_cache,
    }


def run_plan(
    ws: Workspace,
    p: Plan,
    teacher: Teacher,
    out_name: str,
    *,
    settings: Settings,
    dry_run: bool = False,
    offline: bool = False,
    max_usd: float | None = None,
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    command: str = "generate",
    batch: bool = False,
    batch_settings: Any = None,
    batch_args: dict[str, Any] | None = None,
    explain: str = "sbs-data cache explain",
    started: float | None = None,
) -> GenerateResult:
    """Answer a plan (generate's, or another command's such as rationalize's): dry run, offline check,
    batch submission (`batch_args` must let `batch._context` re-plan it), or online calls, then the version
    (`build_version`) and the plan's own follow-up (`Plan.finish`)."""
    check_name(out_name)
    with ws.tuned(memory_limit=DUCKDB_MEMORY_BYTES, preserve_insertion_order=False):
        return _run_plan(
            ws,
            p,
            teacher,
            out_name,
            settings=settings,
            dry_run=dry_run,
            offline=offline,
            max_usd=max_usd,
            warn=warn,
            command=command,
            batch=batch,
            batch_settings=batch_settings,
            batch_args=batch_args,
            explain=explain,
            started=started,
        )


def _run_plan(
    ws: Workspace,
    p: Plan,
    teacher: Teacher,
    out_name: str,
    *,
    settings: Settings,
    dry_run: bool,
    offline: bool,
    max_usd: float | None,
    warn: Callable[[str], None],
    command: str,
    batch: bool,
    batch_settings: Any,
    batch_args: dict[str, Any] | None,
    explain: str,
    started: float | None,
) -> GenerateResult:
    s = settings
    clock = {"start": started if started is not None else time.perf_counter()}
    clock["planned"] = time.perf_counter()
    if not dry_run and not ws.read_only:
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
    if dry_run:
        return _dry_run(ws, p, teacher, summary, batch)
    check_facts(teacher, max_usd, warn)
    if n_keys and offline and teacher.network:
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
            max_usd=max_usd,
            settings=batch_settings,
            command=command,
        )
    with ws.run(command) as run:
        t0 = time.perf_counter()
        engine = answer(
            ws,
            teacher,
            p.misses(ws) if n_keys else (),
            s,
            task=p.task,
            json_mode=p.json_mode,
            max_usd=max_usd,
            run=run,
            total=p.total,
            cached=summary["cached"],
            expected=n_keys,
            warn=warn,
        )
        clock["called"] = time.perf_counter()
        if engine.fatal:
            run.stats.update(counters(engine.counters, time.perf_counter() - t0))
            raise SbsError(
                f"{teacher.spec}: stopped, no version built: {engine.stop_reason}:\n{engine.fatal}"
            )
        v, by_status = build_version(ws, p, out_name, run_id=run.run_id, stop_reason=engine.stop_reason)
        follow = {} if engine.stop_reason else p.finish(ws, v, run.run_id)
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
        run.stats.update(counters(engine.counters, elapsed))
        run.stats.update(by_status)
        run.stats.update(follow)
        run.stats["timings"] = timings
        run.status = "ok" if not engine.stop_reason else "stopped"
    summary.update(
        version=v.ref,
        rows=v.row_count,
        **by_status,
        called=engine.counters.called,
        retries=engine.counters.retries,
        rate_limited=engine.counters.rate_limited,
        spent_usd=round(engine.counters.spend, 6) if engine.counters.spend_known else None,
        seconds=round(elapsed, 2),
        rows_per_s=round(n_keys / elapsed, 1) if n_keys and elapsed > 0 else None,
        **follow,
    )
    if engine.counters.repaired:
        summary["repaired"] = engine.counters.repaired
        warn(
            f"warning: {engine.counters.repaired} completion(s) held text that cannot be stored (a lone surrogate or "
            "NUL) and were repaired; their rows say repaired = true"
        )
    if engine.stop_reason:
        summary["stopped"] = engine.stop_reason
        warn(
            f"warning: run stopped ({engine.stop_reason}); the rows it has are in {v.ref}, a partial version "
            f"that does not replace {out_name}"
        )
    return GenerateResult(v, summary, timings=timings)


def _dry_run(
    ws: Workspace, p: Plan, teacher: Teacher, summary: dict[str, Any], batch: bool
) -> GenerateResult:
    """What the run would ask and cost. Providers that cache prompt prefixes (OpenAI by itself; Anthropic
    when marked) read the shared few-shot block from their cache after the first request."""
    facts = teacher.facts
    n, chars = p.prompt_chars(ws)
    est_in = estimate_tokens(chars) if n else 0
    system, prefix, _ = p.prompt_parts()
    shared = estimate_tokens(len(system or "") + len(prefix)) if prefix else 0
    caches = teacher.provider in ("openai", "anthropic") and (
        teacher.prompt_cache or teacher.provider == "openai"
    )
    cached_in = shared * max(0, n - 1) if caches and shared >= facts.min_cache_tokens else 0
    write_in = shared if caches and teacher.provider == "anthropic" and cached_in else 0
    max_out = n * int(p.params.get("max_tokens") or 0)
    est = facts.cost(est_in, 0, cached_in, write_in, batch=batch)
    worst = facts.cost(est_in, max_out, cached_in, write_in, batch=batch)
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
        "spent_usd": c.spend if c.spend_known else None,
        "seconds": round(elapsed, 3),
    }


def explain(
    ws: Workspace,
    ref: str,
    teacher: str | Teacher,
    *,
    limit_rows: int = 20,
    only_misses: bool = True,
    **plan_kwargs: Any,
) -> list[dict[str, Any]]:
    """For each request a generate command would make: hit, or why it missed (the ingredients that differ)."""
    prices_path = plan_kwargs.pop("prices_path", None)
    if isinstance(teacher, str):
        teacher = parse_spec(
            teacher, base_urls=plan_kwargs.pop("base_urls", ()), ws=ws, prices_path=prices_path
        )
    else:
        plan_kwargs.pop("base_urls", None)
    p = plan(ws, ref, teacher, **plan_kwargs)
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
