"""The engine against the loopback server: faults, retries, Retry-After, bounds, limits, budget, JSON mode."""

from __future__ import annotations

import gc
import time

import pytest
from fakes import FaultPlan
from generate_helpers import CHOICES, cqa_examples, fast, gen_rows, question
from workspace_helpers import make_examples, make_generations

from sbs_data import SbsError
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate, sanitize_name
from sbs_data.teachers.base import Request, Response, Teacher


def test_every_row_completes_or_is_a_recorded_permanent_failure(ws, server):
    cqa_examples(ws, n=24)
    server.set_faults(
        FaultPlan(
            by_match={
                question(0): ["429", "429"],
                question(1): ["429:0.1"],
                question(2): ["500", "503"],
                question(3): ["503:0.05"],
                question(4): ["drop"],
                question(5): ["malformed"],
                question(6): ["slow:3"],  # past the 1 s client timeout, then answered
                question(7): ["400"],
                question(8): ["401"],
                question(9): ["context"],
            },
            rate=0.2,
            kinds=["500", "drop", "malformed"],
        )
    )
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(timeout=1.0)))
    rows = gen_rows(ws, res.version.ref)
    assert len(rows) == 24 and len({(r[0], r[1]) for r in rows}) == 24
    by_id = {r[0]: r for r in rows}
    for i in (7, 8, 9):
        assert by_id[f"q{i}"][2] == "failed" and by_id[f"q{i}"][4]
    assert "context_length" in by_id["q9"][4] and "auth" in by_id["q8"][4] and "permanent" in by_id["q7"][4]
    ok = [r for r in rows if r[0] not in ("q7", "q8", "q9")]
    assert all(r[2] == "ok" and r[3] == "alpha" for r in ok)
    # 429 waits are counted apart from retries: they do not use up attempts
    assert res.summary["failed"] == 3 and res.summary["retries"] + res.summary["rate_limited"] >= 9
    # permanent errors were asked once each; failures are logged apart from the cache
    assert (
        ws.one("SELECT count(*) FROM sbs_failures WHERE kind IN ('permanent', 'auth', 'context_length')") == 3
    )
    assert ws.one("SELECT max(attempts) FROM sbs_failures") == 1
    assert ws.one("SELECT count(*) FROM sbs_cache") == 21


def test_retry_after_is_never_undercut(ws, server):
    cqa_examples(ws, n=3)
    server.set_faults(FaultPlan(by_match={question(0): ["429:0.6"], question(1): ["503:0.4", "429:0.3"]}))
    generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(backoff_base=0.01)))
    by_prompt: dict[str, list[dict]] = {}
    for e in server.log:
        by_prompt.setdefault(e["prompt_sha"], []).append(e)
    waits = []
    for events in by_prompt.values():
        events.sort(key=lambda e: e["t_recv"])
        for prev, nxt in zip(events, events[1:]):
            ra = float(prev["outcome"].split(":")[1])
            gap = nxt["t_recv"] - prev["t_sent"]
            waits.append((ra, gap))
            assert gap >= ra, f"retried after {gap:.3f}s although Retry-After said {ra}"
    assert sorted(w[0] for w in waits) == [0.3, 0.4, 0.6]


def test_attempts_are_bounded_and_failure_recorded(ws, server):
    cqa_examples(ws, n=2)
    server.set_faults(FaultPlan(by_match={question(0): ["500"] * 20}))
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(max_attempts=3)))
    assert server.stats()["outcomes"]["500"] == 3
    rows = {r[0]: r for r in gen_rows(ws, res.version.ref)}
    assert rows["q0"][2] == "failed" and "transient" in rows["q0"][4] and rows["q1"][2] == "ok"
    assert ws.all("SELECT kind, attempts FROM sbs_failures") == [("transient", 3)]
    # a rerun retries the failure (failures are not answers) and pays for nothing else
    server.reset()
    server.set_faults(FaultPlan())
    res2 = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()))
    assert server.count == 1 and res2.summary["ok"] == 2


def test_concurrency_cap_and_rpm_limit(ws, server):
    server.latency = 0.05
    cqa_examples(ws, n=30)
    generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=4)))
    assert server.max_in_flight <= 4
    server.reset()
    t0 = time.perf_counter()
    generate(
        ws,
        "toy",
        PlanSpec("openai:gpt-4o-mini", params={"temperature": 0.1}, limit=15),
        RunOptions(settings=fast(rpm=600)),
    )
    # 600 rpm = 10/s with a one-second bucket: 10 at once, then 5 more at 10/s
    assert time.perf_counter() - t0 >= 0.45 and server.count == 15


