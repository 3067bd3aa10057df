"""Pacing: the user's --rpm/--tpm caps, the limits the provider advertises, and backing off on 429s.

Three mechanisms, all in one `Limiter` the engine asks before every attempt:

* Token buckets refilled smoothly (no minute-sized bursts). The user's caps are fixed; the provider's are
  created and re-rated from its rate-limit headers (OpenAI `x-ratelimit-*`, Anthropic
  `anthropic-ratelimit-*`), paced a little under the advertised rate because providers enforce per-minute
  limits over much shorter windows (6,000 RPM may be enforced as 100 per second).
* An adaptive concurrency window (additive increase, multiplicative decrease): when 429s become a real
  share of the answers it halves, and successes grow it back by about one slot per window. It matters when
  a server sends 429s without headers.
* Waits: a 429 waits for its `retry-after` (capped by --max-wait) without using up an attempt; headers
  saying nothing is left until a reset hold every new request until then.

Every wait is capped by --max-wait and every wait of `ANNOUNCE_S` or more is announced with its cause
(`on_wait(seconds, asked, cause)`): an absurd advertised limit (one request a minute, nothing left for six
minutes) is the provider's word, but it never stalls a run silently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sbs_data.teachers.base import RateLimits

#: Fraction of an advertised limit the engine paces to (headroom for the provider's short windows).
HEADROOM = 0.92
#: Waits this long or longer are announced (with their cause).
ANNOUNCE_S = 5.0
#: Share of recent answers that were 429s above which the concurrency window is halved.
CUT_SHARE = 0.1
_EMA = 0.01  # weight of one outcome in that share (about the last 100 answers: a stray 429 is not a trend)


#: on_wait(seconds it will wait, seconds asked for, cause)
OnWait = Callable[[float, float, str], None]


class Bucket:
    """A token bucket refilled at `per_minute / 60` per second, holding at most `burst_s` seconds' worth.
    Amounts larger than the capacity wait for a full bucket. A wait longer than `max_wait` is cut to it (the
    request then goes ahead), and a wait of ANNOUNCE_S or more is announced through `on_wait`."""

    def __init__(
        self,
        per_minute: float,
        burst_s: float = 1.0,
        *,
        cause: str = "",
        max_wait: float = float("inf"),
        on_wait: OnWait | None = None,
    ):
        self.cause, self.max_wait, self.on_wait = cause, max_wait, on_wait
        self.burst_s = burst_s
        self.rate = 1.0
        self.capacity = 1.0
        self.set_rate(per_minute)
        self.level = self.capacity
        self.t = time.monotonic()
        self.lock = asyncio.Lock()

    def set_rate(self, per_minute: float) -> None:
        self.rate = max(per_minute, 1e-6) / 60.0
        self.capacity = max(1.0, self.rate * self.burst_s)

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    async def take(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)
        async with self.lock:
            waited = 0.0
            while True:
                self._refill()
                if self.level >= amount:
                    self.level -= amount
                    return
                need = (amount - self.level) / self.rate
                if waited + need > self.max_wait:  # cut to --max-wait, then go ahead
                    wait = max(0.0, self.max_wait - waited)
                    if self.on_wait and (wait >= ANNOUNCE_S or need >= ANNOUNCE_S):
                        self.on_wait(wait, waited + need, self.cause)
                    await asyncio.sleep(wait)
                    self._refill()
                    self.level = max(0.0, self.level - amount)
                    return
                if self.on_wait and need >= ANNOUNCE_S:
                    self.on_wait(need, need, self.cause)
                await asyncio.sleep(need)
                waited += need

    def adjust(self, delta: float) -> None:
        """Charge (or refund) the difference between estimated and actual usage."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class Limiter:
    """Admission for one run: a concurrency window, request and token buckets, and a shared pause."""

    def __init__(
        self,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        on_wait: OnWait | None = None,
        max_wait: float = float("inf"),
    ):
        self.max_wait = max_wait
        self.max_window = max(1, concurrency)
        self.window = float(self.max_window)
        self.in_flight = 0
        self.cond = asyncio.Condition()
        self.user_rpm = Bucket(rpm, cause=f"--rpm {rpm:g}", on_wait=on_wait) if rpm else None
        self.user_tpm = Bucket(tpm, cause=f"--tpm {tpm:g}", on_wait=on_wait) if tpm else None
        self.rpm: Bucket | None = None  # advertised by the provider
        self.tpm: Bucket | None = None
        self.advertised: dict[str, float] = {}
        self.paused_until = 0.0
        self.last_cut = 0.0
        self.on_wait = on_wait
        self.throttled = 0  # 429s seen
        self.share_429 = 0.0  # moving share of 429s among recent outcomes

    # -- admission ----------------------------------------------------------------------------------
    async def acquire(self, est_tokens: float) -> None:
        """Wait for a pause to end, a concurrency slot, and request/token budget."""
        await self._pause()
        async with self.cond:
            while self.in_flight >= int(self.window):
                await self.cond.wait()
            self.in_flight += 1
        try:
            for b, amount in (
                (self.user_rpm, 1.0),
                (self.rpm, 1.0),
                (self.user_tpm, est_tokens),
                (self.tpm, est_tokens),
            ):
                if b is not None:
                    await b.take(amount)
            await self._pause()
        except BaseException:
            await self.release()
            raise

    async def release(self) -> None:
        async with self.cond:
            self.in_flight -= 1
            self.cond.notify(max(1, int(self.window) - self.in_flight))  # as many as there are free slots

    async def open(self) -> None:
        """Open the window fully at once (the probe is over) and wake everyone it now admits."""
        async with self.cond:
            self.window = float(self.max_window)
            self.cond.notify(max(0, self.max_window - self.in_flight))

    async def _pause(self) -> None:
        while True:
            left = self.paused_until - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)

    def _hold(self, until: float, asked: float, cause: str) -> None:
        """Hold new requests until `until` (cut to --max-wait from now), announcing a long hold."""
        now = time.monotonic()
        wait = min(until - now, self.max_wait)
        if wait <= 0 or now + wait <= self.paused_until:
            return
        self.paused_until = now + wait
        if self.on_wait and (wait >= ANNOUNCE_S or asked > wait):
            self.on_wait(wait, asked, cause)

    # -- what the provider said -------------------------------------------------------------------------
    def observe(self, limits: RateLimits | None, used_tokens: float = 0.0, est_tokens: float = 0.0) -> None:
        """After an answer: adopt advertised limits, charge actual tokens, grow the window."""
        self.share_429 *= 1 - _EMA
        for b in (self.user_tpm, self.tpm):
            if b is not None and used_tokens:
                b.adjust(used_tokens - est_tokens)
        if self.window < self.max_window:
            self.window = min(self.max_window, self.window + 1.0 / max(1.0, self.window))
        if limits is not None:
            self._adopt(limits)

    def throttle(self, limits: RateLimits | None, retry_after: float | None, max_wait: float) -> float:
        """After a 429: adopt the limits it carried, cut the window when 429s have become a real share of
        the answers (at most once a second: one burst is one signal; a stray 429 now and then is not a
        congested provider), and return how long this request waits: the provider's `retry-after` (or its
        reset when nothing is left), capped at `max_wait`."""
        self.throttled += 1
        self.share_429 = self.share_429 * (1 - _EMA) + _EMA
        now = time.monotonic()
        if self.share_429 > CUT_SHARE and now - self.last_cut >= 1.0:
            self.window = max(1.0, self.window / 2)
            self.last_cut = now
        if limits is not None:
            self._adopt(limits)
        wait = retry_after
        if wait is None and limits is not None:
            resets = [r for r in (limits.requests_reset, limits.tokens_reset) if r]
            wait = min(resets) if resets else None
        if wait is None:
            return 0.0
        asked = max(0.0, wait)
        wait = min(asked, max_wait)
        if self.on_wait and (wait >= ANNOUNCE_S or asked > max_wait):
            self.on_wait(wait, asked, "rate limited (429)")
        return wait

    def _adopt(self, lim: RateLimits) -> None:
        for name, limit, attr in (
            ("requests", lim.requests_limit, "rpm"),
            ("tokens", _min(lim.tokens_limit, lim.input_tokens_limit), "tpm"),
        ):
            if not limit or limit <= 0:
                continue
            if self.advertised.get(name) != limit:
                self.advertised[name] = float(limit)
                per_minute = float(limit) * HEADROOM
                b = getattr(self, attr)
                if b is None:
                    cause = f"the provider advertises {limit:g} {name} a minute"
                    bucket = Bucket(
                        per_minute, 0.25, cause=cause, max_wait=self.max_wait, on_wait=self.on_wait
                    )
                    setattr(self, attr, bucket)
                else:
                    b.set_rate(per_minute)
                    b.cause = f"the provider advertises {limit:g} {name} a minute"
        # Nothing left until a reset: hold new requests until then (the buckets handle the steady state).
        now = time.monotonic()
        for what, remaining, reset in (
            ("requests", lim.requests_remaining, lim.requests_reset),
            ("tokens", lim.tokens_remaining, lim.tokens_reset),
        ):
            if remaining is not None and remaining <= 0 and reset:
                self._hold(now + reset, reset, f"the provider says no {what} are left until its reset")


def _min(*xs: float | None) -> float | None:
    vals = [x for x in xs if x]
    return min(vals) if vals else None
