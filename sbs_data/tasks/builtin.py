"""The paper's four tasks, reading the field names of its released files by default."""

from __future__ import annotations

from sbs_data.tasks.base import Task

NLI_LABELS = ("entailment", "neutral", "contradiction")
_NLI_ALIASES = {
    "0": "entailment",
    "1": "neutral",
    "2": "contradiction",
    "e": "entailment",
    "n": "neutral",
    "c": "contradiction",
    "entails": "entailment",
    "entailed": "entailment",
    "contradicts": "contradiction",
    "contradictory": "contradiction",
    "yes": "entailment",
    "no": "contradiction",
    "it is not possible to tell": "neutral",
    "not possible to tell": "neutral",
    "maybe": "neutral",
}


def _nli(name: str, field_aliases: dict[str, tuple[str, ...]], description: str) -> Task:
    """A premise/hypothesis task over the three NLI labels (e-SNLI and ANLI differ in field names only)."""
    return Task(
        name=name,
        fields=("premise", "hypothesis"),
        template="Premise: {premise}\nHypothesis: {hypothesis}",
        label_space="fixed",
        labels=NLI_LABELS,
        label_aliases=_NLI_ALIASES,
        field_aliases=field_aliases,
        description=description,
    )


BUILTIN: dict[str, Task] = {
    "esnli": _nli(
        "esnli",
        {"premise": ("Sentence1", "sentence1"), "hypothesis": ("Sentence2", "sentence2")},
        "e-SNLI natural language inference (entailment / neutral / contradiction).",
    ),
    "anli": _nli(
        "anli", {"premise": ("context",)}, "Adversarial NLI (entailment / neutral / contradiction)."
    ),
    "cqa": Task(
        name="cqa",
        fields=("question",),
        template="Q: {question}",
        label_space="choices",
        choices_field="choices",
        label_field="answer",
        field_aliases={"answer": ("answerKey", "label")},
        description="CommonsenseQA / CoS-E: a question with 5 answer choices; the label is the choice text.",
    ),
    "svamp": Task(
        name="svamp",
        fields=("input",),
        template="{input}",
        label_space="numeric",
        label_field="label",
        field_aliases={"label": ("Equation", "equation")},
        normaliser="numeric",
        description="SVAMP math word problems; the label is an arithmetic expression or its number.",
    ),
}