def test_tpm_limit_paces_by_tokens(ws, server):
    cqa_examples(ws, n=6)
    t0 = time.perf_counter()
    # each request is ~450 prompt tokens + 50 max_tokens; 30k tpm = 500 tokens/s -> about one request per second
    generate(
        ws,
        "toy",
        PlanSpec("openai:gpt-4o-mini", params={"max_tokens": 50}, limit=3),
        RunOptions(settings=fast(tpm=30000)),
    )
    assert time.perf_counter() - t0 >= 1.5


def test_max_usd_stops_cleanly_and_unknown_price_refuses(ws, server):
    cqa_examples(ws, n=40)
    res = generate(
        ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=8), max_usd=0.002)
    )
    s = res.summary
    # the worst case of each request is reserved before it is sent: spend never passes the cap
    assert "max-usd" in s["stopped"] and 0 < s["spent_usd"] <= 0.002
    assert 0 < server.count < 40
    # a stopped run never takes the plain name: it is NAME-partial, noted as partial
    assert res.version.ref == "toy-gpt-4o-mini-partial@1"
    with pytest.raises(SbsError, match="no such version"):
        ws.get("toy-gpt-4o-mini")
    rows = gen_rows(ws, res.version.ref)
    assert len(rows) == 40  # nothing dropped silently: unrequested rows are marked
    answered = [r for r in rows if r[2] == "ok"]
    assert len(answered) == server.count
    assert all("not requested" in r[4] for r in rows if r[2] == "failed")
    assert "partial" in res.version.note
    # what arrived is cached: raising the budget resumes without paying again
    n = server.count
    res2 = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(), max_usd=1.0))
    assert server.count == 40 and res2.summary["ok"] == 40 and res2.summary["cached"] == n
    assert res2.version.ref == "toy-gpt-4o-mini@1" and not res2.version.note
    with pytest.raises(SbsError, match="needs a price"):
        generate(ws, "toy", PlanSpec("openai:my-private-model"), RunOptions(settings=fast(), max_usd=1.0))
    assert server.count == 40


def test_dry_run_calls_nothing(ws, server):
    cqa_examples(ws, n=5)
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", samples=2), RunOptions(dry_run=True))
    assert res.dry_run and res.version is None and server.count == 0
    s = res.summary
    assert s["requests"] == 10 and s["to_call"] == 10 and s["est_prompt_tokens"] > 1000
    assert 0 < s["est_cost_usd"] < s["max_cost_usd"]
    assert "Which word is number 0?" in res.preview[1] and res.preview[0]
    assert ws.one("SELECT count(*) FROM sbs_versions WHERE dataset = 'toy-gpt-4o-mini'") == 0


def test_json_mode_validates_and_retries_invalid_output_a_bounded_number_of_times(ws, server):
    cqa_examples(ws, n=3)
    server.keep_bodies = True
    server.set_faults(FaultPlan(by_match={question(0): ["badjson"] * 5, question(1): ["badjson"]}))
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", json_mode=True), RunOptions(settings=fast()))
    rows = {r[0]: r for r in gen_rows(ws, res.version.ref)}
    assert rows["q0"][2] == "invalid_json" and rows["q0"][5] == "{not json" and "not JSON" in rows["q0"][4]
    assert rows["q1"][2] == "ok" and rows["q1"][3] == "alpha"
    assert rows["q2"][2] == "ok"
    assert server.count == 3 + 2 + 1  # q0: 1 + 2 json retries; q1: 1 + 1 retry; q2: 1
    assert server.bodies[0]["body"]["response_format"]["json_schema"]["schema"]["required"] == [
        "rationale",
        "label",
    ]
    assert "JSON" in server.bodies[0]["body"]["messages"][0]["content"]


def test_samples_are_separate_requests(ws, server):
    cqa_examples(ws, n=3)
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", samples=3), RunOptions(settings=fast()))
    rows = gen_rows(ws, res.version.ref)
    assert len(rows) == 9 and sorted({r[1] for r in rows}) == [0, 1, 2]
    assert len({r[6] for r in rows}) == 9 and server.count == 9
    cfg = res.version.config
    assert cfg["samples"] == 3 and cfg["params"]["temperature"] == 0.7


