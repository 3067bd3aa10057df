"""Today's provider rules, end to end through the real SDKs and the stand-in that follows them: reasoning
models, advertised rate limits, cached-token billing, prompt caching, systematic errors, hostile answers."""

from __future__ import annotations

import time

import pytest
from fakes import FaultPlan
from generate_helpers import FAKE_KEY, bill, cqa_examples, fast, gen_rows, long_prompt, question

from sbs_data import SbsError
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import Settings, generate
from sbs_data.teachers.models import facts_for


def test_reasoning_model_default_flags_answer_every_row(ws, server):
    cqa_examples(ws, n=12)
    res = generate(ws, "toy", PlanSpec("openai:gpt-5-mini"), RunOptions(settings=fast()))
    assert res.summary["ok"] == 12 and res.summary["failed"] == 0
    cfg = res.version.config["params"]
    assert "temperature" not in cfg and cfg["max_tokens"] >= 2048  # no temperature; a reasoning-sized budget
    rows = ws.all(
        "SELECT finish_reason, reasoning_tokens, completion_tokens, prompt_tokens, cost_usd, raw "
        "FROM generations_at(?)",
        [res.version.ref],
    )
    assert all(r[0] == "stop" and r[5] for r in rows)  # no answer emptied by the reasoning budget
    facts = facts_for("openai", "gpt-5-mini")
    for _, reasoning, completion, prompt, cost, _ in rows:
        assert reasoning > 0 and completion > reasoning  # reasoning tokens stored, billed as output
        assert cost == pytest.approx(facts.cost(prompt, completion))
    # the effort is passed through (and is part of what was asked)
    res2 = generate(
        ws,
        "toy",
        PlanSpec("openai:gpt-5-mini", params={"reasoning_effort": "minimal"}),
        RunOptions(settings=fast()),
    )
    assert res2.summary["ok"] == 12 and res2.version.config["params"]["reasoning_effort"] == "minimal"


def test_reasoning_model_refuses_temperature_before_any_call(ws, server):
    cqa_examples(ws, n=3)
    with pytest.raises(SbsError, match="reasoning model.*drop --temperature"):
        generate(
            ws, "toy", PlanSpec("openai:gpt-5-mini", params={"temperature": 0.2}), RunOptions(settings=fast())
        )
    with pytest.raises(SbsError, match="takes no --reasoning-effort"):
        generate(
            ws,
            "toy",
            PlanSpec("openai:gpt-4o-mini", params={"reasoning_effort": "low"}),
            RunOptions(settings=fast()),
        )
    with pytest.raises(SbsError, match="reasoning-effort must be one of"):
        generate(
            ws,
            "toy",
            PlanSpec("openai:gpt-5-mini", params={"reasoning_effort": "max"}),
            RunOptions(settings=fast()),
        )
    assert server.count == 0


def test_unknown_model_stops_after_a_few_requests_and_names_it(ws, server, caplog):
    cqa_examples(ws, n=60)
    with pytest.raises(SbsError, match="gpt-9-turbo") as ei:
        generate(ws, "toy", PlanSpec("openai:gpt-9-turbo"), RunOptions(settings=fast(concurrency=64)))
    assert "does not exist" in str(ei.value) and "check the model name" in str(ei.value)
    assert server.count <= 16
    assert not ws.all("SELECT 1 FROM sbs_versions WHERE dataset LIKE 'toy-gpt-9%'")  # no version built
    assert any("not in the price table" in w for w in caplog.messages)


def test_advertised_limits_pace_the_run_and_429s_never_fail_rows(ws, server):
    server.set_limits(rpm=1200)  # 20 per second, enforced per second; advertised in the headers
    cqa_examples(ws, n=80)
    t0 = time.perf_counter()
    res = generate(
        ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=64, max_attempts=2))
    )
    elapsed = time.perf_counter() - t0
    assert res.summary["ok"] == 80 and res.summary["failed"] == 0  # no row lost to "not now"
    assert res.summary["rate_limited"] <= 0.1 * 80  # the headers were read: few 429s after the first ones
    assert elapsed >= 80 / 20 * 0.7  # and the run did not beat the limit


