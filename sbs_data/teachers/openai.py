"""OpenAI: chat completions online and through the Batch API, one reader for both answers.

The online call goes through the official SDK (aiohttp transport, SDK retries off: the engine retries). A batch
line's body is `build_kwargs(req)`, so a request sent by batch is the same request (and cache key) as one sent
online, and `read_body` turns either kind of answer into a Response.
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
    redact,
    served_model,
)
from sbs_data.teachers.batch_api import BatchAPI, BatchInfo, Result, epoch

#: `client.post` is the SDK's documented low-level call: the same transport, auth, headers, timeouts and
#: error classes as `chat.completions.create`, without its per-request TypedDict transform of the body and
#: pydantic construction of the answer, which took about a third of the client's CPU at high concurrency
#: (benchmarks/RESULTS.md). `cast_to` the SDK's HTTP response class returns the response itself (its body
#: already read), so the rate-limit headers come at no extra cost; the body is read as the JSON the API
#: documents.
_OPTIONS = {"security": {"bearer_auth": True}}

#: OpenAI's rate-limit headers; resets are Go-style durations ("20ms", "1s", "6m0s").
LIMIT_HEADERS: LimitHeaders = {
    "x-ratelimit-limit-requests": ("requests_limit", "int"),
    "x-ratelimit-remaining-requests": ("requests_remaining", "int"),
    "x-ratelimit-reset-requests": ("requests_reset", "duration"),
    "x-ratelimit-limit-tokens": ("tokens_limit", "int"),
    "x-ratelimit-remaining-tokens": ("tokens_remaining", "int"),
    "x-ratelimit-reset-tokens": ("tokens_reset", "duration"),
}


def make_client(base_url: str | None, api_key: str | None, timeout: float, transport: str = "aiohttp") -> Any:
    """An AsyncOpenAI client with retries disabled; `transport="aiohttp"` is ~5x faster than httpx at high
    concurrency (see benchmarks/RESULTS.md)."""
    import openai

    kwargs: dict[str, Any] = {"api_key": api_key, "base_url": base_url, "timeout": timeout, "max_retries": 0}
    if transport == "aiohttp":
        kwargs["http_client"] = openai.DefaultAioHttpClient(timeout=timeout)
    return openai.AsyncOpenAI(**kwargs)


def classify(e: BaseException, provider: str = "openai", secrets: tuple[str, ...] = ()) -> BaseException:
    """An openai SDK exception as one of the engine's error classes."""
    import openai

    return classify_sdk_error(e, openai, provider, secrets, limit_headers=LIMIT_HEADERS)


