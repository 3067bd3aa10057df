"""The loopback stand-in behaves like the real APIs where clients meet them first: driven through the real
`openai` and `anthropic` SDK clients (model registry, reasoning-model rules, reasoning budgets, prompt
caching, advertised rate limits, the bill, the surrogate fault, the CLI)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import anthropic
import openai
import pytest
from fakes import FakeLLMServer, FaultPlan, Model, count_tokens, go_duration

KEY = "sk-test"
Q = "Q: Which is a color?\nAnswer Choices:\n(a) red\n(b) run\nA:"


class Clock:
    """A clock the tests advance by hand (TTLs and rate-limit buckets follow it)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def oai(srv: FakeLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.openai_url, api_key=KEY, max_retries=0, timeout=5)


def ant(srv: FakeLLMServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=srv.anthropic_url, api_key=KEY, max_retries=0, timeout=5)


def chat(client: openai.OpenAI, model: str = "gpt-4o-mini", content: str = Q, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kw)


def msg(client: anthropic.Anthropic, model: str = "claude-sonnet-4", content: str = Q, **kw):
    kw.setdefault("max_tokens", 200)
    return client.messages.create(model=model, messages=[{"role": "user", "content": content}], **kw)


@pytest.fixture
def srv():
    with FakeLLMServer() as s:
        yield s


# -- models -------------------------------------------------------------------------------------
def test_unknown_models_are_404_in_each_providers_shape(srv):
    c, a = oai(srv), ant(srv)
    with pytest.raises(openai.NotFoundError) as ei:
        chat(c, "gpt-17")
    err = ei.value.body
    assert err["code"] == "model_not_found" and err["type"] == "invalid_request_error"
    assert err["message"] == "The model `gpt-17` does not exist or you do not have access to it."
    with pytest.raises(openai.NotFoundError):  # a Claude model is not served by the OpenAI API
        chat(c, "claude-sonnet-4")
    with pytest.raises(anthropic.NotFoundError) as ei:
        msg(a, "claude-9")
    assert ei.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-9"},
    }
    # snapshots and aliases resolve to their family
    assert chat(c, "gpt-4o-mini-2024-07-18").choices[0].message.content
    assert msg(a, "claude-3-5-haiku-20241022").content[0].text
    assert msg(a, "claude-3-5-haiku-latest").content[0].text
    assert srv.stats()["outcomes"]["model_not_found"] == 2
    assert srv.bill("openai", "gpt-17")["failed"] == 1


def test_extra_models_and_lenient_mode():
    with FakeLLMServer(models=["openai:my-finetune", "anthropic:claude-next"]) as s:
        assert chat(oai(s), "my-finetune").choices[0].message.content
        assert msg(ant(s), "claude-next").content[0].text
    with FakeLLMServer(models={"o9": Model("openai", ("low",), stop=False)}) as s:
        with pytest.raises(openai.BadRequestError, match="Only the default"):
            chat(oai(s), "o9", temperature=0.0)
    with FakeLLMServer(strict=False) as s:
        assert chat(oai(s), "anything", temperature=0.0, max_tokens=50).choices[0].message.content
        assert msg(ant(s), "whatever").content[0].text
    with pytest.raises(ValueError, match="openai:NAME"):
        FakeLLMServer(models=["gpt-x"])


# -- reasoning models -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model, kw, code, param, message",
    [
        (
            "gpt-5",
            {"temperature": 0.0},
            "unsupported_value",
            "temperature",
            "Unsupported value: 'temperature' does not support 0.0 with this model. "
            "Only the default (1) value is supported.",
        ),
        (
            "o3",
            {"top_p": 0.9},
            "unsupported_value",
            "top_p",
            "Unsupported value: 'top_p' does not support 0.9 with this model. "
            "Only the default (1) value is supported.",
        ),
        (
            "gpt-5-mini",
            {"max_tokens": 100},
            "unsupported_parameter",
            "max_tokens",
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
        ),
        (
            "gpt-5-nano",
            {"stop": ["\n\nQ:"]},
            "unsupported_parameter",
            "stop",
            "Unsupported parameter: 'stop' is not supported with this model.",
        ),
        (
            "o4-mini",
            {"reasoning_effort": "minimal"},
            "unsupported_value",
            "reasoning_effort",
            "Unsupported value: 'reasoning_effort' does not support 'minimal' with this model. "
            "Supported values are: 'low', 'medium', and 'high'.",
        ),
        (
            "gpt-4o-mini",
            {"reasoning_effort": "low"},
            "unsupported_parameter",
            "reasoning_effort",
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
        ),
    ],
)
def test_reasoning_model_parameter_rules(srv, model, kw, code, param, message):
    with pytest.raises(openai.BadRequestError) as ei:
        chat(oai(srv), model, **kw)
    assert ei.value.status_code == 400
    assert ei.value.body == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": code,
    }
    assert srv.stats()["outcomes"] == {code: 1}


