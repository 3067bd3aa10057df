"""What every teacher shares: the request and response shapes, the classified errors, the spec parser.

An adapter is one small class with one async method, `complete(request) -> Response`, that either returns
the completion or raises one of the errors below. Everything else (retries, rate limits, caching, storage,
cost, progress) lives once, in the engine (`sbs_data.generate.run`), so adding a provider means writing
one method that maps the provider's API and its exceptions onto these types.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sbs_data import SbsError

#: Generation params a request may carry; adapters pass through the ones their API supports.
PARAMS = ("temperature", "top_p", "max_tokens", "seed", "stop", "n")


@dataclass(frozen=True)
class Request:
    """One completion request, provider-independent.

    `system` and `messages` are fully rendered; `params` holds generation params (see PARAMS);
    `json_schema` asks for structured output. `sample_idx` separates the K samples of one example (each its
    own cache key). `example_id` travels along for adapters that serve recorded answers (replay) and for
    error messages; it is not part of the cache key.
    """

    messages: tuple[dict[str, str], ...]
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    json_schema: dict | None = None
    sample_idx: int = 0
    example_id: str | None = None

    @property
    def prompt_chars(self) -> int:
        return len(self.system or "") + sum(len(m["content"]) for m in self.messages)


@dataclass(frozen=True)
class Response:
    """A completion: the text exactly as returned, why it stopped, token usage and the provider's id."""

    text: str | None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request_id: str | None = None


# -- classified errors ----------------------------------------------------------------------------
class TeacherError(Exception):
    """Base class: `retryable` tells the engine whether another attempt can help."""

    retryable = False
    kind = "error"

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Transient(TeacherError):
    """5xx, timeouts, dropped connections, malformed bodies: retry with backoff."""

    retryable = True
    kind = "transient"


class RateLimited(Transient):
    """429 (or 529 overloaded): retry, never sooner than `retry_after` seconds when the server said so."""

    kind = "rate_limited"


class Permanent(TeacherError):
    """400/401/403/404 and friends: retrying cannot help; recorded per row."""

    kind = "permanent"


class ContextLength(Permanent):
    """The prompt (plus max_tokens) does not fit the model's context window."""

    kind = "context_length"


