"""The attempt loop: one request at a time through limits, retries, budget and durable storage.

Everything around a teacher call lives here once: admission (`limits.Limiter`: concurrency window, the
user's and the provider's rate limits, pauses), retries (exponential jittered backoff for transient errors;
429s wait as long as the provider asks and do not use up attempts while the run makes progress), the
--max-usd budget (the worst case of a request is reserved before it is sent, so spend never passes the cap),
the stop on systematic errors (the first finished requests all failing the same permanent way), and the
hand-off of every answer and failure to the cache writer. The engine keeps counters, not answers: memory
does not grow with the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sbs_data import SbsError, log
from sbs_data.generate.answer import Answer, Failure, checked_usage, served_other, served_other_warning
from sbs_data.generate.cache import CacheWriter
from sbs_data.generate.limits import Limiter
from sbs_data.generate.parse import parse
from sbs_data.generate.plan import Item
from sbs_data.tasks import Task
from sbs_data.teachers.base import (
    AuthError,
    ContextLength,
    Permanent,
    QuotaExhausted,
    RateLimited,
    Request,
    Teacher,
    TeacherError,
    Transient,
    redact,
)
from sbs_data.teachers.models import ModelFacts

_timeout = getattr(asyncio, "timeout", None)
#: Requests allowed out before the first answer: an unknown model or a bad parameter costs at most this many.
PROBE = 16


@dataclass
class Settings:
    """Engine knobs (CLI flags); tests shrink the backoffs and flush interval."""

    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = 6  # transient failures per request; rate-limit waits do not count
    backoff_base: float = 0.5  # first retry 0.5-1.0 s, then doubling: the official SDKs' own schedule
    backoff_max: float = 60.0
    timeout: float = 60.0  # per request (the SDK's timeout; the engine adds a backstop)
    json_retries: int = 2  # extra calls when structured output is invalid
    flush_interval: float = 0.25  # cache commits at most this far apart
    max_wait: float = 120.0  # the longest single wait on the provider (a Retry-After: 3600 is capped)
    patience: float = 600.0  # 429s with no answer at all for this long fail the waiting rows
    progress: bool | None = None  # None: a bar when stderr is a terminal

    def check(self) -> Settings:
        """Refuse numbers that make no sense (a negative --rpm used to spin a core forever)."""
        positive = {
            "concurrency": "--concurrency",
            "max_attempts": "--max-attempts",
            "timeout": "--timeout",
            "max_wait": "--max-wait",
            "patience": "--patience",
            "flush_interval": "flush_interval",
            "backoff_base": "backoff_base",
            "backoff_max": "backoff_max",
        }
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("rpm", "tpm") and v is not None and not (v > 0 and v < float("inf")):
                raise SbsError(f"--{f.name} must be a positive number, not {v}")
            if f.name in positive and not (isinstance(v, (int, float)) and 0 < v < float("inf")):
                raise SbsError(f"{positive[f.name]} must be a positive number, not {v}")
        if self.json_retries < 0:
            raise SbsError(f"json_retries must be 0 or more, not {self.json_retries}")
        return self


@dataclass
class Counters:
    total: int = 0
    cached: int = 0
    called: int = 0  # requests whose final outcome came from the network this run
    attempts: int = 0
    retries: int = 0
    rate_limited: int = 0
    answered: int = 0
    failed: int = 0
    skipped: int = 0
    invalid_retries: int = 0
    repaired: int = 0
    text_cut: int = 0  # of the repaired answers, those cut at MAX_TEXT_CHARS
    usage_estimated: int = 0  # answers whose usage could not be true, priced from estimates
    served_other: int = 0  # answers another model than the requested one served (not a dated snapshot of it)
    spend: float = 0.0
    spend_known: bool = True


def fix_hint(e: TeacherError, teacher: Teacher) -> str:
    """What to do about a permanent error that hit every request."""
    code, param = getattr(e, "code", None) or "", getattr(e, "param", None) or ""
    if isinstance(e, QuotaExhausted):
        return (
            f"the {teacher.provider} account has no credit left (quota/billing): add credit or raise the spend "
            "limit in the provider's Plans & Billing, then re-run; answers already paid for are cached"
        )
    if isinstance(e, AuthError):
        env = getattr(teacher, "key_env", None)
        return f"check the API key{f' ({env})' if env else ''} and that it may use {teacher.model}"
    if code in ("model_not_found", "not_found_error") or e.status == 404:
        return f"check the model name {teacher.model!r} (and --base-url); the provider does not know it"
    if param:
        flag = (
            "--max-tokens"
            if param in ("max_tokens", "max_completion_tokens")
            else "--" + param.replace("_", "-")
        )
        return f"{teacher.model} does not accept this {param}: drop or change {flag}"
    return "fix the request (see the provider's message above); retrying cannot help"


class Engine:
    """Runs cache misses through a teacher; answers and failures go to the cache writer as they happen."""

    def __init__(
        self,
        teacher: Teacher,
        settings: Settings,
        writer: CacheWriter,
        *,
        task: Task | None,
        json_mode: bool,
        max_usd: float | None = None,
        run_id: str | None = None,
        on_progress: Callable[[Counters], None] | None = None,
        batch_price: bool = False,
    ):
        self.teacher = teacher
        self.facts = teacher.facts
        self.settings = settings
        self.writer = writer
        self.task = task
        self.json_mode = json_mode
        self.max_usd = max_usd
        self.run_id = run_id
        self.on_progress = on_progress
        self.counters = Counters()
        self.stop_reason: str | None = None
        self.fatal: str | None = None  # a systematic error: no version is built
        self.secrets = teacher.secrets()
        self.limiter = Limiter(
            settings.concurrency,
            settings.rpm,
            settings.tpm,
            on_wait=self._waiting,
            max_wait=settings.max_wait,
        )
        # One request at a time until the first answer: a systematic error costs one request per verdict
        # step, and the answer warms the provider's prompt cache (a concurrent first wave would write the
        # shared prefix once per request, at 1.25x the input price on Anthropic).
        self.limiter.window = 1.0
        self.reserved = 0.0
        self.holders = 0  # requests holding a reservation
        self.budget = asyncio.Condition()
        self.first: list[tuple | None] = []  # how the first finished requests failed, until one succeeds
        self.succeeded = False
        self.probe_sent = 0  # requests sent before the first answer (at most PROBE)
        self.probe_done = asyncio.Event()  # made afresh by each run(); binds to its loop on first use
        self.expected = 0  # cache misses this run will send (set by run): the systematic-error verdict size
        self.last_answer = time.monotonic()
        self.backstop = settings.timeout * 1.5 + 5 if teacher.network else None
        self._told_until = 0.0

    # -- budget ---------------------------------------------------------------------------------------
    def _worst(self, item: Item) -> float | None:
        return worst_cost(self.facts, item.req, self.teacher.service_tier)

    async def _reserve(self, worst: float | None) -> bool:
        if self.max_usd is None or worst is None:
            return True
        async with self.budget:
            while self.counters.spend + self.reserved + worst > self.max_usd:
                if not self.holders or self.stop_reason:  # nothing in flight will free budget
                    if not self.stop_reason:
                        self.stop_reason = (
                            f"--max-usd {self.max_usd:g} reached (spent ${self.counters.spend:.4f}; the next request "
                            f"could cost up to ${worst:.4f})"
                        )
                    self.probe_done.set()  # requests waiting for the first answer see the stop and end
                    return False
                await self.budget.wait()
            self.reserved += worst
            self.holders += 1
            return True

    async def _settle(self, worst: float | None, cost: float | None) -> None:
        if cost is None:
            self.counters.spend_known = False
        else:
            self.counters.spend += cost
        if self.max_usd is None or worst is None:
            return
        async with self.budget:
            self.holders -= 1
            self.reserved = max(0.0, self.reserved - worst) if self.holders else 0.0  # no float residue
            self.budget.notify_all()

    # -- one request ----------------------------------------------------------------------------------
    async def _call(self, item: Item) -> Any:
        if not self.backstop:
            return await self.teacher.complete(item.req)
        try:
            if _timeout is not None:  # Python 3.11+: no extra task per call
                async with _timeout(self.backstop):
                    return await self.teacher.complete(item.req)
            return await asyncio.wait_for(self.teacher.complete(item.req), self.backstop)
        except asyncio.TimeoutError:
            raise Transient(f"{self.teacher.provider}: no answer within {self.backstop:.0f} s") from None

    def _backoff(self, n: int, e: TeacherError) -> float:
        if e.retry_after is not None:  # the server said when: never sooner, a little jitter for the herd
            jitter = random.uniform(0, min(1.0, self.settings.backoff_base) * 0.25)
            return min(e.retry_after, self.settings.max_wait) + jitter
        base = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (n - 1))
        return min(self.settings.max_wait, base + random.uniform(0, self.settings.backoff_base))

    async def _one(self, item: Item) -> None:
        attempts = invalid = throttled = 0
        est = item.est_tokens
        probing = False
        while True:
            if not probing and not self.probe_done.is_set():
                if self.probe_sent >= PROBE:  # until an answer arrives, at most PROBE requests go out
                    await self.probe_done.wait()
                else:
                    self.probe_sent += 1
                    probing = True
            if self.stop_reason:
                self.counters.skipped += 1
                return
            worst = self._worst(item)
            if not await self._reserve(worst):
                self.counters.skipped += 1
                return
            try:
                await self.limiter.acquire(est)
            except BaseException:
                await self._settle(worst, 0.0)
                raise
            if self.stop_reason:
                await self.limiter.release()
                await self._settle(worst, 0.0)
                self.counters.skipped += 1
                return
            self.counters.attempts += 1
            t0 = time.perf_counter()
            try:
                resp = await self._call(item)
            except RateLimited as e:
                await self.limiter.release()
                await self._settle(worst, 0.0)
                self.counters.rate_limited += 1
                throttled += 1
                if time.monotonic() - self.last_answer > self.settings.patience:
                    self._fail(item, e, attempts + 1, "no answer for the whole run within --patience")
                    return
                wait = self.limiter.throttle(
                    getattr(e, "limits", None), e.retry_after, self.settings.max_wait
                )
                if wait > 0:  # the server said when: never sooner, a little jitter to spread the herd
                    await asyncio.sleep(wait + random.uniform(0, min(1.0, self.settings.backoff_base) * 0.25))
                else:  # no word from the server: back off with jitter, growing per throttled try
                    await asyncio.sleep(self._backoff(min(throttled, 6), e))
                continue
            except TeacherError as e:
                await self.limiter.release()
                await self._settle(worst, 0.0)
                attempts += 1
                if not e.retryable or attempts >= self.settings.max_attempts:
                    self._fail(item, e, attempts)
                    return
                self.counters.retries += 1
                await asyncio.sleep(self._backoff(attempts, e))
                continue
            except Exception as e:  # noqa: BLE001 - an unexpected error is recorded per row, never looped on
                await self.limiter.release()
                await self._settle(worst, 0.0)
                self._fail(item, TeacherError(f"{type(e).__name__}: {e}"), attempts + 1)
                return
            await self.limiter.release()
            latency = (time.perf_counter() - t0) * 1000.0
            attempts += 1
            estimated = False
            if self.teacher.network:  # a paid call is priced from usage that can be true
                resp, estimated = checked_usage(resp, item.req.prompt_chars)
                if estimated:
                    self.counters.usage_estimated += 1
                    if self.counters.usage_estimated == 1:
                        log.warning(
                            f"warning: {self.teacher.spec} reported token usage that cannot be true (absent, "
                            "negative or out of range); those answers are priced from token estimates of "
                            "their text and flagged usage_estimated"
                        )
            cost = self.facts.cost_of(resp)
            await self._settle(worst, cost)
            used = (resp.prompt_tokens or 0) + (resp.completion_tokens or 0)
            self.limiter.observe(resp.limits, used, est)
            self.last_answer = time.monotonic()
            if not self.succeeded:
                self.succeeded = True
                await self.limiter.open()  # the probe is over
                self.probe_done.set()
            answer = Answer.from_response(
                item.key,
                resp,
                latency_ms=latency,
                cost_usd=cost,
                attempts=attempts,
                usage_estimated=estimated,
            )
            if self.json_mode and self.task is not None and invalid < self.settings.json_retries:
                _, why = parse(self.task, answer.text, item.choices, True)
                if (
                    why is not None
                ):  # invalid structured output: asked again at once, a bounded number of times
                    invalid += 1
                    self.counters.retries += 1
                    self.counters.invalid_retries += 1
                    continue
            self.counters.answered += 1
            self.counters.called += 1
            self.counters.repaired += answer.repaired
            self.counters.text_cut += answer.text_cut
            if served_other(self.teacher.model, answer.served_model):
                self.counters.served_other += 1
                if self.counters.served_other == 1:
                    log.warning(
                        served_other_warning(self.teacher.spec, self.teacher.model, answer.served_model)
                    )
            self.writer.answer(answer, item)
            if self.on_progress:
                self.on_progress(self.counters)
            return

    def _fail(self, item: Item, e: TeacherError, attempts: int, why: str | None = None) -> None:
        msg = redact(str(e) + (f" ({why})" if why else ""), self.secrets) or ""
        self.counters.failed += 1
        self.counters.called += 1
        self.writer.failure(
            Failure(
                key=item.key,
                kind=e.kind,
                error=msg,
                status=e.status,
                attempts=attempts,
                example_id=item.example_id,
                sample_idx=item.sample_idx,
            ),
            item,
        )
        if isinstance(e, QuotaExhausted) and not self.fatal:
            # out of credit: every further request would fail the same way, so stop now; what was answered
            # before stays (a partial version), and with nothing answered there is no version at all
            hint = fix_hint(e, self.teacher)
            if self.succeeded:
                self.stop_reason = self.stop_reason or f"{msg} ({hint})"
            else:
                self.fatal, self.stop_reason = f"{msg}\nfix: {hint}", "the account has no credit left"
            self.probe_done.set()
        self._watch_systematic(e, msg)
        if self.on_progress:
            self.on_progress(self.counters)

    def _watch_systematic(self, e: TeacherError, msg: str) -> None:
        """Stop when the first finished requests (up to PROBE) all failed with the same permanent error."""
        if self.succeeded or self.fatal or not self.teacher.network:
            return  # a local teacher's failures (replay: no recorded answer) are per row
        if not isinstance(e, Permanent) or isinstance(e, ContextLength):
            self.first.append(None)  # a per-row or passing failure: not a systematic one
        else:
            self.first.append((e.kind, e.status, getattr(e, "code", None), getattr(e, "param", None)))
        need = min(PROBE, self.expected) if self.expected else PROBE
        if len(self.first) < need:
            return
        if len(set(self.first[:need])) == 1 and self.first[0] is not None:
            self.fatal = f"{msg}\nfix: {fix_hint(e, self.teacher)}"
            self.stop_reason = f"every one of the first {need} requests failed the same way"
        self.probe_done.set()  # a verdict either way: stop, or go on at full speed

    def _waiting(self, seconds: float, asked: float, cause: str = "rate limited") -> None:
        """Say on stderr that the run waits, why, until when, and whether the wait was capped."""
        until = time.monotonic() + seconds
        if until - self._told_until < 1.0:
            return
        self._told_until = until
        at = (datetime.now() + timedelta(seconds=seconds)).strftime("%H:%M:%S")
        capped = (
            f"; the provider asked for {asked:.0f} s, capped at --max-wait {self.settings.max_wait:g} s"
            if asked > seconds
            else ""
        )
        log.warning(f"waiting on {self.teacher.provider} ({cause}) until {at}, {seconds:.0f} s{capped}")

    async def run(self, items: Iterable[Item], expected: int = 0) -> None:
        """Answer `items` (cache misses, each key once); tasks are admitted a few at a time, so neither
        the items nor their tasks pile up in memory."""
        self.expected = expected
        self.probe_done = asyncio.Event()
        if not self.teacher.network:
            self.probe_done.set()  # local teachers: nothing to protect against
        admit = asyncio.Semaphore(max(2, self.settings.concurrency * 2))
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


def worst_cost(facts: ModelFacts, req: Request, tier: str | None = None) -> float | None:
    """The most a request can cost: every prompt byte a token (no tokenizer does worse), a few tokens of
    framing per message, and the full completion budget, at the service tier asked for (None without a
    price)."""
    size = len((req.system or "").encode()) + sum(len(m["content"].encode()) for m in req.messages)
    worst_in = size + 8 * (len(req.messages) + 1)
    out = int(req.params.get("max_tokens") or facts.default_max_tokens or 4096)
    return facts.cost(worst_in, out, tier=tier)


@contextlib.contextmanager
def fewer_gc_passes(gen0: int = 50_000) -> Iterator[None]:
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


def execute(engine: Engine, items: Iterable[Item], expected: int = 0) -> None:
    """Run the engine and the cache writer in one event loop; whatever is queued when the loop is torn
    down (Ctrl-C) is still committed."""

    async def main() -> None:
        engine.writer.start()
        try:
            await engine.run(items, expected)
        finally:
            await engine.writer.close()

    try:
        with fewer_gc_passes():
            asyncio.run(main())
    finally:
        engine.writer.drain_sync()
