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

The bill: `stats()["bill"]`, one row per provider, model (as requested), mode (online/batch) and service
  tier (the one that served the request: default, flex or priority) with requests, input_tokens (all of
  them: cached and cache-written included), cached_input_tokens, cache_write_tokens (all writes) split into
  cache_write_5m_tokens and cache_write_1h_tokens (Anthropic prices the two lifetimes apart), output_tokens
  (reasoning included), reasoning_tokens, rate_limited and failed counts, and `usd`: what the answers cost
  at the prices below (OpenAI models only; 0 for the others). `bill(provider, model, mode)` adds up the
  tiers unless one is named.

Prices (`PRICES`, USD per 1M input / cached input / output tokens, https://openai.com/api/pricing, as of
  2025-08): the Batch API and the flex tier bill half of them (flex "tokens are priced at Batch API rates",
  https://platform.openai.com/docs/guides/flex-processing), the priority tier its own list (`PRIORITY`,
  https://openai.com/api-priority-processing/). Refused, failed and rate-limited requests cost nothing
  (flex's 429 Resource Unavailable included).

Flex: `flex_busy` (0..1, default 0) is the stable share of distinct prompts that a busy flex tier answers
  429 Resource Unavailable (`code: resource_unavailable`, no Retry-After: the docs advise exponential
  backoff) on their first `flex_busy_tries` flex attempts (default 1); then they are served.

Counters: `count`, `in_flight`, `max_in_flight`, `outcomes` (per outcome), `log` (per request, when
`record`), and for the batch endpoints `batch_calls` (per endpoint) and `batch_keys` (API keys seen).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

#: USD per 1M tokens: (input, cached input, output) at the default tier (https://openai.com/api/pricing).
PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-5": (1.25, 0.125, 10.00),
    "gpt-5-mini": (0.25, 0.025, 2.00),
    "gpt-5-nano": (0.05, 0.005, 0.40),
    "o3": (2.00, 0.50, 8.00),
    "o4-mini": (1.10, 0.275, 4.40),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
}
#: The priority tier's own prices (https://openai.com/api-priority-processing/).
PRIORITY: dict[str, tuple[float, float, float]] = {
    "gpt-5": (2.50, 0.25, 20.00),
    "gpt-5-mini": (0.45, 0.045, 3.60),
    "o3": (3.50, 0.875, 14.00),
    "o4-mini": (2.00, 0.50, 8.00),
    "gpt-4.1": (3.50, 0.875, 14.00),
    "gpt-4.1-mini": (0.70, 0.175, 2.80),
    "gpt-4.1-nano": (0.20, 0.05, 0.80),
    "gpt-4o": (4.25, 2.125, 17.00),
    "gpt-4o-mini": (0.25, 0.125, 1.00),
}
#: What the Batch API and the flex tier bill, relative to the default tier.
HALF = 0.5
_SNAPSHOT = re.compile(r"-(?:latest|\d{4}-\d{2}-\d{2}|\d{8})$")


def usd(model: str, usage: dict[str, int], mode: str = "online", tier: str = "default") -> float:
    """What one answer costs at the stand-in's prices (0 for a model it does not price)."""
    family = model if model in PRICES else _SNAPSHOT.sub("", model)
    table = PRIORITY if tier == "priority" and mode == "online" else PRICES
    if family not in table:
        return 0.0
    inp, cached_in, out = table[family]
    fresh = usage["input"] - usage["cached"]
    cost = (fresh * inp + usage["cached"] * cached_in + usage["output"] * out) / 1e6
    return cost * HALF if mode == "batch" or tier == "flex" else cost


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
    tier: str = "default"  # the service tier that serves it


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
    flex_busy: float
    flex_busy_tries: int
    _attempts: dict[str, int]
    _flex_attempts: dict[str, int]
    _lock: threading.Lock
    _bill: dict[tuple[str, str, str, str], dict[str, Any]]
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
            self._flex_attempts.clear()
            self._bill.clear()
            self._cache.clear()
            self._buckets.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            outcomes = dict(self.outcomes)
            bill = [
                {"provider": p, "model": m, "mode": mode, "tier": tier, **counts}
                for (p, m, mode, tier), counts in sorted(self._bill.items())
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
    def bill(
        self, provider: str, model: str, mode: str = "online", tier: str | None = None
    ) -> dict[str, Any]:
        """The bill for one provider, model (as requested) and mode, of one service tier or (None) all of
        them added up; zeros if none."""
        out = self._bill_row()
        with self._lock:
            for (p, m, md, t), row in self._bill.items():
                if (p, m, md) == (provider, model, mode) and tier in (None, t):
                    for k, v in row.items():
                        out[k] += v
        return out

    @staticmethod
    def _bill_row() -> dict[str, Any]:
        keys = ("requests", "input_tokens", "cached_input_tokens", "cache_write_tokens")
        ttls = ("cache_write_5m_tokens", "cache_write_1h_tokens")
        counts = (*keys, *ttls, "output_tokens", "reasoning_tokens", "rate_limited", "failed")
        return {**dict.fromkeys(counts, 0), "usd": 0.0}

    def _bill_add(self, provider: str, model: Any, mode: str, tier: str = "default", **add: float) -> None:
        with self._lock:
            row = self._bill.setdefault((provider, str(model), mode, tier), self._bill_row())
            for k, v in add.items():
                row[k] += v

    # -- the flex tier ----------------------------------------------------------------------------
    def _flex_refuses(self, plan: Plan) -> bool:
        """Whether a busy flex tier turns this attempt away (see the module docstring)."""
        if plan.tier != "flex" or not self.flex_busy:
            return False
        h = hashlib.sha1(plan.prompt.encode("utf-8", "surrogatepass")).hexdigest()
        if int(h[:8], 16) / 0xFFFFFFFF >= self.flex_busy:
            return False
        with self._lock:
            n = self._flex_attempts.get(h, 0)
            self._flex_attempts[h] = n + 1
        if n >= self.flex_busy_tries:
            return False
        self._bill_add(plan.provider, plan.model, "online", plan.tier, rate_limited=1)
        return True

    def _flex_unavailable(self) -> web.Response:
        body = {
            "error": {
                "message": "Resource Unavailable: the flex tier has no capacity for this request right now. "
                "Retry later with exponential backoff, or use the default service tier.",
                "type": "resource_unavailable",
                "param": None,
                "code": "resource_unavailable",
            }
        }
        return web.json_response(body, status=429)

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
            plan.tier,
            requests=1,
            input_tokens=u["input"],
            cached_input_tokens=u["cached"],
            cache_write_tokens=u["written"],
            cache_write_5m_tokens=u["written"] - u.get("written_1h", 0),
            cache_write_1h_tokens=u.get("written_1h", 0),
            output_tokens=u["output"],
            reasoning_tokens=u["reasoning"],
            usd=usd(plan.model, u, mode, plan.tier) if plan.provider == "openai" else 0.0,
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
        self._bill_add(plan.provider, plan.model, "online", plan.tier, rate_limited=1)
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
