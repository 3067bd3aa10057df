"""The provider-neutral side of batch APIs: BatchAPI (the interface), BatchInfo, Result, RETRYABLE_KINDS.

Each provider's subclass lives in its provider's module (`OpenAIBatchAPI` in teachers/openai.py,
`AnthropicBatchAPI` in teachers/anthropic.py, `GeminiBatchAPI` in teachers/gemini.py), builds each request line with the online adapter's own
`build_kwargs` and reads each answer with the same body reader as the online call, so a request sent by batch
is the same request (and cache key) as one sent online. `sbs_data.teachers.registry.batch_api(teacher)` picks
the subclass. The engine around it (`sbs_data.generate.batches`) owns splitting, bookkeeping, reconciliation and
collecting; these classes only speak HTTP through the SDKs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sbs_data import SbsError
from sbs_data.teachers.base import BAD_BODY, Response, Teacher, TeacherError, classify_status, redact

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
    code: str | None = None  # the provider's error code or type, as on TeacherError
    param: str | None = None


def epoch(x: Any) -> float:
    """Epoch seconds from an SDK timestamp (a datetime, or a number)."""
    if x is None:
        return 0.0
    if isinstance(x, datetime):
        return (x if x.tzinfo else x.replace(tzinfo=timezone.utc)).timestamp()
    return float(x)


class BatchAPI:
    """Base: one provider's batch endpoints, synchronous (a handful of calls per job).

    Subclasses set `provider` and what one batch may hold (`max_requests`, `max_bytes` of the JSONL file or
    request body) and implement the methods below; `retrieve` and `cancel` come from `sdk_batches` and
    `_info`."""

    provider = "?"
    max_requests = 0
    max_bytes = 0

    def __init__(self, teacher: Teacher, timeout: float = 120.0):
        self.teacher = teacher
        self.timeout = timeout
        self.secrets = teacher.secrets()
        self._client: Any = None

    def make_client(self) -> Any:  # pragma: no cover - interface
        """The provider's synchronous SDK client (`client` makes it on first use)."""
        raise NotImplementedError

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.make_client()
        return self._client

    @property
    def sdk_batches(self) -> Any:  # pragma: no cover - interface
        """The SDK's batches resource (its `retrieve(id)` and `cancel(id)`)."""
        raise NotImplementedError

    def line(self, key: str, req: Any) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def _classify(self, e: BaseException) -> BaseException:  # pragma: no cover - interface
        raise NotImplementedError

    def _info(self, b: Any) -> BatchInfo:  # pragma: no cover - interface
        """The SDK's batch object as a BatchInfo."""
        raise NotImplementedError

    def result(self, line: dict) -> Result:  # pragma: no cover - interface
        """One line of the provider's results, read with the online call's body reader (`answered`)."""
        raise NotImplementedError

    # -- the endpoints each provider implements --------------------------------------------------

    def uploads(self, n_bytes: int) -> bool:
        """Whether a job of `n_bytes` (its JSONL lines) goes up as a file first (`upload`, then `create` with
        the file id) rather than inline with `create` (the default)."""
        return False

    def upload(self, job_id: str, payload: bytes) -> str | None:  # pragma: no cover - interface
        """Upload a job's JSONL; the file id `create` takes (None where requests travel inline)."""
        raise NotImplementedError

    def create(self, job_id: str, run_id: str, source: Any) -> BatchInfo:  # pragma: no cover - interface
        """Create the batch from the uploaded file id or the request lines, tagged with the job id."""
        raise NotImplementedError

    def find(
        self, job_id: str, since: float, n_requests: int, claimed: set[str]
    ) -> BatchInfo | None:  # pragma: no cover - interface
        """The batch a crashed submission may have created for `job_id`, if any (reconciliation)."""
        raise NotImplementedError

    def retrieve(self, batch_id: str) -> BatchInfo:
        return self._info(self.call("retrieve batch", self.sdk_batches.retrieve, batch_id))

    def cancel(self, batch_id: str) -> BatchInfo:
        return self._info(self.call("cancel batch", self.sdk_batches.cancel, batch_id))

    def results(self, info: BatchInfo) -> Iterator[Result]:  # pragma: no cover - interface
        """Each request's outcome in an ended batch."""
        raise NotImplementedError

    def read_results(self, lines: Iterable[str | bytes], where: str) -> Iterator[Result]:
        """Each non-blank line of a JSONL results file through `result`; a line that cannot be read stops
        with an SbsError naming `where` and the line number."""
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                yield self.result(json.loads(raw))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise SbsError(f"{where} line {n}: unreadable ({e})") from None

    def answered(self, key: str, read: Callable[..., Response], body: Any, **kw: Any) -> Result:
        """A request answered with success: `read(body, **kw)`, the online call's body reader; a body that is
        not the documented shape is a transient failure."""
        try:
            return Result(key, read(body, **kw))
        except BAD_BODY:
            return Result(key, kind="transient", error=f"{self.provider} batch: malformed response body")

    def failed(
        self, key: str, status: int, what: str, msg: str, code: str | None, param: str | None
    ) -> Result:
        """A request the provider answered with an error: classified by the status rule every provider
        shares (`classify_status`), the message redacted after `what`."""
        return Result(
            key,
            kind=classify_status(status, msg, code).kind,
            status=status,
            error=f"{what}: {redact(msg, self.secrets)}",
            code=code,
            param=param,
        )

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
                    f"{what}: {redact(str(c), self.secrets)}",
                    status=c.status,
                    retry_after=c.retry_after,
                    code=c.code,
                    param=c.param,
                    limits=c.limits,
                ) from None
            raise

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
