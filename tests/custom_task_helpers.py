"""A user's own task, as a new user meets it: a headline-topic task YAML and its rows (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

TOPICS = ["sports", "politics", "tech"]


def topic_task(tmp_path: Path, label_field: str | None = None) -> Path:
    """A task YAML whose label field is `label` (the default) unless told otherwise."""
    path = tmp_path / f"topics-{label_field or 'label'}.yaml"
    lines = [
        "name: topics",
        "input_fields: [headline]",
        'template: "Headline: {headline}"',
        "label_space: fixed",
        f"labels: [{', '.join(TOPICS)}]",
    ]
    if label_field:
        lines.append(f"label_field: {label_field}")
    path.write_text("\n".join(lines) + "\n")
    return path


def topic_rows(n: int, start: int = 0, **extra) -> list[dict]:
    """Rows with `headline` + `topic` (+ a `site` column the task does not read)."""
    return [
        {"headline": f"Headline number {i} of the day", "topic": TOPICS[i % 3], "site": f"s{i % 2}", **extra}
        for i in range(start, start + n)
    ]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
