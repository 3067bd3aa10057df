"""`gemini:MODEL` end to end: the real google-genai SDK against the loopback stand-in (tests/fakes/gemini_api.py)
online and in Batch Mode; errors, rate limits, thinking, implicit caching and the bill."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

import pytest
from batch_helpers import bfast, keys_by_example
from fakes import FaultPlan
from generate_helpers import FAKE_KEY, cqa_examples, fast, gen_rows, long_prompt, question

from sbs_data import SbsError
from sbs_data.generate import batches as B
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.plan import api_schema
from sbs_data.generate.run import generate
from sbs_data.teachers.base import (
    AuthError,
    ContextLength,
    Permanent,
    QuotaExhausted,
    RateLimited,
    Request,
    Transient,
)
from sbs_data.teachers.gemini import GeminiBatchAPI, GeminiTeacher, read_response
from sbs_data.teachers.models import facts_for

FLASH = "gemini:gemini-2.5-flash"
#: Published prices, USD per 1M tokens (https://ai.google.dev/gemini-api/docs/pricing): input, cached, output.
FLASH_PRICE = (0.30, 0.03, 2.50)

REQ = Request(
    ({"role": "user", "content": "Q: pick one\nAnswer Choices:\n(a) red\n(b) blue\nA:"},),
    system="be brief",
    params={"temperature": 0.3, "top_p": 0.9, "max_tokens": 2000, "seed": 7, "stop": ["\n\nQ:"]},
)


def gemini_bodies(srv) -> list[dict]:
    return [b for b in srv.bodies if b["path"].endswith(":generateContent")]


def thinking_of(body: dict) -> dict:
    """thinkingConfig as sent, in camelCase (the SDK sends its fields snake_case; the API takes both)."""
    tc = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    return {"".join(w.title() if i else w for i, w in enumerate(k.split("_"))): v for k, v in tc.items()}


def billed(srv, model: str, mode: str = "online") -> dict:
    return srv.bill("gemini", model, mode)


# -- online, through generate ---------------------------------------------------------------------------
def test_gemini_flash_online_answers_every_row(ws, server):
    server.keep_bodies = True
    cqa_examples(ws, n=12)
    res = generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast()))
    assert res.summary["ok"] == 12 and res.summary["failed"] == 0
    assert res.version.ref == "toy-gemini-2.5-flash@1"
    cfg = res.version.config
    assert cfg["teacher"]["provider"] == "gemini" and cfg["teacher"]["endpoint"] == "generateContent"
    assert "temperature" not in cfg["params"] and cfg["params"]["max_tokens"] == 32768  # a thinking model
    rows = ws.all(
        "SELECT parse_status, pred_label, finish_reason, reasoning_tokens, completion_tokens, prompt_tokens, "
        "cost_usd FROM generations_at(?)",
        [res.version.ref],
    )
    f = facts_for("gemini", "gemini-2.5-flash")
    for status, label, finish, reasoning, completion, prompt, cost in rows:
        assert (status, label, finish) == ("ok", "alpha", "stop")
        assert 0 < reasoning < completion  # thoughts stored per row, billed as output
        assert cost == pytest.approx(f.cost(prompt, completion))
    body = gemini_bodies(server)[0]["body"]
    assert server.bodies[0]["path"] == "/gemini/v1/models/gemini-2.5-flash:generateContent"
    assert server.bodies[0]["headers"]["x-goog-api-key"] == FAKE_KEY
    assert body["systemInstruction"]["parts"][0]["text"]
    first = body["contents"][0]["parts"][0]["text"]
    assert first.startswith("Q: ") and first.rsplit("\n\nQ: ", 1)[1].startswith("Which word is number 0?")
    # a rerun is served from the request cache
    n = server.count
    again = generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast()))
    assert server.count == n and again.version.ref == res.version.ref


def test_spend_matches_the_bill_with_thoughts_and_cached_tokens(ws, server, tmp_path):
    cqa_examples(ws, n=20)
    prompt = long_prompt(tmp_path)
    dry = generate(ws, "toy", PlanSpec(FLASH, prompt_path=prompt), RunOptions(dry_run=True, settings=fast()))
    assert dry.summary["est_cached_prompt_tokens"] > 0  # the dry run assumes Gemini caches the shared prefix
    res = generate(ws, "toy", PlanSpec(FLASH, prompt_path=prompt), RunOptions(settings=fast(concurrency=1)))
    rows = ws.all(
        "SELECT cached_tokens, prompt_tokens, reasoning_tokens FROM generations_at(?)", [res.version.ref]
    )
    assert sum(1 for c, _, _ in rows if c) >= 19  # every request after the first read the prefix from cache
    b = billed(server, "gemini-2.5-flash")
    assert b["requests"] == 20 and b["reasoning_tokens"] > 0 and b["cached_input_tokens"] > 0
    assert ws.one("SELECT sum(cached_tokens) FROM cache") == b["cached_input_tokens"]
    assert ws.one("SELECT sum(reasoning_tokens) FROM cache") == b["reasoning_tokens"]
    inp, cached, out = FLASH_PRICE  # hard-coded: the table must hold the published prices
    want = ((b["input_tokens"] - b["cached_input_tokens"]) * inp + b["cached_input_tokens"] * cached) / 1e6
    want += b["output_tokens"] * out / 1e6  # output_tokens: answers and thoughts
    assert res.summary["spent_usd"] == pytest.approx(want, rel=0.02)
    full = (b["input_tokens"] * inp + b["output_tokens"] * out) / 1e6
    assert want < 0.8 * full  # the cached share is real money


def test_retry_info_paces_and_no_row_is_lost(ws, server):
    cqa_examples(ws, n=80)
    server.set_faults(FaultPlan(rate=0.05, kinds=["429:1"]))  # 5% of prompts: RESOURCE_EXHAUSTED, retry in 1s
    t0 = time.perf_counter()
    res = generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast(max_attempts=1)))
    assert res.summary["ok"] == 80 and res.summary["failed"] == 0  # 429s use no attempts
    throttled = server.stats()["outcomes"].get("429:1", 0)
    assert throttled >= 1 and res.summary["rate_limited"] == throttled
    assert time.perf_counter() - t0 >= 1.0  # the retryDelay was waited


def test_retry_delay_is_honoured_not_guessed(ws, server):
    cqa_examples(ws, n=3)
    server.set_faults(FaultPlan(by_match={question(1): ["429:2", "429:2"]}))
    t0 = time.perf_counter()
    res = generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast()))
    assert res.summary["ok"] == 3 and res.summary["rate_limited"] == 2
    assert time.perf_counter() - t0 >= 4.0  # twice the 2 s the server asked for, never sooner


def test_every_429_is_a_rate_limit_unless_the_credits_are_depleted(server):
    """Gemini words all its 429s "You exceeded your current quota", per-minute limits included: that is a
    wait, not the end of the account (the shared classifier reads the phrase as OpenAI's no-credit error)."""
    server.set_faults(FaultPlan(queue=["429:3"]))
    with pytest.raises(RateLimited) as ei:
        asyncio.run(_call(_teacher(server)))
    assert "exceeded your current quota" in str(ei.value) and ei.value.retry_after == 3.0
    server.set_faults(FaultPlan(queue=["noquota"]))
    with pytest.raises(QuotaExhausted, match="prepayment credits are depleted"):
        asyncio.run(_call(_teacher(server)))


def test_usage_that_cannot_be_true_is_estimated(ws, server):
    cqa_examples(ws, n=6)
    server.set_faults(FaultPlan(queue=["lieusage:missing"] * 3 + ["lieusage:negative"] * 3))
    res = generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast()))
    assert res.summary["ok"] == 6 and res.summary["usage_estimated"] == 6
    assert ws.one("SELECT min(cost_usd) FROM generations_at(?)", [res.version.ref]) > 0


