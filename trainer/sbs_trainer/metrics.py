"""Task-aware accuracy: arithmetic labels compare by value (safe AST walk, never `eval`), others by text."""

from __future__ import annotations

import ast
import math
import operator
import re

ARITHMETIC_TASKS = {"svamp", "asdiv", "gsm8k", "mawps"}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_LEN = 500


def sig4(x: object) -> object:
    """A metric as people read it: floats (nested in dicts and lists too) at 4 significant digits."""
    if isinstance(x, float):
        return float(f"{x:.4g}") if math.isfinite(x) else x
    if isinstance(x, dict):
        return {k: sig4(v) for k, v in x.items()}
    if isinstance(x, list):
        return [sig4(v) for v in x]
    return x


def safe_eval(text: str | None) -> float | None:
    """Value of an arithmetic expression like `( 10.0 * 45.0 )`, or None if it is anything else.

    Only numeric literals, + - * / and unary signs are accepted, so model output is scored without
    ever executing it.
    """
    if text is None:
        return None
    s = str(text).strip().rstrip(".").strip()
    s = s.replace("\u00d7", "*").replace("\u00f7", "/").replace("\u2212", "-")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s).replace("$", "")
    if not s or len(s) > _MAX_LEN:
        return None
    try:
        value = _walk(ast.parse(s, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError, TypeError):
        return None
    return value if math.isfinite(value) else None


def _walk(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_walk(node.left), _walk(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_walk(node.operand))
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


def normalize(text: str | None) -> str:
    return " ".join((text or "").split()).lower()


def is_arithmetic(task: str, golds: list[str | None]) -> bool:
    """Arithmetic comparison for known math tasks, or when every gold label is an expression."""
    if task.lower() in ARITHMETIC_TASKS:
        return True
    present = [g for g in golds if g is not None]
    return bool(present) and all(safe_eval(g) is not None for g in present)


def is_correct(pred: str | None, gold: str | None, arithmetic: bool) -> bool:
    if gold is None:
        return False
    if arithmetic:
        p, g = safe_eval(pred), safe_eval(gold)
        if p is not None and g is not None:
            return math.isclose(p, g, rel_tol=1e-6, abs_tol=1e-6)
    return normalize(pred) == normalize(gold)


def accuracy(preds: list[str | None], golds: list[str | None], task: str) -> dict:
    """{"accuracy", "n"} over examples that have a gold label."""
    arith = is_arithmetic(task, golds)
    pairs = [(p, g) for p, g in zip(preds, golds, strict=True) if g is not None]
    n = len(pairs)
    correct = sum(is_correct(p, g, arith) for p, g in pairs)
    return {"accuracy": (correct / n) if n else None, "n": n, "comparison": "numeric" if arith else "text"}
