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

__all__ = ["MAX_CONFIG_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "load_yaml", "parse_yaml", "read_text"]


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
