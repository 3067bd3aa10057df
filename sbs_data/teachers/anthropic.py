"""Anthropic: the messages API online and through Message Batches, one reader for both answers.

The online call goes through the official SDK (aiohttp transport, SDK retries off: the engine retries). A batch
request's params are `build_kwargs(req)`, so a request sent by batch is the same request (and cache key) as one
sent online, and `read_message` turns either kind of answer into a Response.

Prompt caching: when the shared prefix (system + the few-shot block, `Request.prefix_chars` characters of
the first user message) is long enough for the model's cache, the first user message is sent as two text
blocks, the few-shot block first and marked `cache_control: ephemeral`, so every row's prefix is
byte-identical and later rows read it at the model's cache-read price. The mark's lifetime is the
teacher's `cache_ttl`, else 5 minutes online (the API's default, sent as the bare mark) and 1 hour in a
Message Batch: a batch can take longer than 5 minutes to process, and the 1-hour cache keeps the shared
prefix warm across it (https://platform.claude.com/docs/en/build-with-claude/batch-processing). A 1-hour
write costs 2x input, a 5-minute one 1.25x; the answer's `usage.cache_creation` says how many tokens were
written at each (https://platform.claude.com/docs/en/build-with-claude/prompt-caching).

Structured output (`--json`): on a model whose table entry says `native_json`, the schema goes in
`output_config.format` (`{"type": "json_schema", "schema": ...}`) and the API's constrained decoding
enforces it; this is generally available, no beta header
(https://platform.claude.com/docs/en/build-with-claude/structured-outputs). Elsewhere the prompt asks for
the JSON and the engine validates it, as before. The prompt is the same either way, so is the cache key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sbs_data.teachers.base import (
    HostedTeacher,
    LimitHeaders,
    RateLimits,
    Request,
    Response,
    classify_sdk_error,
    error_fields,
    served_model,
)
from sbs_data.teachers.batch_api import BatchAPI, BatchInfo, Result, epoch
from sbs_data.teachers.models import estimate_tokens

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}
_EPHEMERAL = {"type": "ephemeral"}  # the 5-minute mark, as every request sent it before TTLs were chosen
_EPHEMERAL_1H = {"type": "ephemeral", "ttl": "1h"}

#: Anthropic's rate-limit headers; resets are RFC 3339 times. Input and output tokens have their own limits.
LIMIT_HEADERS: LimitHeaders = {
    f"anthropic-ratelimit-{what}-{part}": (
        f"{what.replace('-', '_')}_{part}",
        "time" if part == "reset" else "int",
    )
    for what in ("requests", "tokens", "input-tokens", "output-tokens")
    for part in ("limit", "remaining", "reset")
}


def classify(e: BaseException, secrets: tuple[str, ...] = ()) -> BaseException:
    """An anthropic SDK exception as one of the engine's error classes (529 overloaded is a rate limit)."""
    import anthropic

    return classify_sdk_error(e, anthropic, "anthropic", secrets, limit_headers=LIMIT_HEADERS)


def _count(d: dict, key: str) -> int | None:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_message(body: dict, limits: RateLimits | None = None) -> Response:
    """A Message (the online body, or a batch result's `result.message`) as a Response. `prompt_tokens`
    is every input token: uncached, read from the cache and written to it.

    Raises KeyError/TypeError/AttributeError when the body is not the documented shape."""
    text = "".join(b["text"] for b in body["content"] if b.get("type") == "text")
    usage = body.get("usage") or {}
    fresh = _count(usage, "input_tokens")
    read = _count(usage, "cache_read_input_tokens")
    written = _count(usage, "cache_creation_input_tokens")
    # The write broken down by lifetime: `cache_creation.ephemeral_{5m,1h}_input_tokens`
    # (https://platform.claude.com/docs/en/build-with-claude/prompt-caching); absent, every write is 5-minute.
    by_ttl = usage.get("cache_creation")
    written_1h = _count(by_ttl, "ephemeral_1h_input_tokens") if isinstance(by_ttl, dict) else None
    stop = body.get("stop_reason")
    return Response(
        text=text,
        finish_reason=_FINISH.get(stop, stop) if isinstance(stop, str) else stop,
        prompt_tokens=None if fresh is None else fresh + (read or 0) + (written or 0),
        completion_tokens=_count(usage, "output_tokens"),
        request_id=body.get("id"),
        cached_tokens=read,
        cache_write_tokens=written,
        limits=limits,
        cache_write_1h_tokens=written_1h,
        served_model=served_model(body),
    )


