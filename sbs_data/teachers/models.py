"""Per-model facts from the editable table `recipes/prices.yaml`: prices, reasoning, accepted params, limits.

A model is matched exactly, else by the longest listed prefix (a dated snapshot such as
gpt-4o-mini-2024-07-18 matches gpt-4o-mini). Each provider's `defaults` fill what a model entry leaves out;
a model that matches nothing gets those defaults, unknown prices and `known=False`, and the caller prints
`warning()` once. Providers marked `free` (local teachers) cost nothing.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sbs_data import RECIPES_DIR, SbsError
from sbs_data.configfile import load_yaml

DEFAULT_PRICES = RECIPES_DIR / "prices.yaml"

#: The request params a model may accept, in the order `list_models` shows them. `base.PARAMS` is this
#: plus `reasoning_summary`, which the table does not gate (it needs a reasoning model and the Responses API).
PARAM_ORDER = (
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "stop",
    "n",
    "reasoning_effort",
    "thinking_budget",
)
#: What any model is assumed to accept when neither the model nor its provider's defaults say.
ALL_PARAMS = frozenset(PARAM_ORDER)
#: The output budget when nothing says otherwise: ample for a rationale and a label.
FALLBACK_MAX_TOKENS = 1024
#: The smallest prefix any provider caches (OpenAI, and most Anthropic models), in tokens.
FALLBACK_MIN_CACHE = 1024

_FACT_KEYS = (
    "reasoning",
    "params",
    "max_output_tokens",
    "default_max_tokens",
    "min_cache_tokens",
    "native_json",
)
#: The service tiers a provider may report that are priced like the standard tier (`scale` is prepaid).
STANDARD_TIERS = frozenset({"default", "auto", "scale"})
#: Prompt-cache lifetimes a request may choose (Anthropic's `cache_control.ttl`).
CACHE_TTLS = ("5m", "1h")


@dataclass(frozen=True)
class ModelFacts:
    """What sbs-data knows about one PROVIDER:MODEL. Prices are USD per 1M tokens, None where unknown.

    `cached_input` prices input tokens read from the provider's prompt cache, `cache_write` those written to
    it with the 5-minute lifetime and `cache_write_1h` with the 1-hour one (Anthropic); each defaults to
    `input` when the table leaves it out. `batch_discount` multiplies everything for calls made through a
    batch API; `tiers` multiplies everything for a service tier other than the standard one (OpenAI `flex`,
    `priority`), for the models that offer it. `params` are the request params the model accepts;
    `default_max_tokens` is an output budget large enough that, at the default reasoning effort, an answer
    is not normally cut short; `min_cache_tokens` is the shortest prefix the provider will cache;
    `native_json` says the API enforces an output JSON schema for this model (Anthropic structured
    outputs), else `--json` asks in the prompt.
    """

    provider: str
    model: str
    matched: str | None = None
    known: bool = False
    input: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    output: float | None = None
    batch_discount: float = 1.0
    tiers: Mapping[str, float] = field(default_factory=dict)
    reasoning: bool = False
    params: frozenset[str] = ALL_PARAMS
    max_output_tokens: int | None = None
    default_max_tokens: int = FALLBACK_MAX_TOKENS
    min_cache_tokens: int = FALLBACK_MIN_CACHE
    native_json: bool = False
    #: For a model not in the table: the table's closest name for the same provider ("did you mean").
    suggestion: str | None = None

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
        cache_write_1h_tokens: int | None = 0,
        batch: bool = False,
        tier: str | None = None,
    ) -> float | None:
        """USD for one call; None when the price is unknown.

        `prompt_tokens` counts all input tokens, the cached and cache-written ones included (as
        `Response.prompt_tokens` does); `cache_write_tokens` counts every token written to the cache, of
        which `cache_write_1h_tokens` with the 1-hour lifetime (priced at `cache_write_1h`, the rest at the
        5-minute `cache_write`); `completion_tokens` includes reasoning tokens. `tier` is the service tier
        that served the call (as the response reports it; a batch call has the batch price whatever it
        says): a tier the table does not price for this model makes the cost unknown."""
        if self.input is None or self.output is None:
            return None
        scale = self.batch_discount if batch else self.tier_multiplier(tier)
        if scale is None:
            return None
        cached = cached_tokens or 0
        written = cache_write_tokens or 0
        written_1h = min(written, cache_write_1h_tokens or 0)
        fresh = max(0, (prompt_tokens or 0) - cached - written)
        read_price = self.input if self.cached_input is None else self.cached_input
        write_price = self.input if self.cache_write is None else self.cache_write
        write_1h_price = self.input if self.cache_write_1h is None else self.cache_write_1h
        usd = (
            fresh * self.input
            + cached * read_price
            + (written - written_1h) * write_price
            + written_1h * write_1h_price
            + (completion_tokens or 0) * self.output
        ) / 1e6
        return usd * scale

    def tier_multiplier(self, tier: str | None) -> float | None:
        """What a service tier costs relative to the standard price (None: the table does not price it)."""
        if tier is None or tier in STANDARD_TIERS:
            return 1.0
        return self.tiers.get(tier)

    def cost_of(self, resp: Any, *, batch: bool = False) -> float | None:
        """USD for one answered call, from its `Response` usage and the service tier it reports (None when
        the price is unknown)."""
        return self.cost(
            resp.prompt_tokens,
            resp.completion_tokens,
            resp.cached_tokens or 0,
            resp.cache_write_tokens or 0,
            cache_write_1h_tokens=resp.cache_write_1h_tokens or 0,
            batch=batch,
            tier=getattr(resp, "service_tier", None),
        )

    def warning(self) -> str | None:
        """One line for the user when the model is not in the table, else None."""
        if self.known:
            if self.suggestion and self.matched:  # a near-miss of a listed name that a shorter one prefixes
                return (
                    f"{self.provider}:{self.model} is not in the price table: priced as {self.matched}, the "
                    f"longest name in the table it starts with{self.did_you_mean()}"
                )
            return None
        return (
            f"{self.provider}:{self.model} is not in the price table{self.did_you_mean()}: cost unknown, default limits "
            f"(max {self.default_max_tokens} output tokens, accepts {', '.join(sorted(self.params))}); "
            "add it to recipes/prices.yaml or your --prices file"
        )

    def did_you_mean(self) -> str:
        """ " (did you mean openai:gpt-4o-mini?)" for a model the table lacks but has a close name to; else ""."""
        return f" (did you mean {self.provider}:{self.suggestion}?)" if self.suggestion else ""


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


#: The price fields of a model entry, USD per 1M tokens (`input` and `output` are required).
_PRICE_KEYS = ("input", "cached_input", "cache_write", "cache_write_1h", "output")


def _price(m: dict[str, Any], key: str) -> float | None:
    return float(m[key]) if key in m else None


#: What follows a listed name in a snapshot or alias of it (gpt-4o-mini-2024-07-18, claude-3-5-haiku-latest).
_SNAPSHOT = re.compile(r"[-@:_.]?(?:\d|latest|preview|exp|beta)", re.IGNORECASE)


@functools.cache
def _facts_for(provider: str, model: str, path: str) -> ModelFacts:
    entry = (_load(path).get("providers") or {}).get(provider) or {}
    base = _facts(entry.get("defaults") or {})
    if entry.get("free"):
        free: dict[str, Any] = dict.fromkeys(_PRICE_KEYS, 0.0)
        return ModelFacts(provider, model, matched="free", known=True, **free, **base)
    models = entry.get("models") or {}
    key = match(models, model)
    if key is None:
        close = difflib.get_close_matches(model, list(models), n=1, cutoff=0.6)
        return ModelFacts(
            provider,
            model,
            batch_discount=float(entry.get("batch_discount", 1.0)),
            suggestion=close[0] if close else None,
            **base,
        )
    m = models[key]
    facts = {**base, **_facts(m)}
    suggestion = None
    if key != model and not _SNAPSHOT.match(model[len(key) :]):  # a typo such as gpt-4o-mni (-> gpt-4o)?
        close = difflib.get_close_matches(model, [k for k in models if k != key], n=1, cutoff=0.85)
        suggestion = close[0] if close and not model.startswith(close[0]) else None
    return ModelFacts(
        provider,
        model,
        matched=key,
        known=True,
        input=float(m["input"]),
        cached_input=_price(m, "cached_input"),
        cache_write=_price(m, "cache_write"),
        cache_write_1h=_price(m, "cache_write_1h"),
        output=float(m["output"]),
        batch_discount=float(m.get("batch_discount", entry.get("batch_discount", 1.0))),
        tiers={str(k): float(v) for k, v in (m.get("tiers") or {}).items()},
        suggestion=suggestion,
        **facts,
    )


def facts_for(provider: str, model: str, path: str | Path | None = None) -> ModelFacts:
    """The facts for PROVIDER:MODEL from the table at `path` (default `recipes/prices.yaml`)."""
    return _facts_for(provider, model, str(path or DEFAULT_PRICES))


def estimate_tokens(chars: int) -> int:
    """Rough token count from characters (about 4 per token for English): dry-run estimates and deciding
    whether a prefix is long enough to cache."""
    return max(1, round(chars / 4))


#: The columns of `list_models`' rows, in order.
MODEL_COLUMNS = (
    "provider",
    "model",
    "input",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "batch_discount",
    "reasoning",
    "max_output_tokens",
    "default_max_tokens",
    "min_cache_tokens",
    "params",
    "native_json",
)


def list_models(provider: str | None = None, path: str | Path | None = None) -> list[dict[str, Any]]:
    """The models table as rows (`sbs-data models`), in the table's order: each listed model's prices (USD
    per 1M tokens; None where the table gives none, which bills those tokens as plain input), batch
    discount, whether it reasons, its limits (`default_max_tokens` is the output budget `generate` gives a
    reasoning model without --max-tokens; other models get 256), the params it accepts (in `PARAM_ORDER`)
    and whether the API enforces a `--json` schema natively. `provider` keeps one provider's models (an
    unknown one is an SbsError naming those in the table)."""
    providers = load_table(path).get("providers") or {}
    if provider is not None and provider not in providers:
        raise SbsError(f"no provider {provider!r} in the models table (it has: {', '.join(providers)})")
    rows: list[dict[str, Any]] = []
    for name, entry in providers.items():
        if provider is not None and name != provider:
            continue
        for model in (entry or {}).get("models") or {}:
            f = facts_for(name, model, path)
            rows.append(
                {
                    "provider": name,
                    "model": model,
                    "input": f.input,
                    "cached_input": f.cached_input,
                    "cache_write_5m": f.cache_write,
                    "cache_write_1h": f.cache_write_1h,
                    "output": f.output,
                    "batch_discount": f.batch_discount,
                    "reasoning": f.reasoning,
                    "max_output_tokens": f.max_output_tokens,
                    "default_max_tokens": f.default_max_tokens,
                    "min_cache_tokens": f.min_cache_tokens,
                    "params": [p for p in PARAM_ORDER if p in f.params],
                    "native_json": f.native_json,
                }
            )
    return rows
