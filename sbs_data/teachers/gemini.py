"""Gemini: generateContent online and Gemini Batch Mode, one request builder and one reader for both.

Through the official `google-genai` SDK, an optional extra (`pip install 'sbs-data[gemini]'`), imported only
when a Gemini teacher is made. The SDK's own retries are off (the engine retries). The key comes from
GOOGLE_API_KEY or GEMINI_API_KEY (the SDK's order: GOOGLE_API_KEY wins when both are set), the base URL from
GOOGLE_GEMINI_BASE_URL (the variable the SDK honours) or `--base-url`.

A request is built once, as the REST `GenerateContentRequest` the API documents
(https://ai.google.dev/api/generate-content#request-body): `systemInstruction` and then `contents`, whose first
user turn starts with the few-shot block shared byte for byte by every row, so Gemini's implicit prefix cache
(on by default for 2.5 and later models, https://ai.google.dev/gemini-api/docs/caching) serves it. That body is
a line of a batch input file as it is, and goes through the SDK's `generate_content` and inline batch requests
as `contents` + a `config` (the SDK's types take the REST field names). Online answers are read from the raw
HTTP body (`should_return_http_response`), batch answers from the results file or the inlined responses, all
by `read_response`.

Rate limits: Gemini sends no remaining-quota headers. A 429 RESOURCE_EXHAUSTED carries a `google.rpc.RetryInfo`
detail whose `retryDelay` becomes the error's `retry_after`, which the engine honours like a Retry-After header.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from sbs_data import SbsError
from sbs_data.teachers.base import (
    BAD_BODY,
    AuthError,
    HostedTeacher,
    QuotaExhausted,
    RateLimited,
    RateLimits,
    Request,
    Response,
    TeacherError,
    Transient,
    classify_status,
    malformed,
    parse_duration,
    redact,
    served_model,
)
from sbs_data.teachers.batch_api import BatchAPI, BatchInfo, Result, epoch

INSTALL = "pip install 'sbs-data[gemini]'"
#: Where the SDK looks for the key, in its order (`google.genai._api_client.get_env_api_key`).
KEY_ENVS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
#: The base-URL override the SDK honours (`google.genai._base_url`).
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"

#: Candidate.finishReason (https://ai.google.dev/api/generate-content#FinishReason) onto the statuses the rest
#: of sbs-data knows: a cut answer is `length`, every kind of content block is `content_filter`.
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"), "content_filter"
    ),
}

#: --reasoning-effort as a thinking budget for the budget-based 2.x models, the mapping Google's own OpenAI
#: compatibility layer documents (low, medium, high: 1K, 8K, 24K tokens; https://ai.google.dev/gemini-api/docs/openai).
#: `minimal` turns thinking off where the model allows it; 2.5 Pro cannot think less than 128 tokens
#: (https://ai.google.dev/gemini-api/docs/thinking). Gemini 3 models take the effort as `thinkingLevel`.
_EFFORT_BUDGET = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
_PRO_MIN_BUDGET = 128

#: google.rpc.Code (a batch result's `error.code`) as the HTTP status the API maps it to
#: (https://cloud.google.com/apis/design/errors#handling_errors).
_HTTP_OF_GRPC = {
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}
#: The REST field names an error's BadRequest field violation may name, as the engine's params.
_PARAM_OF_FIELD = {
    "max_output_tokens": "max_tokens",
    "maxOutputTokens": "max_tokens",
    "stop_sequences": "stop",
    "stopSequences": "stop",
    "top_p": "top_p",
    "topP": "top_p",
    "thinking_level": "reasoning_effort",
    "thinkingLevel": "reasoning_effort",
    "thinking_budget": "thinking_budget",
    "thinkingBudget": "thinking_budget",
    "temperature": "temperature",
    "seed": "seed",
}


def sdk() -> Any:
    """The `google.genai` module, or a clear error naming the extra that installs it."""
    try:
        from google import genai
    except ImportError:
        raise SbsError(f"gemini: teachers need Google's google-genai SDK: {INSTALL}") from None
    return genai


def env_key() -> str | None:
    for name in KEY_ENVS:
        value = os.environ.get(name)
        if value:
            return value
    return None


def http_options(base_url: str | None, timeout: float, attempts: int = 1) -> Any:
    """The SDK's HttpOptions: the base URL, the timeout (the SDK takes milliseconds) and its retries (one
    attempt: none of its own)."""
    from google.genai import types

    return types.HttpOptions(
        base_url=base_url or None,
        timeout=int(timeout * 1000),
        retry_options=types.HttpRetryOptions(attempts=attempts),
    )


def _budget_based(model: str) -> bool:
    """Gemini 2.x thinks by token budget; Gemini 3 and later by level."""
    return model.removeprefix("models/").startswith(("gemini-2.", "gemini-1."))


def thinking_config(model: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """generationConfig.thinkingConfig for --thinking-budget or --reasoning-effort (None: the model's default)."""
    budget = params.get("thinking_budget")
    if budget is not None:
        return {"thinkingBudget": int(budget)}
    effort = params.get("reasoning_effort")
    if effort is None:
        return None
    if not _budget_based(model):
        return {"thinkingLevel": str(effort).upper()}
    b = _EFFORT_BUDGET.get(str(effort), _EFFORT_BUDGET["medium"])
    if b == 0 and model.removeprefix("models/").startswith("gemini-2.5-pro"):
        b = _PRO_MIN_BUDGET
    return {"thinkingBudget": b}


def sdk_args(body: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """(contents, config) for the SDK's `generate_content` / an inline batch request, from a REST
    GenerateContentRequest: the SDK's config takes the REST (camelCase) names of generationConfig's fields
    and the system instruction."""
    config = dict(body.get("generationConfig") or {})
    if "systemInstruction" in body:
        config["systemInstruction"] = body["systemInstruction"]
    return body["contents"], config


def _count(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def read_response(body: dict, limits: RateLimits | None = None) -> Response:
    """A GenerateContentResponse (https://ai.google.dev/api/generate-content#generatecontentresponse), online or
    in a batch result, as a Response.

    usageMetadata: `promptTokenCount` counts every input token, `cachedContentTokenCount` of them from the
    cache; `candidatesTokenCount` is the answer and `thoughtsTokenCount` the thinking, both billed as output
    (https://ai.google.dev/gemini-api/docs/pricing), so `completion_tokens` is their sum. Thought summary parts
    (`thought: true`) are not the answer. A prompt blocked before any candidate (`promptFeedback.blockReason`)
    has no text and finishes `content_filter`. Raises on a body that is not the documented shape."""
    usage = body.get("usageMetadata") or {}
    answer = _count(usage, "candidatesTokenCount") or 0
    thoughts = _count(usage, "thoughtsTokenCount") or 0
    prompt = _count(usage, "promptTokenCount")
    candidates = body.get("candidates") or []
    text: str | None
    if candidates:
        c = candidates[0]
        parts = (c.get("content") or {}).get("parts") or []
        text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
        reason = c.get("finishReason")
        finish = _FINISH.get(reason, str(reason).lower()) if reason else None
    else:
        blocked = (body.get("promptFeedback") or {}).get("blockReason")
        text, finish = None, "content_filter" if blocked else None
    return Response(
        text=text,
        finish_reason=finish,
        prompt_tokens=prompt,
        completion_tokens=answer + thoughts if usage else None,
        request_id=body.get("responseId"),
        cached_tokens=_count(usage, "cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
        limits=limits,
        served_model=served_model(body, "modelVersion"),
    )


# -- errors -----------------------------------------------------------------------------------------------
def _details(err: dict) -> list[dict]:
    return [d for d in (err.get("details") or []) if isinstance(d, dict)][:20]


def retry_delay(details: list[dict]) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail (`retryDelay`, a protobuf Duration such as "7s" or
    "0.25s"; https://cloud.google.com/apis/design/errors#retryinfo), else None."""
    for d in details:
        if str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = d.get("retryDelay")
            return parse_duration(delay if isinstance(delay, str) else None)
    return None


def _reason(details: list[dict]) -> str | None:
    for d in details:
        if str(d.get("@type", "")).endswith("google.rpc.ErrorInfo"):
            return str(d.get("reason") or "")[:100] or None
    return None


def _param(details: list[dict]) -> str | None:
    """The request field a google.rpc.BadRequest detail names, as the engine's param name."""
    for d in details:
        if str(d.get("@type", "")).endswith("google.rpc.BadRequest"):
            for v in d.get("fieldViolations") or []:
                field = str((v or {}).get("field") or "").rsplit(".", 1)[-1]
                if field:
                    return _PARAM_OF_FIELD.get(field, field)[:100]
    return None


def error_of(status: int, err: dict, secrets: tuple[str, ...], where: str = "gemini") -> TeacherError:
    """The teacher error for a Gemini error body (`{"error": {"code", "message", "status", "details"}}`,
    https://ai.google.dev/gemini-api/docs/troubleshooting), through the shared status classifier, with two
    Gemini readings: an invalid key is a 400 whose ErrorInfo reason is API_KEY_INVALID, an auth error like a
    401/403; and every 429 RESOURCE_EXHAUSTED says "You exceeded your current quota" (per-minute limits
    included, https://ai.google.dev/gemini-api/docs/rate-limits), so a 429 is a rate limit unless it says the
    account's prepaid credits are depleted (AI Studio prepaid billing), which no wait can fix."""
    message = str(err.get("message") or "")[:300]
    code = str(err.get("status") or "")[:100] or None
    details = _details(err)
    cls = classify_status(status, message, code)
    if _reason(details) == "API_KEY_INVALID":
        cls = AuthError
    elif status == 429:
        cls = QuotaExhausted if "credits are depleted" in message.lower() else RateLimited
    delay = retry_delay(details) if cls.retryable else None
    return cls(
        f"{where} HTTP {status}{f' {code}' if code else ''}: {redact(message, secrets)}",
        status=status,
        retry_after=delay,
        code=code,
        param=_param(details),
        limits=RateLimits(retry_after=delay) if delay is not None else None,
    )


def _transient_errors() -> tuple[type[BaseException], ...]:
    """What the SDK's transports raise for timeouts and dropped connections (aiohttp when installed, else
    httpx/httpx2)."""
    out: list[type[BaseException]] = [TimeoutError, ConnectionError]
    try:
        import aiohttp

        out.append(aiohttp.ClientError)
    except ImportError:  # pragma: no cover - aiohttp is a dependency of the openai extra we install
        pass
    for name in ("httpx2", "httpx"):
        try:
            mod = __import__(name)
            out.append(mod.TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(out)


def classify(e: BaseException, secrets: tuple[str, ...] = ()) -> BaseException:
    """A google-genai SDK exception as one of the engine's error classes (unknown ones are returned as they
    are)."""
    from google.genai import errors
    from pydantic import ValidationError

    if isinstance(e, errors.APIError):
        body = e.details if isinstance(e.details, dict) else {}
        err = body.get("error", body)
        if not isinstance(err, dict):
            err = {}
        err = {"message": e.message, "status": e.status, **err}
        return error_of(int(e.code or 0), err, secrets)
    if isinstance(e, _transient_errors()):
        return Transient(f"gemini: request timed out or dropped ({type(e).__name__})")
    if isinstance(e, (errors.UnknownApiResponseError, json.JSONDecodeError, ValidationError)):
        return malformed("gemini", e)
    return e


class GeminiTeacher(HostedTeacher):
    """`gemini:MODEL`, through the google-genai SDK's `models.generate_content`."""

    provider = "gemini"
    endpoint = "generateContent"
    key_env = "GEMINI_API_KEY or GOOGLE_API_KEY"
    base_url_env = BASE_URL_ENV
    several_base_urls = "gemini: takes at most one --base-url"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, **kw: Any):
        super().__init__(model, base_url=base_url, api_key=api_key, **kw)
        self._api_key = api_key or env_key()

    def preflight(self) -> None:
        sdk()
        if not self._api_key:
            raise SbsError(
                f"{self.spec}: set GEMINI_API_KEY or GOOGLE_API_KEY (the key is read from the environment, "
                "never stored)"
            )

    def make_client(self) -> Any:
        genai = sdk()
        return genai.Client(
            api_key=self._api_key, vertexai=False, http_options=http_options(self.base_url, self.timeout)
        )

    def build_request(self, req: Request) -> dict[str, Any]:
        """The REST GenerateContentRequest for `req`: exactly the params in `req.params` (the planner decides
        what a model gets), mapped onto generationConfig's names; `--json` asks for JSON that follows the
        output schema through `responseJsonSchema` (JSON Schema as is, additionalProperties included;
        https://ai.google.dev/gemini-api/docs/structured-output)."""
        body: dict[str, Any] = {}
        if req.system:
            body["systemInstruction"] = {"parts": [{"text": req.system}]}
        body["contents"] = [
            {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
            for m in req.messages
        ]
        p = req.params
        cfg: dict[str, Any] = {}
        for k, name in (
            ("temperature", "temperature"),
            ("top_p", "topP"),
            ("max_tokens", "maxOutputTokens"),
            ("seed", "seed"),
        ):
            if p.get(k) is not None:
                cfg[name] = p[k]
        if p.get("stop"):
            cfg["stopSequences"] = [p["stop"]] if isinstance(p["stop"], str) else list(p["stop"])
        thinking = thinking_config(self.model, p)
        if thinking:
            cfg["thinkingConfig"] = thinking
        if req.json_schema is not None:
            cfg["responseMimeType"] = "application/json"
            cfg["responseJsonSchema"] = req.json_schema
        if cfg:
            body["generationConfig"] = cfg
        return body

    def classify(self, e: BaseException) -> BaseException:
        return classify(e, self.secrets())

    def read(self, body: Any, limits: RateLimits | None) -> Response:
        return read_response(body, limits)

    async def complete(self, req: Request) -> Response:
        contents, config = sdk_args(self.build_request(req))
        config["should_return_http_response"] = True  # the raw body: read as documented, no typed parse
        try:
            r = await self.client().aio.models.generate_content(
                model=self.model, contents=contents, config=config
            )
        except Exception as e:  # noqa: BLE001 - classified; unknown ones propagate as they are
            raise self.classify(e) from None
        try:
            return read_response(json.loads(r.sdk_http_response.body))
        except BAD_BODY as e:
            raise malformed(self.provider, e) from None

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()
            client.close()


class GeminiBatchAPI(BatchAPI):
    """Gemini Batch Mode (https://ai.google.dev/gemini-api/docs/batch-api): `batches.create` with the requests
    inline (a job under `inline_max_bytes`; the API takes inline batches under 20 MB) or, for larger jobs, a
    JSONL file of `{"key", "request"}` lines uploaded through the Files API. Each job is named by its job id
    (`displayName`), which is how a crashed submission is found again. Results: the inlined responses of the
    batch, or its responses file, one `{"key", "response" | "error"}` line per request."""

    teacher: GeminiTeacher

    provider = "gemini"
    #: No per-job request count is documented; this keeps a job's inline results small to poll.
    max_requests = 100_000
    #: Input files may hold 2 GB; a job's file is built in memory, so jobs stay far below that.
    max_bytes = 200 * 1024**2
    #: Jobs up to this size travel inline with `batches.create`, larger ones as an uploaded file.
    inline_max_bytes = 16 * 1024**2
    #: Jobs listed when looking for one a crashed submission may have created.
    find_window = 500

    def make_client(self) -> Any:
        """The synchronous client; management calls may be retried by the SDK (3 attempts), except create."""
        t = self.teacher
        return sdk().Client(
            api_key=t._api_key, vertexai=False, http_options=http_options(t.base_url, self.timeout, 3)
        )

    #: Per-call options that turn the client's retries off (a create must not be sent twice unreconciled).
    _ONCE = {"retry_options": {"attempts": 1}}

    def _classify(self, e: BaseException) -> BaseException:
        return classify(e, self.secrets)

    def line(self, key: str, req: Any) -> dict[str, Any]:
        """A line of a batch input file, the documented `{"key", "request"}` shape."""
        return {"key": key, "request": self.teacher.build_request(req)}

    def uploads(self, n_bytes: int) -> bool:
        return n_bytes > self.inline_max_bytes

    def upload(self, job_id: str, payload: bytes) -> str:
        import io

        f = self.call(
            "upload",
            self.client.files.upload,
            file=io.BytesIO(payload),
            config={"mime_type": "application/jsonl", "display_name": job_id},
        )
        return str(f.name)

    def create(self, job_id: str, run_id: str, source: Any) -> BatchInfo:
        """From an uploaded file's name, or the job's lines sent inline (the key rides in each request's
        metadata)."""
        if isinstance(source, str):
            src: Any = source
        else:
            src = []
            for line in source:
                contents, config = sdk_args(line["request"])
                src.append({"contents": contents, "config": config, "metadata": {"key": line["key"]}})
        b = self.call(
            "create batch",
            self.client.batches.create,
            model=self.teacher.model,
            src=src,
            config={"display_name": job_id, "http_options": self._ONCE},
        )
        return self._info(b)

    def find(self, job_id: str, since: float, n_requests: int, claimed: set[str]) -> BatchInfo | None:
        """The newest batch named `job_id` among the most recent ones, if any."""
        pager = self.call("list batches", self.client.batches.list, config={"page_size": 100})
        found = None
        for n, b in enumerate(pager):
            if n >= self.find_window:
                break
            if b.display_name == job_id and b.name not in claimed:
                if found is None or epoch(b.create_time) > found.created_at:
                    found = self._info(b)
        return found

    def retrieve(self, batch_id: str) -> BatchInfo:
        return self._info(self.call("retrieve batch", self.client.batches.get, name=batch_id))

    def cancel(self, batch_id: str) -> BatchInfo:
        self.call("cancel batch", self.client.batches.cancel, name=batch_id)
        return self.retrieve(batch_id)

    def _info(self, b: Any) -> BatchInfo:
        """A batch job as last seen; the state's word without its prefix (`JOB_STATE_SUCCEEDED` ->
        `succeeded`; the API's BATCH_STATE_* names, which the SDK renames, end the same way)."""
        state = getattr(b.state, "value", b.state) or ""
        status = str(state).rsplit("_STATE_", 1)[-1].lower()
        dest = getattr(b, "dest", None)
        return BatchInfo(
            batch_id=str(b.name),
            status=status,
            ended=status in ("succeeded", "failed", "cancelled", "expired", "partially_succeeded"),
            created_at=epoch(b.create_time),
            output_file_id=getattr(dest, "file_name", None) if dest is not None else None,
            meta={"display_name": str(b.display_name or "")},
        )

    def results(self, info: BatchInfo) -> Iterator[Result]:
        """The responses file, streamed to a temporary file and read a line at a time; or the batch's
        inlined responses."""
        if info.output_file_id:
            yield from self._file_results(info.batch_id, info.output_file_id)
            return
        b = self.call("retrieve batch", self.client.batches.get, name=info.batch_id)
        dest = getattr(b, "dest", None)
        if dest is not None and getattr(dest, "file_name", None):
            yield from self._file_results(info.batch_id, dest.file_name)
            return
        for r in (getattr(dest, "inlined_responses", None) or []) if dest is not None else []:
            key = (r.metadata or {}).get("key")
            if not key:
                continue
            if r.response is not None:
                body = r.response.model_dump(mode="json", by_alias=True, exclude_none=True)
                yield self.result({"key": key, "response": body})  # the REST shape: one reader
            else:
                err = r.error
                yield self.result(
                    {
                        "key": key,
                        "error": {"code": getattr(err, "code", None), "message": getattr(err, "message", "")},
                    }
                )

    def _file_results(self, batch_id: str, name: str) -> Iterator[Result]:
        with tempfile.TemporaryFile() as f:
            self.call("download results", self.client.files.download, file=name, destination=f)
            f.seek(0)
            yield from self.read_results(f, f"gemini batch {batch_id} file {name}")

    def result(self, line: dict) -> Result:
        """One result: `{"key", "response"}`, or `{"key", "error"}` with a google.rpc.Status (its `code` a
        google.rpc.Code, mapped to the HTTP status the shared classifier reads)."""
        key = line["key"]
        if line.get("response") is not None:
            return self.answered(key, read_response, line["response"])
        err = line.get("error") or {}
        grpc = err.get("code")
        status = _HTTP_OF_GRPC.get(grpc, 500) if isinstance(grpc, int) and grpc < 100 else int(grpc or 500)
        e = error_of(status, err, self.secrets, where="gemini batch")
        return Result(key, kind=e.kind, status=status, error=str(e), code=e.code, param=e.param)


#: The registry's factory for `gemini:MODEL` (one optional --base-url).
create = GeminiTeacher.create
