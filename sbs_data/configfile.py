"""Reading the user's config files (recipes, tasks, prompts, prices) without trusting them.

Every file is read through here so that a careless or hostile file fails the same clean way, naming the file
(and line where there is one), before anything else looks at it:

- at most `MAX_CONFIG_BYTES` are read (our configs are a few KB; a prompt with many exemplars, tens of KB);
- the text must be UTF-8 (a BOM is allowed); a bad byte is reported as file:line:column;
- YAML is parsed with PyYAML's safe loader, and the composed node graph is checked *before* any Python
  object is built: at most `MAX_YAML_NODES` nodes counting every alias expansion, at most `MAX_YAML_DEPTH`
  levels, no recursive aliases, no duplicate keys. Aliases themselves stay allowed (sharing one `by:` list
  between steps is fair use); what is bounded is the size of the tree they expand to, since everything
  downstream (schema validation, config hashes, JSON dumps into lineage) walks the expanded tree. The
  check walks each distinct node once, so a "billion laughs" file is refused in microseconds.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sbs_data import SbsError

#: Largest config file read, in bytes.
MAX_CONFIG_BYTES = 1 << 20
#: Largest YAML tree accepted, in nodes, with every alias counted as a copy of what it points to.
MAX_YAML_NODES = 100_000
#: Deepest YAML nesting accepted.
MAX_YAML_DEPTH = 64

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "check_template",
    "fill_template",
    "key_node",
    "load_yaml",
    "parse_yaml",
    "read_text",
    "stray_placeholders",
    "value_line",
]


def read_text(path: str | Path, *, what: str) -> str:
    """The file's text: UTF-8, at most MAX_CONFIG_BYTES; SbsError naming the file (and line) otherwise.

    `what` names the file's role in messages ("recipe", "task file", "prompt file", ...).
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise SbsError(f"{p}: {what} not found") from None
    except OSError as e:
        raise SbsError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise SbsError(f"{p}: {what} is larger than {MAX_CONFIG_BYTES // 1024} KiB; is it the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SbsError(
            f"{p}:{line}:{col}: {what} is not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8"
        ) from None


def load_yaml(path: str | Path, *, what: str) -> Any:
    """The YAML document in `path` as Python data, under the limits above; SbsError naming file:line."""
    return parse_yaml(read_text(path, what=what), where=str(path), what=what)[0]


