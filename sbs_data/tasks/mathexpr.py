"""Safe arithmetic for math-word-problem labels (SVAMP): numbers and + - * / only, never `eval`."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_LEN = 500


class ExprError(ValueError):
    """The text is not an arithmetic expression we are willing to evaluate."""


_DOLLAR = re.compile(r"(?<![\d.])\$")
_PERCENT = re.compile(r"(?<=\d)%(?![\d.])")


def _clean(text: str) -> str:
    s = text.strip().rstrip(".").strip()
    s = s.replace("\u00d7", "*").replace("\u00f7", "/").replace("\u2212", "-")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,000 -> 1000
    # Units a label may carry: a currency sign before a number ($5) and a percent sign after one (50%). Only
    # there: "7%2" or "7$2" stays as it is (not an expression), never glued into 72.
    s = _DOLLAR.sub("", s)
    s = _PERCENT.sub("", s)
    return s.strip()


def evaluate(text: str) -> float:
    """Evaluate an arithmetic expression such as `( 10.0 * 45.0 )` or `450`.

    Walks the AST and accepts only numeric literals, + - * / and unary signs, so untrusted
    teacher output can be scored safely.
    """
    if text is None:
        raise ExprError("no expression")
    s = _clean(str(text))
    if not s or len(s) > _MAX_LEN:
        raise ExprError(f"not an expression: {text!r}")
    try:
        tree = ast.parse(s, mode="eval")
    except SyntaxError as e:
        raise ExprError(f"not an expression: {text!r}") from e
    return _eval(tree.body)


def _eval(node: ast.AST) -> float:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        try:
            return _BINOPS[type(node.op)](left, right)
        except ZeroDivisionError as e:
            raise ExprError("division by zero") from e
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ExprError(f"unsupported syntax: {type(node).__name__}")


def try_evaluate(text: str | None) -> float | None:
    """`evaluate`, or None when the text is not a safe expression."""
    try:
        v = evaluate(text)  # type: ignore[arg-type]
    except (ExprError, OverflowError, RecursionError, ValueError):
        return None
    return v if math.isfinite(v) else None


def numbers_equal(a: float | None, b: float | None, rel: float = 1e-6) -> bool:
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-6)


#: Characters of a rationale `arithmetic_steps` reads.
MAX_STEP_TEXT_CHARS = 16_384
_NUM = r"-?\d+(?:\.\d+)?"
_OP = r"[-+*/x\u00d7\u00f7]"
# A step is `EXPR (=|is|equals) NUM`, EXPR being numbers joined by operators, each number optionally in
# parentheses: the historical pattern `(?<![\w.])((?:\(?\s*N\s*\)?\s*OP\s*)+\(?\s*N\s*\)?)\s*(?:=|is|equals)\s*(N)`
# matches the same steps but backtracks exponentially on a long chain without "=". Here the chain has one
# way to split its whitespace, is matched once, and the tail is tried once at its end: when the tail fails
# no step can start inside that chain (any start there parses the same chain tail), so the scan resumes
# after it. Linear time.
_CHAIN = re.compile(rf"(?<![\w.])(?:\(\s*)?{_NUM}(?:\s*(?:\)\s*)?{_OP}\s*(?:\(\s*)?{_NUM})+(?:\s*\))?")
_TAIL = re.compile(rf"\s*(?:=|is|equals)\s*({_NUM})(?![\d])")


def arithmetic_steps(text: str) -> list[tuple[str, float, bool]]:
    """Find `a op b = c` steps in a rationale: (expression, claimed result, correct?).

    Reads the first MAX_STEP_TEXT_CHARS characters (commas removed), in linear time.
    """
    out = []
    s = text[:MAX_STEP_TEXT_CHARS].replace(",", "")
    pos = 0
    while (m := _CHAIN.search(s, pos)) is not None:
        t = _TAIL.match(s, m.end())
        if t is None:
            pos = m.end()
            continue
        pos = t.end()
        expr = m.group(0).replace("x", "*").replace("\u00d7", "*").replace("\u00f7", "/")
        claimed = float(t.group(1))
        out.append((m.group(0).strip(), claimed, numbers_equal(try_evaluate(expr), claimed, rel=1e-4)))
    return out
