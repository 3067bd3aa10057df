"""Per-model facts from the editable table `recipes/prices.yaml`: prices, reasoning, accepted params, limits.

A model is matched exactly, else by the longest listed prefix (a dated snapshot such as
gpt-4o-mini-2024-07-18 matches gpt-4o-mini). Each provider's `defaults` fill what a model entry leaves out;
a model that matches nothing gets those defaults, unknown prices and `known=False`, and the caller prints
`warning()` once. Providers marked `free` (local teachers) cost nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbs_data import RECIPES_DIR, SbsError
from sbs_data.configfile import load_yaml

DEFAULT_PRICES = RECIPES_DIR / "prices.yaml"

#: What any model is assumed to accept when neither the model nor its provider's defaults say.
ALL_PARAMS = frozenset(
    {"temperature", "top_p", "max_tokens", "seed", "stop", "n", "reasoning_effort", "thinking_budget"}
)
#: The output budget when nothing says otherwise: ample for a rationale and a label.
FALLBACK_MAX_TOKENS = 1024
#: The smallest prefix any provider caches (OpenAI, and most Anthropic models), in tokens.
FALLBACK_MIN_CACHE = 1024

_FACT_KEYS = ("reasoning", "params", "max_output_tokens", "default_max_tokens", "min_cache_tokens")


@dataclass(frozen=True)
class ModelFacts:
    """What sbs-data knows about one PROVIDER:MODEL. Prices are USD per 1M tokens, None where unknown.

    `cached_input` prices input tokens read from the provider's prompt cache and `cache_write` those written
    to it (Anthropic); either defaults to `input` when the table leaves it out. `batch_discount` multiplies
    everything for calls made through a batch API. `params` are the request params the model accepts;
    `default_max_tokens` is an output budget large enough that, at the default reasoning effort, an answer is
    not normally cut short; `min_cache_tokens` is the shortest prefix the provider will cache.
    """

    provider: str
    model: str
    matched: str | None = None
    known: bool = False
    input: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None
    output: float | None = None
    batch_discount: float = 1.0
    reasoning: bool = False
    params: frozenset[str] = ALL_PARAMS
    max_output_tokens: int | None = None
    default_max_tokens: int = FALLBACK_MAX_TOKENS
    min_cache_tokens: int = FALLBACK_MIN_CACHE

    @property
    def priced(self) -> bool:
        return self.input is not None and self.output is not None

    def cost(
        self,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cached_tokens: int | None = 0,
        cache_write_tokens: int | None = 0,
        *,
        batch: bool = False,
    ) -> float | None:
        """USD for one call; None when the price is unknown.

        `prompt_tokens` counts all input tokens, the cached and cache-written ones included (as
        `Response.prompt_tokens` does); `completion_tokens` includes reasoning tokens."""
        if self.input is None or self.output is None:
            return None
        cached = cached_tokens or 0
        written = cache_write_tokens or 0
        fresh = max(0, (prompt_tokens or 0) - cached - written)
        read_price = self.input if self.cached_input is None else self.cached_input
        write_price = self.input if self.cache_write is None else self.cache_write
        usd = (
            fresh * self.input
            + cached * read_price
            + written * write_price
            + (completion_tokens or 0) * self.output
        ) / 1e6
        return usd * self.batch_discount if batch else usd

    def cost_of(self, resp: Any, *, batch: bool = False) -> float | None:
        """USD for one answered call, from its `Response` usage (None when the price is unknown)."""
        return self.cost(
            resp.prompt_tokens,
            resp.completion_tokens,
            resp.cached_tokens or 0,
            resp.cache_write_tokens or 0,
            batch=batch,
        )

    def warning(self) -> str | None:
        """One line for the user when the model is not in the table, else None."""
        if self.known:
            return None
        return (
            f"{self.provider}:{self.model} is not in the price table: cost unknown, default limits "
            f"(max {self.default_max_tokens} output tokens, accepts {', '.join(sorted(self.params))}); "
            "add it to recipes/prices.yaml or your --prices file"
        )


def _load_yaml(p: Path) -> Any:
    """The table through the one safe config reader (size, UTF-8, alias limits; errors name the file)."""
    return load_yaml(p, what="price table")


@functools.cache
def _load(path: str) -> dict:
    from sbs_data.schemas import validate

    p = Path(path)
    if not p.is_file():
        raise SbsError(f"{p}: price table not found")
    data = _load_yaml(p)
    validate(data, "prices", where=str(p))
    return data


def load_table(path: str | Path | None = None) -> dict:
    """The validated price table (cached per path)."""
    return _load(str(path or DEFAULT_PRICES))


def match(models: dict[str, Any], model: str) -> str | None:
    """The table key for `model`: itself, else the longest key it starts with; None when none fits."""
    if model in models:
        return model
    candidates = [m for m in models if model.startswith(m)]
    return max(candidates, key=len) if candidates else None


def _facts(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: d[k] for k in _FACT_KEYS if k in d}
    if "params" in out:
        out["params"] = frozenset(out["params"])
    return out


@functools.cache
def _facts_for(provider: str, model: str, path: str) -> ModelFacts:
    entry = (_load(path).get("providers") or {}).get(provider) or {}
    base = _facts(entry.get("defaults") or {})
    if entry.get("free"):
        free: dict[str, Any] = {"input": 0.0, "cached_input": 0.0, "cache_write": 0.0, "output": 0.0}
        return ModelFacts(provider, model, matched="free", known=True, **free, **base)
    models = entry.get("models") or {}
    key = match(models, model)
    if key is None:
        return ModelFacts(provider, model, batch_discount=float(entry.get("batch_discount", 1.0)), **base)
    m = models[key]
    facts = {**base, **_facts(m)}
    return ModelFacts(
        provider,
        model,
        matched=key,
        known=True,
        input=float(m["input"]),
        cached_input=float(m["cached_input"]) if "cached_input" in m else None,
        cache_write=float(m["cache_write"]) if "cache_write" in m else None,
        output=float(m["output"]),
        batch_discount=float(m.get("batch_discount", entry.get("batch_discount", 1.0))),
        **facts,
    )


def facts_for(provider: str, model: str, path: str | Path | None = None) -> ModelFacts:
    """The facts for PROVIDER:MODEL from the table at `path` (default `recipes/prices.yaml`)."""
    return _facts_for(provider, model, str(path or DEFAULT_PRICES))


def estimate_tokens(chars: int) -> int:
    """Rough token count from characters (about 4 per token for English): dry-run estimates and deciding
    whether a prefix is long enough to cache."""
    return max(1, round(chars / 4))