class AnthropicTeacher(HostedTeacher):
    """`anthropic:MODEL`. Honours ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL like the SDK does.

    The messages API has no seed or n. Structured output is enforced by the API on models whose table entry
    says `native_json`, else asked for in the prompt; the engine validates it either way.
    """

    provider = "anthropic"
    endpoint = "messages"

    key_env = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"
    several_base_urls = "anthropic: takes at most one --base-url"

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

    def build_kwargs(self, req: Request, *, batch: bool = False) -> dict[str, Any]:
        """The request body exactly as the messages API (and, `batch`, a Message Batches request) takes it;
        the two differ only in the prompt-cache mark's lifetime (`prompt_cache_ttl`)."""
        p = req.params
        mark = _EPHEMERAL_1H if self.prompt_cache_ttl(batch) == "1h" else _EPHEMERAL
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(req, mark),
            "max_tokens": p.get("max_tokens") or self.facts.default_max_tokens,  # the API requires it
        }
        if req.system:
            kw["system"] = req.system
            if self._caches(req) and not req.prefix_chars:  # no few-shot block: cache a long system alone
                kw["system"] = [{"type": "text", "text": req.system, "cache_control": mark}]
        for k in ("temperature", "top_p"):
            if p.get(k) is not None:
                kw[k] = p[k]
        if p.get("stop"):
            kw["stop_sequences"] = list(p["stop"]) if not isinstance(p["stop"], str) else [p["stop"]]
        if req.json_schema is not None and self.facts.native_json:
            kw["output_config"] = {"format": {"type": "json_schema", "schema": req.json_schema}}
        return kw

    def prompt_cache_ttl(self, batch: bool = False) -> str | None:
        """`cache_ttl` when set, else "5m" online and "1h" in a Message Batch (see the module docstring);
        None with prompt caching off."""
        if not self.prompt_cache:
            return None
        return self.cache_ttl or ("1h" if batch else "5m")

    def _caches(self, req: Request) -> bool:
        """Whether the prefix is worth marking: prompt caching on, and system + few-shot block estimated
        (about 4 characters a token, `estimate_tokens`) to reach the model's minimum cacheable length. A
        prefix marked below the minimum is simply not cached, so an estimate a little off costs nothing."""
        if not self.prompt_cache:
            return False
        prefix = len(req.system or "") + max(0, req.prefix_chars)
        return estimate_tokens(prefix) >= self.facts.min_cache_tokens

    def _messages(self, req: Request, mark: dict[str, str]) -> list[dict[str, Any]]:
        msgs = list(req.messages)
        if not msgs or req.prefix_chars <= 0 or not self._caches(req):
            return msgs
        first = msgs[0]
        content = first.get("content")
        if not isinstance(content, str) or req.prefix_chars > len(content):
            return msgs
        head, rest = content[: req.prefix_chars], content[req.prefix_chars :]
        if not head.strip():
            return msgs
        blocks: list[dict[str, Any]] = [{"type": "text", "text": head, "cache_control": mark}]
        if rest.strip():  # the API rejects empty or blank text blocks
            blocks.append({"type": "text", "text": rest})
        else:
            blocks[0] = {"type": "text", "text": content, "cache_control": mark}
        return [{**first, "content": blocks}, *msgs[1:]]

    limit_headers = LIMIT_HEADERS

    def classify(self, e: BaseException) -> BaseException:
        return classify(e, self.secrets())

    def read(self, body: Any, limits: RateLimits | None) -> Response:
        return read_message(body, limits)

    async def complete(self, req: Request) -> Response:
        return await self.post(self.client(), "/v1/messages", self.build_kwargs(req))


