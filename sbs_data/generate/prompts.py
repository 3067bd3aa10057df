"""Few-shot chain-of-thought prompts: `recipes/prompts/<task>.yaml` or a user's own template file.

A prompt YAML holds an optional `system` text, a `template` laying out one question (`{input}` is the task's
rendered input), and `exemplars` (input, rationale, answer), rendered in the paper's style:
"<question> <rationale> So the answer is <answer>." A plain `.txt` file is a template with `{input}`
(exemplars written inline). The prompt hash (content, not file bytes) goes into lineage.

An optional `hint` is the question's hinted form for `sbs-data rationalize` (STaR's rationalization): a
template with `{input}` and `{answer}` (the gold answer, as the exemplars write answers). Hinted prompts show
the exemplars in the hinted form too, so the teacher sees what is asked. A prompt without one gets
`DEFAULT_HINT` after its template's question (before a closing "A:"). The hint has its own hash
(`hint_sha`), so adding one leaves the unhinted prompt's hash, and the versions made with it, unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbs_data import RECIPES_DIR, SbsError, log
from sbs_data.configfile import load_yaml, read_text, stray_placeholders
from sbs_data.generate.cache import _sha, canonical
from sbs_data.tasks.base import LETTERS

PROMPTS_DIR = RECIPES_DIR / "prompts"
ANSWER_PHRASE = "So the answer is"
JSON_INSTRUCTION = (
    'Reply with only a JSON object of the form {"rationale": "<your step-by-step reasoning>", '
    '"label": "<the final answer>"}, with no other text.'
)
#: The hint sentence added to prompts that carry no `hint` form. The fake LLM server used by the tests reads
#: the answer from "The correct answer is X" up to the end of that line.
DEFAULT_HINT = (
    "The correct answer is {answer}.\n"
    "Explain step by step why it is correct, reasoning from the question alone (do not mention that the answer "
    f'was given), then end with "{ANSWER_PHRASE} {{answer}}."'
)
_FILL = re.compile(r"\{(input|answer)\}")
#: How a rationale `prompt init` could not have written starts (generate refuses a prompt that holds one).
RATIONALE_TODO = "TODO:"


@dataclass(frozen=True)
class Prompt:
    name: str
    source: str  # file path (or "builtin:<task>" / "generic")
    system: str | None
    template: str
    exemplars: tuple[dict[str, str], ...]
    hint: str | None = None  # the hinted question template ({input}, {answer}); None: DEFAULT_HINT added
    for_task: str | None = None  # the file's `task:` (what `prompt init` wrote it for); not part of the sha
    _rendered: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def sha(self) -> str:
        return _sha(
            canonical({"system": self.system, "template": self.template, "exemplars": list(self.exemplars)})
        )[:16]

    def _question(self, input_text: str) -> str:
        return self.template.replace("{input}", input_text)

    @property
    def hint_template(self) -> str:
        """The hinted question: the prompt's `hint`, else its template with DEFAULT_HINT before a final "A:"."""
        if self.hint is not None:
            return self.hint
        t = self.template.rstrip()
        if t.endswith("A:"):
            return f"{t[:-2].rstrip()}\n{DEFAULT_HINT}\nA:"
        return f"{t}\n{DEFAULT_HINT}"

    @property
    def hint_sha(self) -> str:
        return _sha(canonical({"sha": self.sha, "hint": self.hint_template}))[:16]

    def render_hinted(
        self, input_text: str, answer: str, json_mode: bool = False
    ) -> tuple[str | None, tuple[dict[str, str], ...]]:
        """(system, messages) asking for a rationale of the known `answer`; the same layout as `render`."""
        system, prefix, template = self.parts(json_mode, hinted=True)
        return system, ({"role": "user", "content": prefix + fill(template, input_text, answer)},)

    def render(
        self, input_text: str, json_mode: bool = False
    ) -> tuple[str | None, tuple[dict[str, str], ...]]:
        """(system, messages) for one example; the few-shot block and the question form one user message."""
        system, prefix, template = self.parts(json_mode)
        return system, ({"role": "user", "content": prefix + template.replace("{input}", input_text)},)

    def parts(self, json_mode: bool = False, hinted: bool = False) -> tuple[str | None, str, str]:
        """(system, prefix, template): a row's user message is `prefix + template` with `{input}` replaced
        (and `{answer}` when `hinted`).

        The prefix (the few-shot block) comes first and is byte-identical on every row, so providers can
        cache it; the planner renders the same thing in SQL from these parts."""
        shots = self._shots(json_mode, hinted)
        system = self.system
        if json_mode:
            system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
        return system, (f"{shots}\n\n" if shots else ""), self.hint_template if hinted else self.template

    def _shots(self, json_mode: bool, hinted: bool = False) -> str:
        """The few-shot block, rendered once per prompt and mode."""
        mode = (json_mode, hinted)
        if mode in self._rendered:
            return self._rendered[mode]
        shots = []
        for ex in self.exemplars:
            q = fill(self.hint_template, ex["input"], ex["answer"]) if hinted else self._question(ex["input"])
            if json_mode:
                shots.append(
                    f"{q} {json.dumps({'rationale': ex['rationale'], 'label': ex['answer']}, ensure_ascii=False)}"
                )
            else:
                shots.append(f"{q} {ex['rationale'].strip()} {ANSWER_PHRASE} {ex['answer']}.")
        self._rendered[mode] = "\n\n".join(shots)
        return self._rendered[mode]

    def to_config(self) -> dict[str, Any]:
        """What lineage records: name, source, hash, and the prompt itself (`content`), so that a later
        command (`rationalize`) asks with the same prompt even when the file is gone or changed."""
        return {"name": self.name, "source": self.source, "sha": self.sha, "content": self.content()}

    def content(self) -> dict[str, Any]:
        """The prompt as its YAML file holds it (`from_content` reads it back)."""
        return {
            "system": self.system,
            "template": self.template,
            "exemplars": [dict(ex) for ex in self.exemplars],
            "hint": self.hint,
        }

    @property
    def placeholders(self) -> list[int]:
        """Exemplars whose rationale is still the placeholder `prompt init` writes without --teacher."""
        return [i for i, ex in enumerate(self.exemplars) if ex["rationale"].startswith(RATIONALE_TODO)]


