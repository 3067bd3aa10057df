"""OpenAI: Chat Completions and the Responses API, online and through the Batch API, one reader per API.

Reasoning models (the models table says which) go through the Responses API by default, the others through
Chat Completions; `--api chat|responses` overrides the choice (`use_api`), and the API is the teacher's
`endpoint`, so part of the cache key. `--service-tier` asks for a tier (`use_service_tier`); the tier that
served each call is read back from the answer and sets its price.

The online call goes through the official SDK (aiohttp transport, SDK retries off: the engine retries). A batch
line's body is `build_kwargs(req)` and its url the API's, so a request sent by batch is the same request (and
cache key) as one sent online, and `read_body` / `read_response` turn either kind of answer into a Response.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sbs_data import SbsError
from sbs_data.teachers.base import (
    HostedTeacher,
    LimitHeaders,
    Permanent,
    RateLimited,
    RateLimits,
    Request,
    Response,
    TeacherError,
    Transient,
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


#: `--api`: OpenAI's two text-generation APIs, and the endpoint name each one has in the cache key.
ENDPOINTS = {"chat": "chat.completions", "responses": "responses"}
#: `--service-tier` values (https://platform.openai.com/docs/api-reference/responses/create#service_tier):
#: `auto` is the project's default tier, `flex` the cheaper, slower one (Batch API rates, may answer 429
#: Resource Unavailable: https://platform.openai.com/docs/guides/flex-processing), `priority` the faster,
#: dearer one (https://developers.openai.com/api/docs/guides/priority-processing).
SERVICE_TIERS = ("auto", "default", "flex", "priority")
#: The Responses API's smallest `max_output_tokens`.
MIN_OUTPUT_TOKENS = 16


def _count(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(d: Any, key: str) -> str | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, str) else None


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
        service_tier=_str(body, "service_tier"),
        served_model=served_model(body),
    )


#: `incomplete_details.reason` of a Responses API answer as the finish reason Chat Completions would give.
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def read_response(body: dict, limits: RateLimits | None = None, request_id: str | None = None) -> Response:
    """A Responses API body (online, or a batch output line's `response.body`) as a Response: the text of
    its `output_text` parts, the summary of its `reasoning` items, and its usage
    (https://platform.openai.com/docs/api-reference/responses/object). `status: "incomplete"` for
    `max_output_tokens` is the `length` finish reason; a `failed` response is a classified error.

    Raises KeyError/IndexError/TypeError/AttributeError/ValueError when the body is not the documented
    shape."""
    status = body["status"]
    if status == "failed":
        err = body.get("error") or {}
        code = str(err.get("code") or "")[:100] or None
        cls: type[TeacherError] = {"rate_limit_exceeded": RateLimited, "invalid_prompt": Permanent}.get(
            code or "", Transient
        )
        raise cls(f"openai: response failed ({code}): {str(err.get('message') or '')[:300]}", code=code)
    if status == "completed":
        finish = "stop"
    elif status == "incomplete":
        reason = str((body.get("incomplete_details") or {}).get("reason") or "incomplete")[:64]
        finish = _INCOMPLETE.get(reason, reason)
    else:
        raise ValueError(f"response status {status!r}")
    texts: list[str] = []
    summaries: list[str] = []
    refused = False
    for item in body["output"]:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    texts.append(part["text"])
                elif part.get("type") == "refusal":
                    refused = True
        elif kind == "reasoning":
            summaries += [p["text"] for p in item.get("summary") or [] if p.get("type") == "summary_text"]
    usage = body.get("usage") or {}
    return Response(
        text="".join(texts) if texts or not refused else None,
        finish_reason=finish,
        prompt_tokens=_count(usage, "input_tokens"),
        completion_tokens=_count(usage, "output_tokens"),
        request_id=body.get("id") or request_id,
        cached_tokens=_count(usage.get("input_tokens_details"), "cached_tokens"),
        reasoning_tokens=_count(usage.get("output_tokens_details"), "reasoning_tokens"),
        limits=limits,
        reasoning_summary="\n\n".join(summaries) if summaries else None,
        service_tier=_str(body, "service_tier"),
        served_model=served_model(body),
    )


class OpenAITeacher(HostedTeacher):
    """`openai:MODEL`. Honours OPENAI_API_KEY and OPENAI_BASE_URL like the SDK does."""

    provider = "openai"
    max_tokens_param = "max_completion_tokens"  # OpenAI's current name; compat servers use max_tokens
    #: The API reasoning models go through unless `--api` says otherwise: the Responses API, OpenAI's
    #: recommended one for them (it returns reasoning summaries), https://platform.openai.com/docs/guides/reasoning
    reasoning_api = "responses"
    #: Whether structured output asks for OpenAI's strict schema mode.
    strict_schema = True
    _api: str | None = None  # --api; None: by the model (reasoning_api for reasoning models, else chat)

    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    several_base_urls = "several --base-url values need openai-compat:MODEL (load spreading over replicas)"

    @property
    def api(self) -> str:
        """`chat` or `responses`: what this teacher speaks."""
        if self._api is not None:
            return self._api
        return self.reasoning_api if self.facts.reasoning else "chat"

    @property
    def endpoint(self) -> str:
        """The API surface (a cache-key ingredient): `chat.completions` or `responses`."""
        return ENDPOINTS[self.api]

    @endpoint.setter
    def endpoint(self, value: str) -> None:
        apis = {e: a for a, e in ENDPOINTS.items()}
        if value not in apis:
            raise SbsError(f"{self.spec}: no API named {value!r} ({', '.join(apis)})")
        self._api = apis[value]

    def use_api(self, api: str) -> None:
        if api not in ENDPOINTS:
            raise SbsError(f"--api must be {' or '.join(ENDPOINTS)}, not {api!r}")
        self._api = api

    def use_service_tier(self, tier: str) -> None:
        """Ask for `tier`: refused before any call when the models table knows the model and does not list
        the tier for it (a tier the model lacks would fail every row, and its price would be unknown)."""
        if tier not in SERVICE_TIERS:
            raise SbsError(f"--service-tier must be one of {', '.join(SERVICE_TIERS)}, not {tier!r}")
        facts = self.facts
        if tier in ("flex", "priority") and facts.known and tier not in facts.tiers:
            offered = ", ".join(sorted(facts.tiers)) or "none besides default"
            raise SbsError(
                f"{self.spec} has no {tier} tier in the models table (its tiers: {offered}); pick another "
                f"--service-tier, or add `tiers: {{{tier}: MULTIPLIER}}` to its entry in your --prices file"
            )
        self.service_tier = tier

    def check_params(self, params: Mapping[str, Any]) -> None:
        """The Responses API takes no `seed` or `stop` and at least 16 output tokens; Chat Completions
        returns no reasoning summary."""
        how = "by default" if self._api is None else "with --api responses"
        if self.api == "responses":
            for k in ("seed", "stop"):
                if params.get(k) is not None:
                    raise SbsError(
                        f"{self.spec} goes through the Responses API {how}, which takes no --{k}; drop --{k}, "
                        "or add --api chat"
                    )
            mt = params.get("max_tokens")
            if mt is not None and int(mt) < MIN_OUTPUT_TOKENS:
                raise SbsError(
                    f"the Responses API ({self.spec}) needs --max-tokens of at least {MIN_OUTPUT_TOKENS}, not {mt}"
                )
        elif params.get("reasoning_summary") is not None:
            raise SbsError(
                f"--reasoning-summary needs the Responses API, and {self.spec} goes through Chat Completions; "
                "add --api responses"
            )

    def make_client(self) -> Any:
        return make_client(self.base_url, self._api_key, self.timeout, self.transport)

    def build_kwargs(self, req: Request) -> dict[str, Any]:
        """The request body for this teacher's API: exactly the params in `req.params`, nothing added (the
        planner decides what a model gets, e.g. no temperature for a reasoning model), plus the service
        tier asked for; the shared few-shot prefix stays first in the user message, which is what OpenAI's
        automatic prompt cache keys on."""
        if self.api == "responses":
            return self.responses_body(req)
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + list(req.messages)
        kw: dict[str, Any] = {"model": self.model, "messages": messages}
        for k, v in req.params.items():
            if v is None or k in ("n", "reasoning_summary"):
                continue
            kw[self.max_tokens_param if k == "max_tokens" else k] = v
        if req.json_schema is not None:
            kw["response_format"] = self.response_format(req.json_schema)
        if self.service_tier is not None:
            kw["service_tier"] = self.service_tier
        return kw

    def responses_body(self, req: Request) -> dict[str, Any]:
        """A Responses API request (https://platform.openai.com/docs/api-reference/responses/create): the
        system prompt as `instructions`, the messages as `input`, `max_output_tokens`, `reasoning.effort`
        and `reasoning.summary`, structured output as `text.format`; `store: false`, since nothing here
        reads a response back from OpenAI."""
        body: dict[str, Any] = {"model": self.model}
        if req.system:
            body["instructions"] = req.system
        body["input"] = [{"role": m["role"], "content": m["content"]} for m in req.messages]
        reasoning: dict[str, Any] = {}
        for k, v in req.params.items():
            if v is None or k == "n":
                continue
            if k == "max_tokens":
                body["max_output_tokens"] = v
            elif k in ("reasoning_effort", "reasoning_summary"):
                reasoning[k.removeprefix("reasoning_")] = v
            else:
                body[k] = v
        if reasoning:
            body["reasoning"] = reasoning
        if req.json_schema is not None:
            body["text"] = {"format": self.text_format(req.json_schema)}
        if self.service_tier is not None:
            body["service_tier"] = self.service_tier
        body["store"] = False
        return body

    def response_format(self, schema: dict) -> dict:
        """Chat Completions' structured output (`response_format`)."""
        strict = {"strict": True} if self.strict_schema else {}
        return {"type": "json_schema", "json_schema": {"name": "teacher_output", "schema": schema, **strict}}

    def text_format(self, schema: dict) -> dict:
        """The Responses API's structured output (`text.format`)."""
        strict = {"strict": True} if self.strict_schema else {}
        return {"type": "json_schema", "name": "teacher_output", "schema": schema, **strict}

    limit_headers = LIMIT_HEADERS

    def classify(self, e: BaseException) -> BaseException:
        return classify(e, self.provider, self.secrets())

    def read(self, body: Any, limits: RateLimits | None) -> Response:
        return read_response(body, limits) if self.api == "responses" else read_body(body, limits)

    async def complete(self, req: Request) -> Response:
        return await self._call(self.client(), req)

    async def _call(self, client: Any, req: Request) -> Response:
        path = "/responses" if self.api == "responses" else "/chat/completions"
        return await self.post(client, path, self.build_kwargs(req), options=_OPTIONS)


class OpenAIBatchAPI(BatchAPI):
    """POST /v1/files (purpose=batch) + POST /v1/batches; results in the output and error files. A batch
    holds lines of one endpoint, its teacher's API: `/v1/chat/completions` or `/v1/responses`
    (https://platform.openai.com/docs/guides/batch)."""

    teacher: OpenAITeacher

    provider = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024**2

    def make_client(self) -> Any:
        import openai

        t = self.teacher
        return openai.OpenAI(api_key=t._api_key, base_url=t.base_url, timeout=self.timeout, max_retries=2)

    @property
    def sdk_batches(self) -> Any:
        return self.client.batches

    @property
    def endpoint(self) -> str:
        """The batch's `endpoint`, and every line's `url`."""
        return "/v1/responses" if self.teacher.api == "responses" else "/v1/chat/completions"

    def _classify(self, e: BaseException) -> BaseException:
        return classify(e, "openai", self.secrets)

    def line(self, key: str, req: Any) -> dict[str, Any]:
        return {
            "custom_id": key,
            "method": "POST",
            "url": self.endpoint,
            "body": self.teacher.build_kwargs(req),
        }

    def uploads(self, n_bytes: int) -> bool:
        return True  # the Batch API takes a file only

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
            reader = read_response if self.teacher.api == "responses" else read_body
            try:
                return self.answered(key, reader, resp.get("body"), request_id=resp.get("request_id"))
            except TeacherError as e:  # a Responses answer that is no answer (failed, no output)
                return Result(key, kind=e.kind, error=redact(str(e), self.secrets), code=e.code)
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
