"""Anthropic messages through the official SDK (aiohttp transport, SDK retries off: the engine retries)."""

from __future__ import annotations

from typing import Any

from sbs_data.teachers.base import HostedTeacher, Request, Response, Transient, classify_sdk_error

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}
DEFAULT_MAX_TOKENS = 512  # the messages API requires max_tokens


def classify(e: BaseException, secrets: tuple[str, ...] = ()) -> Exception:
    """An anthropic SDK exception as one of the engine's error classes (529 overloaded is a rate limit)."""
    import anthropic

    return classify_sdk_error(
        e,
        anthropic,
        "anthropic",
        secrets,
        rate_limit_statuses=(429, 529),
        is_context_length=_is_context_length,
    )


def _is_context_length(e: Any, msg: str) -> bool:
    low = msg.lower()
    return e.status_code in (400, 413) and ("too long" in low or "context" in low and "window" in low)


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
