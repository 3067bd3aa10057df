"""Completion -> (rationale, predicted label, parse status), in free-text or structured (--json) mode."""

from __future__ import annotations

import json
import re
from typing import Any

from sbs_data.tasks import Parsed, Task

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL | re.IGNORECASE)


def _json_validator() -> Any:
    from sbs_data.schemas import validator

    return validator("teacher_output")


def parse_json_output(text: str | None) -> tuple[dict | None, str | None]:
    """({rationale, label}, None) when `text` is valid teacher output, else (None, why)."""
    if text is None or not text.strip():
        return None, "empty"
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1)
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        start, end = s.find("{"), s.rfind("}")
        if start < 0 or end <= start:
            return None, f"not JSON ({e.msg})"
        try:
            obj = json.loads(s[start : end + 1])
        except json.JSONDecodeError:
            return None, f"not JSON ({e.msg})"
    errors = list(_json_validator().iter_errors(obj))
    if errors:
        e = errors[0]
        where = ".".join(map(str, e.absolute_path)) or "(top level)"
        return None, f"schema: {where}: {e.message}"
    return obj, None


def parse(
    task: Task, text: str | None, choices: list[str] | None, json_mode: bool
) -> tuple[Parsed, str | None]:
    """The parsed completion and, for invalid structured output, why it is invalid."""
    if not json_mode:
        return task.parse_completion(text, choices), None
    if text is None or not text.strip():
        return Parsed(None, None, "empty"), "empty"
    obj, why = parse_json_output(text)
    if obj is None:
        return Parsed(None, None, "invalid_json"), why
    label = obj["label"].strip()
    if task.label_space == "numeric":
        label = label.rstrip(".").strip()
        while label.startswith("(") and label.endswith(")") and task.label_value(label[1:-1]) is not None:
            label = label[1:-1].strip()
    return Parsed(obj["rationale"].strip() or None, task.normalize_label(label, choices), "ok"), None
