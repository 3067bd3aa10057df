"""`rationalize` end to end against the loopback stand-in, which follows a hint: a prompt saying "The correct
answer is X" gets X as its label. Without a hint it answers "(a) alpha", so rows whose gold is another choice
are wrong until rationalized."""

from __future__ import annotations

import json

import pytest
from fakes import FaultPlan
from generate_helpers import CHOICES, fast
from workspace_helpers import make_examples

from sbs_data import SbsError
from sbs_data.generate.hints import combine
from sbs_data.generate.options import PlanSpec, RationalizeSelect, RequestSpec, RunOptions
from sbs_data.generate.rationalize import rationalize
from sbs_data.generate.run import generate
from sbs_data.quality.signals import score

TEACHER = "openai:gpt-4o-mini"
OPTIONS = "\nAnswer Choices:\n" + "\n".join(f"({'abcde'[i]}) {c}" for i, c in enumerate(CHOICES))


def _examples(ws, n: int = 12):
    """q0..q{n-1}: gold alpha for even rows, beta for odd ones; q{n-2} and q{n-1} are validation/test."""
    rows = []
    for i in range(n):
        split = "validation" if i == n - 2 else "test" if i == n - 1 else "train"
        gold = "alpha" if i % 2 == 0 else "beta"
        rows.append(
            {
                "id": f"q{i}",
                "question": f"Which word is number {i}?",
                "choices": CHOICES,
                "answer": gold,
                "split": split,
            }
        )
    return make_examples(ws, "toy", "cqa", rows)


def _faults() -> FaultPlan:
    """q2 answers nothing usable without a hint (a failed row); q3's hinted rationale mentions the hint."""
    return FaultPlan(
        answers={
            f"number 2?{OPTIONS}\nA:": "I do not know.",
            f"number 3?{OPTIONS}\nThe correct answer": "As the hint says, beta fits best. So the answer is (b) beta.",
        }
    )


def _gen(ws, server):
    _examples(ws)
    server.set_faults(_faults())
    return generate(ws, "toy", PlanSpec(TEACHER), RunOptions(settings=fast()), name="toy-gen").version


def _rationalize(ws, ref: str, select: RationalizeSelect | None = None, **run):
    """`rationalize REF` with TEACHER and test-sized settings; `run` sets more RunOptions fields."""
    return rationalize(
        ws, ref, RequestSpec(TEACHER), RunOptions(settings=fast(), command="rationalize", **run), select
    )


def _rows(ws, ref: str) -> dict[tuple[str, int], tuple]:
    return {
        (r[0], r[1]): r[2:]
        for r in ws.all(
            "SELECT example_id, sample_idx, split, hinted, parse_status, pred_label, teacher, gold_label "
            "FROM generations_at(?)",
            [ref],
        )
    }


def test_rationalize_recovers_wrong_and_failed_train_rows(ws, server):
    gen = _gen(ws, server)
    before = server.count
    res = _rationalize(ws, gen.ref)
    s = res.summary
    # train rows q0..q9: odd ones wrong (q1 q3 q5 q7 q9), q2 failed: 6 requests; none for validation/test
    assert server.count - before == 6 == s["requests"] == s["called"]
    hinted = _rows(ws, res.version.ref)
    assert sorted(k[0] for k in hinted) == ["q1", "q2", "q3", "q5", "q7", "q9"]
    assert all(r[1] is True and r[0] == "train" for r in hinted.values())
    assert res.version.parents == (gen.version_id,)
    # the combined version: every row of GEN, recovered rows replaced
    combined = ws.get(s["combined"])
    assert combined.stats["rows_by_split"] == gen.stats["rows_by_split"]
    rows = _rows(ws, combined.ref)
    recovered = sorted(k[0] for k, r in rows.items() if r[1])
    assert recovered == ["q1", "q2", "q5", "q7", "q9"]  # q3 leaked the hint: kept as it was
    assert s["recovered"] == 5 and s["hint_leak_refused"] == 1 and s["still_wrong"] == 0
    for r in rows.values():
        if r[1]:
            assert r[3] == r[5]  # recovered rows agree with gold
    assert rows[("q10", 0)][1] is False and rows[("q11", 0)][3] == "alpha"  # eval rows untouched
    cfg = combined.config
    assert cfg["recovered"] == {"train": 5} and cfg["asked"] == {"train": 6} and cfg["leaked"] == 1
    assert set(combined.parents) == {gen.version_id, res.version.version_id}

    # a rerun sends nothing and makes no new versions
    n_versions = len(ws.versions())
    again = _rationalize(ws, gen.ref)
    assert server.count - before == 6 and again.summary["called"] == 0
    assert again.version.ref == res.version.ref and again.summary["combined"] == combined.ref
    assert len(ws.versions()) == n_versions

    # SQL, scores: hinted and hint_leak are columns
    sc = score(ws, res.version.ref)
    leak = dict(ws.all("SELECT example_id, hint_leak FROM scores_at(?)", [sc.ref]))
    assert leak["q3"] is True and leak["q1"] is False
    assert ws.one("SELECT bool_and(hinted) FROM scores_at(?)", [sc.ref]) is True