def test_reasoning_models_accept_their_own_parameters(srv):
    c = oai(srv)
    r = chat(c, "gpt-5", temperature=1, reasoning_effort="minimal", max_completion_tokens=500)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content
    assert chat(c, "gpt-4o-mini", temperature=0.0, max_tokens=50, stop=["\n"]).choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: foo"):
        chat(c, "gpt-4o-mini", extra_body={"foo": 1})


def test_reasoning_tokens_count_and_can_use_up_the_budget(srv):
    c = oai(srv)
    low = chat(c, "gpt-5-mini", reasoning_effort="low", max_completion_tokens=4000)
    r = low.usage.completion_tokens_details.reasoning_tokens
    assert 192 <= r <= 320
    answer = low.choices[0].message.content
    assert low.usage.completion_tokens == r + count_tokens(answer) and low.choices[0].finish_reason == "stop"
    again = chat(c, "gpt-5-mini", reasoning_effort="low", max_completion_tokens=4000)
    assert again.usage.completion_tokens_details.reasoning_tokens == r  # deterministic per prompt + effort
    high = chat(c, "gpt-5-mini", reasoning_effort="high", max_completion_tokens=8000)
    assert high.usage.completion_tokens_details.reasoning_tokens >= 2304
    default = chat(c, "o3", max_completion_tokens=4000).usage.completion_tokens_details.reasoning_tokens
    assert 768 <= default <= 1280  # medium

    # the budget runs out while reasoning: an empty answer, finish_reason "length", the budget billed
    cut = chat(c, "gpt-5-mini", reasoning_effort="low", max_completion_tokens=150)
    assert cut.choices[0].message.content == "" and cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 150 == cut.usage.completion_tokens_details.reasoning_tokens
    # ... or during the answer: the answer is cut short
    part = chat(c, "gpt-5-mini", reasoning_effort="low", max_completion_tokens=r + 5)
    assert part.choices[0].finish_reason == "length"
    assert (
        answer.startswith(part.choices[0].message.content)
        and 0 < count_tokens(part.choices[0].message.content) <= 5
    )
    # a chat model: no reasoning tokens, max_tokens cuts the answer
    short = chat(c, "gpt-4o-mini", max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert short.usage.completion_tokens_details.reasoning_tokens == 0
    a = msg(ant(srv), max_tokens=3)
    assert a.stop_reason == "max_tokens" and a.usage.output_tokens == 3


# -- prompt caching -------------------------------------------------------------------------------
def test_openai_caches_prefixes_of_long_prompts_in_128_token_steps():
    clock = Clock()
    with FakeLLMServer(clock=clock) as s:
        c = oai(s)
        system = "abcd" * 2000  # 2000 tokens

        def ask(q: str, model: str = "gpt-4o-mini"):
            msgs = [{"role": "system", "content": system}, {"role": "user", "content": q}]
            return c.chat.completions.create(model=model, messages=msgs).usage

        first = ask("q1")
        # stream: <|system|> + 8000 bytes + <|end|><|user|> + q1 + <|end|> = 8034 bytes -> 2009, + 3 priming
        assert first.prompt_tokens == 2012 and first.prompt_tokens_details.cached_tokens == 0
        second = ask("another question")
        assert (
            second.prompt_tokens_details.cached_tokens == 1920
        )  # 15 whole 512-byte steps of the shared prefix
        assert (
            ask("q1").prompt_tokens_details.cached_tokens == 1920
        )  # the identical prompt: still whole steps
        assert ask("q1", "gpt-4o").prompt_tokens_details.cached_tokens == 0  # caches are per model
        clock.t += 299
        assert ask("q3").prompt_tokens_details.cached_tokens == 1920  # used: the TTL restarts
        clock.t += 301
        assert ask("q4").prompt_tokens_details.cached_tokens == 0  # expired
        short = [chat(c, content="short prompt").usage.prompt_tokens_details.cached_tokens for _ in range(2)]
        assert short == [0, 0]  # under 1024 tokens: never cached
        bill = s.bill("openai", "gpt-4o-mini")
        assert bill["cached_input_tokens"] == 1920 * 3 and bill["requests"] == 7


def test_anthropic_cache_control_minimums_ttl_and_accounting():
    clock = Clock()
    with FakeLLMServer(clock=clock) as s:
        a = ant(s)
        doc = "word " * 960  # 4800 bytes: 1200 tokens

        def ask(model: str, q: str, ttl: str | None = None):
            cc = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
            system = [{"type": "text", "text": doc, "cache_control": cc}]
            return msg(a, model, q, system=system).usage

        u = ask("claude-sonnet-4", "hi")  # user message: 4 + 1 tokens
        assert (u.cache_creation_input_tokens, u.cache_read_input_tokens, u.input_tokens) == (1200, 0, 5)
        assert u.cache_creation.ephemeral_5m_input_tokens == 1200
        u = ask("claude-sonnet-4", "hello")
        assert (u.cache_creation_input_tokens, u.cache_read_input_tokens, u.input_tokens) == (0, 1200, 6)
        clock.t += 290
        assert (
            ask("claude-sonnet-4", "hi").cache_read_input_tokens == 1200
        )  # a hit refreshes the 5-minute TTL
        clock.t += 290
        assert ask("claude-sonnet-4", "hi").cache_read_input_tokens == 1200
        clock.t += 301
        u = ask("claude-sonnet-4", "hi")
        assert (u.cache_creation_input_tokens, u.cache_read_input_tokens) == (
            1200,
            0,
        )  # expired: written again
        # Haiku 3.5 caches from 2048 tokens: a 1200-token marked prefix is processed uncached, no error
        for _ in range(2):
            u = ask("claude-3-5-haiku", "hi")
            assert (u.cache_creation_input_tokens, u.cache_read_input_tokens, u.input_tokens) == (0, 0, 1205)
        # a 1-hour entry outlives five minutes
        assert ask("claude-opus-4", "hi", "1h").cache_creation.ephemeral_1h_input_tokens == 1200
        clock.t += 1800
        assert ask("claude-opus-4", "hi", "1h").cache_read_input_tokens == 1200
        bill = s.bill("anthropic", "claude-sonnet-4")
        assert bill["cache_write_tokens"] == 2400 and bill["cached_input_tokens"] == 3600
        assert bill["input_tokens"] == 5 * 1205 + 1  # all input: uncached, written and read


def test_anthropic_cache_hits_an_earlier_block_boundary_and_limits_markers(srv):
    a = ant(srv)
    doc = "word " * 960
    cc = {"type": "ephemeral"}
    first = [{"type": "text", "text": doc, "cache_control": cc}]
    msg(a, system=first)
    # the marker moved to a later block: the earlier boundary (within 20 blocks) is still a hit
    later = [{"type": "text", "text": doc}, {"type": "text", "text": "more " * 100, "cache_control": cc}]
    u = msg(a, system=later).usage
    assert u.cache_read_input_tokens == 1200 and u.cache_creation_input_tokens == 125
    many = [{"type": "text", "text": f"block {i}", "cache_control": cc} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks with cache_control"):
        msg(a, system=many)
    with pytest.raises(anthropic.BadRequestError, match="cannot both be specified"):
        msg(a, "claude-sonnet-4-6", extra_body={"temperature": 0.5, "top_p": 0.9})
    assert msg(a, "claude-sonnet-4-6", extra_body={"temperature": 0.5}).content[0].text
    with pytest.raises(anthropic.BadRequestError, match="seed: Extra inputs are not permitted"):
        msg(a, extra_body={"seed": 1})


# -- rate limits ------------------------------------------------------------------------------------
def test_openai_requests_per_minute_enforced_per_second_with_headers():
    clock = Clock()
    with FakeLLMServer(rpm=120, clock=clock) as s:  # 2 per second
        c = oai(s)
        r1 = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": Q}]
        )
        assert r1.headers["x-ratelimit-limit-requests"] == "120"
        assert r1.headers["x-ratelimit-remaining-requests"] == "119"
        assert r1.headers["x-ratelimit-reset-requests"] == "500ms"
        assert "x-ratelimit-limit-tokens" not in r1.headers  # no tpm given
        assert r1.parse().choices[0].message.content
        chat(c)
        with pytest.raises(openai.RateLimitError) as ei:
            chat(c)
        e = ei.value
        assert e.body["code"] == "rate_limit_exceeded" and e.body["type"] == "requests"
        assert e.body["message"].startswith(
            "Rate limit reached for gpt-4o-mini in organization org-fake on "
            "requests per min (RPM): Limit 120, Used 2, Requested 1."
        )
        assert "Please try again in 500ms." in e.body["message"]
        h = e.response.headers
        assert (h["retry-after"], h["retry-after-ms"], h["x-ratelimit-remaining-requests"]) == (
            "1",
            "500",
            "118",
        )
        assert h["x-ratelimit-reset-requests"] == "1s"
        clock.t += 0.5
        assert chat(c).choices[0].message.content
        assert chat(c, "gpt-4o").choices[0].message.content  # each model has its own limits
        bill = s.bill("openai", "gpt-4o-mini")
        assert (bill["requests"], bill["rate_limited"]) == (3, 1)
        assert s.stats()["outcomes"]["rate_limited"] == 1


def test_openai_tokens_per_minute_counts_prompt_plus_max_tokens():
    clock = Clock()
    with FakeLLMServer(tpm=6000, clock=clock) as s:  # 100 tokens per second
        c = oai(s)
        r = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": Q}], max_tokens=60
        )
        pt = r.parse().usage.prompt_tokens
        assert int(r.headers["x-ratelimit-remaining-tokens"]) == 6000 - pt - 60
        with pytest.raises(openai.RateLimitError) as ei:
            chat(c, max_tokens=60)
        assert (
            ei.value.body["type"] == "tokens"
            and "tokens per min (TPM): Limit 6000" in ei.value.body["message"]
        )
        clock.t += 1
        assert chat(c, max_tokens=60).choices[0].message.content
        with pytest.raises(openai.RateLimitError) as ei:  # more than a minute's worth: never
            chat(c, max_tokens=7000)
        assert ei.value.body["message"].startswith("Request too large for gpt-4o-mini")
        assert "retry-after" not in ei.value.response.headers


