"""The records that travel between the engine, the cache, batch collect, the judge and version building.

One frozen `Answer` per answered request (a completion the provider billed) and one `Failure` per request
that ended without one. Both carry everything storage needs, so no layer passes positional tuples around.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sbs_data.teachers.base import Response
from sbs_data.text import storable

#: Longest completion text stored (characters); longer ones are cut and flagged `repaired`. A teacher that
#: rambles for megabytes must not make one row (or the cache) unbounded.
MAX_TEXT_CHARS = 200_000


def storable_text(text: str | None) -> tuple[str | None, bool]:
    """A completion as something DuckDB and JSON can hold (see `sbs_data.text.storable`), cut at
    MAX_TEXT_CHARS, and whether it had to change."""
    if text is None:
        return None, False
    fixed, changed = storable(text)
    if len(fixed) > MAX_TEXT_CHARS:
        fixed, changed = fixed[:MAX_TEXT_CHARS], True
    return fixed, changed


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
    teacher_reasoning: str | None = None
    service_tier: str | None = None

    @classmethod
    def from_response(
        cls,
        key: str,
        resp: Response,
        *,
        latency_ms: float | None,
        cost_usd: float | None,
        attempts: int,
    ) -> Answer:
        text, repaired = storable_text(resp.text)
        reasoning, reasoning_repaired = storable_text(resp.reasoning_summary)
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
            repaired=repaired or reasoning_repaired,
            teacher_reasoning=reasoning,
            service_tier=tier,
        )

    def as_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["cache_key"] = d.pop("key")
        return d


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