def test_429s_without_headers_back_off_and_do_not_use_attempts(ws, server):
    cqa_examples(ws, n=6)
    server.set_faults(FaultPlan(by_match={question(0): ["429"] * 8}))  # more 429s than --max-attempts
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(max_attempts=3)))
    assert res.summary["ok"] == 6 and res.summary["rate_limited"] == 8


def test_long_retry_after_is_capped_and_announced(ws, server, caplog):
    cqa_examples(ws, n=3)
    server.set_faults(FaultPlan(by_match={question(1): ["429:3600"]}))
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(max_wait=1.0)))
    assert res.summary["ok"] == 3
    assert any("asked for 3600 s, capped at --max-wait 1 s" in m for m in caplog.messages), caplog.messages
    assert any("waiting on openai" in m and "until" in m and "3600" in m for m in caplog.messages), (
        caplog.messages
    )


def test_openai_automatic_prefix_caching_is_billed_at_the_cached_price(ws, server, tmp_path):
    cqa_examples(ws, n=20)
    prompt = long_prompt(tmp_path)
    dry = generate(
        ws,
        "toy",
        PlanSpec("openai:gpt-4o-mini", prompt_path=prompt),
        RunOptions(dry_run=True, settings=fast()),
    )
    assert dry.summary["est_cached_prompt_tokens"] > 0  # the dry run assumes the shared prefix is cached
    res = generate(
        ws,
        "toy",
        PlanSpec("openai:gpt-4o-mini", prompt_path=prompt),
        RunOptions(settings=fast(concurrency=1)),
    )
    rows = ws.all("SELECT cached_tokens, prompt_tokens FROM generations_at(?)", [res.version.ref])
    assert sum(1 for c, _ in rows if c) >= 19  # every request after the first read the prefix from cache
    b = bill(server, "openai")
    # the bill from the stand-in's own token counts and gpt-4o-mini's published prices, hard-coded here so
    # the check does not lean on the price table under test ($ per 1M: 0.15 input, 0.075 cached, 0.60 output)
    fresh = b["input_tokens"] - b["cached_input_tokens"]
    billed = (fresh * 0.15 + b["cached_input_tokens"] * 0.075 + b["output_tokens"] * 0.60) / 1e6
    spent = ws.one("SELECT sum(cost_usd) FROM generations_at(?)", [res.version.ref])
    assert spent == pytest.approx(billed, rel=1e-9)
    assert res.summary["spent_usd"] == pytest.approx(billed, abs=1e-6)  # the summary rounds to 6 places
    full = (b["input_tokens"] * 0.15 + b["output_tokens"] * 0.60) / 1e6
    assert billed < 0.75 * full  # the cached share is real money
    assert ws.one("SELECT sum(cached_tokens) FROM cache") == b["cached_input_tokens"]
    # the report shows the cached share of input
    from sbs_data.quality.report import report

    share = report(ws, res.version.ref)["teachers"][0]["cached_input_share"]
    assert share == pytest.approx(b["cached_input_tokens"] / b["input_tokens"], rel=0.01) and share > 0.5