def test_anthropic_limits_headers_and_429():
    clock = Clock()
    with FakeLLMServer(rpm=120, itpm=60_000, otpm=6000, clock=clock) as s:  # 2 requests, 100 output/s
        a = ant(s)
        raw = a.messages.with_raw_response.create(
            model="claude-sonnet-4", max_tokens=50, messages=[{"role": "user", "content": Q}]
        )
        out = raw.parse().usage.output_tokens
        h = raw.headers
        assert h["anthropic-ratelimit-requests-limit"] == "120"
        assert h["anthropic-ratelimit-requests-remaining"] == "119"
        assert (
            int(h["anthropic-ratelimit-output-tokens-remaining"]) == 6000 - out
        )  # the actual output, charged
        assert h["anthropic-ratelimit-tokens-limit"] == "6000"  # the most restrictive token limit
        assert int(h["anthropic-ratelimit-input-tokens-remaining"]) == 60_000 - raw.parse().usage.input_tokens
        reset = datetime.fromisoformat(h["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
        assert reset.tzinfo is not None
        # output is estimated as max_tokens to admit: 200 needs the whole second's 100, and `out` is spent
        with pytest.raises(anthropic.RateLimitError, match="6000 output tokens per minute") as ei:
            msg(a, max_tokens=200)
        assert ei.value.body["error"]["type"] == "rate_limit_error"
        assert ei.value.response.headers["retry-after"] == "1"
        assert msg(a, max_tokens=50).content[0].text
        with pytest.raises(anthropic.RateLimitError, match="rate limit of 120 requests per minute"):
            msg(a, max_tokens=10)
        clock.t += 1
        assert (
            msg(a, max_tokens=200).content[0].text
        )  # a full bucket admits one request over a second's worth
        assert s.bill("anthropic", "claude-sonnet-4")["rate_limited"] == 2


def test_limits_hold_against_a_real_burst():
    """Real clock, concurrent requests: a 600 RPM limit lets 10 through at once, then 10 per second."""
    with FakeLLMServer(rpm=600, latency=0.01) as s:
        client = openai.AsyncOpenAI(base_url=s.openai_url, api_key=KEY, max_retries=0)

        async def one() -> bool:
            try:
                await client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": Q}]
                )
                return True
            except openai.RateLimitError:
                return False

        async def burst() -> list[bool]:
            try:
                return await asyncio.gather(*(one() for _ in range(40)))
            finally:
                await client.close()

        t0 = time.monotonic()
        ok = sum(asyncio.run(burst()))
        elapsed = time.monotonic() - t0
        assert 10 <= ok <= 10 + math.ceil(10 * elapsed), (ok, elapsed)
        assert s.bill("openai", "gpt-4o-mini")["rate_limited"] == 40 - ok


def test_limits_can_change_over_http(srv):
    def post(path: str, payload: dict) -> int:
        req = urllib.request.Request(
            f"{srv.url}/_control/{path}", json.dumps(payload).encode(), {"content-type": "application/json"}
        )
        try:
            return urllib.request.urlopen(req).status
        except urllib.error.HTTPError as e:
            return e.code

    assert post("limits", {"rpm": 60}) == 200 and srv.stats()["limits"] == {"rpm": 60}
    chat(oai(srv))
    with pytest.raises(openai.RateLimitError):
        chat(oai(srv))
    assert post("limits", {"rpm": -1}) == 400
    assert post("reset", {}) == 200 and srv.stats()["bill"] == []


# -- the bill ------------------------------------------------------------------------------------
def test_bill_matches_the_usage_the_client_saw(srv):
    c, a = oai(srv), ant(srv)
    seen = {"input": 0, "output": 0, "reasoning": 0}
    for i in range(3):
        u = chat(c, "gpt-5-nano", content=f"{Q} {i}", reasoning_effort="low").usage
        seen["input"] += u.prompt_tokens
        seen["output"] += u.completion_tokens
        seen["reasoning"] += u.completion_tokens_details.reasoning_tokens
    b = srv.bill("openai", "gpt-5-nano")
    assert (b["requests"], b["input_tokens"], b["output_tokens"], b["reasoning_tokens"]) == (
        3,
        seen["input"],
        seen["output"],
        seen["reasoning"],
    )
    srv.set_faults(FaultPlan(queue=["500"]))
    with pytest.raises(anthropic.InternalServerError):
        msg(a)
    u = msg(a).usage
    b = srv.bill("anthropic", "claude-sonnet-4")
    assert (b["requests"], b["failed"], b["input_tokens"], b["output_tokens"]) == (
        1,
        1,
        u.input_tokens,
        u.output_tokens,
    )
    rows = srv.stats()["bill"]
    assert {(r["provider"], r["model"], r["mode"]) for r in rows} == {
        ("openai", "gpt-5-nano", "online"),
        ("anthropic", "claude-sonnet-4", "online"),
    }


def test_batch_lines_are_validated_and_billed(srv):
    srv.batch_polls = 0
    c = oai(srv)
    lines = [
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": Q}]},
        },
        {
            "custom_id": "b",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-5", "messages": [{"role": "user", "content": Q}], "temperature": 0},
        },
    ]
    f = c.files.create(
        file=("in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()), purpose="batch"
    )
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.status == "completed" and b.request_counts.completed == 1 and b.request_counts.failed == 1
    err = json.loads(c.files.content(b.error_file_id).text)
    assert err["custom_id"] == "b" and err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["code"] == "unsupported_value"
    assert err["response"]["body"]["error"]["param"] == "temperature"
    assert srv.bill("openai", "gpt-4o-mini", "batch")["requests"] == 1
    assert srv.bill("openai", "gpt-5", "batch")["failed"] == 1

    a = ant(srv)
    params = {"max_tokens": 100, "messages": [{"role": "user", "content": Q}]}
    mb = a.messages.batches.create(
        requests=[
            {"custom_id": "ok", "params": {"model": "claude-3-5-haiku", **params}},
            {"custom_id": "gone", "params": {"model": "claude-2", **params}},
        ]
    )
    assert mb.processing_status == "ended"
    res = {r.custom_id: r.result for r in a.messages.batches.results(mb.id)}
    assert res["ok"].type == "succeeded" and res["ok"].message.usage.output_tokens > 0
    assert res["gone"].type == "errored" and res["gone"].error.error.type == "not_found_error"
    assert srv.bill("anthropic", "claude-3-5-haiku", "batch")["requests"] == 1


# -- faults and answers ----------------------------------------------------------------------------
def test_surrogate_fault_sends_half_an_emoji(srv):
    srv.keep_bodies = True
    srv.set_faults(FaultPlan(queue=["surrogate", "surrogate"]))
    text = chat(oai(srv)).choices[0].message.content
    assert "\ud83d" in text
    with pytest.raises(UnicodeEncodeError):
        text.encode("utf-8")
    assert msg(ant(srv)).content[0].text.count("\ud83d") == 1
    assert srv.stats()["outcomes"]["surrogate"] == 2


def test_surrogate_on_the_wire_is_a_json_escape(srv):
    srv.set_faults(FaultPlan(queue=["surrogate"]))
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": Q}]}).encode()
    req = urllib.request.Request(
        f"{srv.openai_url}/chat/completions", body, {"content-type": "application/json"}
    )
    raw = urllib.request.urlopen(req).read()
    assert b"\\ud83d" in raw and b"\\ude" not in raw  # the high half only


def test_hint_names_the_label(srv):
    text = chat(oai(srv), content=f"{Q}\nThe correct answer is (b) run.").choices[0].message.content
    assert text.endswith("So the answer is (b) run.")
    assert chat(oai(srv)).choices[0].message.content.endswith("So the answer is (a) red.")


def test_go_durations():
    assert [go_duration(s) for s in (0, 0.02, 0.0015, 1, 1.5, 360, 3725.5)] == [
        "0s",
        "20ms",
        "1.5ms",
        "1s",
        "1.5s",
        "6m0s",
        "1h2m5.5s",
    ]


def test_cli_serves_with_limits_and_lenient_models():
    script = Path(__file__).with_name("fake_llm_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--latency", "0", "--rpm", "1", "--lenient", "--no-record"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        c = openai.OpenAI(base_url=line.split()[1] + "/v1", api_key=KEY, max_retries=0, timeout=5)
        assert chat(c, "not-a-real-model").choices[0].message.content  # lenient
        with pytest.raises(openai.RateLimitError):
            chat(c, "not-a-real-model")
    finally:
        proc.terminate()
        proc.wait(10)


# -- the Responses API and service tiers -------------------------------------------------------------
def resp(client: openai.OpenAI, model: str = "gpt-5-mini", content: str = Q, **kw):
    return client.responses.create(model=model, input=[{"role": "user", "content": content}], **kw)


def test_responses_answer_in_the_documented_shape(srv):
    c = oai(srv)
    r = resp(c, instructions="Answer briefly.", reasoning={"effort": "low", "summary": "detailed"})
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output_text.endswith("So the answer is (a) red.") and r.service_tier == "default"
    (summary,) = r.output[0].summary
    assert summary.type == "summary_text" and "ruled out" in summary.text  # detailed says more
    u = r.usage
    assert 192 <= u.output_tokens_details.reasoning_tokens <= 320
    assert u.output_tokens == u.output_tokens_details.reasoning_tokens + count_tokens(r.output_text)
    assert u.input_tokens > count_tokens(Q) and u.input_tokens_details.cached_tokens == 0
    # no summary unless asked; a chat model has no reasoning item at all
    assert resp(c).output[0].summary == []
    assert [o.type for o in resp(c, "gpt-4o-mini", temperature=0.3).output] == ["message"]
    # the same prompt through both APIs costs the same input tokens
    assert resp(c, "gpt-4o-mini").usage.input_tokens == chat(c).usage.prompt_tokens


def test_responses_max_output_tokens_gives_incomplete(srv):
    c = oai(srv)
    cut = resp(c, "gpt-4.1-nano", max_output_tokens=16)  # the answer is longer than 16 tokens
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 16 and cut.output[-1].type == "message" and cut.output_text
    assert cut.output[-1].status == "incomplete" and len(cut.output_text) <= 64
    starved = resp(c, reasoning={"effort": "high", "summary": "auto"}, max_output_tokens=100)
    assert starved.status == "incomplete" and [o.type for o in starved.output] == ["reasoning"]
    assert starved.output_text == "" and starved.usage.output_tokens_details.reasoning_tokens == 100


@pytest.mark.parametrize(
    "model, kw, status, code, param, message",
    [
        ("gpt-5", {"temperature": 0.2}, 400, None, "temperature",
         "Unsupported parameter: 'temperature' is not supported with this model."),
        ("o3", {"top_p": 0.9}, 400, None, "top_p",
         "Unsupported parameter: 'top_p' is not supported with this model."),
        ("gpt-9", {}, 400, "model_not_found", "model", "The requested model 'gpt-9' does not exist."),
        ("gpt-5-mini", {"max_output_tokens": 8}, 400, "integer_below_min_value", "max_output_tokens",
         "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 8 instead."),
        ("gpt-5-mini", {"extra_body": {"seed": 1}}, 400, "unknown_parameter", "seed", "Unknown parameter: 'seed'."),
        ("gpt-4o-mini", {"reasoning": {"effort": "low"}}, 400, "unsupported_parameter", "reasoning.effort",
         "Unsupported parameter: 'reasoning.effort' is not supported with this model."),
        ("o4-mini", {"reasoning": {"effort": "minimal"}}, 400, "unsupported_value", "reasoning.effort",
         "Unsupported value: 'reasoning.effort' does not support 'minimal' with this model. "
         "Supported values are: 'low', 'medium', and 'high'."),
        ("gpt-5-mini", {"reasoning": {"summary": "long"}}, 400, "invalid_value", "reasoning.summary",
         "Invalid value: \"long\". Supported values are: 'auto', 'concise', and 'detailed'."),
        ("gpt-5-mini", {"service_tier": "turbo"}, 400, "invalid_value", "service_tier",
         "Invalid value: \"turbo\". Supported values are: 'auto', 'default', 'flex', 'priority', and 'scale'."),
        ("gpt-5-mini",
         {"text": {"format": {"type": "json_schema", "name": "out", "strict": True,
                              "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}},
         400, "invalid_json_schema", "text.format.schema",
         "Invalid schema for response_format 'out': In context=(), 'additionalProperties' is required to be "
         "supplied and to be false."),
        ("gpt-5-mini",
         {"text": {"format": {"type": "json_schema", "name": "out", "strict": True,
                              "schema": {"type": "object", "properties": {"a": {"type": "string"}},
                                         "additionalProperties": False}}}},
         400, "invalid_json_schema", "text.format.schema",
         "Invalid schema for response_format 'out': In context=(), 'required' is required to be supplied and "
         "to be an array including every key in properties. Missing 'a'."),
    ],
)  # fmt: skip
def test_responses_refuses_what_the_api_refuses(srv, model, kw, status, code, param, message):
    with pytest.raises(openai.APIStatusError) as ei:
        resp(oai(srv), model, **kw)
    err = ei.value.body
    assert ei.value.status_code == status and (err["code"], err["param"], err["message"]) == (
        code,
        param,
        message,
    )
    assert srv.count == 1 and srv.bill("openai", model)["requests"] == 0


def test_responses_structured_output_and_string_input(srv):
    schema = {
        "type": "object",
        "properties": {"rationale": {"type": "string"}, "label": {"type": "string"}},
        "required": ["rationale", "label"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "name": "teacher_output", "schema": schema, "strict": True}
    r = oai(srv).responses.create(model="gpt-5-nano", input=Q, text={"format": fmt})
    assert json.loads(r.output_text)["label"] == "(a) red" and r.text.format.name == "teacher_output"


def test_service_tiers_are_reported_billed_and_flex_can_be_busy(srv):
    c = oai(srv)
    r = resp(c, "gpt-5-mini", service_tier="flex")
    assert r.service_tier == "flex"
    assert resp(c, "gpt-5-mini", service_tier="priority").service_tier == "priority"
    assert resp(c, "gpt-5-mini", service_tier="auto").service_tier == "default"
    assert chat(c, "gpt-4o-mini", service_tier="flex").service_tier == "default"  # no flex for it
    assert chat(c, "o4-mini", service_tier="flex").service_tier == "flex"  # chat takes tiers too
    flex = srv.bill("openai", "gpt-5-mini", tier="flex")
    u = r.usage
    assert flex["requests"] == 1 and flex["output_tokens"] == u.output_tokens
    full = (u.input_tokens * 0.25 + u.output_tokens * 2.00) / 1e6
    assert flex["usd"] == pytest.approx(full / 2)
    prio = srv.bill("openai", "gpt-5-mini", tier="priority")
    assert prio["usd"] > 1.7 * srv.bill("openai", "gpt-5-mini", tier="default")["usd"] * 0.5
    assert srv.bill("openai", "gpt-5-mini")["requests"] == 3  # all tiers added up
    assert {(b["model"], b["tier"]) for b in srv.stats()["bill"]} >= {
        ("gpt-5-mini", "flex"),
        ("o4-mini", "flex"),
    }
    # a busy flex tier turns a stable share of prompts away with 429 Resource Unavailable, unbilled
    srv.reset()
    srv.flex_busy, srv.flex_busy_tries = 1.0, 2
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as ei:
            resp(c, "gpt-5-mini", content="busy?", service_tier="flex")
        assert (
            ei.value.body["code"] == "resource_unavailable" and "retry-after" not in ei.value.response.headers
        )
    assert resp(c, "gpt-5-mini", content="busy?", service_tier="flex").status == "completed"
    assert resp(c, "gpt-5-mini", content="other", service_tier="default").status == "completed"
    b = srv.bill("openai", "gpt-5-mini", tier="flex")
    assert (b["requests"], b["rate_limited"]) == (1, 2)


def test_batches_of_responses_lines(srv):
    srv.batch_polls = 0
    c = oai(srv)
    body = {"model": "gpt-5-mini", "input": Q, "reasoning": {"summary": "auto"}, "max_output_tokens": 5000}
    lines = [
        {"custom_id": "a", "method": "POST", "url": "/v1/responses", "body": body},
        {"custom_id": "b", "method": "POST", "url": "/v1/responses", "body": {**body, "temperature": 0.5}},
    ]
    f = c.files.create(
        file=("in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()), purpose="batch"
    )
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/responses", completion_window="24h")
    assert b.status == "completed" and (b.request_counts.completed, b.request_counts.failed) == (1, 1)
    out = json.loads(c.files.content(b.output_file_id).text)
    assert out["custom_id"] == "a" and out["response"]["body"]["object"] == "response"
    assert out["response"]["body"]["output"][0]["summary"][0]["type"] == "summary_text"
    err = json.loads(c.files.content(b.error_file_id).text)
    assert (
        err["response"]["status_code"] == 400 and err["response"]["body"]["error"]["param"] == "temperature"
    )
    bill = srv.bill("openai", "gpt-5-mini", "batch")
    assert bill["requests"] == 1 and bill["failed"] == 1
    u = out["response"]["body"]["usage"]
    assert bill["usd"] == pytest.approx((u["input_tokens"] * 0.25 + u["output_tokens"] * 2.0) / 1e6 / 2)
    # a line whose url is not the batch's endpoint fails the batch's validation
    f = c.files.create(file=("in.jsonl", json.dumps(lines[0]).encode()), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.status == "failed" and b.errors.data[0].code == "invalid_url" and b.errors.data[0].line == 1
    with pytest.raises(openai.BadRequestError):
        c.batches.create(input_file_id=f.id, endpoint="/v1/embeddingz", completion_window="24h")  # type: ignore[arg-type]
