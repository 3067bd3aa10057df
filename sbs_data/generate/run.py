"""The generation engine: examples version + teacher -> generation version, never paying twice.

One place owns everything around a teacher call: the concurrency cap and rpm/tpm limits, retries (tenacity,
exponential jittered backoff, bounded attempts, Retry-After honoured), the request cache (lookup before,
durable batched writes after), cost and the --max-usd stop, progress, and finally the generation version,
built in one transaction with one row per (example, sample), failures included.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from sbs_data import SbsError
from sbs_data.generate import cache as cache_mod
from sbs_data.generate.cost import Price, estimate_tokens, price_for
from sbs_data.generate.parse import parse
from sbs_data.generate.prompts import Prompt, load_prompt
from sbs_data.tasks import Task, get_task
from sbs_data.teachers.base import AuthError, Request, Teacher, TeacherError, Transient, parse_spec, redact
from sbs_data.workspace import Version, Workspace

DEFAULT_MAX_TOKENS = 256
_timeout = getattr(asyncio, "timeout", None)


@dataclass
class Settings:
    """Engine knobs; tests shrink the backoffs and flush interval."""

    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = 6
    backoff_base: float = 0.5  # first retry 0.5-1.0 s, then doubling: the official SDKs' own schedule
    backoff_max: float = 60.0
    timeout: float = 60.0  # per request (the SDK's timeout; the engine adds a backstop)
    json_retries: int = 2  # extra calls when structured output is invalid
    flush_interval: float = 0.25  # cache commits at most this far apart (plus one write)
    auth_abort_after: int = 10  # this many auth errors with no success stops the run
    progress: bool | None = None  # None: a bar when stderr is a terminal


@dataclass
class Item:
    """One (example, sample) to answer."""

    example_id: str
    split: str
    sample_idx: int
    choices: list[str] | None
    req: Request
    ing: str  # canonical JSON of the key's ingredients (stored with the answer, used by explain)
    key: str
    subject: str


@dataclass
class Plan:
    examples: Version
    task: Task
    prompt: Prompt
    teacher: Teacher
    items: list[Item]
    params: dict[str, Any]
    samples: int
    json_mode: bool
    split: str | None
    limit: int | None
    config: dict[str, Any] = field(default_factory=dict)


class InvalidOutput(Transient):
    """Structured output that fails the schema: asked again (a bounded number of times) without backoff."""

    kind = "invalid_output"


class _FirstFailure:
    """What tenacity's wait strategies read from a retry state, for the failure of the first attempt."""

    attempt_number = 1

    def __init__(self, e: BaseException):
        self.outcome = _Outcome(e)


class _Outcome:
    def __init__(self, e: BaseException):
        self._e = e

    def exception(self) -> BaseException:
        return self._e


class _Shifted:
    """A tenacity retry state seen one attempt later (the first attempt ran outside tenacity)."""

    def __init__(self, rs: Any):
        self.outcome = rs.outcome
        self.attempt_number = rs.attempt_number + 1


class _Stopped(Exception):
    """The run stopped (--max-usd reached, or auth failing): do not start this request."""


# -- planning -------------------------------------------------------------------------------------
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


def _task_of(v: Version) -> Task:
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
    """Render every request and its cache key (no calls, no writes)."""
    ex = ws.get(ref)
    if ex.kind != "examples":
        raise SbsError(f"{ex.ref} is a {ex.kind} version; generate answers an examples version")
    if samples < 1:
        raise SbsError("--samples must be at least 1")
    if limit is not None and limit < 1:
        raise SbsError("--limit must be at least 1")
    task = _task_of(ex)
    prompt = load_prompt(task, prompt_path)
    p = dict(params or {})
    if p.get("max_tokens") is None:
        p["max_tokens"] = DEFAULT_MAX_TOKENS
    if p.get("temperature") is None:
        p["temperature"] = 0.7 if samples > 1 else 0.0
    p = {k: v for k, v in p.items() if v is not None}
    sql, sp = ws.rows_query(ex, "example_id, split, input_text, choices, row_idx")
    where, wp = "", []
    if split:
        where, wp = " WHERE split = ?", [split]
    rows = ws.all(
        f"SELECT example_id, split, input_text, choices FROM ({sql}){where} ORDER BY split, row_idx, example_id",
        sp + wp,
    )
    if split and not rows:
        splits = [r[0] for r in ws.all(f"SELECT DISTINCT split FROM ({sql}) ORDER BY 1", sp)]
        raise SbsError(f"{ex.ref} has no rows in split {split!r} (splits: {', '.join(splits)})")
    if limit:
        rows = rows[:limit]
    schema = api_schema() if json_mode else None
    items: list[Item] = []
    for example_id, sp_name, input_text, choices in rows:
        system, messages = prompt.render(input_text, json_mode)
        subject = cache_mod.subject_of(input_text)
        for k in range(samples):
            req = Request(messages, system, p, schema, k, example_id)
            ing = cache_mod.canonical(cache_mod.ingredients(teacher, req))
            items.append(Item(example_id, sp_name, k, choices, req, ing, cache_mod.key_of(ing), subject))
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
    return Plan(ex, task, prompt, teacher, items, p, samples, json_mode, split, limit, config)


