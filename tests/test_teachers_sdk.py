"""The OpenAI, Anthropic and OpenAI-compatible adapters, through the real SDKs against the loopback server."""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeLLMServer, FaultPlan
from generate_helpers import FAKE_KEY

from sbs_data.teachers.anthropic import AnthropicTeacher
from sbs_data.teachers.base import (
    AuthError,
    ContextLength,
    Permanent,
    RateLimited,
    Request,
    Transient,
)
from sbs_data.teachers.compat import CompatTeacher
from sbs_data.teachers.openai import OpenAITeacher

REQ = Request(
    ({"role": "user", "content": "Q: pick one\nAnswer Choices:\n(a) red\n(b) blue\nA:"},),
    system="be brief",
    params={"temperature": 0.3, "top_p": 0.9, "max_tokens": 33, "seed": 7, "stop": ["\n\nQ:"]},
)


def _teachers(srv):
    return [
        OpenAITeacher("gpt-4o-mini", base_url=srv.openai_url, api_key=FAKE_KEY, timeout=0.5),
        AnthropicTeacher("claude-3-5-haiku", base_url=srv.anthropic_url, api_key=FAKE_KEY, timeout=0.5),
    ]


async def _call(t, req=REQ):
    try:
        return await t.complete(req)
    finally:
        await t.aclose()


@pytest.mark.parametrize(
    "fault, cls, retry_after",
    [
        ("429", RateLimited, None),
        ("429:1.5", RateLimited, 1.5),
        ("500", Transient, None),
        ("503:2", Transient, 2.0),
        ("drop", Transient, None),
        ("malformed", Transient, None),
        ("slow:2", Transient, None),  # past the 0.5 s client timeout
        ("400", Permanent, None),
        ("401", AuthError, None),
        ("403", AuthError, None),
        ("context", ContextLength, None),
    ],
)
def test_faults_are_classified(server, fault, cls, retry_after):
    for t in _teachers(server):
        server.set_faults(FaultPlan(queue=[fault]))
        with pytest.raises(cls) as ei:
            asyncio.run(_call(t))
        assert type(ei.value) is cls or (cls is Permanent and type(ei.value) is Permanent), (
            t.provider,
            ei.value,
        )
        assert ei.value.retryable == (cls in (RateLimited, Transient))
        assert ei.value.retry_after == retry_after
        assert FAKE_KEY not in str(ei.value)


def test_openai_request_and_response(server):
    server.keep_bodies = True
    t = OpenAITeacher("gpt-4o-mini", base_url=server.openai_url, api_key=FAKE_KEY)
    r = asyncio.run(_call(t, Request(REQ.messages, REQ.system, REQ.params, json_schema={"type": "object"})))
    body = server.bodies[-1]["body"]
    assert server.bodies[-1]["key"] == FAKE_KEY
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["max_completion_tokens"] == 33 and "max_tokens" not in body
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (0.3, 0.9, 7, ["\n\nQ:"])
    assert body["response_format"]["type"] == "json_schema"
    assert r.finish_reason == "stop" and r.prompt_tokens > 0 and r.completion_tokens > 0
    assert r.request_id.startswith("chatcmpl-") and '"label"' in r.text


def test_anthropic_request_and_response(server):
    server.keep_bodies = True
    t = AnthropicTeacher("claude-3-5-haiku", base_url=server.anthropic_url, api_key=FAKE_KEY)
    r = asyncio.run(_call(t))
    body = server.bodies[-1]["body"]
    assert body["system"] == "be brief" and body["max_tokens"] == 33
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.3, 0.9, ["\n\nQ:"])
    assert "seed" not in body
    assert r.text.endswith("So the answer is (a) red.") and r.finish_reason == "stop"
    assert r.request_id.startswith("msg_") and r.prompt_tokens > 0


# Headers that differ between any two calls (or name the SDK method), not the request.
_VOLATILE = {"content-length", "x-stainless-retry-count", "x-stainless-read-timeout", "x-stainless-timeout"}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_adapter_sends_what_the_typed_sdk_method_sends(server, provider):
    """The adapters use the SDK's low-level `client.post` (for speed); the request on the wire must be the
    one the typed method (`chat.completions.create` / `messages.create`) sends for the same arguments."""
    server.keep_bodies = True
    t = _teachers(server)[0 if provider == "openai" else 1]
    req = Request(REQ.messages, REQ.system, REQ.params, json_schema={"type": "object"})
    if provider == "anthropic":
        req = REQ

    async def both():
        try:
            ours = await t.complete(req)
            kw = t.build_kwargs(req)
            if provider == "openai":
                typed = await t.client().chat.completions.create(**kw)
                return ours, typed.choices[0].message.content, typed.id
            extra = {k: kw.pop(k) for k in ("temperature", "top_p")}  # not typed params of this SDK
            typed = await t.client().messages.create(**kw, extra_body=extra)
            return ours, typed.content[0].text, typed.id
        finally:
            await t.aclose()

    ours, typed_text, typed_id = asyncio.run(both())
    a, b = server.bodies[-2:]
    assert a["path"] == b["path"] and a["body"] == b["body"] and a["key"] == b["key"] == FAKE_KEY
    ha = {k.lower(): v for k, v in a["headers"].items() if k.lower() not in _VOLATILE}
    hb = {k.lower(): v for k, v in b["headers"].items() if k.lower() not in _VOLATILE}
    assert ha == hb
    assert ours.text == typed_text and ours.request_id[:4] == typed_id[:4]  # chat / msg_


def test_compat_spreads_load_over_replicas():
    with FakeLLMServer(latency=0.05) as a, FakeLLMServer(latency=0.05) as b:
        t = CompatTeacher("llama", base_urls=[a.openai_url, b.openai_url])
        a.keep_bodies = True

        async def many():
            try:
                return await asyncio.gather(*(t.complete(REQ) for _ in range(20)))
            finally:
                await t.aclose()

        out = asyncio.run(many())
        assert len(out) == 20 and all(r.text for r in out)
        assert a.count + b.count == 20 and a.count >= 5 and b.count >= 5
        assert a.bodies[0]["body"]["max_tokens"] == 33  # compat servers take max_tokens
        assert t.secrets() == () or "EMPTY" not in t.secrets()
