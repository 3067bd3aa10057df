"""What every teacher shares: request and response shapes, rate-limit headers, classified errors.

An adapter is one small class with one async method, `complete(request) -> Response`, that either returns
the completion or raises one of the errors below. Everything else (retries, pacing, caching, storage, cost,
progress) lives once, in the engine (`sbs_data.generate`), so adding a provider means writing one module that
maps the provider's API and its errors onto these types, and registering it (`sbs_data.teachers.registry`).
This module imports no adapter.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sbs_data import SbsError
from sbs_data.teachers.models import PARAM_ORDER

if TYPE_CHECKING:
    from sbs_data.teachers.models import ModelFacts

#: Generation params a request may carry; adapters pass through the ones their API supports. The models
#: table gates all but `reasoning_summary` (which needs a reasoning model and the Responses API).
PARAMS = (*PARAM_ORDER, "reasoning_summary")
#: What `--reasoning-summary` may ask for (OpenAI's `reasoning.summary`).
REASONING_SUMMARIES = ("auto", "concise", "detailed")


@dataclass(frozen=True)
class Request:
    """One completion request, provider-independent.

    `system` and `messages` are fully rendered; `params` holds generation params (see PARAMS);
    `json_schema` asks for structured output. `sample_idx` separates the K samples of one example (each its
    own cache key). `example_id` travels along for adapters that serve recorded answers (replay) and for
    error messages; it is not part of the cache key. `prefix_chars` says how many leading characters of
    `messages[0]["content"]` are the few-shot block shared byte for byte by every row, so an adapter can
    mark it for the provider's prompt cache; it changes no answer and is not part of the cache key either.
    """

    messages: tuple[dict[str, str], ...]
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    json_schema: dict | None = None
    sample_idx: int = 0
    example_id: str | None = None
    prefix_chars: int = 0

    @property
    def prompt_chars(self) -> int:
        return len(self.system or "") + sum(len(m["content"]) for m in self.messages)


@dataclass(frozen=True)
class RateLimits:
    """The limits a provider reported with one response (or error), provider-neutral; None = not sent.

    Resets and `retry_after` are seconds from when the response arrived. Anthropic reports input and
    output tokens separately (`input_tokens_*`, `output_tokens_*`) as well as combined (`tokens_*`).
    """

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None
    input_tokens_limit: int | None = None
    input_tokens_remaining: int | None = None
    input_tokens_reset: float | None = None
    output_tokens_limit: int | None = None
    output_tokens_remaining: int | None = None
    output_tokens_reset: float | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Response:
    """A completion: the text exactly as returned, why it stopped, token usage and the provider's id.

    `prompt_tokens` counts every input token, cached and cache-written ones included; `cached_tokens` of
    them were read from the provider's prompt cache and `cache_write_tokens` were written to it (Anthropic),
    `cache_write_1h_tokens` of those with the 1-hour lifetime (priced apart from 5-minute writes).
    `completion_tokens` includes `reasoning_tokens` (billed as output). `limits` is what the response's
    headers said about the account's rate limits. `reasoning_summary` is the provider's summary of the
    model's reasoning, when one was asked for; `service_tier` the tier that served the call, as the
    provider reports it (it sets the price). `served_model` is the model the body says answered (OpenAI's
    and Anthropic's `model`, Gemini's `modelVersion`), None when it names none.
    """

    text: str | None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    request_id: str | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    limits: RateLimits | None = None
    reasoning_summary: str | None = None
    service_tier: str | None = None
    cache_write_1h_tokens: int | None = None
    served_model: str | None = None


#: Longest model name kept from a response body (a hostile server must not make one row unbounded).
MAX_MODEL_CHARS = 200


def served_model(body: Any, field: str = "model") -> str | None:
    """The model a response body names (OpenAI and Anthropic call it `model`, Gemini `modelVersion`), cut to
    MAX_MODEL_CHARS; None when it names none or something that is not text."""
    name = body.get(field) if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip()[:MAX_MODEL_CHARS]


#: A dated snapshot suffix: -2024-07-18, -20241022, @20240620, OpenAI's older -0613 / -1106, and Gemini's
#: stable versions -001 / -002.
_SNAPSHOT = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|\d{3})")


def same_model(requested: str, served: str | None) -> bool:
    """Whether an answer `served` by this model is what `requested` asked for: the same name, or a dated
    snapshot of it (`gpt-4o-mini` -> `gpt-4o-mini-2024-07-18`, `claude-3-5-haiku-latest` ->
    `claude-3-5-haiku-20241022`, `gemini-1.5-flash` -> `gemini-1.5-flash-002`). Unknown (None) counts as
    the same. Case is ignored. Linear time."""
    if served is None:
        return True
    req, got = requested.strip().lower(), served.strip().lower()
    if req == got:
        return True
    base = req.removesuffix("-latest")
    for name in (req, base):
        if got.startswith(name) and _SNAPSHOT.fullmatch(got[len(name) :]):
            return True
    return False


# -- classified errors ----------------------------------------------------------------------------
class TeacherError(Exception):
    """Base class: `retryable` tells the engine whether another attempt can help.

    Errors made from an HTTP response also carry the provider's error `code` (e.g. "model_not_found",
    "unsupported_value", "invalid_request_error"), the request field it names (`param`, e.g. "temperature")
    and the rate limits its headers reported, so the engine can stop at once on a systematic error.
    """

    retryable = False
    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        param: str | None = None,
        limits: RateLimits | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.code = code
        self.param = param
        self.limits = limits


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


class QuotaExhausted(Permanent):
    """The account has no credit left (OpenAI's 429 `insufficient_quota`, Anthropic's "credit balance is too
    low", a 402 billing error): no retry can help, so the engine stops the run at once."""

    kind = "quota"


_CONTEXT_WORDS = (
    "context_length",
    "context length",
    "maximum context",
    "context window",
    "too long",
    "input token count",  # Gemini: "The input token count (N) exceeds the maximum number of tokens allowed"
)
_UNAVAILABLE_WORDS = ("resource_unavailable", "resource unavailable")
#: What marks an account out of credit, whatever the status it comes with (OpenAI sends it as a 429):
#: https://platform.openai.com/docs/guides/error-codes (429 "You exceeded your current quota"),
#: https://docs.anthropic.com/en/api/errors (billing_error; "Your credit balance is too low").
_QUOTA_CODES = ("insufficient_quota", "billing_error", "billing_hard_limit_reached")
_QUOTA_WORDS = ("exceeded your current quota", "credit balance is too low", "insufficient credit")


def classify_status(status: int, message: str = "", code: str | None = None) -> type[TeacherError]:
    """The error class for an HTTP status, online or inside a batch result (one rule for every provider).

    An account out of credit is QuotaExhausted whatever its status (OpenAI sends it as a 429); otherwise
    429 and Anthropic's 529 (overloaded) are rate limits, and so is any 5xx that says the capacity is not
    there now ("Resource Unavailable", what OpenAI's flex tier answers when it is busy:
    https://platform.openai.com/docs/guides/flex-processing); 408/409/425 and 5xx are transient; 401/403
    are auth; a 400/413/422 whose code or message speaks of the context window is ContextLength.
    """
    text = f"{code or ''} {message}"[:2000].lower()
    if status == 402 or (code or "") in _QUOTA_CODES or any(w in text for w in _QUOTA_WORDS):
        return QuotaExhausted
    if status in (429, 529):
        return RateLimited
    if status >= 500 and any(w in text for w in _UNAVAILABLE_WORDS):
        return RateLimited
    if status in (408, 409, 425) or status >= 500:
        return Transient
    if status in (401, 403):
        return AuthError
    if status in (400, 413, 422):
        if any(w in text for w in _CONTEXT_WORDS):
            return ContextLength
    return Permanent


# -- rate-limit headers ---------------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))+")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | None) -> float | None:
    """Seconds from a Go-style duration as OpenAI sends it (`20ms`, `1s`, `6m0s`, `1h2m3.5s`) or a plain
    number of seconds; None when unreadable. Bounded input, linear-time regexes."""
    if text is None:
        return None
    t = text.strip()
    if not t or len(t) > 64:
        return None
    try:
        return max(0.0, float(t))
    except ValueError:
        pass
    if not _DURATION_FULL.fullmatch(t):
        return None
    return sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(t))


