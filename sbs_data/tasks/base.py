"""What a task is: how an input renders as text, its label space, and how labels compare."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sbs_data.configfile import TemplateParts, check_template, fill_template
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


#: Characters of a completion the parser reads (about 4k tokens); the rest is ignored. A rationale and its
#: answer are a few hundred to a few thousand characters: this only bounds the work on runaway or hostile
#: output, so that parsing one completion costs at most a few milliseconds.
MAX_COMPLETION_CHARS = 16_384


def _ws(name: str, least: str = "+") -> str:
    """A whitespace run taken whole, never given back (an atomic group spelled for Python 3.10).

    Used where the next token starts with a non-space, so giving characters back could never help: this
    only removes the per-character retries that make a failed attempt cost time linear in the run.
    """
    return rf"(?=(?P<{name}>\s{least}))(?P={name})"


# The answer sentence the paper's prompts end with; the first one wins, the rest is run-on. The first match
# of `(?:(?:So|Therefore|Thus|Hence),?\s+)?the\s+(?:final\s+)?answer\s+is\s*:?\s*(?P<label>[^\n]*)` or
# `^\s*Answer\s*:\s*(?P<label2>[^\n]*)` (multiline), found in time linear in the text: whitespace runs
# are taken whole, and the second pattern is tried from the start of a run, never from inside one.
_ANSWER = re.compile(
    # (?=[sth]): a cheap first-character test before the alternatives
    rf"(?=[sth])(?:(?:So|Therefore|Thus|Hence),?{_ws('a')})?the{_ws('b')}(?:final{_ws('c')})?answer{_ws('d')}is"
    r"\s*:?\s*(?P<label>[^\n]*)",
    re.IGNORECASE,
)
_ANSWER_LINE = re.compile(rf"(?<!\s)(?:{_ws('ws')})?Answer{_ws('b', '*')}:", re.IGNORECASE)
_LABEL = re.compile(r"\s*(?P<label>[^\n]*)")
# A new invented few-shot example starts after a blank line with one of these markers: a whitespace run
# holding two line breaks, then the marker.
_RUNON = re.compile(
    rf"(?<!\s){_ws('ws')}(?:Q:|Question:|Premise:|Hypothesis:|Input:|Problem:|A:)", re.IGNORECASE
)


def _runon_start(text: str) -> int | None:
    """Where an invented next example starts (the first line break of the blank line before it), or None."""
    for m in _RUNON.finditer(text):
        ws = m.group("ws")
        first = ws.find("\n")
        if first >= 0 and ws.find("\n", first + 1) >= 0:
            return m.start("ws") + first
    return None


def _answer_match(body: str) -> tuple[int, str] | None:
    """(start, raw label) of the first answer phrase in `body`: the leftmost match of either pattern."""
    m = _ANSWER.search(body)
    end = m.start() if m else len(body)
    pos = 0
    while (a := _ANSWER_LINE.search(body, pos, end)) is not None:
        ws = a.group("ws") or ""
        nl = ws.find("\n")
        if a.start() == 0 or nl >= 0:  # "Answer" opens a line (after blank space at most)
            label = _LABEL.match(body, a.end())  # matches anywhere: every part of it is optional
            assert label is not None
            return (0 if a.start() == 0 else a.start() + nl + 1), label.group("label")
        pos = a.end()
    return (m.start(), m.group("label")) if m else None


def _rstrip_dots(s: str) -> str:
    r"""`re.sub(r"[.\s]+$", "", s)` without the quadratic backtracking on long runs of dots."""
    i = len(s)
    while i and (s[i - 1] == "." or s[i - 1].isspace()):
        i -= 1
    return s[:i]


def split_completion(text: str | None) -> Parsed:
    """Cut a few-shot CoT completion into rationale + raw answer text (task-agnostic part).

    Reads the first MAX_COMPLETION_CHARS characters; every step is linear in that length.
    """
    if text is None or not text.strip():
        return Parsed(None, None, "empty")
    text = text[:MAX_COMPLETION_CHARS]
    runon = _runon_start(text)
    body = text[:runon] if runon is not None else text
    found = _answer_match(body)
    if found is None:
        rationale = body.split("\n\n")[0].strip()
        return Parsed(rationale or None, None, "no_answer")
    start, raw_label = found
    raw_label = (raw_label or "").strip()
    # "(c) wooded area." / "contradiction." -> drop the trailing full stop and quotes
    raw_label = _rstrip_dots(raw_label).strip().strip("\"'`").strip()
    rationale = body[:start].strip()
    if not raw_label:
        return Parsed(rationale or None, None, "no_answer", start)
    return Parsed(rationale or None, raw_label, "ok", start)


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
    _parts: TemplateParts = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # also for definitions read back from a workspace: a template never reaches str.format
        self.__dict__["_parts"] = check_template(self.template, self.fields, where=f"task {self.name!r}")

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
            if isinstance(v, float) and not math.isfinite(v):  # JSON NaN / Infinity, a float column's gap
                raise FieldError(
                    f, f"expected text, got {v!r} (NaN or Infinity is no input; fix or drop the row)"
                )
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
        assert norm is not None  # a label that is not None normalizes to text
        return norm

    def used_columns(self) -> frozenset[str]:
        """The source columns this task reads (inputs, label, choices, ids, and their aliases); ingest keeps
        the others in `fields` beside the inputs."""
        used = {*self.fields, self.label_field, *self.id_fields, *self.label_aliases_fields}
        if self.label_space == "choices":
            used.add(self.choices_field or "choices")
        for names in self.field_aliases.values():
            used.update(names)
        if self.name == "svamp":  # canonicalize builds `input` from these
            used.update(("Body", "Question"))
        return frozenset(used)

    # -- rendering ------------------------------------------------------------------------
    def render(self, fields: dict[str, str], choices: list[str] | None = None) -> str:
        """The input text a student (and the teacher prompt) sees."""
        text = fill_template(self._parts, fields)
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
        # chat models mark the answer up: "**science**", "*science*.", "`science`", "Science!"
        low = low.strip("*`\"'").strip().rstrip(".!").strip().strip("*`\"'").strip()
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
    """Drop parentheses around the whole label, repeatedly: "((450))" -> "450", "(1) + (2)" stays.

    One pass to pair the parentheses, then peel pairs that enclose everything (linear, for any nesting).
    """
    s = s.strip()
    match: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(s):
        if ch == "(":
            stack.append(i)
        elif ch == ")" and stack:
            match[stack.pop()] = i
    i, j = 0, len(s)
    while j - i >= 2 and s[i] == "(" and s[j - 1] == ")" and match.get(i) == j - 1:
        i, j = i + 1, j - 1
        while i < j and s[i].isspace():
            i += 1
        while j > i and s[j - 1].isspace():
            j -= 1
    return s[i:j]