def test_quota_limits_without_headers_lose_no_row(ws, server):
    server.set_limits(rpm=600)  # 10 per second; Gemini says so only in 429 bodies (RetryInfo)
    cqa_examples(ws, n=40)
    res = generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast(concurrency=32, max_attempts=2)))
    assert res.summary["ok"] == 40 and res.summary["failed"] == 0
    assert billed(server, "gemini-2.5-flash")["rate_limited"] == res.summary["rate_limited"] > 0


def test_json_mode_sends_the_output_schema(ws, server):
    server.keep_bodies = True
    cqa_examples(ws, n=4)
    res = generate(ws, "toy", PlanSpec(FLASH, json_mode=True), RunOptions(settings=fast()))
    assert res.summary["ok"] == 4
    for b in gemini_bodies(server):
        cfg = b["body"]["generationConfig"]
        assert cfg["responseMimeType"] == "application/json" and cfg["responseJsonSchema"] == api_schema()
    assert all(r[2] == "ok" for r in gen_rows(ws, res.version.ref))


def test_unknown_model_stops_early_with_the_providers_message(ws, server, caplog):
    cqa_examples(ws, n=60)
    with pytest.raises(SbsError, match="gemini-9-ultra") as ei:
        generate(ws, "toy", PlanSpec("gemini:gemini-9-ultra"), RunOptions(settings=fast(concurrency=64)))
    assert "is not found" in str(ei.value) and "check the model name" in str(ei.value)
    assert server.count <= 16
    assert not ws.all("SELECT 1 FROM sbs_versions WHERE dataset LIKE 'toy-gemini-9%'")
    assert any("not in the price table" in w for w in caplog.messages)


