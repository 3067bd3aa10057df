"""The typed configuration that travels from the CLI down to the engine, as curator's request config does.

- `RequestSpec`: what a command asks its teacher (teacher, prompt, sampling): every field is a request
  ingredient, so part of the cache key. `PlanSpec` adds which examples `generate` asks about.
- `RunOptions`: how the calls are made (limits and retries in `Settings`, online or batch, budget, dry run,
  offline, the prompt-cache marking and its lifetime, batch settings): none of it changes an answer.
  `cache_ttl` does change the request body (Anthropic's `cache_control.ttl`), as `prompt_cache` does, but
  only how long the provider keeps the shared prefix, and so what it bills, never what the model answers:
  like the marks themselves it is not a cache-key ingredient, and a 1-hour run reuses 5-minute answers.
- `RationalizeSelect`: which rows of a generations version `rationalize` asks again, and what it builds.

The CLI maps its option groups onto these one to one (`sbs_data/cli.py`), and the library functions take
them: `generate(ws, ref, spec, run)`, `rationalize(ws, ref, spec, run, select)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbs_data.generate.engine import Settings
from sbs_data.teachers.base import Teacher

if TYPE_CHECKING:
    from sbs_data.generate.batches import BatchSettings

__all__ = ["MODES", "PlanSpec", "RationalizeSelect", "RequestSpec", "RunOptions", "Settings"]

MODES = ("online", "batch")


@dataclass
class RequestSpec:
    """The teacher, the prompt and the sampling parameters: what makes an answer what it is."""

    teacher: str | Teacher
    prompt_path: str | Path | None = None  # a prompt file (.yaml, or .txt with {input}); default: the task's
    json_mode: bool = (
        False  # ask for {rationale, label} JSON (schema-enforced where the API can) and validate
    )
    params: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens, seed, stop, ...
    base_urls: tuple[str, ...] = ()  # openai-compat: servers to spread the requests over
    prices_path: str | Path | None = None  # a models table instead of recipes/prices.yaml
    api: str | None = None  # openai: chat | responses (None: responses for reasoning models, else chat)

    def prompt_args(self) -> dict[str, Any]:
        """What the planners (`plan`, `hint_plan`) take of the spec to render its requests."""
        return {"prompt_path": self.prompt_path, "json_mode": self.json_mode, "params": self.params}


@dataclass
class PlanSpec(RequestSpec):
    """`generate`'s request: the spec, and which examples of the version it asks about, how many times."""

    split: str | None = None  # only this split
    limit: int | None = None  # only the first N examples (in split, row order)
    samples: int = 1  # completions per example, each its own cache key


@dataclass
class RunOptions:
    """How a command calls its teacher; nothing here changes an answer (or a cache key)."""

    settings: Settings = field(default_factory=Settings)  # concurrency, rate limits, retries, waits
    mode: str = "online"  # or "batch": the provider's batch API at the batch price
    max_usd: float | None = None  # stop cleanly once this much is spent
    dry_run: bool = False  # render, count and price the requests; call nothing
    offline: bool = False  # never call the network; fail on a cache miss
    prompt_cache: bool = True  # mark the shared few-shot prefix for Anthropic's prompt cache
    service_tier: str | None = None  # openai: auto | default | flex | priority (online; price and speed)
    cache_ttl: str | None = None  # the marks' lifetime, "5m" or "1h" (default: 5m online, 1h in batch mode)
    batch: BatchSettings | None = None  # batch mode's knobs (default: BatchSettings())
    command: str = "generate"  # what `sbs_runs` records as the command line


@dataclass
class RationalizeSelect:
    """Which rows of GEN `rationalize` asks again, and the versions it builds."""

    rows: str = "wrong+failed"  # wrong | failed | wrong+failed
    splits: list[str] | tuple[str, ...] | None = None  # default: train
    allow_eval: bool = False  # validation/test too (their gold answer goes into prompts)
    name: str | None = None  # the hinted answers (default GEN-hinted)
    combine: bool = True  # also build the combined version to train on
    combined_name: str | None = None  # default GEN-rationalized
