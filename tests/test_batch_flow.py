"""Batch generation against the loopback server through the real SDKs, for OpenAI, Anthropic and Gemini:
a clean batch, failed + expired items re-submitted (bounded), collect twice, cancel, limits, same keys as online.
(Gemini's own expiry and cancel semantics, whole batches, are in test_gemini.py.)"""

from __future__ import annotations

import pytest
from batch_helpers import CREATE, TEACHERS, bfast, keys_by_example
from fakes import FaultPlan
from generate_helpers import FAKE_KEY, cqa_examples, fast, gen_rows, question

from sbs_data import SbsError
from sbs_data.generate import batches as B
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate
from sbs_data.teachers.models import facts_for

PROVIDERS = ["openai", "anthropic", "gemini"]
#: Per-request expiry, and cancellation that keeps the answers that arrived (Gemini: whole batches).
PER_REQUEST = ["openai", "anthropic"]


def _submit(ws, provider, **kw):
    bs = kw.pop("bs", None) or bfast()
    return generate(
        ws, "toy", PlanSpec(TEACHERS[provider]), RunOptions(mode="batch", batch=bs, settings=fast()), **kw
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_clean_batch_same_keys_as_online_and_batch_price(ws, server, provider):
    cqa_examples(ws, n=10)
    res = _submit(ws, provider)
    run = res.summary["run"]
    assert res.version is None and res.summary["jobs"] == 3 and res.summary["submitted_now"] == 10
    # every job is recorded (committed) before generate returns, with its provider id
    jobs = ws.all("SELECT state, provider_batch_id, n_requests FROM sbs_batches WHERE run_id = ?", [run])
    assert sorted(j[2] for j in jobs) == [2, 4, 4] and all(j[0] == "submitted" and j[1] for j in jobs)
    assert server.count == 0  # nothing went through the online endpoints
    out = B.collect(ws, run, settings=bfast())
    assert out[0]["state"] == "done" and out[0]["succeeded"] == 10
    ref = out[0]["version"]
    rows = gen_rows(ws, ref)
    assert len(rows) == 10 and all(r[2] == "ok" and r[3] == "alpha" for r in rows)
    # cost: the batch price (half the online price here)
    t = TEACHERS[provider].split(":", 1)
    price = facts_for(*t)
    for pt, ct, cost in ws.all("SELECT prompt_tokens, completion_tokens, cost_usd FROM sbs_cache"):
        assert cost == pytest.approx(price.cost(pt, ct) * 0.5) and cost > 0
    # same cache keys as online: an online rerun calls nothing and returns the very same version
    again = generate(ws, "toy", PlanSpec(TEACHERS[provider]), RunOptions(settings=fast()))
    assert server.count == 0 and again.version.ref == ref and again.summary["cached"] == 10
    assert ws.one("SELECT count(*) FROM batch_runs WHERE status = 'done' AND version = ?", [ref]) == 1


@pytest.mark.parametrize("provider", PER_REQUEST)
def test_failed_and_expired_items_are_resubmitted_bounded(ws, server, provider):
    cqa_examples(ws, n=8)
    server.set_faults(
        FaultPlan(
            by_match={
                question(0): ["500"],  # transient: answered in round 2
                question(1): ["expire"],  # expired: answered in round 2
                question(2): ["400"],  # permanent: recorded, never re-sent
                question(3): ["expire"] * 5,  # keeps expiring: given up after max_rounds submissions
                question(4): ["429", "expire"],  # answered in round 3
                question(5): ["context"],
            }
        )
    )
    res = _submit(ws, provider, bs=bfast(max_rounds=3))
    run = res.summary["run"]
    out = B.wait(ws, run, settings=bfast(max_rounds=3))
    assert out[0]["state"] == "done" and out[0]["rounds"] == 3
    keys = keys_by_example(ws, run)
    sent = {ex: server.batch_submitted[ks[0]] for ex, ks in keys.items()}
    assert sent == {"q0": 2, "q1": 2, "q2": 1, "q3": 3, "q4": 3, "q5": 1, "q6": 1, "q7": 1}
    rows = {r[0]: r for r in gen_rows(ws, out[0]["version"])}
    assert len(rows) == 8
    for ok in ("q0", "q1", "q4", "q6", "q7"):
        assert rows[ok][2] == "ok", rows[ok]
    assert rows["q2"][2] == "failed" and rows["q2"][4].startswith("permanent")
    assert rows["q3"][2] == "failed" and rows["q3"][4].startswith("expired")
    assert rows["q5"][2] == "failed" and rows["q5"][4].startswith("context_length")
    kinds = dict(ws.all("SELECT kind, count(*) FROM sbs_failures WHERE run_id = ? GROUP BY kind", [run]))
    assert kinds["expired"] == 1 + 3 + 1 and kinds["permanent"] == 1 and kinds["context_length"] == 1
    assert kinds.get("transient", 0) + kinds.get("rate_limited", 0) == 2
    assert ws.one("SELECT max(attempts) FROM sbs_cache") == 3  # q4 answered on its third submission
    # the version is what online mode would build: an online rerun only retries the failed rows
    server.set_faults(FaultPlan())
    again = generate(ws, "toy", PlanSpec(TEACHERS[provider]), RunOptions(settings=fast()))
    assert server.count == 3 and again.summary["ok"] == 8


@pytest.mark.parametrize("provider", PROVIDERS)
def test_collect_twice_is_idempotent(ws, server, provider):
    cqa_examples(ws, n=6)
    server.set_faults(FaultPlan(by_match={question(0): ["400"]}))
    run = _submit(ws, provider).summary["run"]
    first = B.collect(ws, run, settings=bfast())
    snap = lambda: (  # noqa: E731
        ws.one("SELECT count(*) FROM sbs_cache"),
        ws.one("SELECT count(*) FROM sbs_failures"),
        ws.one("SELECT count(*) FROM sbs_versions"),
        ws.all("SELECT job_id, state, collected_at FROM sbs_batches ORDER BY 1"),
    )
    before, calls = snap(), dict(server.batch_calls)
    assert before[:3] == (5, 1, 2)
    second = B.collect(ws, run, settings=bfast())
    third = B.collect(ws, settings=bfast())  # no RUN: every open run (there is none)
    assert snap() == before and server.batch_calls == calls  # zero provider calls, no new rows
    assert second[0]["version"] == first[0]["version"] and third == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_collect_before_the_batch_ends_then_again(ws, server, provider):
    server.batch_polls = 3
    cqa_examples(ws, n=5)
    run = _submit(ws, provider).summary["run"]
    out = B.collect(ws, run, settings=bfast())
    assert out[0]["state"] == "pending" and out[0]["version"] is None
    assert ws.one("SELECT count(*) FROM sbs_cache") == 0
    out = B.wait(ws, run, settings=bfast())
    assert out[0]["state"] == "done" and len(gen_rows(ws, out[0]["version"])) == 5


@pytest.mark.parametrize("provider", PER_REQUEST)
def test_cancel_keeps_what_arrived(ws, server, provider):
    server.batch_polls = 100
    cqa_examples(ws, n=8)
    run = _submit(ws, provider, bs=bfast(max_requests=100)).summary["run"]
    B.cancel(ws, run, settings=bfast())
    assert server.batch_calls[CREATE[provider].replace("create", "cancel")] == 1
    out = B.wait(ws, run, settings=bfast())
    assert out[0]["run_status"] == "cancelled" and out[0]["state"] == "done"
    rows = gen_rows(ws, out[0]["version"])
    assert sorted(r[2] for r in rows) == ["failed"] * 4 + ["ok"] * 4
    assert all("cancel" in r[4] for r in rows if r[2] == "failed")
    assert ws.by_id(ws.get(out[0]["version"]).version_id).note == "partial: batch run cancelled"
    assert set(server.batch_submitted.values()) == {1}  # cancelled requests are not re-sent
    # a new batch run submits only what is missing
    res = _submit(ws, provider)
    assert res.summary["cached"] == 4 and res.summary["submitted_now"] == 4
    with pytest.raises(SbsError, match="no batch run"):
        B.cancel(ws, "no-such-run")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_same_command_twice_submits_nothing_new(ws, server, provider):
    cqa_examples(ws, n=6)
    first = _submit(ws, provider)
    second = _submit(ws, provider)
    assert second.summary["run"] == first.summary["run"] and second.summary["submitted_now"] == 0
    assert server.batch_calls[CREATE[provider]] == 2 and set(server.batch_submitted.values()) == {1}
    # another run over an overlapping plan does not resend keys pending in the first one
    third = _submit(ws, provider, name="other")
    assert third.summary["submitted_now"] == 0 and third.summary["pending_elsewhere"] == 6
    out = B.wait(ws, None, settings=bfast())
    assert [o["state"] for o in out] == ["done", "done"] and set(server.batch_submitted.values()) == {1}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_limits_split_jobs_and_cached_rows_are_skipped(ws, server, provider):
    cqa_examples(ws, n=12)
    generate(
        ws, "toy", PlanSpec(TEACHERS[provider], limit=5), RunOptions(settings=fast())
    )  # 5 answered online first
    online = server.count
    res = _submit(ws, provider, bs=bfast(max_requests=100, max_bytes=9000))
    run = res.summary["run"]
    assert res.summary["cached"] == 5 and res.summary["submitted_now"] == 7
    sizes = ws.all("SELECT bytes, n_requests FROM sbs_batches WHERE run_id = ?", [run])
    assert len(sizes) >= 2 and all(b <= 9000 for b, _ in sizes) and sum(n for _, n in sizes) == 7
    out = B.collect(ws, run, settings=bfast())
    assert out[0]["state"] == "done" and server.count == online
    assert len(gen_rows(ws, out[0]["version"])) == 12


def test_dry_run_uses_the_batch_price_and_only_providers_with_batches(ws, server):
    cqa_examples(ws, n=4)
    online = generate(ws, "toy", PlanSpec(TEACHERS["openai"]), RunOptions(dry_run=True))
    batch = generate(ws, "toy", PlanSpec(TEACHERS["openai"]), RunOptions(dry_run=True, mode="batch"))
    assert batch.summary["est_cost_usd"] == pytest.approx(online.summary["est_cost_usd"] * 0.5, abs=1e-4)
    assert batch.summary["mode"] == "batch" and server.batch_calls == {}
    assert ws.one("SELECT count(*) FROM sbs_batches") == 0
    with pytest.raises(SbsError, match="--mode batch needs an openai:, anthropic: or gemini:"):
        generate(
            ws, "toy", PlanSpec("openai-compat:m", base_urls=[server.openai_url]), RunOptions(mode="batch")
        )
    with pytest.raises(SbsError, match="cannot stop midway"):
        generate(
            ws, "toy", PlanSpec(TEACHERS["openai"]), RunOptions(mode="batch", max_usd=1e-9, batch=bfast())
        )


def test_keys_never_reach_the_workspace(tmp_path, server):
    from sbs_data.workspace import Workspace

    db = tmp_path / "k.duckdb"
    ws = Workspace.open(db)
    cqa_examples(ws, n=4)
    server.set_faults(FaultPlan(by_match={question(0): ["401"]}))
    for p in PROVIDERS:
        run = generate(ws, "toy", PlanSpec(TEACHERS[p]), RunOptions(mode="batch", batch=bfast())).summary[
            "run"
        ]
        B.collect(ws, run, settings=bfast())
    ws.con.execute("CHECKPOINT")
    ws.close()
    assert FAKE_KEY in set(server.batch_keys)
    assert FAKE_KEY.encode() not in db.read_bytes()


def test_invalid_structured_output_is_asked_again_like_online(ws, server):
    cqa_examples(ws, n=3)
    server.set_faults(FaultPlan(by_match={question(0): ["badjson"], question(1): ["badjson"] * 5}))
    res = generate(
        ws,
        "toy",
        PlanSpec(TEACHERS["openai"], json_mode=True),
        RunOptions(mode="batch", batch=bfast(max_rounds=2)),
    )
    out = B.wait(ws, res.summary["run"], settings=bfast(max_rounds=2))
    rows = {r[0]: r for r in gen_rows(ws, out[0]["version"])}
    assert rows["q0"][2] == "ok" and rows["q2"][2] == "ok"
    assert rows["q1"][2] == "invalid_json" and rows["q1"][5] == "{not json"  # kept raw after the last round
    keys = keys_by_example(ws, res.summary["run"])
    assert [server.batch_submitted[keys[q][0]] for q in ("q0", "q1", "q2")] == [2, 2, 1]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batch_answer_from_another_model_is_stored_as_such_and_warned(ws, server, provider, caplog):
    cqa_examples(ws, n=4)
    server.set_faults(FaultPlan(by_match={question(1): ["served:gpt-4o"]}))
    res = _submit(ws, provider)
    out = B.collect(ws, res.summary["run"], settings=bfast())
    served = dict(ws.all("SELECT example_id, served_model FROM generations_at(?)", [out[0]["version"]]))
    requested = TEACHERS[provider].split(":", 1)[1]
    assert served == {"q0": requested, "q1": "gpt-4o", "q2": requested, "q3": requested}
    assert len([m for m in caplog.messages if "'gpt-4o'" in m]) == 1
