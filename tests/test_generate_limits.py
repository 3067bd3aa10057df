"""The limiter on its own: advertised limits become pacing, 429s cut the window only when they are a trend,
waits are capped and announced, and a freed window admits everyone it can."""

from __future__ import annotations

import asyncio
import time

import pytest

from sbs_data.generate import limits as limits_mod
from sbs_data.generate.limits import CUT_SHARE, HEADROOM, Limiter
from sbs_data.teachers.base import RateLimits


def test_stray_429s_do_not_cut_the_window_but_a_trend_does():
    lim = Limiter(64)
    for i in range(200):  # 2% of answers are 429s: a stray one now and then
        lim.throttle(None, None, 60) if i % 50 == 0 else lim.observe(None)
    assert lim.window == 64 and lim.share_429 < CUT_SHARE
    for _ in range(30):  # then the provider starts refusing a third of the requests
        lim.observe(None)
        lim.throttle(None, None, 60)
        lim.last_cut = 0.0  # (one cut per second at most; the test does not wait)
    assert lim.window < 64
    low = lim.window
    for _ in range(500):  # answers again: the window grows back, about one slot per window of answers
        lim.observe(None)
    assert low < lim.window <= 64


def test_advertised_limits_become_smooth_pacing_under_the_limit():
    lim = Limiter(64)
    lim.observe(RateLimits(requests_limit=6000, requests_remaining=5990, requests_reset=0.1))
    assert lim.rpm is not None and lim.rpm.rate == pytest.approx(6000 * HEADROOM / 60)
    lim.observe(RateLimits(requests_limit=600))  # the account's limit changed: re-rated, not replaced
    assert lim.rpm.rate == pytest.approx(600 * HEADROOM / 60)
    lim.observe(RateLimits(tokens_limit=1_000_000, input_tokens_limit=400_000))
    assert lim.tpm is not None and lim.tpm.rate == pytest.approx(400_000 * HEADROOM / 60)


def test_nothing_left_until_a_reset_holds_new_requests():
    lim = Limiter(8)
    lim.observe(RateLimits(requests_limit=100, requests_remaining=0, requests_reset=0.3))

    async def go() -> float:
        t0 = time.perf_counter()
        await lim.acquire(1)
        await lim.release()
        return time.perf_counter() - t0

    assert asyncio.run(go()) >= 0.25


def test_waits_are_capped_and_announced():
    said: list[tuple[float, float]] = []
    lim = Limiter(8, on_wait=lambda wait, asked, cause: said.append((wait, asked)))
    assert lim.throttle(None, 3600.0, 120.0) == 120.0
    assert said == [(120.0, 3600.0)]
    assert lim.throttle(None, 1.0, 120.0) == 1.0 and len(said) == 1  # short waits are not worth a line
    assert lim.throttle(RateLimits(requests_remaining=0, requests_reset=2.5), None, 120.0) == 2.5


def test_opening_the_window_admits_everyone_it_can():
    lim = Limiter(8)
    lim.window = 1.0

    async def go() -> int:
        started = 0

        async def one() -> None:
            nonlocal started
            await lim.acquire(1)
            started += 1
            await asyncio.sleep(0.2)
            await lim.release()

        tasks = [asyncio.create_task(one()) for _ in range(12)]
        await asyncio.sleep(0.05)
        assert started == 1  # the probe: one at a time
        await lim.open()
        await asyncio.sleep(0.05)
        n = started
        await asyncio.gather(*tasks)
        return n

    assert asyncio.run(go()) == 8


def test_an_absurd_advertised_rate_is_capped_by_max_wait_and_announced(monkeypatch):
    """`x-ratelimit-limit-requests: 1` paced every request a minute apart, silently (issue 23)."""
    said: list[tuple[float, float, str]] = []
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:  # record the waits instead of taking them
        slept.append(seconds)

    lim = Limiter(8, on_wait=lambda w, a, c: said.append((w, a, c)), max_wait=2.0)
    lim.observe(RateLimits(requests_limit=1))
    monkeypatch.setattr(limits_mod.asyncio, "sleep", no_sleep)

    async def go() -> None:
        for _ in range(3):
            await lim.acquire(10.0)
            await lim.release()

    asyncio.run(go())
    assert slept and max(slept) <= 2.0  # never longer than --max-wait
    assert len(said) == 2 and all(w == 2.0 and a > 60 for w, a, _ in said)
    assert said[0][2] == "the provider advertises 1 requests a minute"


def test_nothing_left_until_a_far_reset_holds_at_most_max_wait_and_says_so():
    said: list[tuple[float, float, str]] = []
    lim = Limiter(8, on_wait=lambda w, a, c: said.append((w, a, c)), max_wait=3.0)
    lim.observe(RateLimits(requests_remaining=0, requests_reset=360.0))  # "6m0s"
    assert 0 < lim.paused_until - time.monotonic() <= 3.0
    assert said == [
        (pytest.approx(3.0, abs=0.1), 360.0, "the provider says no requests are left until its reset")
    ]
