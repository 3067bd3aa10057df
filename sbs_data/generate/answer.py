"""The records that travel between the engine, the cache, batch collect, the judge and version building.

One frozen `Answer` per answered request (a completion the provider billed) and one `Failure` per request
that ended without one. Both carry everything storage needs, so no layer passes positional tuples around.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from sbs_data.teachers.base import Response, same_model
from sbs_data.teachers.models import estimate_tokens
from sbs_data.text import storable

#: Longest completion text stored (characters); longer ones are cut and flagged `repaired`. A teacher that
#: rambles for megabytes must not make one row (or the cache) unbounded.
MAX_TEXT_CHARS = 200_000


def repaired_text(text: str | None) -> tuple[str | None, bool, bool]:
    """(a completion as something DuckDB and JSON can hold, whether it held characters they cannot: lone
    surrogates became U+FFFD and NULs were removed (`sbs_data.text.storable`), whether it was longer than
    MAX_TEXT_CHARS and cut there). Cut first, so a runaway text costs no more work than the cap."""
    if text is None:
        return None, False, False
    cut = len(text) > MAX_TEXT_CHARS
    if cut:
        end = MAX_TEXT_CHARS
        if "\ud800" <= text[end - 1] <= "\udbff" and "\udc00" <= text[end] <= "\udfff":
            end -= 1  # never split a surrogate pair: that alone would look like an unstorable character
        text = text[:end]
    fixed, changed = storable(text)
    return fixed, changed, cut


def storable_text(text: str | None) -> tuple[str | None, bool]:
    """A completion as something DuckDB and JSON can hold, cut at MAX_TEXT_CHARS, and whether it had to
    change (see `repaired_text`, which says why)."""
    fixed, changed, cut = repaired_text(text)
    return fixed, changed or cut


#: The most tokens one call plausibly counts, in or out: more is a broken (or lying) server.
MAX_PLAUSIBLE_TOKENS = 10_000_000
#: No tokenizer packs more characters into a token on average: fewer tokens than chars / this cannot be true.
MAX_CHARS_PER_TOKEN = 16


def _count(n: Any, chars: int) -> bool:
    """Whether `n` is a token count the text of `chars` characters could have."""
    return type(n) is int and chars // MAX_CHARS_PER_TOKEN <= n <= MAX_PLAUSIBLE_TOKENS


def checked_usage(resp: Response, prompt_chars: int) -> tuple[Response, bool]:
    """The response with usage it cannot have had replaced by estimates from the text, and whether any was.

    A paid call is priced from its usage; a server that sends none, a negative, fractional or astronomical
    count, or fewer tokens than the text could hold, would make it cost nothing (or a negative amount) and
    defeat --max-usd. Such counts become `estimate_tokens` of the prompt and of the completion; cache and
    reasoning parts that do not fit inside their totals are dropped to 0."""
    out_chars = len(resp.text or "")
    prompt_ok = _count(resp.prompt_tokens, prompt_chars)
    completion_ok = _count(resp.completion_tokens, out_chars)
    prompt: int = (
        resp.prompt_tokens if prompt_ok and resp.prompt_tokens is not None else estimate_tokens(prompt_chars)
    )
    completion: int = (
        resp.completion_tokens
        if completion_ok and resp.completion_tokens is not None
        else estimate_tokens(out_chars)
    )
    parts_ok = True

    def part(n: Any, total: int) -> int | None:
        nonlocal parts_ok
        if n is None:
            return None
        if type(n) is int and 0 <= n <= total:
            return n
        parts_ok = False
        return 0

    cached = part(resp.cached_tokens, prompt)
    written = part(resp.cache_write_tokens, prompt)
    if (cached or 0) + (written or 0) > prompt:
        parts_ok, cached, written = False, 0, 0
    reasoning = part(resp.reasoning_tokens, completion)
    if prompt_ok and completion_ok and parts_ok:
        return resp, False
    return (
        replace(
            resp,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=written,
            reasoning_tokens=reasoning,
        ),
        True,
    )


def served_other(requested: str, served: str | None) -> bool:
    """Whether an answer came from another model than the one requested (not just a dated snapshot of it)."""
    return not same_model(requested, served)


def served_other_warning(spec: str, requested: str, served: str | None, n: int = 1) -> str:
    """The one warning a run gives when answers came from another model than the one requested."""
    many = f"{n} answers" if n > 1 else "an answer"
    return (
        f"warning: {spec}: {many} came from model {served!r}, which is not {requested!r} (nor a dated snapshot "
        "of it); each answer's model is stored (served_model on the cache and generation rows)"
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A stored completion. `prompt_tokens` counts all input tokens, cached and cache-write ones included;
    `completion_tokens` includes reasoning tokens (both as OpenAI reports them). `teacher_reasoning` is the
    provider's summary of the model's reasoning (when asked for), `service_tier` the tier that served it."""

    key: str
    text: str | None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    request_id: str | None = None
    attempts: int = 1
    repaired: bool = False
    usage_estimated: bool = False  # the server's usage could not be true: tokens estimated from the text
    teacher_reasoning: str | None = None
    service_tier: str | None = None
    served_model: str | None = None  # the model the provider says answered (None when it said none)
    text_cut: bool = (
        False  # of `repaired`: the text (or reasoning summary) was longer than MAX_TEXT_CHARS and cut there
    )

    @classmethod
    def from_response(
        cls,
        key: str,
        resp: Response,
        *,
        latency_ms: float | None,
        cost_usd: float | None,
        attempts: int,
        usage_estimated: bool = False,
    ) -> Answer:
        text, changed, cut = repaired_text(resp.text)
        reasoning, reasoning_changed, reasoning_cut = repaired_text(resp.reasoning_summary)
        tier = resp.service_tier[:32] if resp.service_tier else None
        return cls(
            key=key,
            text=text,
            finish_reason=resp.finish_reason,
            prompt_tokens=resp.prompt_tokens,
            completion_tokens=resp.completion_tokens,
            cached_tokens=resp.cached_tokens,
            cache_write_tokens=resp.cache_write_tokens,
            reasoning_tokens=resp.reasoning_tokens,
            latency_ms=latency_ms,
            cost_usd=cost_usd,
            request_id=resp.request_id,
            attempts=attempts,
            repaired=changed or cut or reasoning_changed or reasoning_cut,
            usage_estimated=usage_estimated,
            teacher_reasoning=reasoning,
            service_tier=tier,
            served_model=resp.served_model,
            text_cut=cut or reasoning_cut,
        )

    def as_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["cache_key"] = d.pop("key")
        del d["text_cut"]  # `repaired` is what is stored; why is only for this run's warning
        return d


def repaired_warning(cut: int, unstorable: int) -> str:
    """The one warning a run gives about the completions it had to change before storing them, saying what
    happened to them: cut at the cap, or characters DuckDB cannot hold replaced."""
    parts = []
    if cut:
        parts.append(f"{cut} longer than {MAX_TEXT_CHARS:,} characters were cut there")
    if unstorable:
        parts.append(
            f"{unstorable} held characters that cannot be stored (a lone surrogate became U+FFFD, NULs were "
            "removed)"
        )
    return f"warning: completions were repaired: {'; '.join(parts)}; their rows say repaired = true"


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A request that ended without an answer: its kind (see teachers.base error classes) and message."""

    key: str
    kind: str
    error: str
    status: int | None = None
    attempts: int = 0
    example_id: str | None = None
    sample_idx: int | None = None

    def as_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["cache_key"] = d.pop("key")
        return d
