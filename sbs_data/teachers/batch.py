"""Provider batch APIs (OpenAI Batch API, Anthropic Message Batches) behind one small interface.

Each request line is built by the online adapter's own `build_kwargs`, so a request sent by batch is the
same request (and the same cache key) as one sent online. The engine around it (`sbs_data.generate.batch`)
owns splitting, bookkeeping, reconciliation and collecting; this module only speaks HTTP through the SDKs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sbs_data import SbsError
from sbs_data.teachers.base import Response, Teacher, TeacherError, redact

#: What each provider accepts in one batch (requests, bytes of the JSONL / request body).
LIMITS = {"openai": (50_000, 200 * 1024**2), "anthropic": (100_000, 256 * 1024**2)}
#: Failure kinds that another round can fix; the rest are permanent and recorded per row.
RETRYABLE_KINDS = frozenset(
    {"transient", "rate_limited", "expired", "canceled", "missing", "invalid_output", "error"}
)


@dataclass
class BatchInfo:
    """A provider batch as last seen."""

    batch_id: str
    status: str  # the provider's word
    ended: bool  # no further progress will happen (results, if any, can be fetched)
    created_at: float = 0.0  # epoch seconds
    counts: dict[str, int] = field(
        default_factory=dict
    )  # succeeded / errored / expired / canceled / processing
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    """One request's outcome inside a batch: a response, or a classified failure."""

    key: str
    response: Response | None = None
    kind: str | None = None
    status: int | None = None
    error: str | None = None


def kind_for_status(status: int, message: str) -> str:
    """The engine's failure kind for an HTTP status inside a batch result (same rules as the adapters)."""
    low = message.lower()
    if status in (429, 529):
        return "rate_limited"
    if status in (408, 409, 425) or status >= 500:
        return "transient"
    if status in (401, 403):
        return "auth"
    if status in (400, 413, 422) and (
        "context_length" in low or "context length" in low or "maximum context" in low or "too long" in low
    ):
        return "context_length"
    return "permanent"


def _epoch(x: Any) -> float:
    if x is None:
        return 0.0
    if isinstance(x, datetime):
        return (x if x.tzinfo else x.replace(tzinfo=timezone.utc)).timestamp()
    return float(x)