@pytest.mark.parametrize("concurrency", [1, 16])  # the README: the prefix is written once, at any concurrency
def test_anthropic_prompt_cache_marks_the_prefix_and_bills_writes_and_reads(
    ws, server, tmp_path, concurrency
):
    cqa_examples(ws, n=12)
    prompt = long_prompt(tmp_path)
    res = generate(
        ws,
        "toy",
        PlanSpec("anthropic:claude-sonnet-4-5", prompt_path=prompt),
        RunOptions(settings=fast(concurrency=concurrency)),
    )
    rows = ws.all("SELECT cached_tokens, cache_write_tokens FROM generations_at(?)", [res.version.ref])
    assert sum(1 for _, w in rows if w) == 1 and sum(1 for c, _ in rows if c) == 11  # one write, then reads
    b = bill(server, "anthropic")
    # hard-coded published prices ($ per 1M: 3.00 input, 0.30 cache read, 3.75 5-minute cache write, 15.00
    # output), applied to the stand-in's own counts
    fresh = b["input_tokens"] - b["cached_input_tokens"] - b["cache_write_tokens"]
    billed = (
        fresh * 3.00
        + b["cached_input_tokens"] * 0.30
        + b["cache_write_tokens"] * 3.75
        + b["output_tokens"] * 15.00
    ) / 1e6
    spent = ws.one("SELECT sum(cost_usd) FROM generations_at(?)", [res.version.ref])
    assert spent == pytest.approx(billed, rel=1e-9)
    # prompt caching changes the bill, not the answer: the same requests are request-cache hits
    server.reset()
    again = generate(
        ws,
        "toy",
        PlanSpec("anthropic:claude-sonnet-4-5", prompt_path=prompt),
        RunOptions(settings=fast(), prompt_cache=False),
    )
    assert server.count == 0 and again.version.ref == res.version.ref
    # --no-prompt-cache sends no cache_control: nothing is written or read
    generate(
        ws,
        "toy",
        PlanSpec("anthropic:claude-sonnet-4-5", prompt_path=prompt, params={"max_tokens": 100}),
        RunOptions(settings=fast(), prompt_cache=False),
        name="nc",
    )
    b = bill(server, "anthropic")
    assert server.count == 12 and b["cache_write_tokens"] == 0 and b["cached_input_tokens"] == 0


def test_an_answer_that_cannot_be_stored_is_repaired_not_fatal(ws, server, caplog):
    cqa_examples(ws, n=30)
    server.set_faults(FaultPlan(by_match={question(3): ["surrogate"]}))
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    assert res.summary["ok"] + res.summary["no_answer"] == 30 and res.summary["repaired"] == 1
    rows = {r[0]: r for r in gen_rows(ws, res.version.ref)}
    assert "\ufffd" in rows["q3"][5]
    assert ws.one("SELECT count(*) FROM generations_at(?) WHERE repaired", [res.version.ref]) == 1
    assert any("repaired" in w for w in caplog.messages)
    n = server.count
    again = generate(
        ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast())
    )  # nothing is paid twice
    assert server.count == n and again.version.ref == res.version.ref


