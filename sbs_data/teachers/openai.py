"""OpenAI chat completions through the official SDK (aiohttp transport, SDK retries off: the engine retries)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from sbs_data.teachers.base import (
    AuthError,
    ContextLength,
    HostedTeacher,
    Permanent,
    RateLimited,
    Request,
    Response,
    Transient,
    parse_retry_after,
    redact,
)

#: `client.post` is the SDK's documented low-level call: the same transport, auth, headers, timeouts and
#: error classes as `chat.completions.create`, without its per-request TypedDict transform of the body and
#: pydantic construction of the answer, which took about a third of the client's CPU at high concurrency
#: (benchmarks/RESULTS.md). The body is already plain JSON (it is what the cache key hashes), and the
#: answer is read as the JSON the API documents.
_OPTIONS = {"security": {"bearer_auth": True}}


def make_client(base_url: str | None, api_key: str | None, timeout: float, transport: str = "aiohttp") -> Any:
    """An AsyncOpenAI client with retries disabled; `transport="aiohttp"` is ~5x faster than httpx at high
    concurrency (see benchmarks/RESULTS.md)."""
    import openai

    kwargs: dict[str, Any] = {"api_key": api_key, "base_url": base_url, "timeout": timeout, "max_retries": 0}
    if transport == "aiohttp":
        kwargs["http_client"] = openai.DefaultAioHttpClient(timeout=timeout)
    return openai.AsyncOpenAI(**kwargs)


def classify(e: BaseException, provider: str = "openai", secrets: tuple[str, ...] = ()) -> Exception:
    """Map an openai SDK exception onto the engine's error classes (never the key: SDK messages carry
    only the server's error body, and the engine redacts anything key-shaped on top)."""
    import openai

    if isinstance(e, openai.APIStatusError):
        status = e.status_code
        ra = parse_retry_after(getattr(e.response, "headers", None))
        msg = f"{provider} HTTP {status}: {redact(_body_message(e), secrets)}"
        if status == 429:
            return RateLimited(msg, status=status, retry_after=ra)
        if status in (408, 409, 425) or status >= 500:
            return Transient(msg, status=status, retry_after=ra)
        if status in (401, 403):
            return AuthError(msg, status=status)
        if status in (400, 413, 422) and _is_context_length(e):
            return ContextLength(msg, status=status)
        return Permanent(msg, status=status)
    if isinstance(e, openai.APITimeoutError):
        cause = e.__cause__ or e.__context__
        return Transient(
            f"{provider}: request timed out or dropped ({type(cause).__name__ if cause else 'timeout'})"
        )
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e.__context__
        return Transient(f"{provider}: connection error ({type(cause).__name__ if cause else 'dropped'})")
    if isinstance(e, (openai.APIResponseValidationError, json.JSONDecodeError, ValidationError)):
        return Transient(f"{provider}: malformed response body ({type(e).__name__})")
    return e


def _body_message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(getattr(e, "message", e))[:300]


def _is_context_length(e: Any) -> bool:
    body = getattr(e, "body", None)
    code = ""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            code = str(err.get("code") or err.get("type") or "")
    text = (code + " " + _body_message(e)).lower()
    return (
        "context_length" in text
        or "context length" in text
        or "maximum context" in text
        or "too long" in text
    )


class OpenAITeacher(HostedTeacher):
    """`openai:MODEL`. Honours OPENAI_API_KEY and OPENAI_BASE_URL like the SDK does."""

    provider = "openai"
    endpoint = "chat.completions"
    max_tokens_param = "max_completion_tokens"  # OpenAI's current name; compat servers use max_tokens

    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"

    def make_client(self) -> Any:
        return make_client(self.base_url, self._api_key, self.timeout, self.transport)

    def build_kwargs(self, req: Request) -> dict[str, Any]:
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + list(req.messages)
        kw: dict[str, Any] = {"model": self.model, "messages": messages}
        for k, v in req.params.items():
            if v is None or k == "n":
                continue
            kw[self.max_tokens_param if k == "max_tokens" else k] = v
        if req.json_schema is not None:
            kw["response_format"] = self.response_format(req.json_schema)
        return kw

    def response_format(self, schema: dict) -> dict:
        return {
            "type": "json_schema",
            "json_schema": {"name": "teacher_output", "schema": schema, "strict": True},
        }

    async def complete(self, req: Request) -> Response:
        return await self._call(self.client(), req)

    async def _call(self, client: Any, req: Request) -> Response:
        try:
            body = await client.post(
                "/chat/completions", cast_to=object, body=self.build_kwargs(req), options=_OPTIONS
            )
        except Exception as e:  # noqa: BLE001 - classified below, unknown ones propagate
            raise classify(e, self.provider, self.secrets()) from None
        try:
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Response(
                text=choice["message"].get("content"),
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                request_id=body.get("id"),
            )
        except (AttributeError, IndexError, KeyError, TypeError) as e:
            raise Transient(f"{self.provider}: malformed response body ({type(e).__name__})") from None
