"""What a task is: how an input renders as text, its label space, and how labels compare."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sbs_data.tasks import mathexpr

LabelSpace = Literal["fixed", "choices", "numeric", "free"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


class FieldError(ValueError):
    """A row lacks a field or holds a value the task cannot use; `field` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"field '{field_name}': {message}")
        self.field = field_name


@dataclass(frozen=True)
class Parsed:
    """A teacher completion split into rationale and predicted label."""

    rationale: str | None
    label: str | None
    status: str  # ok | no_answer | empty
    answer_pos: int | None = None  # char offset of the answer phrase in the cut completion


# The answer sentence the paper's prompts end with; the first one wins, the rest is run-on.
_ANSWER = re.compile(
    r"(?:(?:So|Therefore|Thus|Hence),?\s+)?the\s+(?:final\s+)?answer\s+is\s*:?\s*(?P<label>[^\n]*)"
    r"|^\s*Answer\s*:\s*(?P<label2>[^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
# A new invented few-shot example starts after a blank line with one of these markers.
_RUNON = re.compile(r"\n\s*\n\s*(?:Q:|Question:|Premise:|Hypothesis:|Input:|Problem:|A:)", re.IGNORECASE)


def split_completion(text: str | None) -> Parsed:
    """Cut a few-shot CoT completion into rationale + raw answer text (task-agnostic part)."""
    if text is None or not text.strip():
        return Parsed(None, None, "empty")
    runon = _RUNON.search(text)
    body = text[: runon.start()] if runon else text
    m = _ANSWER.search(body)
    if not m:
        rationale = body.split("\n\n")[0].strip()
        return Parsed(rationale or None, None, "no_answer")
    raw_label = (m.group("label") if m.group("label") is not None else m.group("label2")) or ""
    raw_label = raw_label.strip()
    # "(c) wooded area." / "contradiction." -> drop the trailing full stop and quotes
    raw_label = re.sub(r"[.\s]+$", "", raw_label).strip().strip("\"'`").strip()
    rationale = body[: m.start()].strip()
    if not raw_label:
        return Parsed(rationale or None, None, "no_answer", m.start())
    return Parsed(rationale or None, raw_label, "ok", m.start())


@dataclass(frozen=True)
class Task:
    """A task definition. Built-ins live in `builtin.py`; users declare their own in YAML."""

    name: str
    fields: tuple[str, ...]
    template: str
    label_space: LabelSpace
    labels: tuple[str, ...] = ()
    label_aliases: dict[str, str] = field(default_factory=dict)
    field_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    label_field: str = "label"
    label_aliases_fields: tuple[str, ...] = ()
    choices_field: str | None = None
    id_fields: tuple[str, ...] = ("id", "uid", "example_id")
    normaliser: str = "lower"  # lower | none | numeric
    description: str = ""

    # -- reading rows -------------------------------------------------------------------
    def _get(self, row: dict[str, Any], name: str) -> Any:
        for candidate in (name, *self.field_aliases.get(name, ())):
            if candidate in row and row[candidate] is not None:
                return row[candidate]
        return None

    def canonicalize(self, row: dict[str, Any]) -> dict[str, Any]:
        """Map a source row to {fields, label, choices, id}; raises FieldError naming the field."""
        if self.name == "svamp" and "input" not in row and "Body" in row:
            row = {**row, "input": f"{str(row['Body']).strip()}\n{str(row.get('Question', '')).strip()}"}
        values = {}
        for f in self.fields:
            v = self._get(row, f)
            if v is None:
                alts = self.field_aliases.get(f, ())
                hint = f" (or {', '.join(repr(a) for a in alts)})" if alts else ""
                raise FieldError(f, f"missing required field{hint}; use --map SRC={f} to rename a column")
            if isinstance(v, (dict, list)):
                raise FieldError(f, f"expected text, got {type(v).__name__}")
            values[f] = str(v)
        choices = None
        if self.label_space == "choices":
            c = self._get(row, self.choices_field or "choices")
            if isinstance(c, dict) and "text" in c:  # HF commonsense_qa layout
                c = c["text"]
            if not isinstance(c, (list, tuple)) or not c or not all(isinstance(x, str) for x in c):
                raise FieldError(self.choices_field or "choices", "expected a non-empty list of strings")
            choices = [str(x) for x in c]
        raw_label = self._get(row, self.label_field)
        label = None
        if raw_label is not None and str(raw_label).strip() != "":
            label = self.gold_label(raw_label, choices)
        ex_id = None
        for f in self.id_fields:
            if row.get(f) not in (None, ""):
                ex_id = str(row[f])
                break
        return {"fields": values, "label": label, "choices": choices, "id": ex_id}

    def gold_label(self, raw: Any, choices: list[str] | None) -> str:
        """Normalise a gold label or fail: gold labels must lie in the label space."""
        if self.label_space == "numeric":
            text = str(raw).strip()
            if mathexpr.try_evaluate(text) is None:
                raise FieldError(self.label_field, f"label {raw!r} is not an arithmetic expression or number")
            return text
        if isinstance(raw, bool):
            raise FieldError(self.label_field, f"unknown label {raw!r}")
        key = str(raw).strip()
        norm = self.normalize_label(key, choices)
        if self.label_space == "fixed" and norm not in self.labels:
            raise FieldError(self.label_field, f"unknown label {raw!r}; expected one of {list(self.labels)}")
        if self.label_space == "choices" and norm not in (choices or []):
            raise FieldError(self.label_field, f"label {raw!r} is not one of the row's choices {choices}")
        return norm

    # -- rendering ------------------------------------------------------------------------
    def render(self, fields: dict[str, str], choices: list[str] | None = None) -> str:
        """The input text a student (and the teacher prompt) sees."""
        text = self.template.format(**fields)
        if choices:
            text += "\nAnswer Choices:\n" + "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
        return text

    # -- labels -----------------------------------------------------------------------------
    def normalize_label(self, label: Any, choices: list[str] | None = None) -> str | None:
        """Canonical form of a (gold or predicted) label, or None when there is none."""
        if label is None:
            return None
        s = str(label).strip()
        if not s:
            return None
        if self.label_space == "numeric":
            s = s.rstrip(".").strip()
            return s or None
        if s in self.label_aliases:
            return self.label_aliases[s]
        if self.normaliser == "none":
            return s
        low = re.sub(r"\s+", " ", s.lower()).strip().strip(".\"'").strip()
        if self.label_space == "choices" and choices:
            lc = [c.lower().strip() for c in choices]
            m = re.match(r"^\(?([a-z])\)\s*(.*)$", low)
            if m:
                idx = LETTERS.index(m.group(1))
                rest = m.group(2).strip()
                if rest in lc:
                    return choices[lc.index(rest)]
                if not rest and idx < len(choices):
                    return choices[idx]
            if low in lc:
                return choices[lc.index(low)]
            if len(low) == 1 and low in LETTERS[: len(choices)]:
                return choices[LETTERS.index(low)]
            return low
        if low in self.label_aliases:
            return self.label_aliases[low]
        return low

    def label_value(self, label: str | None) -> float | None:
        """Numeric value of a label for numeric tasks (safe AST evaluation)."""
        return mathexpr.try_evaluate(label) if label is not None else None

    def same_label(self, a: str | None, b: str | None, choices: list[str] | None = None) -> bool:
        """Task-aware comparison: SVAMP compares values, others compare normalised text."""
        if a is None or b is None:
            return False
        if self.label_space == "numeric":
            return mathexpr.numbers_equal(self.label_value(a), self.label_value(b))
        return self.normalize_label(a, choices) == self.normalize_label(b, choices)

    def in_label_space(self, label: str | None, choices: list[str] | None = None) -> bool:
        if label is None:
            return False
        if self.label_space == "numeric":
            return self.label_value(label) is not None
        if self.label_space == "fixed":
            return self.normalize_label(label) in self.labels
        if self.label_space == "choices":
            return self.normalize_label(label, choices) in (choices or [])
        return True

    def parse_completion(self, text: str | None, choices: list[str] | None = None) -> Parsed:
        """Rationale + normalised predicted label from a raw few-shot CoT completion."""
        p = split_completion(text)
        if p.label is None:
            return p
        label = p.label
        if self.label_space == "numeric":
            label = _strip_outer_parens(label)
        return Parsed(p.rationale, self.normalize_label(label, choices), p.status, p.answer_pos)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "fields": list(self.fields),
            "template": self.template,
            "label_space": self.label_space,
            "labels": list(self.labels),
            "label_aliases": dict(self.label_aliases),
            "label_field": self.label_field,
            "choices_field": self.choices_field,
            "normaliser": self.normaliser,
        }


def _strip_outer_parens(s: str) -> str:
    s = s.strip()
    while s.startswith("(") and s.endswith(")") and _balanced(s[1:-1]):
        s = s[1:-1].strip()
    return s


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0