def test_missing_key_or_sdk_is_a_clear_error_before_any_call(ws, server, monkeypatch):
    cqa_examples(ws, n=3)
    monkeypatch.delenv("GEMINI_API_KEY")
    for mode in ("online", "batch"):
        with pytest.raises(SbsError, match="set GEMINI_API_KEY or GOOGLE_API_KEY"):
            generate(ws, "toy", PlanSpec(FLASH), RunOptions(mode=mode, batch=bfast(), settings=fast()))
    monkeypatch.setenv(
        "GOOGLE_API_KEY", "AIza-the-other-key-0123456789abcdef"
    )  # the SDK's variable works too
    server.set_faults(FaultPlan(require_key="AIza-the-other-key-0123456789abcdef"))
    assert generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast())).summary["ok"] == 3
    import google

    monkeypatch.delattr(google, "genai", raising=False)  # the extra is not installed
    monkeypatch.setitem(sys.modules, "google.genai", None)
    with pytest.raises(SbsError, match=r"pip install 'sbs-data\[gemini\]'"):
        generate(ws, "toy", PlanSpec(FLASH, limit=1, samples=2), RunOptions(settings=fast()))
    assert server.count == 3 and server.batch_calls == {}


def test_a_wrong_key_stops_the_run_and_never_leaks(ws, server):
    cqa_examples(ws, n=20)
    server.set_faults(FaultPlan(require_key="AIza-right-key-00000000000000000000"))
    with pytest.raises(SbsError, match="API key not valid") as ei:
        generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast()))
    assert "check the API key (GEMINI_API_KEY or GOOGLE_API_KEY)" in str(ei.value)
    assert FAKE_KEY not in str(ei.value) and server.count <= 16


