"""Parsers of teacher text run in linear time and agree with the patterns they replace.

Every parser that reads teacher output is timed on adversarial text at its documented length cap (explicit
worst cases for each pattern's whitespace runs, alternations and chains, plus hypothesis-built repetitions
of the patterns' own fragments): each call must stay under 10 ms. The previous regexes (kept below as
references) took seconds to hours on some of these; on short strings, where they are fast, hypothesis checks
that the new parsers give exactly their results.
"""

from __future__ import annotations

import re
import time

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workspace_helpers import make_examples, make_generations

from sbs_data.generate.parse import parse_json_output
from sbs_data.quality.judge import MAX_REPLY_CHARS, parse_score
from sbs_data.quality.signals import score
from sbs_data.quality.textfeat import arithmetic_candidates, text_features
from sbs_data.tasks import BUILTIN, Parsed
from sbs_data.tasks.base import MAX_COMPLETION_CHARS, _strip_outer_parens, split_completion
from sbs_data.tasks.mathexpr import MAX_STEP_TEXT_CHARS, arithmetic_steps, numbers_equal, try_evaluate
from sbs_data.text import LEAK_MAX_CHARS as LEAK_CHARS
from sbs_data.text import hint_leak, hint_leak_sql

CAP = MAX_COMPLETION_CHARS
#: Linear-time claims are tested as growth, not wall-clock bounds (a loaded machine makes any bound flaky):
#: input GROWTH times longer may take at most MAX_GROWTH times longer (linear: ~GROWTH; quadratic: GROWTH**2).
#: The absolute worst-case times are measured in benchmarks/hint_leak_fp.py and RESULTS.md, not here.
GROWTH = 8
MAX_GROWTH = 3 * GROWTH
CHOICES = ["wooded area", "desert", "park", "amusement park", "ocean"]

# -- the patterns replaced, as references ---------------------------------------------------------------

_OLD_ANSWER = re.compile(
    r"(?:(?:So|Therefore|Thus|Hence),?\s+)?the\s+(?:final\s+)?answer\s+is\s*:?\s*(?P<label>[^\n]*)"
    r"|^\s*Answer\s*:\s*(?P<label2>[^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_OLD_RUNON = re.compile(r"\n\s*\n\s*(?:Q:|Question:|Premise:|Hypothesis:|Input:|Problem:|A:)", re.IGNORECASE)
_N = r"-?\d+(?:\.\d+)?"
_OLD_STEP = re.compile(
    rf"(?<![\w.])((?:\(?\s*{_N}\s*\)?\s*[-+*/x\u00d7\u00f7]\s*)+\(?\s*{_N}\s*\)?)\s*(?:=|is|equals)\s*({_N})(?![\d])"
)
_OLD_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL | re.IGNORECASE)
_OLD_SCORE = re.compile(r"score\s*[:=]\s*\**\s*([1-5])\b", re.IGNORECASE)


def old_split(text: str | None) -> Parsed:
    if text is None or not text.strip():
        return Parsed(None, None, "empty")
    runon = _OLD_RUNON.search(text)
    body = text[: runon.start()] if runon else text
    m = _OLD_ANSWER.search(body)
    if not m:
        rationale = body.split("\n\n")[0].strip()
        return Parsed(rationale or None, None, "no_answer")
    raw = (m.group("label") if m.group("label") is not None else m.group("label2")) or ""
    raw = re.sub(r"[.\s]+$", "", raw.strip()).strip().strip("\"'`").strip()
    rationale = body[: m.start()].strip()
    if not raw:
        return Parsed(rationale or None, None, "no_answer", m.start())
    return Parsed(rationale or None, raw, "ok", m.start())


def old_steps(text: str) -> list[tuple[str, float, bool]]:
    out = []
    for m in _OLD_STEP.finditer(text.replace(",", "")):
        expr = m.group(1).replace("x", "*").replace("\u00d7", "*").replace("\u00f7", "/")
        claimed = float(m.group(2))
        out.append((m.group(1).strip(), claimed, numbers_equal(try_evaluate(expr), claimed, rel=1e-4)))
    return out


def old_strip_parens(s: str) -> str:
    def balanced(x: str) -> bool:
        depth = 0
        for ch in x:
            depth += (ch == "(") - (ch == ")")
            if depth < 0:
                return False
        return depth == 0

    s = s.strip()
    while s.startswith("(") and s.endswith(")") and balanced(s[1:-1]):
        s = s[1:-1].strip()
    return s


def old_unfence(s: str) -> str:
    m = _OLD_FENCE.match(s.strip())
    return m.group(1) if m else s.strip()


def old_score(text: str) -> int | None:
    found = _OLD_SCORE.findall(text)
    if found:
        return int(found[-1])
    bare = text.strip().rstrip(".")
    return int(bare) if bare in ("1", "2", "3", "4", "5") else None


# -- fragments: the patterns' own alphabets ---------------------------------------------------------------

