"""Which module serves which `PROVIDER:MODEL` spec: a small table of prefix -> factory (+ batch API).

The built-in providers register below through the same `register` a third party uses; a package outside
sbs-data can also add providers without being imported by hand, by declaring an entry point in the group
`sbs_data.teachers` that names a function taking `register`:

    [project.entry-points."sbs_data.teachers"]
    mycloud = "mycloud_sbs:register_teachers"     # def register_teachers(register): register("mycloud", ...)

A factory is called as `factory(model, base_urls=(...), ws=..., timeout=..., prompt_cache=..., **opts)` and
returns a Teacher; `batch`, when given, is the provider's `BatchAPI` subclass. This is the only module that
knows every provider; `base` and the adapters import nothing from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbs_data import SbsError
from sbs_data.teachers import anthropic, compat, gemini, hf, openai, replay
from sbs_data.teachers.base import Teacher
from sbs_data.teachers.batch_api import BatchAPI
from sbs_data.teachers.models import CACHE_TTLS, facts_for

Factory = Callable[..., Teacher]
ENTRY_POINT_GROUP = "sbs_data.teachers"


@dataclass(frozen=True)
class Provider:
    name: str
    factory: Factory
    batch: type[BatchAPI] | None = None


_PROVIDERS: dict[str, Provider] = {}
_plugins_loaded = False


def register(
    prefix: str, factory: Factory, *, batch: type[BatchAPI] | None = None, aliases: tuple[str, ...] = ()
) -> None:
    """Serve `PREFIX:MODEL` specs (and `ALIAS:MODEL`) with `factory`; a later registration replaces an
    earlier one. The teachers it makes must report `provider == prefix`, which is how their batch API and
    model facts are found."""
    name = prefix.strip().lower()
    if not name or ":" in name:
        raise ValueError(f"bad teacher provider prefix {prefix!r}")
    entry = Provider(name, factory, batch)
    for key in (name, *(a.strip().lower() for a in aliases)):
        _PROVIDERS[key] = entry


def providers() -> list[str]:
    """The registered prefixes (aliases left out), in registration order."""
    _load_plugins()
    seen: dict[str, None] = {}
    for p in _PROVIDERS.values():
        seen.setdefault(p.name)
    return list(seen)


def _load_plugins() -> None:
    """Let installed packages register their providers (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            hook = ep.load()
            hook(register)
        except Exception as e:  # noqa: BLE001 - a broken plugin is named, not a traceback
            raise SbsError(f"teacher plugin {ep.name!r} ({ep.value}) failed to register: {e}") from e


def _entry(provider: str) -> Provider | None:
    entry = _PROVIDERS.get(provider)
    if entry is None:
        _load_plugins()
        entry = _PROVIDERS.get(provider)
    return entry


def parse_spec(
    spec: str,
    *,
    base_urls: list[str] | tuple[str, ...] = (),
    ws: Any = None,
    timeout: float = 60.0,
    prompt_cache: bool = True,
    prices_path: str | Path | None = None,
    api: str | None = None,
    service_tier: str | None = None,
    cache_ttl: str | None = None,
    **opts: Any,
) -> Teacher:
    """`openai:MODEL`, `anthropic:MODEL`, `gemini:MODEL`, `openai-compat:MODEL`, `hf:NAME_OR_PATH`,
    `replay:NAME@N` (or a plugin's prefix) -> a teacher, with its model facts read from the price table at
    `prices_path`, speaking `api` (`--api`; None: the teacher's choice for the model) in `service_tier`
    (`--service-tier`), and its prompt-cache lifetime (`cache_ttl`, set on the teacher, not passed to the
    factory) checked. A teacher that has no choice of API or tier refuses them by name."""
    check_cache_ttl(cache_ttl)
    provider, sep, model = spec.partition(":")
    provider = provider.strip().lower()
    model = model.strip()
    if not sep or not model:
        raise SbsError(
            f"bad teacher {spec!r}: expected PROVIDER:MODEL, e.g. openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest, "
            "openai-compat:MODEL --base-url URL, hf:PATH, replay:NAME@N"
        )
    entry = _entry(provider)
    if entry is None:
        names = providers()
        listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)
        raise SbsError(f"unknown teacher provider {provider!r} in {spec!r}: use {listed}")
    teacher = entry.factory(
        model, base_urls=tuple(base_urls), ws=ws, timeout=timeout, prompt_cache=prompt_cache, **opts
    )
    teacher.facts = facts_for(teacher.provider, teacher.model, prices_path)
    if api is not None:
        teacher.use_api(api)
    if service_tier is not None:
        teacher.use_service_tier(service_tier)
    if cache_ttl is not None:
        teacher.cache_ttl = cache_ttl
    return teacher


def check_cache_ttl(ttl: str | None) -> None:
    """Refuse a prompt-cache lifetime other than those the API takes (None: the default)."""
    if ttl is not None and ttl not in CACHE_TTLS:
        raise SbsError(f"--cache-ttl must be {' or '.join(CACHE_TTLS)}, not {ttl!r}")


def supports_batch(teacher: Teacher) -> bool:
    """Whether the teacher's provider has a batch API (`--mode batch`)."""
    entry = _entry(teacher.provider)
    return entry is not None and entry.batch is not None


def batch_api(teacher: Teacher, timeout: float = 120.0) -> BatchAPI:
    """The batch API of a teacher whose provider has one, else a clear SbsError."""
    entry = _entry(teacher.provider)
    if entry is None or entry.batch is None:
        names = [f"{p}:" for p in providers() if _PROVIDERS[p].batch is not None]
        which = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)
        which = which or "a batch-capable"
        article = "an" if which[:1] in "aeiou" else "a"
        raise SbsError(
            f"--mode batch needs {article} {which} teacher, not {teacher.spec} "
            "(batch APIs are provider features; use online mode)"
        )
    return entry.batch(teacher, timeout)


register("openai", openai.create, batch=openai.OpenAIBatchAPI)
register("anthropic", anthropic.create, batch=anthropic.AnthropicBatchAPI)
register("gemini", gemini.create, batch=gemini.GeminiBatchAPI)
register("openai-compat", compat.create, aliases=("compat",))
register("hf", hf.create)
register("replay", replay.create)