@pytest.mark.parametrize(
    "teacher, snapshot",
    [
        ("openai:gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("anthropic:claude-haiku-4-5", "claude-haiku-4-5-20251001"),
        ("openai:gpt-5-mini", "gpt-5-mini-2025-08-07"),  # the Responses API
        ("gemini:gemini-2.5-flash", "gemini-2.5-flash-001"),  # Gemini's modelVersion
    ],
)
def test_the_model_that_served_each_answer_is_stored_and_another_one_warned_once(
    ws, server, caplog, teacher, snapshot
):
    cqa_examples(ws, n=8)
    plan = {
        question(2): [f"served:{snapshot}"],
        question(3): ["served:gpt-4o"],
        question(5): ["served:gpt-4o"],
    }
    server.set_faults(FaultPlan(by_match=plan))
    res = generate(ws, "toy", PlanSpec(teacher), RunOptions(settings=fast()))
    requested = teacher.split(":", 1)[1]
    served = dict(ws.all("SELECT example_id, served_model FROM generations_at(?)", [res.version.ref]))
    assert served == {
        **{f"q{i}": requested for i in range(8)},
        "q2": snapshot,
        "q3": "gpt-4o",
        "q5": "gpt-4o",
    }
    assert ws.one("SELECT count(*) FROM cache WHERE served_model = 'gpt-4o'") == 2
    warned = [m for m in caplog.messages if "'gpt-4o'" in m]
    assert len(warned) == 1 and f"not {requested!r}" in warned[0], caplog.messages
    assert not any(snapshot in m for m in caplog.messages)  # a dated snapshot is what was asked for
    assert res.summary["served_other_model"] == 2


@pytest.mark.parametrize(
    "teacher",
    ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "openai:gpt-5-mini", "gemini:gemini-2.5-flash"],
)
def test_a_content_filtered_answer_has_its_own_status_and_the_default_recipe_drops_it(ws, server, teacher):
    from sbs_data.quality.filter import filter_version

    cqa_examples(ws, n=6)
    server.set_faults(FaultPlan(by_match={question(1): ["filtered"], question(4): ["filtered"]}))
    res = generate(ws, "toy", PlanSpec(teacher), RunOptions(settings=fast()))
    assert res.summary["content_filter"] == 2 and res.summary["ok"] == 4
    rows = {r[0]: r for r in gen_rows(ws, res.version.ref)}
    assert rows["q1"][2] == "content_filter" and rows["q1"][3] is None and "content filter" in rows["q1"][4]
    assert {r[2] for k, r in rows.items() if k not in ("q1", "q4")} == {"ok"}
    sel = filter_version(ws, res.version.ref, "default").version
    dropped = ws.all("SELECT example_id, reason FROM selections_at(?) WHERE NOT keep ORDER BY 1", [sel.ref])
    assert dropped == [("q1", "parsable"), ("q4", "parsable")]


def test_the_repaired_warning_says_whether_text_was_cut_or_held_unstorable_characters(
    ws, server, caplog, monkeypatch
):
    import sbs_data.generate.answer as answer_mod

    monkeypatch.setattr(answer_mod, "MAX_TEXT_CHARS", 400)  # a runaway completion, test-sized
    cqa_examples(ws, n=6)
    server.set_faults(FaultPlan(answers={question(2): "So the answer is (a) alpha. " + "blah " * 200}))
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    assert res.summary["repaired"] == 1 and res.summary["text_cut"] == 1
    raw = ws.one("SELECT raw FROM generations_at(?) WHERE example_id = 'q2'", [res.version.ref])
    assert len(raw) == 400 and raw.startswith("So the answer is (a) alpha.")
    (warned,) = [m for m in caplog.messages if "repaired" in m]
    assert "1 longer than 400 characters were cut there" in warned
    assert "surrogate" not in warned and "NUL" not in warned  # nothing of the kind happened
    caplog.clear()
    server.set_faults(FaultPlan(by_match={question(7): ["surrogate"]}))
    cqa_examples(ws, name="more", n=9)
    generate(ws, "more", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    (warned,) = [m for m in caplog.messages if "repaired" in m]
    assert "1 held characters that cannot be stored (a lone surrogate" in warned and "cut" not in warned
    # a cut never splits an emoji's surrogate pair (that alone would look like an unstorable character)
    text, unstorable, cut = answer_mod.repaired_text("x" * 399 + "\ud83d\ude00" + "y")
    assert (text, unstorable, cut) == ("x" * 399, False, True)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"rpm": -1}, "--rpm must be a positive number"),
        ({"tpm": 0}, "--tpm must be a positive number"),
        ({"concurrency": 0}, "--concurrency must be a positive number"),
        ({"timeout": -5}, "--timeout must be a positive number"),
        ({"max_wait": 0}, "--max-wait must be a positive number"),
        ({"rpm": float("nan")}, "--rpm must be a positive number"),
    ],
)
def test_nonsense_numbers_are_refused_by_name(ws, server, kw, match):
    cqa_examples(ws, n=2)
    with pytest.raises(SbsError, match=match):
        generate(
            ws,
            "toy",
            PlanSpec("openai:gpt-4o-mini"),
            RunOptions(settings=Settings(**{**fast().__dict__, **kw})),
        )
    assert server.count == 0


