"""Few-shot chain-of-thought prompts: `recipes/prompts/<task>.yaml` or a user's own template file.

A prompt YAML holds an optional `system` text, a `template` laying out one question (`{input}` is the task's
rendered input), and `exemplars` (input, rationale, answer), rendered in the paper's style:
"<question> <rationale> So the answer is <answer>." A plain `.txt` file is a template with `{input}`
(exemplars written inline). The prompt hash (content, not file bytes) goes into lineage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbs_data import RECIPES_DIR, SbsError
from sbs_data.configfile import load_yaml, read_text, stray_placeholders
from sbs_data.generate.cache import _sha, canonical

PROMPTS_DIR = RECIPES_DIR / "prompts"
ANSWER_PHRASE = "So the answer is"
JSON_INSTRUCTION = (
    'Reply with only a JSON object of the form {"rationale": "<your step-by-step reasoning>", '
    '"label": "<the final answer>"}, with no other text.'
)


@dataclass(frozen=True)
class Prompt:
    name: str
    source: str  # file path (or "builtin:<task>" / "generic")
    system: str | None
    template: str
    exemplars: tuple[dict[str, str], ...]
    _rendered: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def sha(self) -> str:
        return _sha(
            canonical({"system": self.system, "template": self.template, "exemplars": list(self.exemplars)})
        )[:16]

    def _question(self, input_text: str) -> str:
        return self.template.replace("{input}", input_text)

    def render(
        self, input_text: str, json_mode: bool = False
    ) -> tuple[str | None, tuple[dict[str, str], ...]]:
        """(system, messages) for one example; the few-shot block and the question form one user message."""
        system, prefix, template = self.parts(json_mode)
        return system, ({"role": "user", "content": prefix + template.replace("{input}", input_text)},)

    def parts(self, json_mode: bool = False) -> tuple[str | None, str, str]:
        """(system, prefix, template): a row's user message is `prefix + template` with `{input}` replaced.

        The prefix (the few-shot block) comes first and is byte-identical on every row, so providers can
        cache it; the planner renders the same thing in SQL from these parts."""
        shots = self._shots(json_mode)
        system = self.system
        if json_mode:
            system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
        return system, (f"{shots}\n\n" if shots else ""), self.template

    def _shots(self, json_mode: bool) -> str:
        """The few-shot block, rendered once per prompt and mode."""
        if json_mode in self._rendered:
            return self._rendered[json_mode]
        shots = []
        for ex in self.exemplars:
            q = self._question(ex["input"])
            if json_mode:
                shots.append(
                    f"{q} {json.dumps({'rationale': ex['rationale'], 'label': ex['answer']}, ensure_ascii=False)}"
                )
            else:
                shots.append(f"{q} {ex['rationale'].strip()} {ANSWER_PHRASE} {ex['answer']}.")
        self._rendered[json_mode] = "\n\n".join(shots)
        return self._rendered[json_mode]

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "sha": self.sha}


def _check_placeholders(path: Path, template: str) -> None:
    """A template is filled by plain replacement of `{input}`: any other `{name}` is most likely a typo."""
    stray = stray_placeholders(template, ["input"])
    if stray:
        raise SbsError(
            f"{path}: template: {{{stray[0]}}} is not a placeholder (the only one is {{input}}); "
            "fix the name, or drop the braces"
        )


def _from_yaml(path: Path) -> Prompt:
    data = load_yaml(path, what="prompt file")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("template"), str)
        or "{input}" not in data["template"]
    ):
        raise SbsError(f"{path}: template: expected a string containing {{input}}")
    exemplars = data.get("exemplars") or []
    if not isinstance(exemplars, list):
        raise SbsError(f"{path}: exemplars: expected a list")
    out = []
    for i, ex in enumerate(exemplars):
        for k in ("input", "rationale", "answer"):
            if (
                not isinstance(ex, dict)
                or not isinstance(ex.get(k), (str, int, float))
                or str(ex.get(k)).strip() == ""
            ):
                raise SbsError(f"{path}: exemplars[{i}].{k}: expected a non-empty string")
        out.append({k: str(ex[k]).strip() for k in ("input", "rationale", "answer")})
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise SbsError(f"{path}: system: expected a string")
    _check_placeholders(path, data["template"])
    return Prompt(
        path.stem, str(path), system.strip() if system else None, data["template"].rstrip("\n"), tuple(out)
    )


def _from_text(path: Path) -> Prompt:
    text = read_text(path, what="prompt file")
    if "{input}" not in text:
        raise SbsError(f"{path}: a prompt template must contain {{input}} where the example goes")
    _check_placeholders(path, text)
    return Prompt(path.stem, str(path), None, text.rstrip("\n"), ())


def generic_prompt(task: Any) -> Prompt:
    """Zero-shot fallback for user tasks without a prompt file."""
    hint = ""
    if task.label_space == "fixed" and task.labels:
        hint = f" The answer is one of: {', '.join(task.labels)}."
    elif task.label_space == "choices":
        hint = " The answer is one of the answer choices."
    system = f"Think step by step, then finish with '{ANSWER_PHRASE} <answer>.'{hint}"
    return Prompt(f"generic-{task.name}", "generic", system, "{input}\nA:", ())


def load_prompt(task: Any, path: str | Path | None = None) -> Prompt:
    """The user's template file when given, else the built-in prompt of the task, else a generic zero-shot one."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise SbsError(f"{p}: prompt file not found")
        return _from_yaml(p) if p.suffix in (".yaml", ".yml") else _from_text(p)
    builtin = PROMPTS_DIR / f"{task.name}.yaml"
    if builtin.exists():
        return _from_yaml(builtin)
    return generic_prompt(task)