def test_anthropic_teacher_end_to_end(ws, server):
    cqa_examples(ws, n=4)
    server.set_faults(FaultPlan(by_match={question(0): ["529", "429:0.05"]}))
    res = generate(ws, "toy", PlanSpec("anthropic:claude-3-5-haiku-latest"), RunOptions(settings=fast()))
    assert res.version.ref == "toy-claude-3-5-haiku-latest@1"
    assert [r[3] for r in gen_rows(ws, res.version.ref)] == ["alpha"] * 4
    assert res.summary["spent_usd"] > 0 and res.summary["retries"] + res.summary["rate_limited"] == 2


def test_auth_failing_everywhere_stops_the_run(ws, server):
    cqa_examples(ws, n=40)
    server.set_faults(FaultPlan(require_key="sk-the-right-one-000000"))
    with pytest.raises(SbsError, match="check the API key") as ei:
        generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=2)))
    assert "SUPERSECRET" not in str(ei.value)
    assert server.count <= 16  # the README's promise: at most the first 16 requests, then a verdict


def test_version_lineage_and_names(ws, server):
    ex = cqa_examples(ws, n=2)
    res = generate(
        ws,
        "toy@1",
        PlanSpec("openai:gpt-4o-mini", params={"seed": 3}, split="train"),
        RunOptions(settings=fast()),
    )
    v = res.version
    assert v.kind == "generations" and v.parents == (ex.version_id,) and v.examples_id == ex.version_id
    cfg = v.config
    assert cfg["source"] == "toy@1" and cfg["teacher"]["spec"] == "openai:gpt-4o-mini"
    assert len(cfg["prompt"]["sha"]) == 16 and cfg["params"]["seed"] == 3 and cfg["json"] is False
    again = generate(
        ws,
        "toy@1",
        PlanSpec("openai:gpt-4o-mini", params={"seed": 3}, split="train"),
        RunOptions(settings=fast()),
    )
    assert again.version.ref == v.ref  # unchanged rerun: no duplicate version
    assert sanitize_name("meta-llama/Llama-3.1-8B:q4 k") == "meta-llama-Llama-3.1-8B-q4-k"
    with pytest.raises(SbsError, match="no rows in split"):
        generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", split="test"), RunOptions(settings=fast()))
    assert len(CHOICES) == 5


def test_name_of_the_source_or_of_another_kind_or_task_is_refused_before_any_call(ws, server):
    cqa_examples(ws, n=2)
    other = cqa_examples(ws, name="other", n=2)
    nli = make_examples(ws, "nli", "anli", [{"premise": "a", "hypothesis": "b", "label": 0}])
    make_generations(ws, nli, [{"example_id": "train-0", "raw": "So the answer is neutral."}], name="nli-gen")

    def gen(name):
        return generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast()), name=name)

    with pytest.raises(
        SbsError, match=r"--name 'toy' is the dataset it reads \(toy@1\).*choose another --name"
    ):
        gen("toy")
    with pytest.raises(SbsError, match=r"dataset 'other' holds examples \(other@1\), not teacher rows"):
        gen("other")
    with pytest.raises(SbsError, match=r"dataset 'nli-gen' is task 'anli' \(nli-gen@1\), not 'cqa'"):
        gen("nli-gen")
    assert server.count == 0 and [v.ref for v in ws.versions()] == ["nli@1", "nli-gen@1", "other@1", "toy@1"]
    assert other.kind == "examples"
    assert gen("toy-gen").version.ref == "toy-gen@1"  # a new name, or the same generations dataset again
    assert gen("toy-gen").version.ref == "toy-gen@1"


def test_collector_runs_rarely_while_requests_run_then_is_restored(ws):
    """An SDK call allocates hundreds of short-lived objects; the engine raises the collector's first
    threshold while requests run (benchmarks/RESULTS.md: 15-20% of a run went to GC passes), then restores it."""
    cqa_examples(ws, n=4)
    seen: list[int] = []

    class Probe(Teacher):
        provider, endpoint, network = "probe", "probe", False

        async def complete(self, req: Request) -> Response:
            seen.append(gc.get_threshold()[0])
            return Response(text="Alpha comes first. So the answer is alpha.")

    before = gc.get_threshold()
    res = generate(ws, "toy", PlanSpec(Probe("m")), RunOptions(settings=fast()))
    assert res.summary["ok"] == 4 and len(seen) == 4
    assert min(seen) >= 50_000 > before[0]
    assert gc.get_threshold() == before
