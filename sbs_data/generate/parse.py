"""Completion -> (rationale, predicted label, parse status), in free-text or structured (--json) mode."""

from __future__ import annotations

import json
import re
from typing import Any

from sbs_data.tasks import Parsed, Task
from sbs_data.tasks.base import MAX_COMPLETION_CHARS

_JSON_TAG = re.compile(r"json", re.IGNORECASE)


def _unfence(s: str) -> str:
    """The body of a ```json ... ``` fence around the whole (stripped) text, else the text.

    Same result as `^\\s*```(?:json)?\\s*(.*?)\\s*```\\s*$` (DOTALL), whose lazy group re-tries the closing
    fence at every character: quadratic on a long unclosed fence.
    """
    if len(s) < 6 or not (s.startswith("```") and s.endswith("```")):
        return s
    inner = s[3:-3]
    tag = _JSON_TAG.match(inner)
    if tag:
        inner = inner[tag.end() :]
    return inner.strip()


def _json_validator() -> Any:
    from sbs_data.schemas import validator

    return validator("teacher_output")


def parse_json_output(text: str | None) -> tuple[dict | None, str | None]:
    """({rationale, label}, None) when `text` is valid teacher output, else (None, why).

    Output longer than MAX_COMPLETION_CHARS is refused unread (no JSON answer of ours is that long).
    """
    if text is None or not text.strip():
        return None, "empty"
    if len(text) > MAX_COMPLETION_CHARS:
        return None, f"too long ({len(text)} characters; at most {MAX_COMPLETION_CHARS})"
    s = _unfence(text.strip())
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        start, end = s.find("{"), s.rfind("}")
        if start < 0 or end <= start:
            return None, f"not JSON ({e.msg})"
        try:
            obj = json.loads(s[start : end + 1])
        except (ValueError, RecursionError):
            return None, f"not JSON ({e.msg})"
    except RecursionError:
        return None, "not JSON (nested too deeply)"
    except ValueError as e:  # a number too long for Python to convert
        return None, f"not JSON ({e})"
    errors = list(_json_validator().iter_errors(obj))
    if errors:
        first = errors[0]
        where = ".".join(map(str, first.absolute_path)) or "(top level)"
        return None, f"schema: {where}: {first.message}"
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
