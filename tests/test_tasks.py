"""Tasks: rendering, label spaces, task-aware comparison, completion parsing, safe arithmetic."""

from __future__ import annotations

import pytest

from sbs_data import SbsError
from sbs_data.tasks import FieldError, get_task, load_task_file
from sbs_data.tasks.mathexpr import ExprError, arithmetic_steps, evaluate, try_evaluate


@pytest.mark.parametrize(
    "expr,value",
    [
        ("( 10.0 * 45.0 )", 450.0),
        ("450", 450.0),
        ("(45 - (-1))", 46.0),
        ("1,000 / 4", 250.0),
        ("-3 + 2.5", -0.5),
        # units on purpose: a currency sign before a number, a percent sign after one
        ("$5", 5.0),
        ("$ 1,000", 1000.0),
        ("-$5 + 2", -3.0),
        ("50%", 50.0),
        ("12.5% + 1", 13.5),
    ],
)
def test_evaluate(expr, value):
    assert evaluate(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "evil",
    [
        "__import__('os').system('true')",
        "2 ** 1000000",
        "x + 1",
        "[1,2]",
        "1 if 1 else 2",
        "len('a')",
        "1/0",
        "",
        # a percent or currency sign between digits is no unit: never dropped to glue "7%2" into 72
        "7%2",
        "7 % 2",
        "7$2",
        "3%.5",
    ],
)
def test_evaluate_refuses_anything_but_arithmetic(evil):
    with pytest.raises(ExprError):
        evaluate(evil)
    assert try_evaluate(evil) is None


def test_arithmetic_steps():
    steps = arithmetic_steps("So 10 * 45 = 450 seeds. Then 81 / 9 = 7. And 3 + 4 is 7.")
    assert [(e, c, ok) for e, c, ok in steps] == [
        ("10 * 45", 450.0, True),
        ("81 / 9", 7.0, False),
        ("3 + 4", 7.0, True),
    ]


def test_svamp_compares_values_not_strings():
    t = get_task("svamp")
    assert t.same_label("( 10.0 * 45.0 )", "(10 * 45)")
    assert t.same_label("450", "( 10.0 * 45.0 )")
    assert not t.same_label("451", "( 10.0 * 45.0 )")
    assert t.in_label_space("(3 + 4)") and not t.in_label_space("seven")


def test_svamp_reads_original_svamp_fields():
    t = get_task("svamp")
    c = t.canonicalize(
        {"Body": "Jack had 8 pens.", "Question": "How many now?", "Equation": "( 8.0 - 3.0 )", "Answer": 5}
    )
    assert c["fields"]["input"] == "Jack had 8 pens.\nHow many now?"
    assert c["label"] == "( 8.0 - 3.0 )"


def test_nli_labels_and_aliases():
    t = get_task("anli")
    assert t.canonicalize({"premise": "p", "hypothesis": "h", "label": 2})["label"] == "contradiction"
    assert t.canonicalize({"premise": "p", "hypothesis": "h", "label": "Neutral"})["label"] == "neutral"
    with pytest.raises(FieldError, match="unknown label"):
        t.canonicalize({"premise": "p", "hypothesis": "h", "label": 7})
    with pytest.raises(FieldError, match="'hypothesis'"):
        t.canonicalize({"premise": "p", "label": 0})
    assert t.render({"premise": "A", "hypothesis": "B"}) == "Premise: A\nHypothesis: B"


def test_cqa_choices():
    t = get_task("cqa")
    ch = ["bank", "library", "wooded area", "zoo", "sea"]
    c = t.canonicalize({"question": "Where?", "choices": ch, "answer": "Wooded Area"})
    assert c["label"] == "wooded area"
    assert t.render(c["fields"], ch).endswith("(c) wooded area\n(d) zoo\n(e) sea")
    assert t.normalize_label("(c) wooded area", ch) == "wooded area"
    assert t.normalize_label("c", ch) == "wooded area"
    assert t.normalize_label("(c)", ch) == "wooded area"
    assert not t.in_label_space("either (a) bank or (b) library", ch)
    with pytest.raises(FieldError, match="not one of the row's choices"):
        t.canonicalize({"question": "Where?", "choices": ch, "answer": "moon"})


@pytest.mark.parametrize(
    "task,raw,rationale,label,status",
    [
        (
            "cqa",
            "Beavers need wood. So the answer is (c) wooded area.\n\nQ: What is next?\nAnswer Choices:\n(a) x",
            "Beavers need wood.",
            "wooded area",
            "ok",
        ),
        (
            "svamp",
            "10 * 45 is 450. The answer is (10 * 45).\n\nQ: There are 15 trees.",
            "10 * 45 is 450.",
            "10 * 45",
            "ok",
        ),
        (
            "anli",
            "Oxford Street is not in Europe. So the answer is contradiction.\n\nPremise: x",
            "Oxford Street is not in Europe.",
            "contradiction",
            "ok",
        ),
        (
            "esnli",
            "A man is a person.\nAnswer: entailment\n\nPremise: other",
            "A man is a person.",
            "entailment",
            "ok",
        ),
        (
            "anli",
            "I cannot decide.\n\nPremise: more stuff. So the answer is neutral.",
            "I cannot decide.",
            None,
            "no_answer",
        ),
        ("anli", "   ", None, None, "empty"),
    ],
)
def test_parse_completion(task, raw, rationale, label, status):
    t = get_task(task)
    choices = ["bank", "library", "wooded area", "zoo", "sea"] if task == "cqa" else None
    p = t.parse_completion(raw, choices)
    assert (p.rationale, p.label, p.status) == (rationale, label, status)


def test_user_task_yaml(tmp_path):
    f = tmp_path / "sentiment.yaml"
    f.write_text(
        "name: sentiment\ninput_fields: [review]\ntemplate: 'Review: {review}'\nlabel_space: fixed\n"
        "labels: [positive, negative]\nlabel_aliases: {'1': positive, '0': negative}\n"
    )
    t = load_task_file(f)
    assert t.canonicalize({"review": "great", "label": 1})["label"] == "positive"
    assert get_task(str(f)).name == "sentiment"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: s\ninput_fields: [review]\ntemplate: x\nlabel_space: fixed\nlabelz: [a]\n")
    with pytest.raises(SbsError) as e:
        load_task_file(bad)
    assert "bad.yaml" in str(e.value) and "labelz" in str(e.value) and "labels" in str(e.value)


def test_unknown_task():
    with pytest.raises(SbsError, match="unknown task"):
        get_task("nope")


def test_user_task_survives_the_round_trip_through_a_version_config(tmp_path):
    from sbs_data.tasks import task_from_stored

    f = tmp_path / "sentiment.yaml"
    f.write_text(
        "name: sentiment\ninput_fields: [review]\ntemplate: 'Review: {review}'\nlabel_space: fixed\n"
        "labels: [positive, negative]\nlabel_aliases: {'1': positive, '0': negative}\nlabel_field: stars\n"
    )
    t = task_from_stored(load_task_file(f).to_dict())
    assert t.normalize_label("1") == "positive" and t.label_field == "stars"