class AnthropicBatchAPI(BatchAPI):
    """POST /v1/messages/batches with the requests inline; results streamed as JSONL once ended."""

    teacher: AnthropicTeacher

    provider = "anthropic"
    max_requests = 100_000
    max_bytes = 256 * 1024**2

    def make_client(self) -> Any:
        import anthropic

        t = self.teacher
        return anthropic.Anthropic(
            api_key=t._api_key, base_url=t.base_url, timeout=self.timeout, max_retries=2
        )

    @property
    def sdk_batches(self) -> Any:
        return self.client.messages.batches

    def _classify(self, e: BaseException) -> BaseException:
        return classify(e, self.secrets)

    def line(self, key: str, req: Any) -> dict[str, Any]:
        return {"custom_id": key, "params": self.teacher.build_kwargs(req, batch=True)}

    def upload(self, job_id: str, payload: bytes) -> None:
        return None  # requests travel inline with create

    def create(self, job_id: str, run_id: str, lines: list[dict]) -> BatchInfo:
        b = self.call(
            "create batch", self.client.with_options(max_retries=0).messages.batches.create, requests=lines
        )
        return self._info(b)

    def find(self, job_id: str, since: float, n_requests: int, claimed: set[str]) -> BatchInfo | None:
        """Message batches carry no metadata: the candidate is an unclaimed batch created after the intent
        was recorded (less clock slack) with exactly the job's request count; the oldest such one wins."""
        page = self.call("list batches", self.client.messages.batches.list, limit=100)
        found = None
        for b in page:
            if epoch(b.created_at) < since - 300:
                break
            info = self._info(b)
            if b.id not in claimed and sum(info.counts.values()) == n_requests:
                found = info  # newest first: keep going to end at the oldest match
        return found

    def _info(self, b: Any) -> BatchInfo:
        rc = b.request_counts
        counts = {
            "processing": rc.processing,
            "succeeded": rc.succeeded,
            "errored": rc.errored,
            "expired": rc.expired,
            "canceled": rc.canceled,
        }
        return BatchInfo(
            batch_id=b.id,
            status=b.processing_status,
            ended=b.processing_status == "ended",
            created_at=epoch(b.created_at),
            counts=counts,
        )

    def results(self, info: BatchInfo) -> Iterator[Result]:
        """The results file read as the JSONL the API documents (streamed, not typed by the SDK), each line
        through the same reader as an online answer."""
        stream = self.client.messages.batches.with_streaming_response.results(info.batch_id)
        http = self.call("download results", stream.__enter__)
        try:
            yield from self.read_results(http.iter_lines(), f"anthropic batch {info.batch_id} result")
        finally:
            stream.__exit__(None, None, None)

    def result(self, line: dict) -> Result:
        """One line of a Message Batch's results."""
        key = line["custom_id"]
        r = line.get("result") or {}
        t = r.get("type")
        if t == "succeeded":
            return self.answered(key, read_message, r.get("message"))
        if t == "errored":
            msg, code, param = error_fields(r.get("error") or {})
            status = _STATUS_OF_TYPE.get(code or "", 500)
            return self.failed(key, status, f"anthropic {code or 'error'}", msg, code, param)
        if t in ("canceled", "expired"):
            return Result(key, kind=t, error=f"anthropic batch: request {t}")
        return Result(key, kind="transient", error=f"anthropic batch: unknown result type {str(t)[:50]!r}")


#: The HTTP status each documented error type stands for (a batch result carries the type only).
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


#: The registry's factory for `anthropic:MODEL` (one optional --base-url).
create = AnthropicTeacher.create
