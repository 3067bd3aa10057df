"""OpenAI chat completions through the official SDK (aiohttp transport, SDK retries off: the engine retries)."""

from __future__ import annotations

from typing import Any

from sbs_data.teachers.base import HostedTeacher, Request, Response, Transient, classify_sdk_error

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
    """An openai SDK exception as one of the engine's error classes."""
    import openai

    return classify_sdk_error(e, openai, provider, secrets, is_context_length=_is_context_length)


def _is_context_length(e: Any, msg: str) -> bool:
    body = getattr(e, "body", None)
    code = ""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            code = str(err.get("code") or err.get("type") or "")
    text = (code + " " + msg).lower()
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