def from_content(config: dict[str, Any]) -> Prompt | None:
    """The prompt a version's config recorded (`Prompt.to_config`), or None when it recorded none."""
    c = config.get("content") if isinstance(config, dict) else None
    if not isinstance(c, dict) or not isinstance(c.get("template"), str):
        return None
    exemplars = tuple(
        {k: str(ex[k]) for k in ("input", "rationale", "answer")} for ex in c.get("exemplars") or ()
    )
    return Prompt(
        str(config.get("name") or "stored"),
        str(config.get("source") or "stored"),
        c.get("system"),
        c["template"],
        exemplars,
        c.get("hint"),
    )


def fill(template: str, input_text: str, answer: str) -> str:
    """`{input}` and `{answer}` replaced in one pass: text inside the input is never read as a placeholder."""
    values = {"input": input_text, "answer": answer}
    return _FILL.sub(lambda m: values[m.group(1)], template)


def answer_text(task: Any, label: str, choices: list[str] | None) -> str:
    """A gold label as the prompts' exemplars write answers: "(b) refrigerator" for a choice, else the label."""
    if task.label_space == "choices" and choices and label in choices:
        return f"({LETTERS[choices.index(label)]}) {label}"
    return str(label)


def _check_hint(path: Path, hint: Any) -> str | None:
    if hint is None:
        return None
    if not isinstance(hint, str) or "{input}" not in hint or "{answer}" not in hint:
        raise SbsError(f"{path}: hint: expected a string containing {{input}} and {{answer}}")
    stray = stray_placeholders(hint, ["input", "answer"])
    if stray:
        raise SbsError(
            f"{path}: hint: {{{stray[0]}}} is not a placeholder (the hint has {{input}} and {{answer}}); "
            "fix the name, or drop the braces"
        )
    return hint.rstrip("\n")