ANSWER_FRAGS = [
    "So", "so ", "Therefore", "Thus ", "Hence", ",", " ", "  ", "\n", "\n\n", "\t", "\r", "\x0b", "\u2028",
    "the", " the ", "final", "answer", " answer ", "is", " is ", ":", "Answer", "Answer:", "ANSWER :", "Q:",
    "q:", "A:", "Question:", "Premise:", ".", "..", "x", "(a)", "(", ")", '"', "'", "`", "17", "ſo",
]  # fmt: skip
STEP_FRAGS = [
    "1", "23", "4.5", "-", "+", "*", "/", "x", "\u00d7", "\u00f7", "(", ")", " ", "  ", "\n", "=", "is",
    "equals", ".", ",", "a", "7", "0", "is7", "e", "_",
]  # fmt: skip
FENCE_FRAGS = ["```", "`", "json", "JSON", " ", "\n", "{", "}", '"rationale"', ":", '"r"', ",", "x"]
SCORE_FRAGS = ["score", "Score", ":", "=", "*", "**", " ", "\n", "1", "3", "5", "7", ".", "x", "scores"]


def frags(alphabet: list[str], max_size: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(alphabet), max_size=max_size).map("".join)


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(frags(ANSWER_FRAGS, 16))
def test_split_completion_matches_the_old_patterns(text):
    assert split_completion(text) == old_split(text)


@FAST
@given(frags(STEP_FRAGS, 12))
def test_arithmetic_steps_match_the_old_pattern(text):
    assert arithmetic_steps(text) == old_steps(text)


@FAST
@given(frags(["(", ")", " ", "1", "+", "(1)", "()", "x"], 14))
def test_strip_outer_parens_matches_the_old_loop(text):
    assert _strip_outer_parens(text) == old_strip_parens(text)


@FAST
@given(frags(FENCE_FRAGS, 12))
def test_json_fence_matches_the_old_pattern(text):
    from sbs_data.generate.parse import _unfence

    assert _unfence(text.strip()) == old_unfence(text)


@FAST
@given(frags(SCORE_FRAGS, 14))
def test_judge_score_matches_the_old_pattern(text):
    assert parse_score(text) == (old_score(text) if text else None)


def test_examples_the_old_patterns_were_slow_on():
    assert arithmetic_steps(" + ".join(["1"] * 13)) == []  # 25 s before
    assert arithmetic_steps(" + ".join(["1"] * 13) + " = 13") == [(" + ".join(["1"] * 13), 13.0, True)]
    p = split_completion("So the answer is x" + ". " * 7000 + "y")  # 2.5 s before
    assert p.status == "ok" and p.label.startswith("x.") and p.label.endswith("y")
    assert split_completion("x" + "\n" * 5000 + "x").status == "no_answer"  # minutes before
    assert BUILTIN["svamp"].parse_completion("The answer is " + "(" * 3000 + "4" + ")" * 3000).label == "4"


# -- timing at the caps ---------------------------------------------------------------------------------