class AuthError(Permanent):
    """401/403: a missing or wrong key; the engine stops the run rather than fail every row."""

    kind = "auth"


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` / `retry-after` (seconds or an HTTP date), else None."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        ra = headers.get("retry-after")
    except Exception:  # noqa: BLE001 - odd header objects: treat as absent
        return None
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    from time import time

    try:
        return max(0.0, parsedate_to_datetime(ra).timestamp() - time())
    except (TypeError, ValueError):
        return None


# -- secrets hygiene ------------------------------------------------------------------------------
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,}|sk-ant-[A-Za-z0-9_\-]{6,}|hf_[A-Za-z0-9]{10,})")


def redact(text: str | None, secrets: tuple[str, ...] | list[str] = ()) -> str | None:
    """Remove API keys (the teacher's own, and anything key-shaped) from a message before it is stored."""
    if text is None:
        return None
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return _KEYLIKE.sub("***", text)


def safe_url(url: str | None) -> str | None:
    """A base URL without user:password@ so it can go into lineage."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return urlunsplit(parts)


# -- the adapter interface ------------------------------------------------------------------------
class Teacher:
    """Base class for adapters. Subclasses set the identity and implement `complete`."""

    provider: str = "?"
    endpoint: str = "?"  # the API surface, part of the cache key (chat.completions, messages, generate...)
    network: bool = (
        True  # False for teachers that never leave the machine (replay, hf): allowed with --offline
    )
    supports_json_schema: bool = True  # the API can be told the output schema (else the prompt asks for it)

    def __init__(self, model: str):
        self.model = model

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    def preflight(self) -> None:
        """Raise SbsError when the teacher cannot be called at all (e.g. no API key); run before any call."""

    async def complete(self, req: Request) -> Response:  # pragma: no cover - interface
        raise NotImplementedError

    def key_extra(self, req: Request) -> dict[str, Any]:
        """Extra cache-key ingredients (replay keys by example id, since it answers by id, not by text)."""
        return {}

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be stored or printed (API keys)."""
        return ()

    def lineage(self) -> dict[str, Any]:
        """What goes into the generation version's config (never keys)."""
        return {"spec": self.spec, "provider": self.provider, "model": self.model, "endpoint": self.endpoint}

    async def aclose(self) -> None:
        return None


class HostedTeacher(Teacher):
    """A provider API reached through its official SDK: the key and base URL come from the SDK's usual
    environment variables, the key is only ever held in memory, and the client is made lazily inside the
    running event loop (the aiohttp transport needs one)."""

    key_env: str = "?"
    base_url_env: str = "?"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: str = "aiohttp",
    ):
        super().__init__(model)
        self.base_url = base_url or os.environ.get(self.base_url_env) or None
        self._api_key = api_key or os.environ.get(self.key_env)
        self.timeout = timeout
        self.transport = transport
        self._client: Any = None

    def preflight(self) -> None:
        if not self._api_key:
            raise SbsError(
                f"{self.spec}: set {self.key_env} (the key is read from the environment, never stored)"
            )

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()

    def lineage(self) -> dict[str, Any]:
        return {**super().lineage(), "base_url": safe_url(self.base_url)}

    def client(self) -> Any:
        if self._client is None:
            self._client = self.make_client()
        return self._client

    def make_client(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def parse_spec(
    spec: str,
    *,
    base_urls: list[str] | tuple[str, ...] = (),
    ws: Any = None,
    timeout: float = 60.0,
    **opts: Any,
) -> Teacher:
    """`openai:MODEL`, `anthropic:MODEL`, `openai-compat:MODEL`, `hf:NAME_OR_PATH`, `replay:NAME@N` -> adapter."""
    provider, sep, model = spec.partition(":")
    provider = provider.strip().lower()
    model = model.strip()
    if not sep or not model:
        raise SbsError(
            f"bad teacher {spec!r}: expected PROVIDER:MODEL, e.g. openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest, "
            "openai-compat:MODEL --base-url URL, hf:PATH, replay:NAME@N"
        )
    if base_urls and provider not in ("openai", "openai-compat", "anthropic"):
        raise SbsError(f"--base-url does not apply to {provider}: teachers")
    if provider == "openai":
        from sbs_data.teachers.openai import OpenAITeacher

        if len(base_urls) > 1:
            raise SbsError(
                "several --base-url values need openai-compat:MODEL (load spreading over replicas)"
            )
        return OpenAITeacher(model, base_url=base_urls[0] if base_urls else None, timeout=timeout, **opts)
    if provider in ("openai-compat", "compat"):
        from sbs_data.teachers.compat import CompatTeacher

        urls = list(base_urls) or [u for u in [os.environ.get("OPENAI_BASE_URL")] if u]
        if not urls:
            raise SbsError("openai-compat:MODEL needs --base-url URL (e.g. http://localhost:8000/v1)")
        return CompatTeacher(model, base_urls=urls, timeout=timeout, **opts)
    if provider == "anthropic":
        from sbs_data.teachers.anthropic import AnthropicTeacher

        if len(base_urls) > 1:
            raise SbsError("anthropic: takes at most one --base-url")
        return AnthropicTeacher(model, base_url=base_urls[0] if base_urls else None, timeout=timeout, **opts)
    if provider == "hf":
        from sbs_data.teachers.hf import HFTeacher

        return HFTeacher(model, **opts)
    if provider == "replay":
        from sbs_data.teachers.replay import ReplayTeacher

        if ws is None:
            raise SbsError("replay: teachers need a workspace")
        return ReplayTeacher(model, ws)
    raise SbsError(
        f"unknown teacher provider {provider!r} in {spec!r}: use openai, anthropic, openai-compat, hf or replay"
    )