def parse_reset_time(text: str | None, now: float | None = None) -> float | None:
    """Seconds from `now` (default: the clock) until an RFC 3339 time as Anthropic sends it; never negative."""
    if text is None:
        return None
    t = text.strip()
    if not t or len(t) > 64:
        return None
    if t[-1] in "zZ":
        t = t[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if now is None:
        from time import time

        now = time()
    return max(0.0, when.timestamp() - now)


def _int(text: str) -> int | None:
    try:
        return int(text.strip()) if len(text) <= 32 else None
    except ValueError:
        return None


#: How a rate-limit header is read: header name (lower case) -> (RateLimits field, kind), where kind is
#: "int", "duration" (OpenAI) or "time" (RFC 3339, Anthropic). Each provider module has its table.
LimitHeaders = Mapping[str, tuple[str, str]]


def read_limits(headers: Any, table: LimitHeaders, now: float | None = None) -> RateLimits | None:
    """The rate limits in a response's headers, read in one pass over them; None when none were sent.

    `retry-after-ms` / `retry-after` are read for every provider."""
    if headers is None:
        return None
    found: dict[str, Any] = {}
    try:
        items: Iterable[tuple[str, str]] = headers.items()
        for k, v in items:
            k = k.lower()
            spec = table.get(k)
            if spec is not None:
                name, how = spec
                val = _int(v) if how == "int" else parse_duration(v) if how == "duration" else None
                if how == "time":
                    val = parse_reset_time(v, now)
                if val is not None:
                    found[name] = val
            elif k == "retry-after" or k == "retry-after-ms":
                found["_ra"] = True
    except Exception:  # noqa: BLE001 - odd header objects: treat as absent
        return None
    if found.pop("_ra", False):
        ra = parse_retry_after(headers)
        if ra is not None:
            found["retry_after"] = ra
    return RateLimits(**found) if found else None


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
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# -- the official SDKs' exceptions ----------------------------------------------------------------
def error_fields(body: Any) -> tuple[str, str | None, str | None]:
    """(message, code, param) from a provider's JSON error body, both providers' shapes:
    OpenAI `{"error": {"message", "type", "code", "param"}}`, Anthropic `{"type": "error", "error":
    {"type", "message"}}`. The message is cut to 300 characters."""
    err = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return (str(body)[:300] if body is not None else ""), None, None
    code = err.get("code") or err.get("type")
    param = err.get("param")
    return (
        str(err.get("message") or "")[:300],
        str(code)[:100] if code else None,
        str(param)[:100] if param else None,
    )


def sdk_error_message(e: Any) -> str:
    """The server's own error message from an SDK exception (its parsed body), at most 300 characters."""
    msg, _, _ = error_fields(getattr(e, "body", None))
    return msg or str(getattr(e, "message", e))[:300]


def classify_sdk_error(
    e: BaseException,
    sdk: Any,
    provider: str,
    secrets: tuple[str, ...] = (),
    *,
    limit_headers: LimitHeaders = {},  # noqa: B006 - read only
) -> BaseException:
    """Map an exception of the `openai` or `anthropic` SDK (same exception classes, both generated by
    Stainless) onto the engine's error classes, through `classify_status`. Messages carry only the server's
    error body, redacted; the error's code, param and the rate limits its headers sent ride along."""
    from pydantic import ValidationError  # the SDKs' own dependency, loaded only when they are

    if isinstance(e, sdk.APIStatusError):
        status = e.status_code
        headers = getattr(e.response, "headers", None)
        limits = read_limits(headers, limit_headers)
        message, code, param = error_fields(getattr(e, "body", None))
        message = message or str(getattr(e, "message", e))[:300]
        msg = f"{provider} HTTP {status}: {redact(message, secrets)}"
        cls = classify_status(status, message, code)
        return cls(
            msg,
            status=status,
            retry_after=limits.retry_after if limits and cls.retryable else None,
            code=code,
            param=param,
            limits=limits,
        )
    if isinstance(e, (sdk.APITimeoutError, sdk.APIConnectionError)):
        cause = e.__cause__ or e.__context__
        what = "request timed out or dropped" if isinstance(e, sdk.APITimeoutError) else "connection error"
        default = "timeout" if isinstance(e, sdk.APITimeoutError) else "dropped"
        return Transient(f"{provider}: {what} ({type(cause).__name__ if cause else default})")
    if isinstance(e, (sdk.APIResponseValidationError, json.JSONDecodeError, ValidationError)):
        return Transient(f"{provider}: malformed response body ({type(e).__name__})")
    return e


@functools.cache
def sdk_response_class() -> type:
    """The HTTP response class the installed SDKs return for `client.post(..., cast_to=it)`: the response
    itself, body read, headers at hand (httpx2 in current SDKs, httpx in older ones)."""
    try:
        import httpx2

        return httpx2.Response
    except ImportError:
        import httpx

        return httpx.Response


#: What reading a body that is not the documented JSON raises.
BAD_BODY = (AttributeError, IndexError, KeyError, TypeError, ValueError)


def malformed(provider: str, e: BaseException, limits: RateLimits | None = None) -> Transient:
    """A 200 whose body is not the documented shape: worth another attempt."""
    return Transient(f"{provider}: malformed response body ({type(e).__name__})", limits=limits)


# -- secrets hygiene ------------------------------------------------------------------------------
_KEYLIKE = re.compile(
    r"\b(sk-[A-Za-z0-9_\-]{6,}|sk-ant-[A-Za-z0-9_\-]{6,}|hf_[A-Za-z0-9]{10,}|AIza[A-Za-z0-9_\-]{20,})"
)


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
    prompt_cache: bool = True  # mark the shared prefix for the provider's prompt cache where it needs marking
    #: The prompt-cache lifetime to ask for where the provider lets a request choose one ("5m" or "1h";
    #: Anthropic), None for the provider's default; set from `RunOptions.cache_ttl`.
    cache_ttl: str | None = None

    def __init__(self, model: str):
        self.model = model
        self._facts: ModelFacts | None = None

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def facts(self) -> ModelFacts:
        """What the price table knows about this model; the registry sets it from `--prices`, else the
        default table is read on first use."""
        if self._facts is None:
            from sbs_data.teachers.models import facts_for

            self._facts = facts_for(self.provider, self.model)
        return self._facts

    @facts.setter
    def facts(self, value: ModelFacts) -> None:
        self._facts = value

    def preflight(self) -> None:
        """Raise SbsError when the teacher cannot be called at all (e.g. no API key); run before any call."""

    #: The service tier asked for (`--service-tier`); None: the provider's default. It changes the price
    #: and the speed of an answer, never the answer, so it is no cache-key ingredient.
    service_tier: str | None = None

    def use_api(self, api: str) -> None:
        """Speak `api` (`--api`); a teacher whose provider has one API refuses by name."""
        raise SbsError(f"--api {api} does not apply to {self.spec}: its provider has one API")

    def use_service_tier(self, tier: str) -> None:
        """Ask for service tier `tier` (`--service-tier`); providers without tiers refuse by name."""
        raise SbsError(f"--service-tier is an OpenAI option; {self.spec} has no service tiers")

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise SbsError for a request param this teacher's API cannot send (checked before any call).
        Reasoning summaries need an API that returns them."""
        if params.get("reasoning_summary") is not None:
            raise SbsError(
                f"{self.spec} returns no reasoning summaries (--reasoning-summary is for openai: reasoning "
                "models through the Responses API)"
            )

    async def complete(self, req: Request) -> Response:  # pragma: no cover - interface
        raise NotImplementedError

    def prompt_cache_ttl(self, batch: bool = False) -> str | None:
        """The lifetime this teacher's prompt-cache marks ask for, online or in a batch; None where the
        provider offers no choice (OpenAI caches by itself) or nothing is marked."""
        return None

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
    #: What `create` answers to more than one --base-url.
    several_base_urls: str = "takes at most one --base-url"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: str = "aiohttp",
        prompt_cache: bool = True,
    ):
        super().__init__(model)
        self.base_url = base_url or os.environ.get(self.base_url_env) or None
        self._api_key = api_key or os.environ.get(self.key_env)
        self.timeout = timeout
        self.transport = transport
        self.prompt_cache = prompt_cache
        self._client: Any = None

    @classmethod
    def create(cls, model: str, *, base_urls: tuple[str, ...] = (), ws: Any = None, **opts: Any) -> Teacher:
        """The registry's factory for `PROVIDER:MODEL`: one optional --base-url (else the SDK's environment
        variable); `timeout`, `prompt_cache` and the rest go to the constructor, and `ws` is not used."""
        if len(base_urls) > 1:
            raise SbsError(cls.several_base_urls)
        return cls(model, base_url=base_urls[0] if base_urls else None, **opts)

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

    #: The provider's rate-limit headers (`read_limits`' table).
    limit_headers: LimitHeaders = {}

    def classify(self, e: BaseException) -> BaseException:  # pragma: no cover - interface
        """The teacher error for an SDK exception (rate limit, transient, fatal...)."""
        raise NotImplementedError

    def read(self, body: Any, limits: RateLimits | None) -> Response:  # pragma: no cover - interface
        """The `Response` of a documented answer body (raises on a body that is not one)."""
        raise NotImplementedError

    async def post(self, client: Any, path: str, body: dict[str, Any], **options: Any) -> Response:
        """One call, the sequence every hosted adapter shares: POST through the SDK's documented low-level
        call (`client.post`: the SDK's transport, auth, headers, timeouts and error classes, without its
        per-request body transform and answer model), classify an error, read the rate-limit headers, then
        the body as the JSON the API documents (a body that is not one is a transient `malformed` error)."""
        try:
            http = await client.post(path, cast_to=sdk_response_class(), body=body, **options)
        except Exception as e:  # noqa: BLE001 - classified; unknown ones propagate as they are
            raise self.classify(e) from None
        limits = read_limits(http.headers, self.limit_headers)
        try:
            return self.read(json.loads(http.content), limits)
        except BAD_BODY as e:
            raise malformed(self.provider, e, limits) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
