"""Task definitions: built-ins for the paper's datasets and YAML user tasks."""

from __future__ import annotations

import json
from pathlib import Path

from sbs_data import SbsError
from sbs_data.configfile import check_template, key_node, parse_yaml, read_text, value_line
from sbs_data.tasks.base import FieldError, Parsed, Task, split_completion
from sbs_data.tasks.builtin import BUILTIN

__all__ = ["Task", "Parsed", "FieldError", "get_task", "load_task_file", "split_completion", "BUILTIN"]


def load_task_file(path: str | Path) -> Task:
    """Load a user task from YAML, validated by schemas/task.schema.json."""
    from sbs_data.schemas import validate

    p = Path(path)
    data, root = parse_yaml(read_text(p, what="task file"), where=str(p), what="task file")
    validate(data, "task", where=str(p))
    line, exact = value_line(key_node(root, "template"))
    check_template(data["template"], data["input_fields"], where=str(p), line=line, exact_lines=exact)
    space = data["label_space"]
    return Task(
        name=data["name"],
        fields=tuple(data["input_fields"]),
        template=data["template"],
        label_space=space,
        labels=tuple(data.get("labels", ())),
        label_aliases={str(k): str(v) for k, v in (data.get("label_aliases") or {}).items()},
        label_field=data.get("label_field", "label"),
        choices_field=data.get("choices_field", "choices") if space == "choices" else None,
        normaliser=data.get("normaliser", "numeric" if space == "numeric" else "lower"),
        description=data.get("description", ""),
    )


def get_task(name_or_path: str, stored: dict | None = None) -> Task:
    """A built-in task by name, a YAML task file by path, or a task definition stored in the workspace."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return load_task_file(p)
    if stored is not None:
        return task_from_stored(stored)
    raise SbsError(
        f"unknown task {name_or_path!r}: use one of {sorted(BUILTIN)} or a path to a task YAML file"
    )


def task_from_stored(stored: dict | str) -> Task:
    """Rebuild a user task from the definition recorded in a version's config."""
    d: dict = json.loads(stored) if isinstance(stored, str) else stored
    if d["name"] in BUILTIN:
        return BUILTIN[d["name"]]
    return Task(
        name=d["name"],
        fields=tuple(d["fields"]),
        template=d["template"],
        label_space=d["label_space"],
        labels=tuple(d.get("labels", ())),
        label_aliases=dict(d.get("label_aliases") or {}),
        label_field=d.get("label_field", "label"),
        normaliser=d.get("normaliser", "lower"),
        choices_field=d.get("choices_field") or ("choices" if d["label_space"] == "choices" else None),
    )