def _count(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_body(body: dict, limits: RateLimits | None = None, request_id: str | None = None) -> Response:
    """A chat completion body (online, or a batch output line's `response.body`) as a Response.

    Raises KeyError/IndexError/TypeError/AttributeError when the body is not the documented shape."""
    choice = body["choices"][0]
    usage = body.get("usage") or {}
    return Response(
        text=choice["message"].get("content"),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=_count(usage, "prompt_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
        request_id=body.get("id") or request_id,
        cached_tokens=_count(usage.get("prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=_count(usage.get("completion_tokens_details"), "reasoning_tokens"),
        limits=limits,
        served_model=served_model(body),
    )


class OpenAITeacher(HostedTeacher):
    """`openai:MODEL`. Honours OPENAI_API_KEY and OPENAI_BASE_URL like the SDK does."""

    provider = "openai"
    endpoint = "chat.completions"
    max_tokens_param = "max_completion_tokens"  # OpenAI's current name; compat servers use max_tokens

    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    several_base_urls = "several --base-url values need openai-compat:MODEL (load spreading over replicas)"

    def make_client(self) -> Any:
        return make_client(self.base_url, self._api_key, self.timeout, self.transport)

    def build_kwargs(self, req: Request) -> dict[str, Any]:
        """The request body: exactly the params in `req.params`, nothing added (the planner decides what a
        model gets, e.g. no temperature for a reasoning model); the shared few-shot prefix stays first in the
        user message, which is what OpenAI's automatic prompt cache keys on."""
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

    limit_headers = LIMIT_HEADERS

    def classify(self, e: BaseException) -> BaseException:
        return classify(e, self.provider, self.secrets())

    def read(self, body: Any, limits: RateLimits | None) -> Response:
        return read_body(body, limits)

    async def complete(self, req: Request) -> Response:
        return await self._call(self.client(), req)

    async def _call(self, client: Any, req: Request) -> Response:
        return await self.post(client, "/chat/completions", self.build_kwargs(req), options=_OPTIONS)


class OpenAIBatchAPI(BatchAPI):
    """POST /v1/files (purpose=batch) + POST /v1/batches; results in the output and error files."""

    teacher: OpenAITeacher

    provider = "openai"
    endpoint = "/v1/chat/completions"
    max_requests = 50_000
    max_bytes = 200 * 1024**2

    def make_client(self) -> Any:
        import openai

        t = self.teacher
        return openai.OpenAI(api_key=t._api_key, base_url=t.base_url, timeout=self.timeout, max_retries=2)

    @property
    def sdk_batches(self) -> Any:
        return self.client.batches

    def _classify(self, e: BaseException) -> BaseException:
        return classify(e, "openai", self.secrets)

    def line(self, key: str, req: Any) -> dict[str, Any]:
        return {
            "custom_id": key,
            "method": "POST",
            "url": self.endpoint,
            "body": self.teacher.build_kwargs(req),
        }

    def upload(self, job_id: str, payload: bytes) -> str:
        f = self.call(
            "upload",
            self.client.with_options(max_retries=0).files.create,
            file=(f"{job_id}.jsonl", payload, "application/jsonl"),
            purpose="batch",
        )
        return f.id

    def create(self, job_id: str, run_id: str, input_file_id: str) -> BatchInfo:
        b = self.call(
            "create batch",
            self.client.with_options(max_retries=0).batches.create,
            input_file_id=input_file_id,
            endpoint=self.endpoint,
            completion_window="24h",
            metadata={"sbs_job": job_id, "sbs_run": run_id},
        )
        return self._info(b)

    def find(self, job_id: str, since: float, n_requests: int, claimed: set[str]) -> BatchInfo | None:
        """The batch created for `job_id` (tagged with metadata sbs_job), if any: the newest-first list is
        read back to a little before the intent was recorded."""
        page = self.call("list batches", self.client.batches.list, limit=100)
        for b in page:
            if epoch(b.created_at) < since - 3600:
                break
            if (b.metadata or {}).get("sbs_job") == job_id:
                return self._info(b)
        return None

    def _info(self, b: Any) -> BatchInfo:
        rc = b.request_counts
        counts = {}
        if rc is not None:
            counts = {"succeeded": rc.completed, "errored": rc.failed, "total": rc.total}
        err = None
        if b.errors and getattr(b.errors, "data", None):
            err = "; ".join(f"{d.code}: {d.message}" for d in b.errors.data if d)[:500]
        return BatchInfo(
            batch_id=b.id,
            status=b.status,
            ended=b.status in ("completed", "failed", "expired", "cancelled"),
            created_at=epoch(b.created_at),
            counts=counts,
            input_file_id=b.input_file_id,
            output_file_id=b.output_file_id,
            error_file_id=b.error_file_id,
            error=redact(err, self.secrets),
            meta=dict(b.metadata or {}),
        )

    def results(self, info: BatchInfo) -> Iterator[Result]:
        for fid in (info.output_file_id, info.error_file_id):
            if not fid:
                continue
            text = self.call("download results", self.client.files.content, fid).text
            yield from self.read_results(text.splitlines(), f"openai batch {info.batch_id} file {fid}")

    def result(self, line: dict) -> Result:
        """One line of a batch output or error file."""
        key = line["custom_id"]
        resp = line.get("response")
        if resp and resp.get("status_code") == 200:
            return self.answered(key, read_body, resp.get("body"), request_id=resp.get("request_id"))
        if resp:
            status = int(resp.get("status_code") or 0)
            return self.failed(key, status, f"openai HTTP {status}", *error_fields(resp.get("body") or {}))
        err = line.get("error") or {}
        code = str(err.get("code") or "")
        kind = {"batch_expired": "expired", "batch_cancelled": "canceled"}.get(code, "transient")
        return Result(
            key,
            kind=kind,
            error=f"openai batch: {code or 'error'}: {redact(str(err.get('message')), self.secrets)}",
            code=code or None,
        )


#: The registry's factory for `openai:MODEL` (one optional --base-url).
create = OpenAITeacher.create
