"""The teacher interface pieces: spec parsing, Retry-After parsing, secret hygiene."""

from __future__ import annotations

from email.utils import formatdate
from time import time

import pytest

from sbs_data import SbsError
from sbs_data.teachers.base import parse_retry_after, redact, safe_url, same_model, served_model
from sbs_data.teachers.registry import parse_spec


def test_parse_spec_picks_adapters(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    t = parse_spec("openai:gpt-4o-mini")
    assert (t.provider, t.model, t.endpoint, t.network) == ("openai", "gpt-4o-mini", "chat.completions", True)
    c = parse_spec("openai-compat:llama3", base_urls=["http://a:1/v1", "http://user:pw@b:2/v1"])
    assert c.provider == "openai-compat" and c.lineage()["base_url"] == ["http://a:1/v1", "http://b:2/v1"]
    a = parse_spec("anthropic:claude-3-5-haiku-latest")
    assert (a.provider, a.endpoint) == ("anthropic", "messages")
    h = parse_spec("hf:/tmp/some-model")
    assert (h.provider, h.network) == ("hf", False)


@pytest.mark.parametrize(
    "spec, base_urls, msg",
    [
        ("gpt-4o", [], "expected PROVIDER:MODEL"),
        ("openai:", [], "expected PROVIDER:MODEL"),
        ("mystery:model", [], "unknown teacher provider"),
        ("openai-compat:m", [], "needs --base-url"),
        ("openai:m", ["http://a/v1", "http://b/v1"], "openai-compat"),
        ("hf:x", ["http://a/v1"], "does not apply"),
        ("replay:x@1", [], "workspace"),
    ],
)
def test_parse_spec_errors(spec, base_urls, msg, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(SbsError, match=msg):
        parse_spec(spec, base_urls=base_urls)


def test_missing_key_is_a_clear_error_only_when_calling(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    t = parse_spec("openai:gpt-4o-mini")  # constructing is fine (--offline replays need no key)
    with pytest.raises(SbsError, match="OPENAI_API_KEY"):
        t.preflight()


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    later = parse_retry_after({"retry-after": formatdate(time() + 30, usegmt=True)})
    assert 25 < later <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def test_redact_and_safe_url():
    key = "sk-proj-abcdefghijklmnop"
    assert key not in redact(f"Incorrect API key provided: {key}.")
    assert "hunter2xyz" not in redact("auth hunter2xyz failed", ["hunter2xyz"])
    assert redact("nothing secret here") == "nothing secret here"
    assert safe_url("http://user:secret@host:8000/v1") == "http://host:8000/v1"


@pytest.mark.parametrize(
    "requested, served, same",
    [
        ("gpt-4o-mini", "gpt-4o-mini", True),
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", True),  # a dated snapshot of the model asked for
        ("gpt-4", "gpt-4-0613", True),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022", True),  # the alias, resolved
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", True),
        ("gpt-4o-mini", None, True),  # the body named none: nothing to compare
        ("gpt-4o-mini", "gpt-4o", False),  # another model
        ("gpt-4o", "gpt-4o-mini", False),  # a longer name is not a snapshot
        ("gpt-4o", "gpt-4o-mini-2024-07-18", False),
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18-extra", False),
        ("claude-3-5-haiku-latest", "claude-3-5-sonnet-20241022", False),
        ("gemini-1.5-flash", "gemini-1.5-flash-002", True),  # Gemini's stable version of the model
        ("gemini-2.5-flash", "gemini-2.5-flash-lite", False),
    ],
)
def test_same_model_accepts_only_the_name_or_a_dated_snapshot_of_it(requested, served, same):
    assert same_model(requested, served) is same


def test_served_model_is_read_capped_and_never_anything_but_text():
    assert served_model({"model": "gpt-4o"}) == "gpt-4o"
    assert served_model({"model": "x" * 10_000}) == "x" * 200
    assert served_model({"model": 7}) is None and served_model({"model": ""}) is None
    assert served_model({}) is None and served_model(None) is None
    assert served_model({"modelVersion": "gemini-2.5-flash"}, "modelVersion") == "gemini-2.5-flash"
    assert served_model({"modelVersion": "gemini-2.5-flash"}) is None  # Gemini's field is not `model`