def test_rows_option_and_eval_splits_are_refused(ws, server):
    gen = _gen(ws, server)
    before = server.count
    res = _rationalize(ws, gen.ref, RationalizeSelect(rows="failed", combine=False, name="only-failed"))
    assert server.count - before == 1 and sorted(k[0] for k in _rows(ws, res.version.ref)) == ["q2"]
    assert "combined" not in res.summary
    with pytest.raises(SbsError, match="--allow-eval-splits"):
        _rationalize(ws, gen.ref, RationalizeSelect(splits=["validation"]))
    with pytest.raises(SbsError, match="--allow-eval-splits"):
        _rationalize(ws, gen.ref, RationalizeSelect(splits=["train", "test"]))
    assert server.count - before == 1
    res = _rationalize(
        ws, gen.ref, RationalizeSelect(splits=["validation"], allow_eval=True, combine=False, name="v")
    )
    assert [k[0] for k in _rows(ws, res.version.ref)] == ["q11"] or res.version.row_count == 0
    with pytest.raises(SbsError, match="--rows"):
        _rationalize(ws, gen.ref, RationalizeSelect(rows="bad"))
    with pytest.raises(SbsError, match="holds examples"):
        _rationalize(ws, "toy")


def test_dry_run_and_offline(ws, server):
    gen = _gen(ws, server)
    before = server.count
    dry = _rationalize(ws, gen.ref, dry_run=True)
    assert dry.dry_run and dry.summary["to_call"] == 6 and server.count == before
    system, user = dry.preview
    assert "The correct answer is (b) beta." in user and user.endswith("A:")
    n = len(ws.versions())
    with pytest.raises(SbsError, match="--offline"):
        _rationalize(ws, gen.ref, offline=True)
    assert server.count == before and len(ws.versions()) == n
    _rationalize(ws, gen.ref)
    again = _rationalize(ws, gen.ref, offline=True)
    assert again.summary["called"] == 0


def test_combine_keeps_rows_when_hinted_answers_disagree(ws, server):
    gen = _gen(ws, server)
    server.set_faults(
        FaultPlan(answers={"The correct answer": "It is (c) gamma. So the answer is (c) gamma."})
    )
    res = _rationalize(ws, gen.ref)
    assert res.summary["recovered"] == 0 and res.summary["still_wrong"] == 6
    c = combine(ws, gen, res.version, "again")
    assert c.recovered == {} and c.version.row_count == gen.row_count
    assert ws.diff(gen.ref, c.version.ref)["changed"] == 0


def test_max_usd_and_unknown_price(ws, server):
    gen = _gen(ws, server)
    with pytest.raises(SbsError, match="--max-usd"):
        _rationalize(ws, gen.ref, max_usd=-1)
    res = _rationalize(ws, gen.ref, max_usd=5.0)
    assert res.summary["spent_usd"] is not None and res.summary["spent_usd"] <= 5.0
    assert json.loads(json.dumps(res.summary, default=str))["combined"]


def test_batch_mode_builds_both_versions_when_collected(ws, server):
    from batch_helpers import bfast

    from sbs_data.generate import batches as B

    gen = _gen(ws, server)
    before = server.count
    res = _rationalize(ws, gen.ref, mode="batch", batch=bfast())
    assert res.version is None and res.summary["submitted_now"] == 6 and server.count == before
    out = B.collect(ws, res.summary["run"], settings=bfast())
    assert out[0]["state"] == "done" and out[0]["succeeded"] == 6
    hinted = ws.get("toy-gen-hinted")
    assert out[0]["version"] == hinted.ref and hinted.row_count == 6
    combined = ws.get("toy-gen-rationalized")
    assert combined.config["recovered"] == {"train": 5}
    # the same keys as online: an online rerun calls nothing and changes nothing
    again = _rationalize(ws, gen.ref)
    assert server.count == before and again.version.ref == hinted.ref
    assert again.summary["combined"] == combined.ref