def test_thinking_flags(ws, server):
    server.keep_bodies = True
    cqa_examples(ws, n=2)
    # --reasoning-effort on a 2.5 model: the budget Google's OpenAI layer maps it to
    generate(ws, "toy", PlanSpec(FLASH, params={"reasoning_effort": "low"}), RunOptions(settings=fast()))
    assert thinking_of(gemini_bodies(server)[-1]["body"]) == {"thinkingBudget": 1024}
    # --thinking-budget 0 turns thinking off: no thoughts stored
    res = generate(ws, "toy", PlanSpec(FLASH, params={"thinking_budget": 0}), RunOptions(settings=fast()))
    assert thinking_of(gemini_bodies(server)[-1]["body"]) == {"thinkingBudget": 0}
    assert ws.all("SELECT DISTINCT reasoning_tokens FROM generations_at(?)", [res.version.ref]) == [(0,)]
    # Gemini 3 thinks by level
    generate(
        ws,
        "toy",
        PlanSpec("gemini:gemini-3-flash-preview", params={"reasoning_effort": "minimal"}),
        RunOptions(settings=fast()),
    )
    assert thinking_of(gemini_bodies(server)[-1]["body"]) == {"thinkingLevel": "MINIMAL"}
    n = server.count
    with pytest.raises(SbsError, match="not both"):
        generate(
            ws,
            "toy",
            PlanSpec(FLASH, params={"thinking_budget": 512, "reasoning_effort": "low"}),
            RunOptions(settings=fast()),
        )
    with pytest.raises(SbsError, match="takes no --thinking-budget"):
        generate(ws, "toy", PlanSpec("openai:gpt-5-mini", params={"thinking_budget": 512}), RunOptions())
    with pytest.raises(SbsError, match="leaves no room for the answer"):
        generate(ws, "toy", PlanSpec(FLASH, params={"thinking_budget": 900, "max_tokens": 900}), RunOptions())
    with pytest.raises(SbsError, match="--thinking-budget must be"):
        generate(ws, "toy", PlanSpec(FLASH, params={"thinking_budget": -5}), RunOptions())
    assert server.count == n


def test_a_budget_the_model_refuses_stops_with_the_flag_to_change(ws, server):
    cqa_examples(ws, n=20)
    with pytest.raises(SbsError, match="only works in thinking mode") as ei:
        generate(
            ws,
            "toy",
            PlanSpec("gemini:gemini-2.5-pro", params={"thinking_budget": 0}),
            RunOptions(settings=fast()),
        )
    assert "drop or change --thinking-budget" in str(ei.value) and server.count <= 16


def test_cli_takes_gemini_and_thinking_budget(tmp_path, server):
    from typer.testing import CliRunner

    from sbs_data.cli import app
    from sbs_data.workspace import Workspace

    db = str(tmp_path / "cli.duckdb")
    with Workspace.open(db) as w:
        cqa_examples(w, n=3)
    args = ["generate", "toy", "-T", FLASH, "--thinking-budget", "256", "--db", db, "-f", "json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)[0]
    assert out["ok"] == 3 and out["version"] == "toy-gemini-2.5-flash@1"
    with Workspace.open(db, read_only=True) as w:
        assert w.get(out["version"]).config["params"]["thinking_budget"] == 256


# -- the adapter, through the SDK -----------------------------------------------------------------------
def _teacher(srv, model: str = "gemini-2.5-flash", timeout: float = 5.0) -> GeminiTeacher:
    return GeminiTeacher(model, base_url=srv.gemini_url, api_key=FAKE_KEY, timeout=timeout)


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
        ("503", Transient, None),
        ("drop", Transient, None),
        ("malformed", Transient, None),
        ("slow:2", Transient, None),  # past the 0.5 s client timeout
        ("400", Permanent, None),
        ("401", AuthError, None),
        ("403", AuthError, None),
        ("context", ContextLength, None),
    ],
)
def test_faults_are_classified_and_the_sdk_does_not_retry(server, fault, cls, retry_after):
    server.set_faults(FaultPlan(queue=[fault]))
    with pytest.raises(cls) as ei:
        asyncio.run(_call(_teacher(server, timeout=0.5)))
    assert type(ei.value) is cls
    assert ei.value.retryable == (cls in (RateLimited, Transient))
    assert ei.value.retry_after == retry_after
    assert FAKE_KEY not in str(ei.value)
    assert server.count == 1  # one attempt: retries are the engine's