def _check_placeholders(path: Path, template: str) -> None:
    """A template is filled by plain replacement of `{input}`: any other `{name}` is most likely a typo."""
    stray = stray_placeholders(template, ["input"])
    if stray:
        raise SbsError(
            f"{path}: template: {{{stray[0]}}} is not a placeholder (the only one is {{input}}); "
            "fix the name, or drop the braces"
        )


def _from_yaml(path: Path) -> Prompt:
    from sbs_data.schemas import validate

    data = load_yaml(path, what="prompt file")
    validate(data, "prompt", where=str(path))
    if "{input}" not in data["template"]:
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
        path.stem,
        str(path),
        system.strip() if system else None,
        data["template"].rstrip("\n"),
        tuple(out),
        _check_hint(path, data.get("hint")),
        str(data["task"]) if data.get("task") is not None else None,
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


def read_prompt(path: str | Path) -> Prompt:
    """A prompt file as it is (.yaml validated by schemas/prompt.schema.json, or .txt with {input})."""
    p = Path(path)
    if not p.exists():
        raise SbsError(f"{p}: prompt file not found")
    return _from_yaml(p) if p.suffix in (".yaml", ".yml") else _from_text(p)


def load_prompt(task: Any, path: str | Path | None = None) -> Prompt:
    """The prompt to ask with: the user's template file when given, else the built-in prompt of the task,
    else a generic zero-shot one (`generic_prompt`; `is_generic` tells, so callers can say so). A file whose
    exemplars still hold `prompt init`'s placeholder rationale is refused: the teacher would copy it."""
    if path is not None:
        prompt = read_prompt(path)
        outside = [
            i
            for i, ex in enumerate(prompt.exemplars)
            if getattr(task, "label_space", None) == "fixed" and not task.in_label_space(ex["answer"])
        ]
        if outside:
            i = outside[0]
            log.warning(
                f"warning: {path}: exemplars[{i}].answer {prompt.exemplars[i]['answer']!r} is not in the label "
                f"space of task {task.name!r} ({', '.join(task.labels)}; {len(outside)} of "
                f"{len(prompt.exemplars)} exemplars): the teacher answers the way the exemplars do"
            )
        if prompt.for_task is not None and prompt.for_task != task.name:
            log.warning(
                f"warning: {path} was written for task {prompt.for_task!r}, but the rows are task {task.name!r}: "
                "check --prompt (or fix the file's `task:` line if it does fit this task)"
            )
        if prompt.placeholders:
            i = prompt.placeholders[0]
            raise SbsError(
                f"{path}: exemplars[{i}].rationale: still the placeholder `sbs-data prompt init` wrote "
                f"({len(prompt.placeholders)} of {len(prompt.exemplars)} exemplars): write the reasoning that "
                "leads to each answer, or let a teacher write them (`sbs-data prompt init ... --teacher SPEC "
                "--force`)"
            )
        return prompt
    builtin = PROMPTS_DIR / f"{task.name}.yaml"
    if builtin.exists():
        return _from_yaml(builtin)
    return generic_prompt(task)


def is_generic(prompt: Prompt) -> bool:
    """Whether `prompt` is the zero-shot fallback of a task without a prompt of its own."""
    return prompt.source == "generic"


def generic_warning(task: Any, dataset: str = "DATASET", labelled: bool = True) -> str:
    """The warning for a task asked with the zero-shot fallback, with the fix (the command to run). A dataset
    ingested with --no-labels has no rows to take exemplars from: the command names a labelled one instead."""
    source = dataset if labelled else "LABELLED_DATASET"
    rows = (
        "your labelled rows" if labelled else f"labelled rows of the task ({dataset} has none: ingest a few)"
    )
    return (
        f"warning: no few-shot prompt for task {task.name!r}: using a zero-shot generic prompt. Write one "
        f"from {rows} with `sbs-data prompt init {task.name} --from {source} --shots 6 --out "
        f"{task.name}.prompt.yaml` (add --teacher SPEC to have the rationales written), then pass "
        f"--prompt {task.name}.prompt.yaml"
    )