@pytest.mark.parametrize(
    "params,match",
    [
        ({"max_tokens": 0}, "--max-tokens must be at least 1"),
        ({"temperature": -0.5}, "--temperature must be 0 or more"),
        ({"temperature": float("inf")}, "--temperature must be a finite number"),
        ({"top_p": 1.5}, "--top-p must be in"),
    ],
)
def test_nonsense_params_are_refused_by_name(ws, server, params, match):
    cqa_examples(ws, n=2)
    with pytest.raises(SbsError, match=match):
        generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", params=params), RunOptions(settings=fast()))
    assert server.count == 0


def test_max_usd_holds_at_high_concurrency(ws, server):
    cqa_examples(ws, n=200)
    res = generate(
        ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=64), max_usd=0.01)
    )
    assert res.summary["spent_usd"] <= 0.01 and "max-usd" in res.summary["stopped"]
    assert res.version.ref.endswith("-partial@1")
    assert FAKE_KEY not in str(res.summary)


def test_identical_requests_are_sent_once_and_keys_match_python(ws, server):
    from generate_helpers import CHOICES
    from workspace_helpers import make_examples

    from sbs_data.generate.plan import plan
    from sbs_data.teachers.registry import parse_spec

    texts = ["Same question?", "Same question?", 'Ünïcödé 👍🏽 e\u0301 "q" \\ {input} \t tab?', "Other?"]
    rows = [
        {"id": f"d{i}", "question": t, "choices": CHOICES, "answer": "alpha"} for i, t in enumerate(texts)
    ]
    make_examples(ws, "dup", "cqa", rows)
    res = generate(ws, "dup", PlanSpec("openai:gpt-4o-mini", samples=2), RunOptions(settings=fast()))
    assert server.count == 6 and res.summary["to_call"] == 6 and res.summary["ok"] == 8
    assert len({r[6] for r in gen_rows(ws, res.version.ref)}) == 6  # two rows share each duplicated key
    # the keys DuckDB computes are the ones Python computes, whatever the text holds
    p = plan(ws, "dup", parse_spec("openai:gpt-4o-mini"), samples=2)
    sql, params = p.keyed(ws)
    by_sql = {
        (r[0], r[1]): r[2] for r in ws.all(f"SELECT example_id, sample_idx, cache_key FROM ({sql})", params)
    }
    for e, s_, c, t in ws.all(
        "SELECT example_id, split, choices, input_text FROM examples WHERE dataset = 'dup'"
    ):
        for k in range(2):
            assert by_sql[(e, k)] == p.item(e, s_, c, t, k).key


def test_patience_fails_rows_that_only_ever_get_429s(ws, server):
    """The README: only 429s with no answer at all for --patience seconds fail the waiting rows."""
    cqa_examples(ws, n=4)
    server.set_faults(FaultPlan(queue=["429:0.05"] * 100_000))
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(patience=1.0)))
    assert res.summary["failed"] == 4 and res.summary["ok"] == 0
    errors = ws.all("SELECT error FROM generations_at(?)", [res.version.ref])
    assert all("rate_limited" in e for (e,) in errors), errors


def test_max_tokens_above_the_model_limit_is_refused_before_any_call(ws, server):
    """The README: --max-tokens above what the model can write is refused by name; the stand-in enforces
    the same per-model limit (it answers 400, as OpenAI does)."""
    cqa_examples(ws, n=3)
    limit = facts_for("openai", "gpt-4o-mini").max_output_tokens
    assert limit
    with pytest.raises(SbsError, match=f"--max-tokens {limit + 1} is more than openai:gpt-4o-mini can write"):
        generate(
            ws,
            "toy",
            PlanSpec("openai:gpt-4o-mini", params={"max_tokens": limit + 1}),
            RunOptions(settings=fast()),
        )
    assert server.count == 0
    import openai

    client = openai.OpenAI(base_url=server.openai_url, api_key=FAKE_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=limit + 1
        )
