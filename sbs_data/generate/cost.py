"""Token usage -> dollars, from the editable price table `recipes/prices.yaml`."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from sbs_data import RECIPES_DIR, SbsError

DEFAULT_PRICES = RECIPES_DIR / "prices.yaml"


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens; `batch_discount` multiplies both for batch-API calls."""

    input: float
    output: float
    batch_discount: float = 1.0
    matched: str = ""

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None, batch: bool = False) -> float:
        c = ((prompt_tokens or 0) * self.input + (completion_tokens or 0) * self.output) / 1e6
        return c * self.batch_discount if batch else c


@functools.cache
def _load(path: str) -> dict:
    from sbs_data.schemas import validate

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SbsError(f"{p}: cannot read price table: {e}") from e
    validate(data, "prices", where=str(p))
    return data


def load_prices(path: str | Path | None = None) -> dict:
    return _load(str(path or DEFAULT_PRICES))


def price_for(provider: str, model: str, path: str | Path | None = None) -> Price | None:
    """The price of PROVIDER:MODEL: exact match, else the longest listed prefix; None when unknown."""
    entry = (load_prices(path).get("providers") or {}).get(provider)
    if not entry:
        return None
    if entry.get("free"):
        return Price(0.0, 0.0, 1.0, matched="free")
    models = entry.get("models") or {}
    default_discount = entry.get("batch_discount", 1.0)
    name = model
    if name not in models:
        candidates = [m for m in models if name.startswith(m)]
        if not candidates:
            return None
        name = max(candidates, key=len)
    m = models[name]
    return Price(
        float(m["input"]), float(m["output"]), float(m.get("batch_discount", default_discount)), matched=name
    )


def estimate_tokens(chars: int) -> int:
    """Rough prompt-token estimate for --dry-run (about 4 characters per token for English)."""
    return max(1, round(chars / 4))