def parse_yaml(text: str, *, where: str, what: str) -> tuple[Any, yaml.Node | None]:
    """(data, root node) of one YAML document; the node tree gives line numbers for later messages.

    `where` (usually the file path) prefixes every message.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise SbsError(f"{where}: {what} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check(node, where, what)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f":{mark.line + 1}" if mark is not None else ""
        col = f", column {mark.column + 1}" if mark is not None else ""
        raise SbsError(f"{where}{at}: not valid YAML ({e.problem or e.context}{col})") from None
    except yaml.YAMLError as e:
        raise SbsError(f"{where}: not valid YAML ({e})") from None
    except _TooDeep as e:
        raise SbsError(
            f"{where}:{e.line}: {what} is nested too deeply (more than {MAX_YAML_DEPTH} levels)"
        ) from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise SbsError(f"{where}: {what} holds a value that cannot be read: {e}") from None
    finally:
        loader.dispose()
    return data, node


class _TooDeep(Exception):
    def __init__(self, line: int):
        self.line = line


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing deep nesting while composing (before Python's recursion limit bites)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check(root: yaml.Node, where: str, what: str) -> None:
    """Refuse alias bombs, recursive aliases, deep nesting and duplicate keys, walking each node once."""
    size: dict[int, int] = {}  # id(node) -> nodes in its expanded subtree
    height: dict[int, int] = {}  # id(node) -> levels of its expanded subtree
    open_: set[int] = set()  # the nodes being walked: the current node's ancestors
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]  # (node, children done?), post-order
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if size[key] > MAX_YAML_NODES:
                raise SbsError(
                    f"{where}:{node.start_mark.line + 1}: {what} expands to more than {MAX_YAML_NODES} "
                    "YAML nodes (each alias counts as a copy of what it names); refusing it"
                )
            if height[key] > MAX_YAML_DEPTH:
                raise SbsError(
                    f"{where}:{node.start_mark.line + 1}: {what} is nested too deeply "
                    f"(more than {MAX_YAML_DEPTH} levels)"
                )
            continue
        if key in size:
            continue
        if key in open_:
            raise SbsError(f"{where}:{node.start_mark.line + 1}: {what} holds a recursive YAML alias")
        if isinstance(node, yaml.MappingNode):
            _no_duplicate_keys(node, where)
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _no_duplicate_keys(node: yaml.MappingNode, where: str) -> None:
    seen: dict[tuple[str, str], int] = {}
    for k, _ in node.value:
        if not isinstance(k, yaml.ScalarNode) or k.tag == "tag:yaml.org,2002:merge":
            continue
        line = k.start_mark.line + 1
        if (k.tag, k.value) in seen:
            raise SbsError(
                f"{where}:{line}: duplicate key {k.value!r} (first at line {seen[k.tag, k.value]})"
            )
        seen[k.tag, k.value] = line


# -- templates ------------------------------------------------------------------------------------------

TemplateParts = tuple[tuple[str, str | None], ...]


def check_template(
    template: str,
    fields: Iterable[str],
    *,
    where: str,
    line: int | None = None,
    exact_lines: bool = False,
) -> TemplateParts:
    """Parse a str.format-style template that may use plain `{field}` placeholders and nothing else.

    Format specs (`{x:>300000000}` allocates gigabytes), conversions (`{x!r}`), attribute and index access
    (`{x.__class__}` reaches Python internals), positional `{}` and unknown names are refused with an
    SbsError `where[:line]: template: ...`; `{{` and `}}` are literal braces. `line` is the file line of
    the template's first line; with `exact_lines` (a literal block `|` or a whole text file) the message
    points at the line of the offending placeholder itself. Returns (literal, field or None) pairs for
    `fill_template`, which renders without str.format.
    """
    allowed = set(fields)

    def fail(msg: str, raw: str | None = None) -> SbsError:
        at = ""
        if line is not None:
            off = template.find(raw) if raw else -1
            at = f":{line + (template.count(chr(10), 0, off) if exact_lines and off >= 0 else 0)}"
        return SbsError(f"{where}{at}: template: {msg}")

    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:  # "Single '}' encountered", "expected '}' before end of string"
        raise fail(f"{e}; write {{{{ and }}}} for literal braces") from None
    names = ", ".join(f"{{{f}}}" for f in sorted(allowed)) or "none"
    for literal, name, spec, conv in parsed:
        if name is None:
            parts.append((literal, None))
            continue
        raw = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        if conv or spec:
            raise fail(
                f"{raw}: only plain {{field}} placeholders are allowed (no format spec or !conversion)", raw
            )
        if name not in allowed:
            if not name:
                why = "a positional placeholder"
            elif re.search(r"[.\[]", name):
                why = "attribute or index access"
            else:
                why = "an unknown field"
            raise fail(f"{raw} is {why}; the placeholders are {names}", raw)
        parts.append((literal, name))
    return tuple(parts)


def fill_template(parts: TemplateParts, values: Mapping[str, str]) -> str:
    """Render `check_template`'s parts: each placeholder replaced by its value, verbatim."""
    return "".join(lit + (values[name] if name is not None else "") for lit, name in parts)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")


def stray_placeholders(template: str, fields: Iterable[str]) -> list[str]:
    """`{name}` placeholders of a str.replace-style template that are not among `fields` (likely typos).

    For templates filled with str.replace (prompt files, the judge prompt), where other braces are literal
    text (JSON in a few-shot example) and format specs mean nothing.
    """
    allowed = set(fields)
    return sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - allowed)


def key_node(root: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of `key` in a top-level YAML mapping (for line numbers), or None."""
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def value_line(node: yaml.Node | None) -> tuple[int | None, bool]:
    """(file line of the value's first text line, whether its lines map 1:1 to file lines), for messages.

    Only a literal block scalar (`key: |`) keeps its line breaks where the file has them; its text starts
    on the line after the `|`.
    """
    if node is None:
        return None, False
    if isinstance(node, yaml.ScalarNode) and node.style == "|":
        return node.start_mark.line + 2, True
    return node.start_mark.line + 1, False