def test_cli(ws, server, tmp_path):
    from typer.testing import CliRunner

    from sbs_data.cli import app

    _gen(ws, server)
    db = str(ws.path)
    ws.close()
    r = CliRunner().invoke(
        app, ["rationalize", "toy-gen", "--teacher", TEACHER, "--db", db, "-f", "json", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout[r.stdout.index("[") :])[0]
    assert s["requests"] == 6 and s["combined"] == "toy-gen-rationalized@1" and s["recovered"] == 5
    r = CliRunner().invoke(
        app, ["rationalize", "toy-gen", "--teacher", TEACHER, "--db", db, "--split", "test"]
    )
    assert r.exit_code == 1 and "--allow-eval-splits" in r.output and "Traceback" not in r.output


def test_export_and_report_show_hinted_rows(ws, server, tmp_path):
    import pyarrow.parquet as pq

    from sbs_data.export.shards import export
    from sbs_data.quality.filter import filter_version
    from sbs_data.quality.report import report, to_html

    gen = _gen(ws, server)
    res = _rationalize(ws, gen.ref)
    combined = res.summary["combined"]
    sel = filter_version(ws, combined, "default")
    rep = report(ws, sel.version.ref)
    r = {(x["split"], x["teacher"]): x for x in rep["rationalization"]["recovered"]}
    assert r[("train", TEACHER)]["asked"] == 6 and r[("train", TEACHER)]["recovered"] == 5
    q = {(x["split"], x["hinted"]): x for x in rep["rationalization"]["quality"]}
    assert q[("train", True)]["rows"] == 5 and q[("train", True)]["gold_match_rate"] == 1.0
    assert q[("train", False)]["rows"] == 5 and q[("train", False)]["gold_match_rate"] == 0.8
    assert rep["funnel"][0]["hinted_out"] == 5
    assert rep["signals"]["all"]["hint_leak"]["rate"] == 0.0
    assert "Rationalization" in to_html(rep)
    out = export(ws, sel.version.ref, tmp_path / "exp")
    m = out.manifest
    assert m["schema_version"] == 2 and m["columns"][-1] == "hinted" and m["splits"]["train"]["hinted"] == 5
    t = pq.read_table(tmp_path / "exp" / "train" / "part-00000.parquet")
    assert sum(t.column("hinted").to_pylist()) == 5 and "hint_leak" in t.schema.field("quality").type.names
    card = (tmp_path / "exp" / "README.md").read_text()
    assert (
        "## Rationalization" in card
        and "5 of 6 were recovered" in card
        and "`hinted = true`: train 5" in card
    )


def test_hint_echoes_and_paraphrases_never_reach_the_combined_version(ws, server):
    """A teacher echoing the hint sentence verbatim, or paraphrasing it, passed hint_leak (issue 23)."""
    _examples(ws)
    verbatim = (
        "The correct answer is (b) beta. Explain step by step why it is correct: beta fits best. "
        "So the answer is (b) beta."
    )
    answers = {
        f"number 2?{OPTIONS}\nA:": "I do not know.",
        f"number 1?{OPTIONS}\nThe correct answer": verbatim,
        f"number 3?{OPTIONS}\nThe correct answer": "The question says the answer should be beta. So the answer is (b) beta.",
        f"number 5?{OPTIONS}\nThe correct answer": "Per the answer key, beta fits. So the answer is (b) beta.",
        f"number 7?{OPTIONS}\nThe correct answer": "Beta fits best here. So the answer is (b) beta.",
    }
    server.set_faults(FaultPlan(answers=answers))
    gen = generate(ws, "toy", PlanSpec(TEACHER), RunOptions(settings=fast()), name="toy-gen").version
    res = _rationalize(ws, gen.ref)
    rows = _rows(ws, res.summary["combined"])
    recovered = sorted(k[0] for k, r in rows.items() if r[1])
    assert "q1" not in recovered and "q3" not in recovered and "q5" not in recovered  # echo, paraphrases
    assert "q7" in recovered  # "So the answer is ..." is what the hint asks for: not an echo
    assert res.summary["hint_leak_refused"] == 3 and res.summary["still_wrong"] == 0


def test_hint_echo_detector():
    from sbs_data.text import hint_echo, hint_leak

    hint = 'The correct answer is 12.\nExplain step by step why it is correct, then end with "So the answer is 12."'
    allowed = "So the answer is 12"
    assert hint_echo(
        "The correct answer is 12. Explain step by step why it is correct. 7 + 5 = 12.", hint, allowed
    )
    assert hint_echo("the CORRECT answer is 12;  explain, step by step!", hint, allowed)  # case, punctuation
    assert not hint_echo("7 + 5 = 12. So the answer is 12.", hint, allowed)  # the asked-for ending
    assert not hint_echo("The correct answer is 12.", hint, allowed)  # five words: a sentence anyone writes
    assert hint_echo(None, hint) is None
    assert hint_leak("The problem tells us that the answer is 12.")
    assert hint_leak("Checking against the answer key, it is 12.")
    assert not hint_leak("The problem asks how many apples; the answer is 12.")


def test_rationalize_refuses_the_source_or_an_examples_dataset_as_a_name(ws, server):
    gen = _gen(ws, server)
    before = server.count
    with pytest.raises(SbsError, match=r"--name 'toy-gen' is the dataset it reads \(toy-gen@1\)"):
        _rationalize(ws, gen.ref, RationalizeSelect(name="toy-gen"))
    with pytest.raises(
        SbsError, match=r"--combined-name 'toy' .*holds examples|dataset 'toy' holds examples"
    ):
        _rationalize(ws, gen.ref, RationalizeSelect(combined_name="toy"))
    with pytest.raises(SbsError, match="--name and --combined-name are both 'x'"):
        _rationalize(ws, gen.ref, RationalizeSelect(name="x", combined_name="x"))
    assert server.count == before and [v.ref for v in ws.versions()] == ["toy@1", "toy-gen@1"]
