"""Task-aware accuracy: arithmetic by value through a safe AST walk, everything else by normalised text."""

from __future__ import annotations

import pytest
from sbs_trainer.metrics import accuracy, is_arithmetic, is_correct, safe_eval


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("( 10.0 * 45.0 )", 450.0),
        ("450", 450.0),
        ("-(3 - 5) / 4", 0.5),
        ("1,000 + 1", 1001.0),
        ("12.5.", 12.5),
    ],
)
def test_safe_eval_values(text, value):
    assert safe_eval(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "2 ** 10",
        "1 / 0",
        "a + b",
        "",
        None,
        "[1, 2]",
        "True + 1",
        "(" * 300 + "1" + ")" * 300,
    ],
)
def test_safe_eval_refuses(text):
    assert safe_eval(text) is None


def test_is_correct():
    assert is_correct("( 10.0 * 45.0 )", "450", arithmetic=True)
    assert not is_correct("( 10.0 * 44.0 )", "450", arithmetic=True)
    assert not is_correct("garbage", "450", arithmetic=True)
    assert is_correct("  Entailment ", "entailment", arithmetic=False)
    assert not is_correct("450.0", "450", arithmetic=False)
    assert not is_correct("x", None, arithmetic=False)


def test_accuracy_and_task_detection():
    assert is_arithmetic("svamp", ["anything"])
    assert is_arithmetic("my_math", ["( 1 + 2 )", "4"])
    assert not is_arithmetic("esnli", ["entailment", "neutral"])
    m = accuracy(["( 1.0 + 2.0 )", "5", "7"], ["3", "5.0", None], "svamp")
    assert m == {"accuracy": 1.0, "n": 2, "comparison": "numeric"}
    m = accuracy(["Neutral", "entailment"], ["neutral", "contradiction"], "anli")
    assert m == {"accuracy": 0.5, "n": 2, "comparison": "text"}
    assert accuracy([], [], "cqa")["accuracy"] is None
