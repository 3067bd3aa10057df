"""Anthropic messages through the official SDK (aiohttp transport, SDK retries off: the engine retries)."""

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

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}
DEFAULT_MAX_TOKENS = 512  # the messages API requires max_tokens


def classify(e: BaseException, secrets: tuple[str, ...] = ()) -> Exception:
    import anthropic

    if isinstance(e, anthropic.APIStatusError):
        status = e.status_code
        ra = parse_retry_after(getattr(e.response, "headers", None))
        msg = f"anthropic HTTP {status}: {redact(_body_message(e), secrets)}"
        if status in (429, 529):
            return RateLimited(msg, status=status, retry_after=ra)
        if status in (408, 409, 425) or status >= 500:
            return Transient(msg, status=status, retry_after=ra)
        if status in (401, 403):
            return AuthError(msg, status=status)
        low = msg.lower()
        if status in (400, 413) and ("too long" in low or "context" in low and "window" in low):
            return ContextLength(msg, status=status)
        return Permanent(msg, status=status)
    if isinstance(e, anthropic.APITimeoutError):
        return Transient("anthropic: request timed out")
    if isinstance(e, anthropic.APIConnectionError):
        cause = e.__cause__ or e.__context__
        return Transient(f"anthropic: connection error ({type(cause).__name__ if cause else 'dropped'})")
    if isinstance(e, (anthropic.APIResponseValidationError, json.JSONDecodeError, ValidationError)):
        return Transient(f"anthropic: malformed response body ({type(e).__name__})")
    return e


def _body_message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(getattr(e, "message", e))[:300]


class AnthropicTeacher(HostedTeacher):
    """`anthropic:MODEL`. Honours ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL like the SDK does.

    The messages API has no seed or n; structured output is asked for in the prompt and validated by the engine.
    """

    provider = "anthropic"
    endpoint = "messages"
    supports_json_schema = False

    key_env = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"

    def make_client(self) -> Any:
        import anthropic

        kw: dict[str, Any] = {
            "api_key": self._api_key,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_retries": 0,
        }
        if self.transport == "aiohttp":
            kw["http_client"] = anthropic.DefaultAioHttpClient(timeout=self.timeout)
        return anthropic.AsyncAnthropic(**kw)

    def build_kwargs(self, req: Request) -> dict[str, Any]:
        """The request body exactly as the messages API (and a Message Batches line) takes it."""
        p = req.params
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": list(req.messages),
            "max_tokens": p.get("max_tokens") or DEFAULT_MAX_TOKENS,
        }
        if req.system:
            kw["system"] = req.system
        for k in ("temperature", "top_p"):
            if p.get(k) is not None:
                kw[k] = p[k]
        if p.get("stop"):
            kw["stop_sequences"] = list(p["stop"]) if not isinstance(p["stop"], str) else [p["stop"]]
        return kw

    async def complete(self, req: Request) -> Response:
        # The SDK's documented low-level call, as in the OpenAI adapter: same transport, auth, headers and
        # error classes as `messages.create`, with the answer read as the JSON the API documents.
        try:
            body = await self.client().post("/v1/messages", cast_to=object, body=self.build_kwargs(req))
        except Exception as e:  # noqa: BLE001 - classified below, unknown ones propagate
            raise classify(e, self.secrets()) from None
        try:
            text = "".join(b["text"] for b in body["content"] if b.get("type") == "text")
            usage = body.get("usage") or {}
            stop = body.get("stop_reason")
            return Response(
                text=text,
                finish_reason=_FINISH.get(stop, stop),
                prompt_tokens=usage.get("input_tokens"),
                completion_tokens=usage.get("output_tokens"),
                request_id=body.get("id"),
            )
        except (AttributeError, KeyError, TypeError) as e:
            raise Transient(f"anthropic: malformed response body ({type(e).__name__})") from None
