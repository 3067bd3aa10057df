"""Accounting: the prompt caches' entries, the bill, the counters and the advertised rate limits.

Prompt caches: each answer is worked out first (a `Plan`: payload, usage, the cache entries it reads or
  writes), then committed: its entries written or refreshed, its usage billed. Entries expire after their TTL;
  TTLs follow `clock` (a callable returning seconds; tests pass one they can advance).

Rate limits (off unless given): `rpm` (every API), `tpm` (OpenAI; Gemini: input tokens), `itpm`/`otpm`
  (Anthropic), per model. Each
  is a token bucket refilled continuously at limit/60 per second holding at most `burst` seconds of it
  (default 1: both providers document that a per-minute limit may be enforced over shorter intervals,
  "60,000 RPM as 1,000 per second"). A request is admitted when its bucket holds its cost (or, if the cost
  exceeds one burst, when the bucket is full; it then runs into debt); a cost above the per-minute limit is
  refused for good. Costs: OpenAI tokens = prompt tokens + max_(completion_)tokens (the answer's length if
  unset), the estimate OpenAI documents; Anthropic input = uncached input + cache writes (cache reads are
  free), output = max_tokens at admission, the actual output charged. Refused requests cost nothing.
  Every answer carries the headers: OpenAI `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as
  Go durations: `20ms`, `1.5s`, `6m0s`), Anthropic `anthropic-ratelimit-{requests,tokens,input-tokens,
  output-tokens}-{limit,remaining,reset}` (reset as RFC 3339); remaining/reset describe the per-minute
  bucket, as the real headers do, so a burst can be refused while `remaining` is high. Over a limit: 429
  with the provider's body (OpenAI `rate_limit_exceeded`, type `requests`/`tokens`; Anthropic
  `rate_limit_error`), those headers and `retry-after` (whole seconds, >= 1; OpenAI also `retry-after-ms`).
  Gemini sends no rate-limit headers: its 429 RESOURCE_EXHAUSTED carries the wait as a RetryInfo detail.

The bill: `stats()["bill"]`, one row per provider, model (as requested) and mode (online/batch) with
  requests, input_tokens (all of them: cached and cache-written included), cached_input_tokens,
  cache_write_tokens (all writes) split into cache_write_5m_tokens and cache_write_1h_tokens (Anthropic
  prices the two lifetimes apart), output_tokens (reasoning included), reasoning_tokens, rate_limited and
  failed counts.

Counters: `count`, `in_flight`, `max_in_flight`, `outcomes` (per outcome), `log` (per request, when
`record`), and for the batch endpoints `batch_calls` (per endpoint) and `batch_keys` (API keys seen).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web


def go_duration(seconds: float) -> str:
    """Go's time.Duration format, as OpenAI's x-ratelimit-reset-* headers use it: 20ms, 1.5s, 6m0s."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    total = round(seconds, 3)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    secs = f"{s:.3f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{secs}"
    return f"{int(m)}m{secs}" if m else secs


class Bucket:
    """One advertised per-minute limit: a token bucket refilled at limit/60 per second, holding at most
    `burst` seconds of refill (enforced), beside the per-minute view the headers report."""

    def __init__(self, limit: int, burst: float, now: float):
        self.limit = limit
        self.rate = limit / 60.0
        self.cap = max(1.0, self.rate * burst)
        self.level = self.cap
        self.minute = float(limit)
        self.t = now

    def _refill(self, now: float) -> None:
        dt = max(0.0, now - self.t)
        self.t = now
        self.level = min(self.cap, self.level + dt * self.rate)
        self.minute = min(float(self.limit), self.minute + dt * self.rate)

    def wait(self, cost: float, now: float) -> float:
        """Seconds until `cost` would be admitted (0: now; inf: never, it exceeds the per-minute limit)."""
        self._refill(now)
        if cost > self.limit:
            return math.inf
        need = min(cost, self.cap)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.level -= cost
        self.minute = max(0.0, self.minute - cost)

    def remaining(self) -> int:
        return int(self.minute)

    def reset_s(self) -> float:
        return (self.limit - self.minute) / self.rate


@dataclass
class Plan:
    """One answer, worked out before anything is committed (cache writes, bill)."""

    provider: str
    model: str
    payload: dict
    usage: dict[str, int]  # input, cached, written (of which written_1h: 1-hour TTL), output, reasoning
    cache_keys: list[tuple[tuple, float]]  # entries to write or refresh: (key, ttl)
    max_out: int  # output tokens the request may use (rate-limit estimate)
    prompt: str  # prompt_of(body)


class Accounting:
    """Caches, bill, counters and rate limits (a FakeLLMServer mixin: owns the state its `__init__` sets up,
    guarded by `_lock`)."""

    limits: dict[str, int | None]
    burst: float
    clock: Callable[[], float]
    log: list[dict[str, Any]]
    count: int
    outcomes: dict[str, int]
    in_flight: int
    max_in_flight: int
    batch_calls: dict[str, int]
    batch_keys: list[str]
    _attempts: dict[str, int]
    _lock: threading.Lock
    _bill: dict[tuple[str, str, str], dict[str, int]]
    _cache: dict[tuple, tuple[float, float]]
    _buckets: dict[tuple[str, str, str], Bucket]

    # -- control ------------------------------------------------------------------------------
    def set_limits(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        itpm: int | None = None,
        otpm: int | None = None,
        burst: float | None = None,
    ) -> None:
        """Advertised per-minute limits (None: unlimited); starts every bucket full."""
        for k, v in (("rpm", rpm), ("tpm", tpm), ("itpm", itpm), ("otpm", otpm)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if burst is not None and not burst > 0:
            raise ValueError(f"burst must be > 0 seconds, got {burst!r}")
        lock = getattr(self, "_lock", None) or threading.Lock()
        with lock:
            self.limits = {"rpm": rpm, "tpm": tpm, "itpm": itpm, "otpm": otpm}
            self.burst = burst if burst is not None else self.burst
            self._buckets = {}

    def reset(self) -> None:
        """Counters, the bill, the prompt caches and the rate-limit buckets back to a fresh server's."""
        with self._lock:
            self.log.clear()
            self.outcomes.clear()
            self.count = 0
            self.max_in_flight = 0
            self._attempts.clear()
            self._bill.clear()
            self._cache.clear()
            self._buckets.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            outcomes = dict(self.outcomes)
            bill = [
                {"provider": p, "model": m, "mode": mode, **counts}
                for (p, m, mode), counts in sorted(self._bill.items())
            ]
            return {
                "count": self.count,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "outcomes": outcomes,
                "bill": bill,
                "limits": {k: v for k, v in self.limits.items() if v is not None},
            }

    # -- the bill -----------------------------------------------------------------------------
    def bill(self, provider: str, model: str, mode: str = "online") -> dict[str, int]:
        """The bill's row for one provider, model (as requested) and mode; zeros if none."""
        with self._lock:
            return dict(self._bill.get((provider, model, mode)) or self._bill_row())

    @staticmethod
    def _bill_row() -> dict[str, int]:
        keys = ("requests", "input_tokens", "cached_input_tokens", "cache_write_tokens")
        ttls = ("cache_write_5m_tokens", "cache_write_1h_tokens")
        return dict.fromkeys((*keys, *ttls, "output_tokens", "reasoning_tokens", "rate_limited", "failed"), 0)

    def _bill_add(self, provider: str, model: Any, mode: str, **add: int) -> None:
        with self._lock:
            row = self._bill.setdefault((provider, str(model), mode), self._bill_row())
            for k, v in add.items():
                row[k] += v

    def _bcount(self, request: web.Request, name: str) -> None:
        """Count a call to a batch endpoint, and the API key it carried."""
        key = (
            request.headers.get("x-api-key")
            or request.headers.get("x-goog-api-key")
            or request.headers.get("authorization", "").removeprefix("Bearer ")
        )
        with self._lock:
            self.batch_calls[name] = self.batch_calls.get(name, 0) + 1
            if key:
                self.batch_keys.append(key)

    # -- prompt caches ------------------------------------------------------------------------
    def _cached(self, key: tuple, now: float) -> bool:
        e = self._cache.get(key)
        return e is not None and e[0] > now

    def _commit(self, plan: Plan, mode: str) -> dict:
        """Write/refresh the plan's cache entries and bill it; returns its payload."""
        now = self.clock()
        u = plan.usage
        with self._lock:
            if len(self._cache) > 200_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            for key, ttl in plan.cache_keys:
                self._cache[key] = (now + ttl, ttl)
        self._bill_add(
            plan.provider,
            plan.model,
            mode,
            requests=1,
            input_tokens=u["input"],
            cached_input_tokens=u["cached"],
            cache_write_tokens=u["written"],
            cache_write_5m_tokens=u["written"] - u.get("written_1h", 0),
            cache_write_1h_tokens=u.get("written_1h", 0),
            output_tokens=u["output"],
            reasoning_tokens=u["reasoning"],
        )
        return plan.payload

    # -- rate limits ------------------------------------------------------------------------------
    _DIMS = {
        "openai": (("requests", "rpm"), ("tokens", "tpm")),
        "gemini": (("requests", "rpm"), ("tokens", "tpm")),
        "anthropic": (("requests", "rpm"), ("input-tokens", "itpm"), ("output-tokens", "otpm")),
    }

    def _admit(self, plan: Plan) -> tuple[dict[str, str], web.Response | None]:
        """Charge the plan to its model's buckets: (rate-limit headers, None) or (headers, a 429)."""
        dims = [(d, self.limits[k]) for d, k in self._DIMS[plan.provider] if self.limits.get(k)]
        if not dims:
            return {}, None
        u = plan.usage
        if plan.provider == "openai":
            cost = {"requests": 1, "tokens": u["input"] + plan.max_out}
        elif plan.provider == "gemini":  # Gemini's TPM counts input tokens
            cost = {"requests": 1, "tokens": u["input"]}
        else:
            cost = {"requests": 1, "input-tokens": u["input"] - u["cached"], "output-tokens": plan.max_out}
        now = self.clock()
        with self._lock:
            buckets = {}
            for d, limit in dims:
                key = (plan.provider, plan.model, d)
                if key not in self._buckets:
                    self._buckets[key] = Bucket(limit, self.burst, now)
                buckets[d] = self._buckets[key]
            waits = {d: b.wait(cost[d], now) for d, b in buckets.items()}
            worst = max(waits, key=lambda d: waits[d])
            if waits[worst] == 0:
                for d, b in buckets.items():
                    # Anthropic charges the actual output (it estimated max_tokens to admit)
                    b.take(u["output"] if d == "output-tokens" else cost[d])
            headers = self._rl_headers(plan.provider, buckets)
            used = buckets[worst].limit - buckets[worst].remaining()
        if waits[worst] == 0:
            return headers, None
        self._bill_add(plan.provider, plan.model, "online", rate_limited=1)
        return headers, self._rate_limited(
            plan, worst, buckets[worst].limit, used, cost[worst], waits[worst], headers
        )

    def _rl_headers(self, provider: str, buckets: dict[str, Bucket]) -> dict[str, str]:
        h: dict[str, str] = {}
        if provider == "gemini":  # Gemini advertises no limits in headers
            return h
        if provider == "openai":
            for d, b in buckets.items():
                h[f"x-ratelimit-limit-{d}"] = str(b.limit)
                h[f"x-ratelimit-remaining-{d}"] = str(b.remaining())
                h[f"x-ratelimit-reset-{d}"] = go_duration(b.reset_s())
            return h
        now = datetime.now(timezone.utc)

        def at(s: float) -> str:
            return (now + timedelta(seconds=math.ceil(s))).strftime("%Y-%m-%dT%H:%M:%SZ")

        for d, b in buckets.items():
            h[f"anthropic-ratelimit-{d}-limit"] = str(b.limit)
            h[f"anthropic-ratelimit-{d}-remaining"] = str(b.remaining())
            h[f"anthropic-ratelimit-{d}-reset"] = at(b.reset_s())
        tok = [b for d, b in buckets.items() if d != "requests"]
        if tok:  # the most restrictive token limit in effect
            b = min(tok, key=lambda b: b.remaining())
            h["anthropic-ratelimit-tokens-limit"] = str(b.limit)
            h["anthropic-ratelimit-tokens-remaining"] = str(b.remaining())
            h["anthropic-ratelimit-tokens-reset"] = at(b.reset_s())
        return h

    def _rate_limited(
        self, plan: Plan, dim: str, limit: int, used: int, cost: int, wait: float, headers: dict[str, str]
    ) -> web.Response:
        if plan.provider == "gemini":  # no headers: the wait rides in the body's RetryInfo
            retry = float(max(1, math.ceil(wait))) if math.isfinite(wait) else None
            return self.quota_exceeded(plan.model, retry, "requests" if dim == "requests" else "tokens")
        headers = dict(headers)
        if math.isfinite(wait):
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        if plan.provider == "openai":
            what = "requests per min (RPM)" if dim == "requests" else "tokens per min (TPM)"
            if math.isfinite(wait):
                headers["retry-after-ms"] = str(math.ceil(wait * 1000))
                msg = (
                    f"Rate limit reached for {plan.model} in organization org-fake on {what}: Limit {limit}, "
                    f"Used {used}, Requested {cost}. Please try again in {go_duration(wait)}. "
                    "Visit https://platform.openai.com/account/rate-limits to learn more."
                )
            else:
                msg = (
                    f"Request too large for {plan.model} in organization org-fake on {what}: Limit {limit}, "
                    f"Requested {cost}. The input or output tokens must be reduced in order to run "
                    "successfully. Visit https://platform.openai.com/account/rate-limits to learn more."
                )
            body = {
                "error": {
                    "message": msg,
                    "type": "requests" if dim == "requests" else "tokens",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
        else:
            what = dim.replace("-", " ")
            msg = (
                f"This request would exceed your organization's rate limit of {limit} {what} per minute "
                f"(model: {plan.model}). For details, refer to: https://docs.claude.com/en/api/rate-limits. "
                "You can see the response headers for current usage. Please reduce the prompt length or the "
                "maximum tokens requested, or try again later."
            )
            body = {"type": "error", "error": {"type": "rate_limit_error", "message": msg}}
        return web.json_response(body, status=429, headers=headers)