# -- rate limits ----------------------------------------------------------------------------------
class Bucket:
    """A token bucket refilled at `per_minute / 60` per second, holding at most one second's worth
    (smooth pacing, no minute-sized bursts). Amounts larger than the capacity wait for a full bucket."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.t = time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    async def take(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)
        async with self.lock:
            while True:
                self._refill()
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Charge (or refund) the difference between estimated and actual usage."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


# -- the engine -----------------------------------------------------------------------------------
@dataclass
class Counters:
    total: int = 0
    cached: int = 0
    called: int = 0  # requests whose final outcome came from the network this run
    attempts: int = 0
    retries: int = 0
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    invalid_retries: int = 0
    spend: float = 0.0
    spend_known: bool = True


class Engine:
    """Runs the cache misses of a plan through a teacher with limits, retries and durable cache writes."""

    def __init__(
        self,
        teacher: Teacher,
        settings: Settings,
        writer: cache_mod.CacheWriter,
        *,
        task: Task,
        json_mode: bool,
        price: Price | None,
        max_usd: float | None = None,
        run_id: str | None = None,
        on_progress: Callable[[Counters], None] | None = None,
    ):
        self.teacher = teacher
        self.s = settings
        self.writer = writer
        self.task = task
        self.json_mode = json_mode
        self.price = price
        self.max_usd = max_usd
        self.run_id = run_id
        self.on_progress = on_progress
        self.c = Counters()
        self.answers: dict[str, tuple] = {}
        self.failures: dict[str, tuple[str, str]] = {}
        self.stop_reason: str | None = None
        self.auth_errors = 0
        self.auth_threshold = settings.auth_abort_after
        self.secrets = teacher.secrets()
        self.sem = asyncio.Semaphore(max(1, settings.concurrency))
        self.rpm = Bucket(settings.rpm) if settings.rpm else None
        self.tpm = Bucket(settings.tpm) if settings.tpm else None
        self._backoff = wait_exponential_jitter(
            multiplier=settings.backoff_base, max=settings.backoff_max, jitter=settings.backoff_base
        )
        self.backstop = settings.timeout * 1.5 + 5 if teacher.network else None

    # tenacity hooks
    def _wait(self, rs: Any) -> float:
        e = rs.outcome.exception() if rs.outcome else None
        if isinstance(e, InvalidOutput):
            return 0.0
        ra = getattr(e, "retry_after", None)
        if ra is not None:  # the server said when: never sooner, plus a little jitter to spread the herd
            return ra + random.uniform(0, min(1.0, self.s.backoff_base) * 0.25)
        return self._backoff(rs)

    def _before_sleep(self, rs: Any) -> None:
        self.c.retries += 1
        if isinstance(rs.outcome.exception() if rs.outcome else None, InvalidOutput):
            self.c.invalid_retries += 1

    async def _attempt(self, item: Item, state: dict) -> tuple:
        if self.stop_reason:
            raise _Stopped(self.stop_reason)
        est = 0
        if self.rpm:
            await self.rpm.take(1)
        if self.tpm:
            est = estimate_tokens(item.req.prompt_chars) + int(
                item.req.params.get("max_tokens") or DEFAULT_MAX_TOKENS
            )
            await self.tpm.take(est)
        async with self.sem:
            if self.stop_reason:
                raise _Stopped(self.stop_reason)
            self.c.attempts += 1
            t0 = time.perf_counter()
            if self.backstop:
                try:
                    if _timeout is not None:  # Python 3.11+: no extra task per call
                        async with _timeout(self.backstop):
                            resp = await self.teacher.complete(item.req)
                    else:
                        resp = await asyncio.wait_for(self.teacher.complete(item.req), self.backstop)
                except asyncio.TimeoutError:
                    raise Transient(
                        f"{self.teacher.provider}: no answer within {self.backstop:.0f} s"
                    ) from None
            else:
                resp = await self.teacher.complete(item.req)
            latency = (time.perf_counter() - t0) * 1000.0
        if self.tpm:
            self.tpm.adjust((resp.prompt_tokens or 0) + (resp.completion_tokens or 0) - est)
        cost = self.price.cost(resp.prompt_tokens, resp.completion_tokens) if self.price else None
        self._spend(cost)
        if self.json_mode:
            parsed, why = parse(self.task, resp.text, item.choices, True)
            if why is not None and state["invalid"] < self.s.json_retries:
                state["invalid"] += 1
                raise InvalidOutput(f"invalid structured output: {why}")
        return (
            resp.text,
            resp.finish_reason,
            resp.prompt_tokens,
            resp.completion_tokens,
            latency,
            cost,
            resp.request_id,
        )

    def _spend(self, cost: float | None) -> None:
        if cost is None:
            self.c.spend_known = False
            return
        self.c.spend += cost
        if self.max_usd is not None and self.c.spend >= self.max_usd and not self.stop_reason:
            self.stop_reason = f"--max-usd {self.max_usd:g} reached (spent ${self.c.spend:.4f})"

    async def _with_retries(self, item: Item, state: dict) -> tuple:
        """First attempt straight away (the common case, no retry machinery); tenacity drives the rest."""
        state["attempts"] += 1
        try:
            return await self._attempt(item, state)
        except TeacherError as e:
            if not e.retryable or self.s.max_attempts <= 1:
                raise
            first = e
        self.c.retries += 1
        self.c.invalid_retries += isinstance(first, InvalidOutput)
        await asyncio.sleep(self._wait(_FirstFailure(first)))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.s.max_attempts - 1),
            wait=lambda rs: self._wait(_Shifted(rs)),
            retry=retry_if_exception(lambda e: isinstance(e, TeacherError) and e.retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        out = None
        async for attempt in retrying:
            with attempt:
                state["attempts"] += 1
                out = await self._attempt(item, state)
        assert out is not None
        return out

    async def _one(self, item: Item) -> None:
        state = {"invalid": 0, "attempts": 0}
        try:
            out = await self._with_retries(item, state)
        except _Stopped:
            self.c.skipped += 1
            return
        except TeacherError as e:
            self._fail(item, e.kind, e.status, str(e), state["attempts"])
            if isinstance(e, AuthError):
                self.auth_errors += 1
                if self.auth_errors >= self.auth_threshold and self.c.answered == 0 and not self.stop_reason:
                    self.stop_reason = (
                        f"authentication failing ({redact(str(e), self.secrets)}); check the API key"
                    )
            return
        except Exception as e:  # noqa: BLE001 - an unexpected error is recorded per row, never retried in a loop
            self._fail(item, "error", None, f"{type(e).__name__}: {e}", state["attempts"])
            return
        text, finish, pt, ct, latency, cost, request_id = out
        self.answers[item.key] = (text, finish, pt, ct, latency, cost)
        self.c.answered += 1
        self.c.called += 1
        self.writer.answer(
            {
                "cache_key": item.key,
                "provider": self.teacher.provider,
                "endpoint": self.teacher.endpoint,
                "model": self.teacher.model,
                "subject": item.subject,
                "request": item.ing,
                "text": text,
                "finish_reason": finish,
                "prompt_tokens": pt,
                "completion_tokens": ct,
                "request_id": request_id,
                "latency_ms": latency,
                "cost_usd": cost,
                "attempts": state["attempts"],
                "run_id": self.run_id,
            }
        )
        if self.on_progress:
            self.on_progress(self.c)

    def _fail(self, item: Item, kind: str, status: int | None, msg: str, attempts: int) -> None:
        msg = redact(msg, self.secrets) or ""
        self.failures[item.key] = (kind, msg)
        self.c.failed += 1
        self.c.called += 1
        self.writer.failure(
            {
                "cache_key": item.key,
                "provider": self.teacher.provider,
                "model": self.teacher.model,
                "example_id": item.example_id,
                "sample_idx": item.sample_idx,
                "kind": kind,
                "status": status,
                "error": msg,
                "attempts": attempts,
                "run_id": self.run_id,
            }
        )
        if self.on_progress:
            self.on_progress(self.c)

    async def run(self, items: list[Item]) -> None:
        """Answer `items` (cache misses); tasks are admitted a few at a time so memory stays flat."""
        self.auth_threshold = max(1, min(self.s.auth_abort_after, len(items)))
        admit = asyncio.Semaphore(max(2, self.s.concurrency * 2))
        tasks: set[asyncio.Task] = set()

        def done(t: asyncio.Task) -> None:
            tasks.discard(t)
            admit.release()

        try:
            for it in items:
                await admit.acquire()
                if self.stop_reason:
                    admit.release()
                    break
                t = asyncio.create_task(self._one(it))
                tasks.add(t)
                t.add_done_callback(done)
            if tasks:
                await asyncio.gather(*list(tasks))
        finally:
            for t in list(tasks):
                t.cancel()
            await self.teacher.aclose()


# -- progress -------------------------------------------------------------------------------------
class _Progress:
    """A rich bar with rows/s, ETA, spend, retries and failures (stderr, only on a terminal)."""

    def __init__(self, total: int, done: int, enabled: bool, label: str = "generate"):
        self.enabled = enabled and total > 0
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeRemainingColumn(),
            TextColumn(
                "${task.fields[spend]} · retries {task.fields[retries]} · failed {task.fields[failed]}"
            ),
            console=Console(stderr=True),
            refresh_per_second=4,
            transient=False,
        )
        self.t0 = time.perf_counter()
        self.base = done
        self.task = self.p.add_task(
            "gen", total=total, completed=done, rate="-", spend="0.00", retries=0, failed=0
        )
        self.p.start()

    def update(self, c: Counters) -> None:
        if not self.enabled:
            return
        n = c.answered + c.failed
        el = max(1e-6, time.perf_counter() - self.t0)
        spend = f"{c.spend:.2f}" if c.spend_known else f"{c.spend:.2f}+?"
        self.p.update(
            self.task,
            completed=self.base + n,
            rate=f"{n / el:.0f}",
            spend=spend,
            retries=c.retries,
            failed=c.failed,
        )

    def close(self) -> None:
        if self.enabled:
            self.p.stop()


# -- the command ----------------------------------------------------------------------------------
@dataclass
class GenerateResult:
    version: Version | None
    summary: dict[str, Any]
    dry_run: bool = False
    preview: tuple[str | None, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def _fewer_gc_passes(gen0: int = 50_000):
    """Raise the collector's first threshold while requests run, and restore it after.

    An SDK call allocates hundreds of short-lived containers, so with Python's default threshold (700) the
    collector ran ~1,300 times per 8,000 requests, each pass walking the young objects and every tenth the
    older ones: 15-20% of a run's CPU (benchmarks/RESULTS.md). Cyclic garbage still gets collected, just
    in bigger, rarer passes.
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], gen0), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _execute(engine: Engine, writer: cache_mod.CacheWriter, misses: list[Item]) -> None:
    async def main() -> None:
        writer.start()
        try:
            await engine.run(misses)
        finally:
            await writer.close()

    try:
        with _fewer_gc_passes():
            asyncio.run(main())
    finally:
        writer.drain_sync()  # anything queued when the loop was torn down (Ctrl-C) is still committed