def _rep(unit: str, n: int = CAP) -> str:
    return (unit * (n // len(unit) + 1))[:n]


def worst_cases(n: int) -> dict[str, str]:
    """Adversarial inputs of length about `n`: each pattern's fragments repeated, or a long near-match."""
    return {
        "dots after a label": "So the answer is x" + _rep(". ", n - 20) + "x",
        "newlines": "x" + _rep("\n", n - 2) + "x",
        "blank lines with spaces": "x" + _rep("\n ", n - 2) + "x",
        "spaces": _rep(" ", n - 1) + "x",
        "the the": _rep("the ", n),
        "the + spaces": "the" + _rep(" ", n - 4) + "x",
        "so the": _rep("So the ", n),
        "answer words": _rep("Answer ", n),
        "answer lines": _rep("\nAnswer", n),
        "answer + spaces": "Answer" + _rep(" ", n - 8) + "x",
        "glued answers": _rep("xAnswer:", n),
        "run-on markers": _rep("\n \nQ", n),
        "markers": _rep(" Q:", n),
        "nested parens": "So the answer is " + "(" * (n // 2 - 10) + ")" * (n // 2 - 10),
        "chain": _rep("1 + ", n),
        "chain in parens": _rep("(1) + ", n),
        "chain with spaces": _rep("1  +  ", n),
        "minus signs": _rep("- ", n),
        "one number": _rep("1", n),
        "open fence": "```" + _rep(" ", n - 4) + "x",
        "fence of backticks": "```json" + _rep("`", n - 10) + "```",
        "deep JSON": _rep("[", n),
        "braces": _rep("{", n - 1) + "}",
        "score + spaces": "score:" + _rep(" ", n - 8) + "x",
        "score stars": _rep("score: * ", n),
        "scores": _rep("Score:", n),
        "hint words": _rep("we were told the given correct ", n),
        "as given": _rep("as given ", n),
        "answers": _rep("answer we were ", n),
    }


WORST = worst_cases(CAP)
PARSERS = {
    "split_completion": split_completion,
    "cqa": lambda t: BUILTIN["cqa"].parse_completion(t, CHOICES),
    "esnli": BUILTIN["esnli"].parse_completion,
    "svamp": BUILTIN["svamp"].parse_completion,
    "arithmetic_steps": arithmetic_steps,
    "parse_json_output": parse_json_output,
    "parse_score": parse_score,
    "hint_leak": hint_leak,
}


def _best(fn, text: str, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t0)
    return best


def test_caps_are_what_the_timings_assume():
    assert MAX_STEP_TEXT_CHARS <= CAP and MAX_REPLY_CHARS <= CAP and LEAK_CHARS <= CAP


def _growth(fn, small: str, big: str, floor: float = 1e-6) -> float:
    """How many times longer `fn` takes on `big` than on `small` (best of a few runs each); `small`'s time
    counts as at least `floor` seconds, so microsecond jitter is not read as growth."""
    return _best(fn, big, reps=5) / max(_best(fn, small, reps=5), floor)


def test_every_parser_is_linear_on_the_worst_cases():
    small = worst_cases(CAP // GROWTH)
    slow = {
        (case, name): round(g, 1)
        for case, text in WORST.items()
        for name, fn in PARSERS.items()
        if (g := _growth(fn, small[case], text)) > MAX_GROWTH
    }
    assert not slow, f"grew more than {MAX_GROWTH}x for {GROWTH}x the input: {slow}"


def test_text_past_the_cap_costs_no_more():
    at_cap, huge = _rep("the ", CAP), _rep("the ", 50 * CAP)
    for name, fn in PARSERS.items():
        assert _growth(fn, at_cap, huge, floor=1e-4) < 3, name  # refusing 50x the cap stays under 0.1 ms


ALL_FRAGS = sorted(set(ANSWER_FRAGS + STEP_FRAGS + FENCE_FRAGS + SCORE_FRAGS))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frags(ALL_FRAGS, 6).filter(bool), st.sampled_from(sorted(PARSERS)))
def test_repeated_fragments_at_the_cap_are_fast(unit, parser):
    """Any short mix of the patterns' fragments, repeated to the cap: linear growth."""
    assert _growth(PARSERS[parser], _rep(unit, CAP // GROWTH), _rep(unit)) < MAX_GROWTH


# -- signals: polars / DuckDB (linear-time regex engines), timed per row ---------------------------------


def test_text_signals_are_fast_on_the_worst_cases():
    texts = list(WORST.values())
    rows = pl.DataFrame(
        {"rid": range(len(texts)), "example_id": [f"e{i}" for i in range(len(texts))], "rationale": texts}
    )
    inputs = pl.DataFrame({"example_id": rows["example_id"], "input_text": texts})
    text_features(rows[:1], inputs[:1], ["the"], numbers=True)  # polars' one-time start-up
    arithmetic_candidates(rows[:1])

    def timed(rows: pl.DataFrame, inputs: pl.DataFrame) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            text_features(rows, inputs, ["the", "a"], numbers=True)
            arithmetic_candidates(rows)
            best = min(best, time.perf_counter() - t0)
        return best

    short = [t[: CAP // GROWTH] for t in texts]
    rows_s = rows.with_columns(rationale=pl.Series(short))
    inputs_s = inputs.with_columns(input_text=pl.Series(short))
    assert timed(rows, inputs) / max(timed(rows_s, inputs_s), 1e-6) < MAX_GROWTH


def test_score_is_linear_on_hostile_rationales(ws):
    """The whole scoring pass (SQL label/position/refusal signals too) on adversarial rows of a numeric and
    a multiple-choice task: rationales GROWTH times longer take at most MAX_GROWTH times longer, once DuckDB
    and polars have started (a first small score)."""
    texts = list(WORST.values()) * 4
    for task, row in [
        ("svamp", lambda i: {"input": f"{i} + 1?", "label": "2"}),
        ("cqa", lambda i: {"id": f"train-{i}", "question": "Where?", "choices": CHOICES, "answer": "park"}),
    ]:
        took = {}
        for name, batch in [
            (f"{task}-warm", texts[:2]),
            (f"{task}-short", [t[: CAP // GROWTH] for t in texts]),
            (task, texts),
        ]:
            ex = make_examples(ws, name, task, [row(i) for i in range(len(batch))])
            gen = make_generations(
                ws, ex, [{"example_id": f"train-{i}", "raw": t} for i, t in enumerate(batch)]
            )
            t0 = time.perf_counter()
            score(ws, gen.ref)
            took[name] = time.perf_counter() - t0
        assert took[task] / took[f"{task}-short"] < MAX_GROWTH, took


# -- hint_leak: one pattern, two engines (DuckDB's RE2 when scoring, Python's re) -------------------------

LEAK_FRAGS = [
    "hint", "hints", "told", "given", "the", " ", "  ", "answer", "answers", "correct ", "that", "we", "i",
    "were", "as", ".", ",", "is", "was", "know", "matches", "label", "a", "\n", "é", "x", "_", "'",
]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frags(LEAK_FRAGS, 12), min_size=1, max_size=20))
def test_hint_leak_is_the_same_in_python_and_duckdb(texts):
    import duckdb

    con = duckdb.connect()
    got = [
        r[0] for r in con.execute(f"SELECT {hint_leak_sql('t')} FROM unnest(?) AS u(t)", [texts]).fetchall()
    ]
    assert got == [hint_leak(t) if t else (None if t is None else False) for t in texts]