def test_request_and_response_shapes(server):
    server.keep_bodies = True
    schema = api_schema()
    r = asyncio.run(
        _call(_teacher(server), Request(REQ.messages, REQ.system, REQ.params, json_schema=schema))
    )
    body = gemini_bodies(server)[-1]["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["contents"] == [{"parts": [{"text": REQ.messages[0]["content"]}], "role": "user"}]
    cfg = body["generationConfig"]
    assert (cfg["temperature"], cfg["topP"], cfg["maxOutputTokens"], cfg["seed"]) == (0.3, 0.9, 2000, 7)
    assert cfg["stopSequences"] == ["\n\nQ:"] and cfg["responseJsonSchema"] == schema
    assert r.finish_reason == "stop" and '"label": "(a) red"' in r.text
    assert r.prompt_tokens > 0 and r.completion_tokens > r.reasoning_tokens > 0 and r.request_id


def test_out_of_budget_answers_finish_length(server):
    p = {**REQ.params, "max_tokens": 8, "thinking_budget": 0}
    r = asyncio.run(_call(_teacher(server), Request(REQ.messages, REQ.system, p)))
    assert r.finish_reason == "length" and r.text and r.reasoning_tokens == 0
    p = {**REQ.params, "max_tokens": 100}  # dynamic thinking (768-1280 tokens here) eats the whole budget
    r = asyncio.run(_call(_teacher(server), Request(REQ.messages, REQ.system, p)))
    assert r.finish_reason == "length" and r.text == "" and r.completion_tokens == 100


def test_reader_maps_finish_reasons_blocks_and_thoughts():
    usage = {
        "promptTokenCount": 10,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 5,
        "cachedContentTokenCount": 4,
    }
    body = {
        "candidates": [
            {
                "content": {"parts": [{"text": "thinking...", "thought": True}, {"text": "answer"}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": usage,
        "responseId": "r1",
    }
    r = read_response(body)
    assert (r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) == ("answer", "stop", 10, 8)
    assert (r.cached_tokens, r.reasoning_tokens, r.request_id) == (4, 5, "r1")
    for reason in ("SAFETY", "RECITATION", "PROHIBITED_CONTENT", "SPII", "BLOCKLIST"):
        body["candidates"][0]["finishReason"] = reason
        assert read_response(body).finish_reason == "content_filter"
    body["candidates"][0]["finishReason"] = "MAX_TOKENS"
    assert read_response(body).finish_reason == "length"
    blocked = read_response(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7}}
    )
    assert blocked.text is None and blocked.finish_reason == "content_filter" and blocked.prompt_tokens == 7
    with pytest.raises((AttributeError, TypeError)):
        read_response({"candidates": ["not a candidate"]})


# -- the stand-in refuses what the API refuses ------------------------------------------------------------
def _post(srv, path: str, body: dict, key: str | None = FAKE_KEY) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{srv.gemini_url}/v1beta/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"x-goog-api-key": key} if key else {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


_Q = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.mark.parametrize(
    "model, extra, status, words",
    [
        ("gemini-2.5-flash", {"generationConfig": {"foo": 1}}, 400, 'Unknown name "foo"'),
        ("gemini-2.5-flash", {"temprature": 1}, 400, 'Unknown name "temprature"'),
        (
            "gemini-2.5-flash",
            {"generationConfig": {"responseMimeType": "application/json", "responseSchema": api_schema()}},
            400,
            'Unknown name "additionalProperties"',
        ),
        (
            "gemini-2.5-flash",
            {"generationConfig": {"responseJsonSchema": api_schema()}},
            400,
            "response_mime_type",
        ),
        (
            "gemini-2.5-flash",
            {
                "generationConfig": {
                    "responseMimeType": "application/json",
                    "responseJsonSchema": {"type": "strng"},
                }
            },
            400,
            "not a JSON Schema type",
        ),
        ("gemini-2.5-pro", {"generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}}, 400, "Budget 0"),
        (
            "gemini-2.5-flash",
            {"generationConfig": {"thinkingConfig": {"thinking_budget": 99999}}},
            400,
            "between",
        ),
        (
            "gemini-2.5-flash",
            {"generationConfig": {"thinkingConfig": {"thinkingLevel": "HIGH"}}},
            400,
            "level",
        ),
        (
            "gemini-3-pro-preview",
            {"generationConfig": {"thinkingConfig": {"thinkingLevel": "MEDIUM"}}},
            400,
            "LOW, HIGH",
        ),
        ("gemini-2.5-flash", {"generationConfig": {"temperature": 3}}, 400, "temperature"),
        ("gemini-2.5-flash", {"generationConfig": {"stopSequences": list("abcdef")}}, 400, "stop"),
        ("gemini-2.5-flash", {"contents": []}, 400, "contents is not specified"),
        (
            "gemini-2.5-flash",
            {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
            400,
            "valid role",
        ),
        ("gemini-1.0-ultra-max", {}, 404, "is not found"),
    ],
)
def test_the_stand_in_refuses_what_the_api_refuses(server, model, extra, status, words):
    code, body = _post(server, f"models/{model}:generateContent", {**_Q, **extra})
    assert code == status and words in body["error"]["message"], body
    assert body["error"]["status"] == {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status]


def test_the_stand_in_wants_a_key_and_a_valid_one(server):
    code, body = _post(server, "models/gemini-2.5-flash:generateContent", _Q, key=None)
    assert code == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    server.set_faults(FaultPlan(require_key="right"))
    code, body = _post(server, "models/gemini-2.5-flash:generateContent", _Q, key="wrong")
    assert code == 400 and body["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    t = _teacher(server)
    with pytest.raises(AuthError, match="API key not valid"):
        asyncio.run(_call(t))


def test_the_stand_in_answers_in_the_documented_shape(server):
    code, body = _post(server, "models/gemini-2.5-flash:generateContent", _Q)
    assert code == 200 and set(body) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
    u = body["usageMetadata"]
    assert u["totalTokenCount"] == u["promptTokenCount"] + u["candidatesTokenCount"] + u["thoughtsTokenCount"]
    assert "cachedContentTokenCount" not in u  # zero counts are left out, as proto3 JSON does
    server.set_faults(FaultPlan(queue=["429:7"]))
    code, body = _post(server, "models/gemini-2.5-flash:generateContent", _Q)
    assert code == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    retry = [d for d in body["error"]["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]


# -- Batch Mode ----------------------------------------------------------------------------------------
def _submit(ws, **kw):
    bs = kw.pop("bs", None) or bfast()
    return generate(ws, "toy", PlanSpec(FLASH), RunOptions(mode="batch", batch=bs, settings=fast()), **kw)


def test_batch_builds_the_version_at_half_price_and_a_rerun_calls_nothing(ws, server):
    cqa_examples(ws, n=10)
    res = _submit(ws)
    run = res.summary["run"]
    assert res.version is None and res.summary["jobs"] == 3 and res.summary["submitted_now"] == 10
    jobs = ws.all("SELECT state, provider_batch_id, input_file_id FROM sbs_batches WHERE run_id = ?", [run])
    assert all(s == "submitted" and b.startswith("batches/") and f is None for s, b, f in jobs)  # inline
    out = B.wait(ws, run, settings=bfast())
    assert out[0]["state"] == "done" and out[0]["succeeded"] == 10
    ref = out[0]["version"]
    assert ref == "toy-gemini-2.5-flash@1" and all(r[2] == "ok" for r in gen_rows(ws, ref))
    price = facts_for("gemini", "gemini-2.5-flash")
    for pt, ct, cached, cost in ws.all(
        "SELECT prompt_tokens, completion_tokens, cached_tokens, cost_usd FROM sbs_cache"
    ):
        assert cost == pytest.approx(price.cost(pt, ct, cached) * 0.5) and cost > 0
    b = billed(server, "gemini-2.5-flash", "batch")
    assert b["requests"] == 10 and b["reasoning_tokens"] > 0
    assert server.count == 0  # nothing went through generateContent
    calls = dict(server.batch_calls)
    again = _submit(ws)  # the same command again: everything is cached, nothing is sent
    assert again.summary["cached"] == 10 and again.summary.get("submitted_now", 0) == 0
    online = generate(ws, "toy", PlanSpec(FLASH), RunOptions(settings=fast()))
    assert online.version.ref == ref and server.count == 0 and server.batch_calls == calls


def test_large_jobs_go_up_as_a_jsonl_file(ws, server, monkeypatch):
    monkeypatch.setattr(GeminiBatchAPI, "inline_max_bytes", 0)
    cqa_examples(ws, n=6)
    run = _submit(ws, bs=bfast(max_requests=100)).summary["run"]
    (fid,) = [f for (f,) in ws.all("SELECT input_file_id FROM sbs_batches WHERE run_id = ?", [run])]
    assert fid.startswith("files/")
    uploaded = server.g_files[fid.removeprefix("files/")]["data"].decode().splitlines()
    line = json.loads(uploaded[0])
    assert set(line) == {"key", "request"} and set(line["request"]) >= {"contents", "systemInstruction"}
    out = B.wait(ws, run, settings=bfast())
    assert out[0]["state"] == "done" and len(gen_rows(ws, out[0]["version"])) == 6
    assert server.batch_calls["gemini.files.upload"] == 1 and server.batch_calls["gemini.files.download"] == 1


def test_failed_and_expired_requests_are_sent_again(ws, server):
    cqa_examples(ws, n=8)  # two jobs: q0-q3, q4-q7
    server.set_faults(
        FaultPlan(
            by_match={
                question(1): ["expire"],  # the whole first job expires: all four go out again
                question(5): ["500"],  # transient: answered in round 2
                question(6): ["400"],  # permanent: recorded, never re-sent
                question(7): ["context"],
            }
        )
    )
    run = _submit(ws, bs=bfast(max_rounds=3)).summary["run"]
    out = B.wait(ws, run, settings=bfast(max_rounds=3))
    assert out[0]["state"] == "done" and out[0]["rounds"] == 2
    keys = keys_by_example(ws, run)
    sent = {ex: server.batch_submitted[ks[0]] for ex, ks in keys.items()}
    assert sent == {"q0": 2, "q1": 2, "q2": 2, "q3": 2, "q4": 1, "q5": 2, "q6": 1, "q7": 1}
    rows = {r[0]: r for r in gen_rows(ws, out[0]["version"])}
    assert [ex for ex, r in sorted(rows.items()) if r[2] == "ok"] == ["q0", "q1", "q2", "q3", "q4", "q5"]
    assert rows["q6"][4].startswith("permanent") and rows["q7"][4].startswith("context_length")
    kinds = dict(ws.all("SELECT kind, count(*) FROM sbs_failures WHERE run_id = ? GROUP BY kind", [run]))
    assert kinds == {"expired": 4, "transient": 1, "permanent": 1, "context_length": 1}
    assert billed(server, "gemini-2.5-flash", "batch")["requests"] == 6  # an expired batch costs nothing


def test_cancel_then_a_new_run_sends_what_is_missing(ws, server):
    server.batch_polls = 100
    cqa_examples(ws, n=8)
    run = _submit(ws, bs=bfast(max_requests=100)).summary["run"]
    B.cancel(ws, run, settings=bfast())
    assert server.batch_calls["gemini.batches.cancel"] == 1
    out = B.wait(ws, run, settings=bfast())
    assert out[0]["run_status"] == "cancelled" and out[0]["state"] == "done"
    rows = gen_rows(ws, out[0]["version"])
    assert len(rows) == 8 and all(r[2] == "failed" and "cancel" in r[4] for r in rows)
    server.batch_polls = 0
    res = _submit(ws)
    assert res.summary["submitted_now"] == 8


def test_the_job_a_crashed_submission_created_is_found_by_its_name(ws, server, monkeypatch):
    from sbs_data.generate.batches import submission

    cqa_examples(ws, n=4)

    def crash(*a, **k):
        raise RuntimeError("the process dies after the provider created the batch")

    with monkeypatch.context() as m:
        m.setattr(submission, "_record_created", crash)
        with pytest.raises(RuntimeError):
            _submit(ws)
    assert ws.all("SELECT state FROM sbs_batches") == [("submitting",)]
    out = B.wait(ws, None, settings=bfast())
    assert out[0]["state"] == "done" and len(gen_rows(ws, out[0]["version"])) == 4
    assert server.batch_calls["gemini.batches.create"] == 1 and server.batch_calls["gemini.batches.list"] >= 1
    assert set(server.batch_submitted.values()) == {1}
