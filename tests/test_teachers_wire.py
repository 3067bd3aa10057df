"""What the provider modules read and write on the wire: rate-limit headers, response bodies (online and
batch through one reader), the status classifier, and where Anthropic's cache_control goes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from sbs_data.teachers import anthropic as anthropic_mod
from sbs_data.teachers import openai as openai_mod
from sbs_data.teachers.anthropic import AnthropicBatchAPI, AnthropicTeacher, read_message
from sbs_data.teachers.base import (
    AuthError,
    ContextLength,
    Permanent,
    RateLimited,
    RateLimits,
    Request,
    Transient,
    classify_status,
    parse_duration,
    parse_reset_time,
    read_limits,
)
from sbs_data.teachers.models import facts_for
from sbs_data.teachers.openai import OpenAIBatchAPI, OpenAITeacher, read_body


# -- rate-limit headers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, seconds",
    [
        ("20ms", 0.02),
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("59m59.999s", 3599.999),
        ("2", 2.0),
        ("1.5", 1.5),
        ("250us", 0.00025),
    ],
)
def test_openai_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "m1s", "1s2", "-1s", "1" * 100 + "s", None])
def test_bad_durations_are_none(text):
    assert parse_duration(text) is None


def test_duration_parser_is_linear_on_hostile_input():
    t0 = time.perf_counter()
    assert parse_duration("1s" * 30 + "x") is None
    assert parse_duration("9" * 10_000 + "s") is None  # over the length bound
    assert time.perf_counter() - t0 < 0.05


def test_rfc3339_resets():
    now = datetime(2025, 8, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()
    assert parse_reset_time("2025-08-01T12:00:30Z", now) == pytest.approx(30.0)
    assert parse_reset_time("2025-08-01T12:00:00.250Z", now) == pytest.approx(0.25)
    assert parse_reset_time("2025-08-01T14:01:00+02:00", now) == pytest.approx(60.0)
    assert parse_reset_time("2025-08-01T11:59:00Z", now) == 0.0  # already past
    assert parse_reset_time("tomorrow", now) is None and parse_reset_time("", now) is None
    soon = (datetime.now(timezone.utc) + timedelta(seconds=10)).isoformat().replace("+00:00", "Z")
    assert 8 < parse_reset_time(soon) <= 10


def test_openai_limit_headers():
    headers = {
        "X-RateLimit-Limit-Requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-limit-tokens": "2000000",
        "x-ratelimit-remaining-tokens": "1999000",
        "x-ratelimit-reset-tokens": "6m0s",
        "content-type": "application/json",
    }
    assert read_limits(headers, openai_mod.LIMIT_HEADERS) == RateLimits(
        requests_limit=5000,
        requests_remaining=4999,
        requests_reset=pytest.approx(0.012),
        tokens_limit=2_000_000,
        tokens_remaining=1_999_000,
        tokens_reset=360.0,
    )
    assert read_limits({"content-type": "application/json"}, openai_mod.LIMIT_HEADERS) is None
    assert read_limits(None, openai_mod.LIMIT_HEADERS) is None
    # a 429's retry-after (and OpenAI's retry-after-ms, which is finer) rides along
    got = read_limits({"retry-after": "3", "retry-after-ms": "2500"}, openai_mod.LIMIT_HEADERS)
    assert got == RateLimits(retry_after=2.5)
    # unreadable values are left out, not guessed
    got = read_limits(
        {"x-ratelimit-limit-requests": "lots", "x-ratelimit-reset-tokens": "1s"}, openai_mod.LIMIT_HEADERS
    )
    assert got == RateLimits(tokens_reset=1.0)


def test_anthropic_limit_headers():
    now = datetime.now(timezone.utc)
    at = (now + timedelta(seconds=20)).isoformat()
    headers = {"retry-after": "7"}
    for what in ("requests", "tokens", "input-tokens", "output-tokens"):
        headers |= {
            f"anthropic-ratelimit-{what}-limit": "1000",
            f"anthropic-ratelimit-{what}-remaining": "900",
            f"anthropic-ratelimit-{what}-reset": at,
        }
    lim = read_limits(headers, anthropic_mod.LIMIT_HEADERS)
    for what in ("requests", "tokens", "input_tokens", "output_tokens"):
        assert getattr(lim, f"{what}_limit") == 1000 and getattr(lim, f"{what}_remaining") == 900
        assert 18 < getattr(lim, f"{what}_reset") <= 20
    assert lim.retry_after == 7.0


# -- response bodies ------------------------------------------------------------------------------
OPENAI_BODY = {
    "id": "chatcmpl-1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "So the answer is (a)."},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 2048,
        "completion_tokens": 900,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 832},
    },
}

ANTHROPIC_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "content": [{"type": "text", "text": "So the answer is "}, {"type": "text", "text": "(b)."}],
    "stop_reason": "max_tokens",
    "usage": {
        "input_tokens": 50,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 0,
        "output_tokens": 120,
    },
}


def test_openai_reader_online_and_batch_agree():
    online = read_body(OPENAI_BODY)
    assert (online.text, online.finish_reason, online.request_id) == (
        "So the answer is (a).",
        "stop",
        "chatcmpl-1",
    )
    assert (online.prompt_tokens, online.cached_tokens) == (2048, 1920)
    assert (online.completion_tokens, online.reasoning_tokens) == (900, 832)
    chat = OpenAITeacher("gpt-5-mini", api_key="k")
    chat.use_api("chat")  # a Chat Completions body (gpt-5-mini's default is the Responses API)
    api = OpenAIBatchAPI(chat)
    line = {"custom_id": "K", "response": {"status_code": 200, "request_id": "req_9", "body": OPENAI_BODY}}
    r = api.result(line)
    assert r.key == "K" and r.kind is None and r.response == online
    # old bodies without the details, and a body without an id
    plain = read_body(
        {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 3}}, request_id="r"
    )
    assert plain.cached_tokens is None and plain.reasoning_tokens is None and plain.request_id == "r"
    with pytest.raises((KeyError, IndexError, TypeError)):
        read_body({"choices": []})
    bad = api.result({"custom_id": "K", "response": {"status_code": 200, "body": {"choices": "?"}}})
    assert bad.kind == "transient" and bad.response is None


def test_openai_batch_error_lines_use_the_one_classifier():
    api = OpenAIBatchAPI(OpenAITeacher("gpt-5", api_key="sk-secret-123456789"))
    err = {
        "error": {
            "message": "Unsupported value: 'temperature' does not support 0.2 with this model.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "unsupported_value",
        }
    }
    r = api.result({"custom_id": "K", "response": {"status_code": 400, "body": err}})
    assert (r.kind, r.status, r.code, r.param) == ("permanent", 400, "unsupported_value", "temperature")
    ctx = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens",
            "code": "context_length_exceeded",
        }
    }
    assert (
        api.result({"custom_id": "K", "response": {"status_code": 400, "body": ctx}}).kind == "context_length"
    )
    assert api.result({"custom_id": "K", "response": {"status_code": 429, "body": {}}}).kind == "rate_limited"
    assert (
        api.result({"custom_id": "K", "error": {"code": "batch_expired", "message": "x"}}).kind == "expired"
    )


def test_anthropic_reader_online_and_batch_agree():
    online = read_message(ANTHROPIC_MESSAGE)
    assert online.text == "So the answer is (b)." and online.finish_reason == "length"
    # prompt_tokens counts all input: uncached + read from the cache + written to it
    assert (online.prompt_tokens, online.cached_tokens, online.cache_write_tokens) == (2050, 2000, 0)
    assert online.completion_tokens == 120 and online.reasoning_tokens is None
    api = AnthropicBatchAPI(AnthropicTeacher("claude-sonnet-4", api_key="k"))
    r = api.result({"custom_id": "K", "result": {"type": "succeeded", "message": ANTHROPIC_MESSAGE}})
    assert r.response == online
    errored = {
        "custom_id": "K",
        "result": {
            "type": "errored",
            "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
        },
    }
    r = api.result(errored)
    assert (r.kind, r.status, r.code) == ("rate_limited", 529, "overloaded_error")
    too_long = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens"},
    }
    assert (
        api.result({"custom_id": "K", "result": {"type": "errored", "error": too_long}}).kind
        == "context_length"
    )
    assert api.result({"custom_id": "K", "result": {"type": "expired"}}).kind == "expired"
    assert api.result({"custom_id": "K", "result": {"type": "what"}}).kind == "transient"
    uncached = read_message({"content": [], "usage": {"input_tokens": 7, "output_tokens": 1}})
    assert uncached.prompt_tokens == 7 and uncached.cached_tokens is None and uncached.text == ""


# -- one status classifier ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "status, message, code, cls",
    [
        (429, "", "rate_limit_exceeded", RateLimited),
        (529, "Overloaded", "overloaded_error", RateLimited),
        (500, "", None, Transient),
        (503, "", None, Transient),
        (408, "", None, Transient),
        (409, "", None, Transient),
        (401, "bad key", "invalid_api_key", AuthError),
        (403, "", "permission_error", AuthError),
        (400, "maximum context length is 8192 tokens", None, ContextLength),
        (400, "whatever", "context_length_exceeded", ContextLength),
        (400, "prompt is too long: 200001 tokens > 200000 maximum", "invalid_request_error", ContextLength),
        (413, "Request exceeds the maximum size", "request_too_large", Permanent),
        (400, "Unsupported parameter: 'stop'", "unsupported_parameter", Permanent),
        (404, "The model `gpt-9` does not exist", "model_not_found", Permanent),
        (422, "", None, Permanent),
    ],
)
def test_classify_status(status, message, code, cls):
    assert classify_status(status, message, code) is cls


# -- Anthropic prompt caching: where cache_control goes -------------------------------------------
SHOTS = "Q: an example question\nA: an example answer. So the answer is (a).\n\n" * 120  # ~2,000 tokens
QUESTION = "Q: the real question\nAnswer Choices:\n(a) red\n(b) blue\nA:"


def _req(prefix_chars: int, system: str | None = "Answer briefly.", shots: str = SHOTS) -> Request:
    return Request(
        ({"role": "user", "content": shots + QUESTION},),
        system,
        {"max_tokens": 50},
        prefix_chars=prefix_chars,
    )


def _anthropic(model: str = "claude-sonnet-4", prompt_cache: bool = True) -> AnthropicTeacher:
    t = AnthropicTeacher(model, api_key="k", prompt_cache=prompt_cache)
    t.facts = facts_for("anthropic", model)
    return t


def test_cache_control_marks_the_shared_prefix():
    t = _anthropic()
    kw = t.build_kwargs(_req(len(SHOTS)))
    (msg,) = kw["messages"]
    assert msg["role"] == "user"
    assert msg["content"] == [
        {"type": "text", "text": SHOTS, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": QUESTION},
    ]
    assert kw["system"] == "Answer briefly."  # before the marker: cached with it
    # every row's prefix block is byte-identical, whatever its question
    other = Request(
        ({"role": "user", "content": SHOTS + "Q: another\nA:"},), "Answer briefly.", prefix_chars=len(SHOTS)
    )
    assert t.build_kwargs(other)["messages"][0]["content"][0] == msg["content"][0]


def test_no_cache_control_when_off_short_or_absent():
    plain = [{"role": "user", "content": SHOTS + QUESTION}]
    assert (
        _anthropic(prompt_cache=False).build_kwargs(_req(len(SHOTS)))["messages"] == plain
    )  # --no-prompt-cache
    assert _anthropic().build_kwargs(_req(0))["messages"] == plain  # no shared block declared
    short = "Q: one shot\nA: (a)\n\n"
    assert _anthropic().build_kwargs(_req(len(short), shots=short))["messages"] == [
        {"role": "user", "content": short + QUESTION}
    ]
    # ~2,000 tokens reach Sonnet's 1,024 minimum but not Haiku 3.5's 2,048 nor Haiku 4.5's 4,096
    assert isinstance(
        _anthropic("claude-sonnet-4").build_kwargs(_req(len(SHOTS)))["messages"][0]["content"], list
    )
    for haiku in ("claude-3-5-haiku", "claude-haiku-4-5"):
        assert _anthropic(haiku).build_kwargs(_req(len(SHOTS)))["messages"] == plain


def test_cache_control_counts_the_system_prompt_toward_the_minimum():
    half = SHOTS[: len(SHOTS) // 3]  # ~650 tokens: short alone
    t = _anthropic()
    assert isinstance(t.build_kwargs(_req(len(half), system=None, shots=half))["messages"][0]["content"], str)
    long_system = "Follow these rules carefully. " * 80  # ~600 tokens
    kw = t.build_kwargs(_req(len(half), system=long_system, shots=half))
    assert kw["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    # a long system prompt with no few-shot block is cached on its own
    kw = t.build_kwargs(_req(0, system=long_system * 3, shots=""))
    assert kw["system"] == [{"type": "text", "text": long_system * 3, "cache_control": {"type": "ephemeral"}}]


def test_cache_control_never_sends_a_blank_block():
    t = _anthropic()
    kw = t.build_kwargs(Request(({"role": "user", "content": SHOTS + "\n"},), None, prefix_chars=len(SHOTS)))
    assert kw["messages"][0]["content"] == [
        {"type": "text", "text": SHOTS + "\n", "cache_control": {"type": "ephemeral"}}
    ]
    # a prefix_chars past the end is ignored rather than trusted
    kw = t.build_kwargs(Request(({"role": "user", "content": "short"},), None, prefix_chars=10_000))
    assert kw["messages"][0]["content"] == "short"


def test_anthropic_default_max_tokens_comes_from_the_facts():
    t = _anthropic()
    assert (
        t.build_kwargs(Request(({"role": "user", "content": "hi"},)))["max_tokens"]
        == t.facts.default_max_tokens
    )
    assert t.build_kwargs(_req(0))["max_tokens"] == 50


def test_openai_body_adds_nothing_and_passes_reasoning_effort():
    t = OpenAITeacher("gpt-5-mini", api_key="k")
    t.use_api("chat")
    kw = t.build_kwargs(
        Request(
            ({"role": "user", "content": SHOTS + QUESTION},),
            "sys",
            {"reasoning_effort": "low", "max_tokens": 4000},
            prefix_chars=len(SHOTS),
        )
    )
    assert kw == {
        "model": "gpt-5-mini",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": SHOTS + QUESTION}],
        "reasoning_effort": "low",
        "max_completion_tokens": 4000,
    }


# -- the Responses API ------------------------------------------------------------------------------
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "string"}},
    "required": ["a"],
    "additionalProperties": False,
}


def test_reasoning_models_speak_the_responses_api_and_chat_models_chat():
    from sbs_data.teachers.compat import CompatTeacher

    assert OpenAITeacher("gpt-5-mini", api_key="k").endpoint == "responses"
    assert OpenAITeacher("o4-mini-2025-04-16", api_key="k").endpoint == "responses"
    assert OpenAITeacher("gpt-4o-mini", api_key="k").endpoint == "chat.completions"
    t = OpenAITeacher("gpt-4o-mini", api_key="k")
    t.use_api("responses")
    assert (t.api, t.endpoint) == ("responses", "responses")
    t.endpoint = "chat.completions"
    assert t.api == "chat"
    c = CompatTeacher("gpt-5-mini", base_urls=["http://a/v1"])
    c.facts = facts_for("openai", "gpt-5-mini")  # even a reasoning model: compat servers speak chat
    assert c.endpoint == "chat.completions"
    assert OpenAIBatchAPI(OpenAITeacher("gpt-5", api_key="k")).endpoint == "/v1/responses"
    assert OpenAIBatchAPI(OpenAITeacher("gpt-4.1", api_key="k")).endpoint == "/v1/chat/completions"


def test_responses_body_maps_every_param():
    t = OpenAITeacher("gpt-5-mini", api_key="k")
    t.use_service_tier("flex")
    req = Request(
        ({"role": "user", "content": SHOTS + QUESTION},),
        "sys",
        {"reasoning_effort": "low", "reasoning_summary": "auto", "max_tokens": 4000, "n": 1, "top_p": None},
        SCHEMA,
        prefix_chars=len(SHOTS),
    )
    assert t.build_kwargs(req) == {
        "model": "gpt-5-mini",
        "instructions": "sys",
        "input": [{"role": "user", "content": SHOTS + QUESTION}],
        "max_output_tokens": 4000,
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {
            "format": {"type": "json_schema", "name": "teacher_output", "schema": SCHEMA, "strict": True}
        },
        "service_tier": "flex",
        "store": False,
    }
    line = OpenAIBatchAPI(t).line("K", req)
    assert line["url"] == "/v1/responses" and line["body"] == t.build_kwargs(req)
    # chat carries the tier too
    c = OpenAITeacher("gpt-4o-mini", api_key="k")
    c.use_service_tier("priority")
    assert c.build_kwargs(Request(({"role": "user", "content": "hi"},)))["service_tier"] == "priority"


RESPONSES_BODY = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "service_tier": "flex",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "First."},
                                                        {"type": "summary_text", "text": "Then."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "So the answer "},
                                                             {"type": "output_text", "text": "is (a)."}]},
    ],
    "usage": {"input_tokens": 2048, "input_tokens_details": {"cached_tokens": 1920}, "output_tokens": 900,
              "output_tokens_details": {"reasoning_tokens": 832}, "total_tokens": 2948},
}  # fmt: skip


def test_responses_reader_online_and_batch_agree():
    r = openai_mod.read_response(RESPONSES_BODY)
    assert (r.text, r.finish_reason, r.request_id, r.service_tier) == (
        "So the answer is (a).",
        "stop",
        "resp_1",
        "flex",
    )
    assert (r.prompt_tokens, r.cached_tokens, r.completion_tokens, r.reasoning_tokens) == (
        2048,
        1920,
        900,
        832,
    )
    assert r.reasoning_summary == "First.\n\nThen."
    api = OpenAIBatchAPI(OpenAITeacher("gpt-5-mini", api_key="k"))
    res = api.result({"custom_id": "K", "response": {"status_code": 200, "body": RESPONSES_BODY}})
    assert res.kind is None and res.response == r
    # incomplete: the length finish reason (no message at all when reasoning used the budget)
    cut = {**RESPONSES_BODY, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert openai_mod.read_response(cut).finish_reason == "length"
    starved = {**cut, "output": RESPONSES_BODY["output"][:1]}
    assert openai_mod.read_response(starved).text == ""
    filtered = {**cut, "incomplete_details": {"reason": "content_filter"}}
    assert openai_mod.read_response(filtered).finish_reason == "content_filter"
    refusal = {
        **RESPONSES_BODY,
        "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}],
    }
    assert openai_mod.read_response(refusal).text is None
    # a failed response is a classified error; a body of another shape is malformed
    failed = {**RESPONSES_BODY, "status": "failed", "error": {"code": "server_error", "message": "oops"}}
    with pytest.raises(Transient, match="server_error"):
        openai_mod.read_response(failed)
    with pytest.raises(RateLimited):
        openai_mod.read_response({**failed, "error": {"code": "rate_limit_exceeded", "message": "x"}})
    bad = api.result({"custom_id": "K", "response": {"status_code": 200, "body": failed}})
    assert bad.kind == "transient" and "server_error" in bad.error
    for body in ({**RESPONSES_BODY, "status": "queued"}, {"status": "completed"}, {"output": []}):
        with pytest.raises((KeyError, TypeError, ValueError)):
            openai_mod.read_response(body)
    # chat answers report their tier too
    assert read_body({**OPENAI_BODY, "service_tier": "priority"}).service_tier == "priority"


def test_resource_unavailable_is_a_rate_limit():
    assert classify_status(429, "Resource Unavailable", "resource_unavailable") is RateLimited
    assert classify_status(503, "Resource unavailable, try again later") is RateLimited
    assert classify_status(503, "upstream failed") is Transient
