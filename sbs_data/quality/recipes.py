"""Filter recipes: YAML -> validated, ordered steps.

A recipe is checked completely (schema, signal names, threshold types, step names) before any data is
touched; every error names the file, the YAML path (`steps[2].max`) and the line.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sbs_data import RECIPES_DIR, SbsError
from sbs_data.configfile import parse_yaml, read_text
from sbs_data.ingest import SPLIT_ALIASES
from sbs_data.quality.signals import SIGNAL_BY_NAME, THRESHOLD_SIGNALS
from sbs_data.schemas import number_errors, validator
from sbs_data.workspace import config_hash

#: The split names a recipe's `splits` may list ("all" = every split), and the aliases ingest accepts too.
RECIPE_SPLITS = ("train", "validation", "test", "all")
_ORDERABLE = tuple(s.name for s in SIGNAL_BY_NAME.values() if s.dtype in ("bool", "int", "float"))
_THRESHOLD_KEYS = ("name", "description", "signal", "min", "max", "equals", "missing")
_SELECT_KEYS = {
    "majority": ("name", "description", "select", "min_share"),
    "best_per_example": ("name", "description", "select", "by", "n"),
    "dedup": ("name", "description", "select", "kind", "scope", "by"),
}


@dataclass(frozen=True)
class Step:
    """One recipe step. kind: threshold | majority | best_per_example | dedup."""

    name: str
    kind: str
    signal: str | None = None
    min: float | None = None
    max: float | None = None
    equals: Any = None
    missing: str = "keep"
    min_share: float | None = None
    by: tuple[tuple[str, bool], ...] = ()  # (signal, descending)
    n: int = 1
    dedup_kind: str | None = None
    scope: str = "all"
    description: str = ""

    def applies_sql(self) -> str:
        """SQL boolean over a row's signals: the step can act on this row at all. A threshold needs its
        signal (NULL = not applicable), `majority` and `best_per_example` an example with more samples than
        they keep, a dedup step a key. A step that applies to no row shows n/a in funnels, not "dropped 0"."""
        if self.kind == "threshold":
            return f"{self.signal} IS NOT NULL"
        if self.kind == "majority":
            return "coalesce(n_samples, 0) > 1"
        if self.kind == "best_per_example":
            return f"coalesce(n_samples, 0) > {int(self.n)}"
        return ("rationale_hash" if self.dedup_kind == "exact" else "near_dup_cluster") + " IS NOT NULL"

    def describe(self) -> str:
        """A one-line rule for funnels and reports."""
        if self.kind == "threshold":
            parts = []
            if self.equals is not None:
                parts.append(f"{self.signal} = {json.dumps(self.equals)}")
            if self.min is not None and self.max is not None:
                parts.append(f"{self.min} <= {self.signal} <= {self.max}")
            elif self.min is not None:
                parts.append(f"{self.signal} >= {self.min}")
            elif self.max is not None:
                parts.append(f"{self.signal} <= {self.max}")
            rule = " and ".join(parts)
            return rule + (" (NULL drops)" if self.missing == "drop" else "")
        order = ", ".join(f"{s} {'desc' if d else 'asc'}" for s, d in self.by)
        if self.kind == "majority":
            extra = f" with share >= {self.min_share}" if self.min_share else ""
            return f"label = example's majority label{extra}"
        if self.kind == "best_per_example":
            return f"best {self.n} per example by {order}"
        scope = "within each example" if self.scope == "example" else "across all rows"
        return f"one per {self.dedup_kind}-duplicate group {scope}" + (f" (by {order})" if order else "")


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[Step, ...]
    content: dict  # the parsed YAML, stored in the selection version's config (lineage)
    source: str = ""
    description: str = ""
    hash: str = field(default="")
    splits: tuple[str, ...] = ("train",)  # ("all",) = every split

    def signals(self) -> set[str]:
        """The signals the steps read (thresholds, orderings, and what `Step.applies_sql` needs)."""
        out = {"n_samples"} if any(s.kind in ("majority", "best_per_example") for s in self.steps) else set()
        for s in self.steps:
            if s.signal:
                out.add(s.signal)
            out.update(k for k, _ in s.by)
        return out


def resolve_recipe_path(spec: str | Path) -> Path:
    """A recipe file path, or the name of a shipped recipe (`default`, `strict`)."""
    p = Path(spec)
    if p.exists():
        return p
    builtin = RECIPES_DIR / f"{spec}.yaml"
    if not p.suffix and builtin.exists():
        return builtin
    shipped = sorted(
        x.stem for x in RECIPES_DIR.glob("*.yaml") if "\nsteps:" in "\n" + x.read_text(encoding="utf-8")
    )
    raise SbsError(f"{spec}: no such recipe file (shipped recipes: {', '.join(shipped) or 'none'})")


def load_recipe(spec: str | Path) -> Recipe:
    """Read and validate a recipe file (or shipped recipe name); raises SbsError naming file:path:line."""
    path = resolve_recipe_path(spec)
    return parse_recipe(read_text(path, what="recipe"), where=str(path))


def parse_recipe(text: str, where: str = "<recipe>") -> Recipe:
    data, root = parse_yaml(text, where=where, what="recipe")
    if not isinstance(data, dict):
        raise SbsError(f"{where}: a recipe is a mapping with a 'steps' list, got {type(data).__name__}")
    errors = _schema_errors(data, root) or _semantic_errors(data, root)
    if errors:
        lines = [f"{where}: {e}" for e in errors[:20]]
        raise SbsError("invalid recipe:\n  " + "\n  ".join(lines))
    steps = tuple(_step(s) for s in data["steps"])
    name = data.get("name") or Path(where).stem
    return Recipe(
        name=name,
        steps=steps,
        content=data,
        source=where,
        description=data.get("description", ""),
        hash=config_hash(data),
        splits=tuple(SPLIT_ALIASES.get(x, x) for x in data.get("splits", ["train"])),
    )


# -- errors -------------------------------------------------------------------------------------------


def _fmt_path(parts: list) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _line(root: yaml.Node | None, parts: list) -> int | None:
    node = root
    for p in parts:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == p), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            node = node.value[p]
        else:
            return None
        if node is None:
            return None
    return node.start_mark.line + 1 if node is not None else None


def _at(root: yaml.Node | None, parts: list, msg: str, key_node: bool = False) -> str:
    line = _line(root, parts[:-1] if key_node else parts)
    if key_node and line is not None:
        # point at the key itself
        parent = root
        for p in parts[:-1]:
            if parent is None:
                break
            parent = (
                next((v for k, v in parent.value if k.value == p), None)
                if isinstance(parent, yaml.MappingNode)
                else parent.value[p]
            )
        if isinstance(parent, yaml.MappingNode):
            line = next((k.start_mark.line + 1 for k, _ in parent.value if k.value == parts[-1]), line)
    return f"{_fmt_path(parts)}: {msg}" + (f" (line {line})" if line else "")


def _suggest(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    if not close:  # max_words -> max, min_len -> min
        close = [o for o in options if o in str(word).split("_")][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _allowed_keys(step: Any) -> tuple[str, ...]:
    if isinstance(step, dict) and "select" in step:
        return _SELECT_KEYS.get(step["select"], ("name", "description", "select"))
    return _THRESHOLD_KEYS


def _schema_errors(data: dict, root: yaml.Node) -> list[str]:
    out: list[str] = [_at(root, path, msg) for path, msg in number_errors(data)]
    seen: set[str] = set()
    errs = sorted(validator("recipe").iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    for e in errs:
        parts = list(e.absolute_path)
        if e.validator in ("unevaluatedProperties", "additionalProperties"):
            obj = e.instance if isinstance(e.instance, dict) else {}
            allowed = (
                _allowed_keys(obj)
                if parts and parts[0] == "steps"
                else ("name", "description", "splits", "steps")
            )
            for key in obj:
                if key not in allowed:
                    msg = _at(
                        root,
                        [*parts, key],
                        f"unknown key{_suggest(key, allowed)}; allowed: {', '.join(allowed)}",
                        True,
                    )
                    if msg not in seen:
                        seen.add(msg)
                        out.append(msg)
            continue
        if e.validator == "anyOf" and isinstance(e.instance, dict) and "select" not in e.instance:
            unknown = [k for k in e.instance if k not in _THRESHOLD_KEYS]
            if unknown:
                continue  # the unknown-key error says it better
            out.append(_at(root, parts, "a threshold step needs at least one of min, max, equals"))
            continue
        if e.validator == "enum" and parts and parts[-1] == "signal":
            out.append(
                _at(root, parts, f"unknown signal {e.instance!r}{_suggest(e.instance, THRESHOLD_SIGNALS)}")
            )
            continue
        if e.validator == "enum" and parts and parts[-1] == "select":
            out.append(
                _at(root, parts, f"unknown selection {e.instance!r}; use majority, best_per_example or dedup")
            )
            continue
        out.append(_at(root, parts, e.message))
    return out


def _semantic_errors(data: dict, root: yaml.Node) -> list[str]:
    """What the schema cannot say: types per signal, bounds order, order keys, unique names."""
    out: list[str] = []
    for i, split in enumerate(data.get("splits") or []):
        if split not in RECIPE_SPLITS and split not in SPLIT_ALIASES:
            out.append(
                _at(
                    root,
                    ["splits", i],
                    f"unknown split {split!r}{_suggest(split, RECIPE_SPLITS)}; known: {', '.join(RECIPE_SPLITS)}",
                )
            )
    names: dict[str, int] = {}
    for i, s in enumerate(data["steps"]):
        at = ["steps", i]
        if s["name"] in names:
            out.append(
                _at(
                    root, [*at, "name"], f"duplicate step name {s['name']!r} (also steps[{names[s['name']]}])"
                )
            )
        names.setdefault(s["name"], i)
        if "select" not in s:
            sig = SIGNAL_BY_NAME[s["signal"]]
            if sig.dtype in ("bool", "str"):
                for k in ("min", "max"):
                    if k in s:
                        out.append(
                            _at(
                                root,
                                [*at, k],
                                f"{sig.name} is a {_kind(sig.dtype)} signal; use equals: instead of {k}",
                            )
                        )
            if "equals" in s:
                v = s["equals"]
                ok = (
                    isinstance(v, bool)
                    if sig.dtype == "bool"
                    else isinstance(v, str)
                    if sig.dtype == "str"
                    else isinstance(v, (int, float)) and not isinstance(v, bool)
                )
                if not ok:
                    out.append(
                        _at(
                            root,
                            [*at, "equals"],
                            f"{sig.name} is a {_kind(sig.dtype)} signal; {v!r} is not a {_kind(sig.dtype)}",
                        )
                    )
            if "min" in s and "max" in s and s["min"] > s["max"]:
                out.append(
                    _at(root, [*at, "min"], f"min {s['min']} is above max {s['max']}: no row could pass")
                )
        for j, key in enumerate(s.get("by") or []):
            sig_name = key.split()[0]
            if sig_name not in _ORDERABLE:
                hint = _suggest(sig_name, _ORDERABLE)
                out.append(
                    _at(
                        root,
                        [*at, "by", j],
                        f"cannot rank by {sig_name!r}{hint}: use a bool/int/float signal",
                    )
                )
    return out


def _kind(dtype: str) -> str:
    return {"bool": "boolean", "str": "text", "int": "number", "float": "number"}[dtype]


def _step(s: dict) -> Step:
    by = tuple((k.split()[0], not k.endswith(" asc")) for k in s.get("by") or [])
    if "select" in s:
        return Step(
            name=s["name"],
            kind=s["select"],
            min_share=s.get("min_share"),
            by=by,
            n=s.get("n", 1),
            dedup_kind=s.get("kind"),
            scope=s.get("scope", "all"),
            description=s.get("description", ""),
        )
    return Step(
        name=s["name"],
        kind="threshold",
        signal=s["signal"],
        min=s.get("min"),
        max=s.get("max"),
        equals=s.get("equals"),
        missing=s.get("missing", "keep"),
        description=s.get("description", ""),
    )