class BatchAPI:
    """Base: one provider's batch endpoints, synchronous (a handful of calls per job)."""

    provider = "?"

    def __init__(self, teacher: Teacher, timeout: float = 120.0):
        self.teacher = teacher
        self.timeout = timeout
        self.secrets = teacher.secrets()
        self._client: Any = None
        self.max_requests, self.max_bytes = LIMITS[teacher.provider]

    def line(self, key: str, req: Any) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def _classify(self, e: BaseException) -> BaseException:  # pragma: no cover - interface
        raise NotImplementedError

    def call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """Run one SDK call; errors come back as classified TeacherErrors with keys redacted."""
        try:
            return fn(*args, **kw)
        except TeacherError:
            raise
        except Exception as e:  # noqa: BLE001 - classified; unknown ones propagate
            c = self._classify(e)
            if isinstance(c, TeacherError):
                raise type(c)(
                    f"{what}: {redact(str(c), self.secrets)}", status=c.status, retry_after=c.retry_after
                ) from None
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class OpenAIBatchAPI(BatchAPI):
    """POST /v1/files (purpose=batch) + POST /v1/batches; results in the output and error files."""

    provider = "openai"
    endpoint = "/v1/chat/completions"

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            t = self.teacher
            self._client = openai.OpenAI(
                api_key=t._api_key, base_url=t.base_url, timeout=self.timeout, max_retries=2
            )
        return self._client

    def _classify(self, e: BaseException) -> BaseException:
        from sbs_data.teachers.openai import classify

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
            if _epoch(b.created_at) < since - 3600:
                break
            if (b.metadata or {}).get("sbs_job") == job_id:
                return self._info(b)
        return None

    def retrieve(self, batch_id: str) -> BatchInfo:
        return self._info(self.call("retrieve batch", self.client.batches.retrieve, batch_id))

    def cancel(self, batch_id: str) -> BatchInfo:
        return self._info(self.call("cancel batch", self.client.batches.cancel, batch_id))

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
            created_at=_epoch(b.created_at),
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
            for n, raw in enumerate(text.splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    yield self._result(json.loads(raw))
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise SbsError(
                        f"openai batch {info.batch_id} file {fid} line {n}: unreadable ({e})"
                    ) from None

    def _result(self, line: dict) -> Result:
        key = line["custom_id"]
        resp = line.get("response")
        if resp and resp.get("status_code") == 200:
            body = resp["body"]
            try:
                choice = body["choices"][0]
                usage = body.get("usage") or {}
                return Result(
                    key,
                    Response(
                        text=choice["message"].get("content"),
                        finish_reason=choice.get("finish_reason"),
                        prompt_tokens=usage.get("prompt_tokens"),
                        completion_tokens=usage.get("completion_tokens"),
                        request_id=body.get("id") or resp.get("request_id"),
                    ),
                )
            except (KeyError, IndexError, TypeError):
                return Result(key, kind="transient", error="openai batch: malformed response body")
        if resp:
            status = int(resp.get("status_code") or 0)
            body = resp.get("body") or {}
            err = body.get("error", body) if isinstance(body, dict) else {}
            msg = str(err.get("message") if isinstance(err, dict) else body)[:300]
            code = str(err.get("code") or "") if isinstance(err, dict) else ""
            return Result(
                key,
                kind=kind_for_status(status, f"{code} {msg}"),
                status=status,
                error=f"openai HTTP {status}: {redact(msg, self.secrets)}",
            )
        err = line.get("error") or {}
        code = str(err.get("code") or "")
        kind = {"batch_expired": "expired", "batch_cancelled": "canceled"}.get(code, "transient")
        return Result(
            key,
            kind=kind,
            error=f"openai batch: {code or 'error'}: {redact(str(err.get('message')), self.secrets)}",
        )


class AnthropicBatchAPI(BatchAPI):
    """POST /v1/messages/batches with the requests inline; results streamed as JSONL once ended."""

    provider = "anthropic"

    @property
    def client(self) -> Any:
        if self._client is None:
            import anthropic

            t = self.teacher
            self._client = anthropic.Anthropic(
                api_key=t._api_key, base_url=t.base_url, timeout=self.timeout, max_retries=2
            )
        return self._client

    def _classify(self, e: BaseException) -> BaseException:
        from sbs_data.teachers.anthropic import classify

        return classify(e, self.secrets)

    def line(self, key: str, req: Any) -> dict[str, Any]:
        return {"custom_id": key, "params": self.teacher.build_kwargs(req)}

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
            if _epoch(b.created_at) < since - 300:
                break
            info = self._info(b)
            if b.id not in claimed and sum(info.counts.values()) == n_requests:
                found = info  # newest first: keep going to end at the oldest match
        return found

    def retrieve(self, batch_id: str) -> BatchInfo:
        return self._info(self.call("retrieve batch", self.client.messages.batches.retrieve, batch_id))

    def cancel(self, batch_id: str) -> BatchInfo:
        return self._info(self.call("cancel batch", self.client.messages.batches.cancel, batch_id))

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
            created_at=_epoch(b.created_at),
            counts=counts,
        )

    def results(self, info: BatchInfo) -> Iterator[Result]:
        from sbs_data.teachers.anthropic import _FINISH

        for item in self.call("download results", self.client.messages.batches.results, info.batch_id):
            key = item.custom_id
            r = item.result
            t = getattr(r, "type", None)
            if t == "succeeded":
                m = r.message
                text = "".join(b.text for b in m.content if getattr(b, "type", None) == "text")
                yield Result(
                    key,
                    Response(
                        text=text,
                        finish_reason=_FINISH.get(m.stop_reason, m.stop_reason),
                        prompt_tokens=getattr(m.usage, "input_tokens", None),
                        completion_tokens=getattr(m.usage, "output_tokens", None),
                        request_id=m.id,
                    ),
                )
            elif t == "errored":
                inner = getattr(getattr(r, "error", None), "error", None)
                etype = str(getattr(inner, "type", "") or "")
                msg = str(getattr(inner, "message", "") or "")[:300]
                status = {
                    "invalid_request_error": 400,
                    "authentication_error": 401,
                    "permission_error": 403,
                    "not_found_error": 404,
                    "request_too_large": 413,
                    "rate_limit_error": 429,
                    "api_error": 500,
                    "overloaded_error": 529,
                }.get(etype, 500)
                yield Result(
                    key,
                    kind=kind_for_status(status, f"{etype} {msg}"),
                    status=status,
                    error=f"anthropic {etype or 'error'}: {redact(msg, self.secrets)}",
                )
            elif t in ("canceled", "expired"):
                yield Result(key, kind=t, error=f"anthropic batch: request {t}")
            else:
                yield Result(key, kind="transient", error=f"anthropic batch: unknown result type {t!r}")


def batch_api(teacher: Teacher, timeout: float = 120.0) -> BatchAPI:
    """The batch API of an `openai:` or `anthropic:` teacher."""
    if teacher.provider == "openai":
        return OpenAIBatchAPI(teacher, timeout)
    if teacher.provider == "anthropic":
        return AnthropicBatchAPI(teacher, timeout)
    raise SbsError(
        f"--mode batch needs an openai: or anthropic: teacher, not {teacher.spec} "
        "(batch APIs are provider features; use online mode)"
    )
