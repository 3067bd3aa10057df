"""Few-shot prompts: the built-ins, user template files, and their hash in lineage and keys."""

from __future__ import annotations

import pytest
from generate_helpers import cqa_examples, fast

from sbs_data import SbsError
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.parse import parse, parse_json_output
from sbs_data.generate.prompts import load_prompt
from sbs_data.generate.run import generate
from sbs_data.tasks import get_task


@pytest.mark.parametrize("task", ["esnli", "anli", "cqa", "svamp"])
def test_builtin_prompts_are_paper_style_and_parse(task):
    t = get_task(task)
    p = load_prompt(t)
    assert 6 <= len(p.exemplars) <= 10 and p.system
    system, msgs = p.render("THE INPUT")
    body = msgs[0]["content"]
    assert body.count("So the answer is") == len(p.exemplars) and "THE INPUT" in body.rsplit("\n\n", 1)[-1]
    choices = ["cupboard", "refrigerator", "oven", "mailbox", "garden"] if task == "cqa" else None
    for ex in p.exemplars:
        parsed = t.parse_completion(f"{ex['rationale']} So the answer is {ex['answer']}.", choices)
        assert parsed.status == "ok" and parsed.label
        if t.label_space == "fixed":
            assert parsed.label in t.labels
        if t.label_space == "numeric":
            assert t.label_value(parsed.label) is not None
    jsys, jmsgs = p.render("THE INPUT", json_mode=True)
    assert "JSON" in jsys and '"rationale"' in jmsgs[0]["content"]


def test_user_prompt_files(tmp_path, ws, server):
    cqa_examples(ws, n=2)
    txt = tmp_path / "mine.txt"
    txt.write_text("Answer carefully.\n\n{input}\nA:")
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", prompt_path=txt), RunOptions(settings=fast()))
    assert res.version.config["prompt"]["source"] == str(txt) and server.count == 2
    txt.write_text(
        "Answer very carefully.\n\n{input}\nA:"
    )  # a new template is a new prompt hash and new keys
    res2 = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", prompt_path=txt), RunOptions(settings=fast()))
    assert res2.version.config["prompt"]["sha"] != res.version.config["prompt"]["sha"] and server.count == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("template: 'no placeholder'\n")
    with pytest.raises(SbsError, match="bad.yaml: template"):
        generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", prompt_path=bad))
    bad.write_text("template: '{input}'\nexemplars:\n  - input: x\n    rationale: ''\n    answer: y\n")
    with pytest.raises(SbsError, match=r"exemplars\[0\].rationale"):
        generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", prompt_path=bad))
    with pytest.raises(SbsError, match="not found"):
        generate(ws, "toy", PlanSpec("openai:gpt-4o-mini", prompt_path=tmp_path / "nope.txt"))


def test_json_output_parsing():
    t = get_task("svamp")
    assert parse_json_output('```json\n{"rationale": "r", "label": "3"}\n```')[0] == {
        "rationale": "r",
        "label": "3",
    }
    assert "schema" in parse_json_output('{"rationale": "r"}')[1]
    assert "not JSON" in parse_json_output("nope")[1]
    p, why = parse(t, 'Sure: {"rationale": "2 + 1 = 3", "label": "(2 + 1)"}', None, True)
    assert p.status == "ok" and p.label == "2 + 1" and why is None
    p, why = parse(t, '{"rationale": "x", "label": 3}', None, True)
    assert p.status == "invalid_json" and "label" in why


def test_progress_bar_runs(ws, server):
    cqa_examples(ws, n=3)
    res = generate(ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(progress=True)))
    assert res.summary["ok"] == 3


def test_hint_forms(tmp_path):
    """A prompt's hinted form: the built-ins carry one, a user file may, and a bad one fails with file and key."""
    from sbs_data.generate.prompts import DEFAULT_HINT, answer_text

    cqa = get_task("cqa")
    p = load_prompt(cqa)
    assert p.hint and answer_text(cqa, "beta", ["alpha", "beta"]) == "(b) beta"
    _, msgs = p.render_hinted("Q: {answer}?", "(b) beta")
    text = msgs[0]["content"]
    assert "\n\nQ: {answer}?\nThe correct answer is (b) beta.\n" in text and text.endswith('(b) beta."\nA:')
    assert "The correct answer is (b) refrigerator." in text  # the exemplars are shown hinted too
    f = tmp_path / "p.yaml"
    f.write_text('template: "Q: {input}\\nA:"\n')
    own = load_prompt(cqa, f)
    assert own.hint_template == "Q: {input}\n" + DEFAULT_HINT + "\nA:" and own.sha != own.hint_sha
    f.write_text('template: "Q: {input}\\nA:"\nhint: "Q: {input} ({answr})"\n')
    with pytest.raises(
        SbsError, match=r"p.yaml: hint: expected a string containing \{input\} and \{answer\}"
    ):
        load_prompt(cqa, f)
    f.write_text('template: "Q: {input}\\nA:"\nhint: "Q: {input} {answer} {answr}"\n')
    with pytest.raises(SbsError, match=r"hint: \{answr\} is not a placeholder"):
        load_prompt(cqa, f)
