"""Text-level code every layer may use: making untrusted text storable, and the hint-leak detector.

Storable text: every string that reaches the workspace, a shard or the cache goes through `storable`.

Python strings can hold what UTF-8 cannot: a lone surrogate (`"\\ud800"` from a JSON escape, or bytes decoded
with `surrogateescape`) makes DuckDB, Arrow and every encoder raise. NUL characters store fine but break
C-string tools downstream (tokenizers, terminals, other databases), so they are removed. Both repairs are
reported, so callers can count and flag repaired rows. Imports nothing from sbs_data, so any module can use it.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"


def storable(s: str) -> tuple[str, bool]:
    """`s` with lone surrogates replaced by U+FFFD and NULs removed, and whether anything changed.

    Linear time; a valid surrogate pair (two halves that belong together) is joined into its code point.
    """
    if s.isascii():
        if "\x00" not in s:
            return s, False
        return s.replace("\x00", ""), True
    try:
        s.encode("utf-8")
        fixed = s
    except UnicodeEncodeError:
        fixed = s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if "\x00" in fixed:
        fixed = fixed.replace("\x00", "")
    return fixed, fixed != s


def storable_value(value: Any) -> tuple[Any, bool]:
    """`storable` applied to every string (keys too) inside nested dicts / lists / tuples."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        out, changed = {}, False
        for k, v in value.items():
            k2, ck = storable(k) if isinstance(k, str) else (k, False)
            v2, cv = storable_value(v)
            out[k2] = v2
            changed = changed or ck or cv
        return out, changed
    if isinstance(value, (list, tuple)):
        items, changed = [], False
        for v in value:
            v2, cv = storable_value(v)
            items.append(v2)
            changed = changed or cv
        return (items if isinstance(value, list) else tuple(items)), changed
    return value, False


# ---------------------------------------------------------------------------------------------- hint leak
# `hint_leak`: does a rationale say it was handed the answer? Used by generate/ (rationalize keeps a hinted
# answer only when it does not leak) and by quality/ (the `hint_leak` signal), so it lives below both.
#
# A rationalized row (`sbs-data rationalize`) was written by a teacher that saw the gold answer as a hint; the
# student, which never sees one, must learn reasoning that reads as if it found the answer itself. Rationales
# that mention the hint ("the hint says", "we are told the answer", "the given answer", "as given.") teach the
# student to refer to something it will never have.
#
# One pattern, run by DuckDB (RE2) when scoring and by Python's `re` here, with the same meaning in both:
# ASCII-only classes and word boundaries (`re.ASCII`, as RE2's `\\b`), no `\\s`, bounded repetition only, so
# both engines run in linear time on untrusted text. Only the first `LEAK_MAX_CHARS` characters are read.
# Benign uses stay out: "we are given 5 apples", "the slightest hint of traffic", "of the given options",
# "as given in the problem", "the
# answer is given by 3 + 4".

#: Characters of a rationale examined (the completion parser's own cap).
LEAK_MAX_CHARS = 16_384

_ANSWER = r"(answer|solution|label)s?"
_TOLD = r"(told|given|informed|provided|shown|handed)"
HINT_LEAK_PATTERN = (
    # "the hint", "hints", "hinted"; not the idiom "a hint of" ("the slightest hint of traffic")
    r"\bhint(s|ed)?( [^o]| o[^f]| of[a-z0-9_]|[^ a-z0-9_])"
    # "told the answer", "given that the correct answer", "informed that the final answer"
    # (an article is required: "Belinda provided answers to 40 questions" is no leak)
    rf"|\b{_TOLD}( that)?( the| an| a| our) (correct |right |true |final |expected |target )?{_ANSWER}\b"
    # "the given answer", "the expected answer", "the provided correct answer"
    # (after a determiner: "Belinda provided answers to 40 questions" is no leak)
    rf"|\b(the|a|an|our|this|that) (given|provided|stated|expected|supplied|suggested|indicated|known) "
    rf"(correct |right |final )?{_ANSWER}\b"
    # "the answer we were given", "the answer i was told"
    rf"|\b{_ANSWER} (we|i|you) (were|was|are|am|have been|had been) {_TOLD}\b"
    # "the answer is given as", "the correct answer was stated to be"
    rf"|\b{_ANSWER} (is|was) (given|provided|stated|supplied) (as|to be|above|already)\b"
    # "as given." / "as told," closing a clause (not "as given in the problem")
    r"|\bas (given|told|hinted|provided) ?[.,;:!)]"
    # "we know the answer is", "we already know that the correct answer"
    rf"|\b(we|i) (already )?(know|knew) (that )?the (correct |right |final )?{_ANSWER}\b"
    # "matches the correct answer", "confirms the right answer"
    rf"|\b(match|matches|matching|confirm|confirms|confirming|consistent with) the (correct|right) {_ANSWER}\b"
    # "the problem tells us the answer is", "the question says that the correct answer"
    rf"|\b(problem|question|prompt|task|statement) (tells|told|gives|gave|says|said|states|stated) "
    rf"((us|me|you) )?(that )?(the )?(correct |right |final )?{_ANSWER}\b"
    # "the answer key says", "according to the answer key"
    r"|\banswer key\b"
)
_RE = re.compile(HINT_LEAK_PATTERN, re.ASCII)
#: Appended to the text in both engines, so that patterns ending a clause also match at the end of the text
#: without `$` (whose meaning before a final newline differs between RE2 and Python).
_END = " ."


def hint_leak(rationale: str | None) -> bool | None:
    """Whether the rationale mentions being told the answer; None without a rationale."""
    if not rationale:
        return None
    return _RE.search(rationale[:LEAK_MAX_CHARS].lower() + _END) is not None


def hint_leak_sql(column: str) -> str:
    """The same test as a DuckDB expression over a text column (NULL stays NULL)."""
    pattern = HINT_LEAK_PATTERN.replace("'", "''")
    return f"regexp_matches(lower(left({column}, {LEAK_MAX_CHARS})) || '{_END}', '{pattern}')"


# -- hint echo: the hint's own words in the rationale (the hint text is known per row) -------------------
#: Words in a row that make an echo: a run of this many of the hint's words, in order, in the rationale.
ECHO_WORDS = 6
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text[:LEAK_MAX_CHARS].lower())


def hint_echo(rationale: str | None, hint: str, allowed: str = "") -> bool | None:
    """Whether the rationale repeats ECHO_WORDS consecutive words of the hint the teacher was shown (the hint
    sentences with the row's answer filled in), ignoring case and punctuation: "The correct answer is 12.
    Explain step by step..." copied into a rationale. Runs that lie wholly inside `allowed` (a phrase the
    hint asks the answer to end with, "So the answer is 12") do not count. Linear time: word n-gram sets of
    the first LEAK_MAX_CHARS characters of each text. None without a rationale."""
    if not rationale:
        return None
    n = ECHO_WORDS
    hw, ok = _words(hint), _words(allowed)
    grams = {tuple(hw[i : i + n]) for i in range(len(hw) - n + 1)}
    grams -= {tuple(ok[i : i + n]) for i in range(len(ok) - n + 1)}
    if not grams:
        return False
    rw = _words(rationale)
    return any(tuple(rw[i : i + n]) in grams for i in range(len(rw) - n + 1))