def split_cached(ws: Workspace, items: list[Item]) -> tuple[dict[str, tuple], list[Item]]:
    """(cached answers by key, the items still to call: each missing key once, in order)."""
    cached = cache_mod.lookup(ws.con, [it.key for it in items])
    seen: set[str] = set()
    misses = []
    for it in items:
        if it.key not in cached and it.key not in seen:
            seen.add(it.key)
            misses.append(it)
    return cached, misses


def checked_price(
    teacher: Teacher,
    prices_path: str | Path | None,
    max_usd: float | None,
    warn: Callable[[str], None],
) -> Price | None:
    """The teacher's price; a missing one is a warning (unknown cost), or an error with --max-usd."""
    price = price_for(teacher.provider, teacher.model, prices_path)
    if price is None:
        warn(f"warning: no price for {teacher.spec} in recipes/prices.yaml; cost is unknown")
        if max_usd is not None:
            raise SbsError(
                f"--max-usd needs a price for {teacher.spec}: add it to recipes/prices.yaml (or drop --max-usd)"
            )
    return price


def answer(
    ws: Workspace,
    teacher: Teacher,
    misses: list[Item],
    settings: Settings,
    *,
    task: Task,
    json_mode: bool = False,
    price: Price | None = None,
    max_usd: float | None = None,
    run_id: str,
    total: int,
    cached: int,
    label: str = "generate",
) -> Engine:
    """Call the teacher for `misses` (cache misses, each key once, of `total` requests of which `cached`
    were answered already) with limits, retries, durable cache
    writes and a progress bar; returns the engine (its answers, failures and counters). Used by `generate`
    and by the LLM-judge signal. An interrupted run is recorded as such in `runs` before the error goes on."""
    writer = cache_mod.CacheWriter(ws, flush_interval=settings.flush_interval)
    progress = _Progress(
        total,
        total - len(misses),
        settings.progress if settings.progress is not None else sys.stderr.isatty(),
        label,
    )
    engine = Engine(
        teacher,
        settings,
        writer,
        task=task,
        json_mode=json_mode,
        price=price,
        max_usd=max_usd,
        run_id=run_id,
        on_progress=progress.update if progress.enabled else None,
    )
    engine.c.total = total
    engine.c.cached = cached
    t0 = time.perf_counter()
    try:
        if misses:
            _execute(engine, writer, misses)
    except BaseException:
        progress.close()
        ws.finish_run(run_id, "interrupted", _counters(engine.c, time.perf_counter() - t0))
        raise
    progress.close()
    return engine


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
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    command: str = "generate",
    mode: str = "online",
    batch_settings: Any = None,
) -> GenerateResult:
    """Answer an examples version with a teacher; returns the new generation version and a summary.

    `mode="batch"` (openai:/anthropic: teachers) submits the cache misses as provider batch jobs and returns
    without a version; `sbs_data.generate.batch.collect` builds it later (see that module)."""
    s = settings or Settings()
    clock = {"start": time.perf_counter()}
    if mode not in ("online", "batch"):
        raise SbsError(f"--mode must be online or batch, not {mode!r}")
    batch = mode == "batch"
    if isinstance(teacher, str):
        teacher = parse_spec(teacher, base_urls=base_urls, ws=ws, timeout=s.timeout)
    if batch and teacher.provider not in ("openai", "anthropic"):
        raise SbsError(
            f"--mode batch needs an openai: or anthropic: teacher, not {teacher.spec} (use online mode)"
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
    out_name = name or default_name(p.examples, teacher)
    from sbs_data.workspace import check_name

    check_name(out_name)
    price = checked_price(teacher, prices_path, max_usd, warn)
    if samples > 1 and not p.params.get("temperature"):
        warn("warning: --samples > 1 at temperature 0 asks for the same answer several times")
    clock["planned"] = time.perf_counter()
    cached, misses = split_cached(ws, p.items)
    clock["looked_up"] = time.perf_counter()
    summary: dict[str, Any] = {
        "source": p.examples.ref,
        "teacher": teacher.spec,
        "output": out_name,
        "requests": len(p.items),
        "cached": len(p.items) - sum(1 for it in p.items if it.key not in cached),
        "to_call": len(misses),
    }
    if dry_run:
        est_in = sum(estimate_tokens(it.req.prompt_chars) for it in misses)
        max_out = len(misses) * int(p.params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        summary.update(
            est_prompt_tokens=est_in,
            max_completion_tokens=max_out,
            est_cost_usd=None if price is None else round(price.cost(est_in, 0, batch=batch), 4),
            max_cost_usd=None if price is None else round(price.cost(est_in, max_out, batch=batch), 4),
            prompt=p.prompt.source,
            prompt_sha=p.prompt.sha,
        )
        preview = None
        if p.items:
            r = p.items[0].req
            preview = (r.system, r.messages[-1]["content"])
        asyncio.run(teacher.aclose())
        if batch:
            summary["mode"] = "batch"
        return GenerateResult(None, summary, dry_run=True, preview=preview)
    if misses and offline and teacher.network:
        first = misses[0]
        raise SbsError(
            f"--offline: {len(misses)} of {len(p.items)} requests are not in the cache (first: example "
            f"{first.example_id!r} sample {first.sample_idx}); run without --offline, or see why with "
            f"`sbs-data cache explain {ref} --teacher {teacher.spec}`"
        )
    if misses:
        teacher.preflight()
    if batch and misses:
        from sbs_data.generate import batch as batch_mod

        if max_usd is not None and price is not None:  # a batch cannot stop midway: check the worst case
            worst = price.cost(
                sum(estimate_tokens(it.req.prompt_chars) for it in misses),
                len(misses) * int(p.params.get("max_tokens") or DEFAULT_MAX_TOKENS),
                batch=True,
            )
            if worst > max_usd:
                raise SbsError(
                    f"--max-usd {max_usd:g}: a batch cannot stop midway and may cost up to ${worst:.4f} "
                    "(at most max_tokens per answer); raise the limit, lower --limit, or use online mode"
                )
        args = {
            "split": split,
            "limit": limit,
            "samples": samples,
            "prompt_path": str(Path(prompt_path).resolve()) if prompt_path else None,
            "json_mode": json_mode,
            "params": p.params,
            "prices_path": str(Path(prices_path).resolve()) if prices_path else None,
        }
        return batch_mod.submit(
            ws,
            p,
            teacher,
            misses,
            out_name=out_name,
            summary=summary,
            args=args,
            price=price,
            settings=batch_settings,
            command=command,
        )
    run_id = ws.start_run(command)
    t0 = time.perf_counter()
    engine = answer(
        ws,
        teacher,
        misses,
        s,
        task=p.task,
        json_mode=json_mode,
        price=price,
        max_usd=max_usd,
        run_id=run_id,
        total=len(p.items),
        cached=summary["cached"],
    )
    clock["called"] = time.perf_counter()
    if engine.stop_reason and engine.c.answered == 0 and engine.auth_errors:
        ws.finish_run(run_id, "failed", _counters(engine.c, time.perf_counter() - t0))
        raise SbsError(f"{teacher.spec}: {engine.stop_reason}")
    answers = {k: v for k, v in cached.items()}
    answers.update(engine.answers)
    v, by_status = _build_version(ws, p, out_name, answers, engine, run_id)
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
    stats = _counters(engine.c, elapsed)
    stats.update(by_status)
    stats["timings"] = timings
    ws.finish_run(run_id, "ok" if not engine.stop_reason else "stopped", stats)
    summary.update(
        version=v.ref,
        rows=v.row_count,
        **by_status,
        called=engine.c.called,
        retries=engine.c.retries,
        spent_usd=round(engine.c.spend, 6) if engine.c.spend_known else None,
        seconds=round(elapsed, 2),
        rows_per_s=round(len(misses) / elapsed, 1) if misses and elapsed > 0 else None,
    )
    if engine.stop_reason:
        summary["stopped"] = engine.stop_reason
    return GenerateResult(v, summary, timings=timings)


def _counters(c: Counters, elapsed: float) -> dict[str, Any]:
    return {
        "requests": c.total,
        "cached": c.cached,
        "called": c.called,
        "attempts": c.attempts,
        "retries": c.retries,
        "failed": c.failed,
        "skipped": c.skipped,
        "spent_usd": c.spend if c.spend_known else None,
        "seconds": round(elapsed, 3),
    }


# The per-row values of a generation row, in the order `_build_version` computes them.
_VALUE_COLS = (
    "raw",
    "rationale",
    "pred_label",
    "parse_status",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "error",
)


def _build_version(
    ws: Workspace, p: Plan, out_name: str, answers: dict[str, tuple], engine: Engine, run_id: str
) -> tuple[Version, dict[str, int]]:
    """One row per (example, sample): answered rows parsed, failures and unrequested rows marked 'failed'."""
    cols: dict[str, list] = {
        c: [] for c in ("example_id", "sample_idx", "split", "teacher", "cache_key", *_VALUE_COLS)
    }
    spec = p.teacher.spec
    counts: dict[str, int] = {}
    for it in p.items:
        a = answers.get(it.key)
        if a is not None:
            text, finish, pt, ct, latency, cost = a
            parsed, why = parse(p.task, text, it.choices, p.json_mode)
            vals = (text, parsed.rationale, parsed.label, parsed.status, finish, pt, ct, cost, latency, why)
        else:
            f = engine.failures.get(it.key)
            err = f"{f[0]}: {f[1]}" if f else f"not requested: {engine.stop_reason or 'run stopped'}"
            vals = (None, None, None, "failed", None, None, None, None, None, err)
        status = vals[3]
        counts[status] = counts.get(status, 0) + 1
        for c, v in zip(_VALUE_COLS, vals):
            cols[c].append(v)
        cols["example_id"].append(it.example_id)
        cols["sample_idx"].append(it.sample_idx)
        cols["split"].append(it.split)
        cols["teacher"].append(spec)
        cols["cache_key"].append(it.key)
    df = pl.DataFrame(
        cols,
        schema={
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
            "completion_tokens": pl.Int32,
            "cost_usd": pl.Float64,
            "latency_ms": pl.Float64,
            "cache_key": pl.Utf8,
            "error": pl.Utf8,
        },
    )
    by_status = {k: counts.get(k, 0) for k in ("ok", "no_answer", "empty", "invalid_json", "failed")}
    same = _unchanged(ws, out_name, p.config, df)
    if same is not None:  # a rerun that changes nothing returns the version it already made
        return same, by_status
    note = f"partial: {engine.stop_reason}" if engine.stop_reason else None
    with ws.new_version(
        out_name, "generations", p.config, parents=[p.examples], task=p.task.name, note=note, run_id=run_id
    ) as v:
        ws.append("sbs_generations", v, df)
    return ws.by_id(v.version_id), by_status


_DIGEST_COLS = "example_id, sample_idx, split, cache_key, raw, parse_status, error"


def _unchanged(ws: Workspace, out_name: str, config: dict, df: pl.DataFrame) -> Version | None:
    """The latest version of `out_name` when it was made with the same config and holds the same rows."""
    from sbs_data.workspace import config_hash

    try:
        last = ws.get(out_name)
    except SbsError:
        return None
    if (
        last.kind != "generations"
        or last.config_hash != config_hash(config)
        or last.row_count != df.height
        or last.note
    ):
        return None
    digest = f"SELECT bit_xor(hash({_DIGEST_COLS})) FROM "
    ws.con.execute("SELECT 1").fetchall()
    ws.con.register("_sbs_new_rows", df.select([c.strip() for c in _DIGEST_COLS.split(",")]).to_arrow())
    try:
        new = ws.one(digest + "_sbs_new_rows")
    finally:
        ws.con.unregister("_sbs_new_rows")
    old = ws.one(digest + "sbs_generations WHERE version_id = ?", [last.base_id])
    return last if new == old else None


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
    if isinstance(teacher, str):
        teacher = parse_spec(teacher, base_urls=plan_kwargs.pop("base_urls", ()), ws=ws)
    else:
        plan_kwargs.pop("base_urls", None)
    p = plan(ws, ref, teacher, **plan_kwargs)
    cached = cache_mod.lookup(ws.con, [it.key for it in p.items])
    out = []
    for it in p.items:
        if only_misses and it.key in cached:
            continue
        e = cache_mod.explain_one(ws, it.key, json.loads(it.ing), it.subject)
        out.append({"example_id": it.example_id, "sample_idx": it.sample_idx, "key": it.key[:16], **e})
        if len(out) >= limit_rows:
            break
    return out


def summary_json(res: GenerateResult) -> str:
    return json.dumps(res.summary, default=str)
