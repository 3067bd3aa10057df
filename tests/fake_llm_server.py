"""A loopback stand-in for the OpenAI chat-completions and Anthropic messages HTTP APIs, with fault injection.

Used by the tests (in a background thread: `with FakeLLMServer(latency=0.05) as srv: srv.openai_url`) and by
the benchmarks (as a separate process: `python tests/fake_llm_server.py --latency 0.1 [--rpm N --tpm N]`,
which prints `READY <url>` and is steered over HTTP at /_control/*).

It behaves like the real services where clients meet them first (`strict=True`, the default; `--lenient`
turns the model and parameter rules off):

Models. A registry modelled on the real lists (`MODELS`): a dated snapshot (`gpt-4o-mini-2024-07-18`,
`claude-3-5-haiku-20241022`) or `-latest` alias resolves to its family. An unknown model, or one of the other
provider, gets OpenAI's 404 `model_not_found` or Anthropic's 404 `not_found_error`; `models=` adds names.
Reasoning models (o-series, gpt-5 family) reject what OpenAI rejects, with OpenAI's error bodies: 400
`unsupported_parameter` for `max_tokens` ("Use 'max_completion_tokens' instead."), `stop`, `logprobs`,
`presence_penalty`/`frequency_penalty`; 400 `unsupported_value` for `temperature`/`top_p` other than 1 and for
a `reasoning_effort` the model lacks (gpt-5: minimal/low/medium/high; o-series: low/medium/high). Other
models reject `reasoning_effort`. Anthropic's newer models (Sonnet 4.5+, Haiku 4.5, Opus 4.1+) reject
`temperature` together with `top_p`; Anthropic rejects unknown top-level fields and a missing `max_tokens`.

Tokens, a documented approximation (no tokenizer): a text is ceil(UTF-8 bytes / 4) tokens.
  OpenAI prompt_tokens = tokens of the stream `<|role|>content<|end|>` per message (so ~4 per message), with
  `tools`/`response_format` (as JSON) in front, plus 3 for priming the reply.
  Anthropic input = sum over content blocks (system first) of the block's tokens, plus 4 per message.
  Completion tokens = tokens of the answer text. Reasoning models add reasoning tokens, deterministic per
  prompt and effort (default medium): minimal 0-64, low 192-320, medium 768-1280, high 2304-3840. They count
  in `completion_tokens` and `completion_tokens_details.reasoning_tokens` and against
  `max_completion_tokens`: if the budget runs out while reasoning, the answer is empty with finish_reason
  "length"; if it runs out during the answer, the answer is cut (also "length"; Anthropic "max_tokens").

Prompt caching. OpenAI (automatic): a prompt of >= 1024 tokens is cached per model in 128-token steps of its
  token stream; a later prompt sharing a cached prefix reports the longest one (>= 1024, a multiple of 128)
  as `usage.prompt_tokens_details.cached_tokens`. Entries live `openai_cache_ttl` seconds (300) from last use.
  Anthropic (explicit): `cache_control: {"type": "ephemeral"[, "ttl": "5m"|"1h"]}` on system or message
  blocks (at most 4). The prefix up to and including a marked block is written if it reaches the model's
  minimum (1024 tokens; 2048 for Haiku 3/3.5; 4096 for Haiku 4.5 and Opus 4.5+; shorter ones are processed
  uncached, no error). A hit is the longest cached prefix ending at a block boundary within 20 blocks before
  a marker; it refreshes the entry's TTL. Usage: `input_tokens` (the uncached rest),
  `cache_creation_input_tokens`, `cache_read_input_tokens`, `output_tokens`.
  TTLs follow `clock` (a callable returning seconds; tests pass one they can advance).

Rate limits (off unless given): `rpm` (both APIs), `tpm` (OpenAI), `itpm`/`otpm` (Anthropic), per model. Each
  is a token bucket refilled continuously at limit/60 per second holding at most `burst` seconds of it
  (default 1: both providers document that a per-minute limit may be enforced over shorter intervals,
  "60,000 RPM as 1,000 per second"). A request is admitted when its bucket holds its cost (or, if the cost
  exceeds one burst, when the bucket is full; it then runs into debt); a cost above the per-minute limit is
  refused for good. Costs: OpenAI tokens = prompt tokens + max_(completion_)tokens (the answer's length if
  unset), the estimate OpenAI documents; Anthropic input = uncached input + cache writes (cache reads are
  free), output = max_tokens at admission, the actual output charged. Refused requests cost nothing.
  Every answer carries the headers: OpenAI `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as
  Go durations: `20ms`, `1.5s`, `6m0s`), Anthropic `anthropic-ratelimit-{requests,tokens,input-tokens,
  output-tokens}-{limit,remaining,reset}` (reset as RFC 3339); remaining/reset describe the per-minute
  bucket, as the real headers do, so a burst can be refused while `remaining` is high. Over a limit: 429
  with the provider's body (OpenAI `rate_limit_exceeded`, type `requests`/`tokens`; Anthropic
  `rate_limit_error`), those headers and `retry-after` (whole seconds, >= 1; OpenAI also `retry-after-ms`).

The bill: `stats()["bill"]`, one row per provider, model (as requested) and mode (online/batch) with
  requests, input_tokens (all of them: cached and cache-written included), cached_input_tokens,
  cache_write_tokens, output_tokens (reasoning included), reasoning_tokens, rate_limited and failed counts.

Faults, by name (a name may carry a number after a colon):
  429[:S]        rate limited; with S, a `Retry-After: S` header (seconds, may be fractional)
  500, 503[:S]   server errors (503 optionally with Retry-After)
  529            Anthropic "overloaded"
  drop           close the connection without answering
  malformed      200 with a truncated JSON body
  slow:S         answer after S extra seconds (trips client timeouts)
  400, 401, 403  client errors (never worth retrying)
  context        400 "context_length_exceeded"
  badjson        200 whose completion text is not valid JSON (structured-output mode)
  surrogate      200 whose completion text holds a lone surrogate, sent as the JSON escape "\\ud83d" (half an
                 emoji): the client's JSON parser yields a str that cannot be encoded as UTF-8
They are applied by three rules, checked in order:
  by_match {substring: [fault, ...]}   requests whose prompt contains substring get the faults in turn, one
                                       per attempt (then normal answers): deterministic per row
  queue [fault, ...]                   the next requests, whatever they are, in arrival order
  rate R with kinds [..]               a stable R fraction of distinct prompts fails on its first attempt
                                       with one of kinds (chosen by the prompt's hash)
A request the real API would refuse (unknown model, bad parameter, over a rate limit) is refused before any
fault is drawn. The default answer names a plausible label for the last question; a prompt that says
"The correct answer is X" gets X (`FaultPlan.answers` overrides the text).

Batch endpoints (OpenAI Batch API: POST /v1/files, GET /v1/files/{id}/content, POST /v1/batches,
GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel; Anthropic Message Batches: POST /v1/messages/batches,
GET /v1/messages/batches[/{id}[/results]], POST .../{id}/cancel). Each line is answered with
`answer_openai(body)` / `answer_anthropic(body)`, so batch and online answers are identical, and the same fault
plan applies per line (one attempt per submission): `expire` makes the line expire; 400/401/403/context/
429/5xx become per-line errors; badjson as online; a line the API would refuse (unknown model, bad parameter)
becomes that error. A batch ends after `batch_polls` retrieves (0: at once);
cancelling answers the first half of the lines and cancels the rest. Counters: `batch_calls` (per endpoint)
and `batch_submitted` (per custom_id: how many times it was sent in a batch).

Control: POST /_control/faults (a FaultPlan as JSON), POST /_control/limits ({"rpm", "tpm", "itpm", "otpm",
"burst"}), GET /_control/stats, POST /_control/reset (counters, bill, caches and buckets).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web


def _iso(offset: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset, timezone.utc).isoformat().replace("+00:00", "Z")


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def prompt_of(body: dict) -> str:
    """All the text of a request (system + messages), as one string."""
    parts = []
    if isinstance(body.get("system"), str):
        parts.append(body["system"])
    elif isinstance(body.get("system"), list):
        parts.append(_text_of(body["system"]))
    msgs = body.get("messages")
    for m in msgs if isinstance(msgs, list) else []:
        parts.append(_text_of(m.get("content")) if isinstance(m, dict) else str(m))
    return "\n".join(parts)


_HINT = "The correct answer is "


def default_label(prompt: str) -> str:
    """A plausible answer for the last question in the prompt, so the task parsers find a label; a hint
    ("The correct answer is X", as rationalization prompts give) wins."""
    i = prompt.rfind(_HINT)
    if i >= 0:
        hint = prompt[i + len(_HINT) : i + len(_HINT) + 200].split("\n", 1)[0].strip().rstrip(".").strip()
        if hint:
            return hint
    last = prompt.rsplit("\n\n", 1)[-1]
    m = re.search(r"\(a\)\s*([^\n]+)", last)
    if m:
        return f"(a) {m.group(1).strip()}"
    if "Premise:" in last or "Hypothesis:" in last:
        return "entailment"
    return "(40 + 2)"


# -- models ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Model:
    """What the stand-in enforces for one model family."""

    provider: str  # "openai" (chat completions) or "anthropic" (messages)
    efforts: tuple[str, ...] = ()  # reasoning efforts accepted; empty: not a reasoning model
    default_effort: str = "medium"
    stop: bool = True  # accepts `stop`
    cache_min: int = 1024  # the shortest prefix the provider caches, in tokens
    one_sampler: bool = False  # Anthropic: `temperature` and `top_p` cannot both be given
    open_weights: bool = False  # an OpenAI-compatible server (vLLM, Ollama): no OpenAI parameter rules

    @property
    def reasoning(self) -> bool:
        return bool(self.efforts)


_CHAT = Model("openai")
_GPT5 = Model("openai", ("minimal", "low", "medium", "high"), stop=False)
_OSERIES = Model("openai", ("low", "medium", "high"), stop=False)
_OPEN = Model("openai", open_weights=True)
_CLAUDE = Model("anthropic")
_CLAUDE_NEW = Model("anthropic", one_sampler=True)

#: Model families by name, as the real model lists spell them (snapshots and `-latest` resolve to these).
MODELS: dict[str, Model] = {
    **dict.fromkeys(
        [
            "gpt-3.5-turbo",
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "gpt-5-chat-latest",
            "chatgpt-4o-latest",
        ],
        _CHAT,
    ),
    **dict.fromkeys(["gpt-5", "gpt-5-mini", "gpt-5-nano"], _GPT5),
    **dict.fromkeys(["o1", "o3", "o3-mini", "o4-mini"], _OSERIES),
    # names an OpenAI-compatible server serves in the tests (CompatTeacher)
    **dict.fromkeys(["llama", "llama3", "meta-llama/Llama-3.1-8B-Instruct"], _OPEN),
    **dict.fromkeys(["claude-3-haiku", "claude-3-5-haiku"], Model("anthropic", cache_min=2048)),
    **dict.fromkeys(
        ["claude-3-opus", "claude-3-5-sonnet", "claude-3-7-sonnet", "claude-sonnet-4", "claude-opus-4"],
        _CLAUDE,
    ),
    **dict.fromkeys(["claude-sonnet-4-5", "claude-sonnet-4-6", "claude-opus-4-1"], _CLAUDE_NEW),
    **dict.fromkeys(
        ["claude-haiku-4-5", "claude-opus-4-5", "claude-opus-4-6"],
        Model("anthropic", cache_min=4096, one_sampler=True),
    ),
}
_SNAPSHOT = re.compile(r"-(?:latest|\d{4}-\d{2}-\d{2}|\d{8})$")

# -- tokens ---------------------------------------------------------------------------------------
MSG_TOKENS = 4  # per message (role and delimiters)
REPLY_TOKENS = 3  # OpenAI: priming the assistant's reply
CACHE_STEP = 128  # OpenAI caches in 128-token steps
CACHE_LOOKBACK = 20  # Anthropic checks this many block boundaries before a marker
REASONING = {
    "none": (0, 0),
    "minimal": (0, 64),
    "low": (192, 320),
    "medium": (768, 1280),
    "high": (2304, 3840),
}
TTL = {"5m": 300.0, "1h": 3600.0}


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def count_tokens(text: str) -> int:
    """ceil(UTF-8 bytes / 4): the approximation every count here uses."""
    return (len(_utf8(text)) + 3) // 4


def reasoning_tokens(prompt: str, effort: str) -> int:
    lo, hi = REASONING[effort]
    h = int(hashlib.sha1(_utf8(prompt + "\x00" + effort)).hexdigest()[:8], 16)
    return lo + h % (hi - lo + 1)


def _cut(text: str, budget: int) -> str:
    """The longest prefix of `text` within `budget` tokens."""
    cut = text[: max(0, budget) * 4]
    while cut and count_tokens(cut) > budget:
        cut = cut[:-1]
    return cut


def go_duration(seconds: float) -> str:
    """Go's time.Duration format, as OpenAI's x-ratelimit-reset-* headers use it: 20ms, 1.5s, 6m0s."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    total = round(seconds, 3)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    secs = f"{s:.3f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{secs}"
    return f"{int(m)}m{secs}" if m else secs


# -- rate limits ----------------------------------------------------------------------------------
class Bucket:
    """One advertised per-minute limit: a token bucket refilled at limit/60 per second, holding at most
    `burst` seconds of refill (enforced), beside the per-minute view the headers report."""

    def __init__(self, limit: int, burst: float, now: float):
        self.limit = limit
        self.rate = limit / 60.0
        self.cap = max(1.0, self.rate * burst)
        self.level = self.cap
        self.minute = float(limit)
        self.t = now

    def _refill(self, now: float) -> None:
        dt = max(0.0, now - self.t)
        self.t = now
        self.level = min(self.cap, self.level + dt * self.rate)
        self.minute = min(float(self.limit), self.minute + dt * self.rate)

    def wait(self, cost: float, now: float) -> float:
        """Seconds until `cost` would be admitted (0: now; inf: never, it exceeds the per-minute limit)."""
        self._refill(now)
        if cost > self.limit:
            return math.inf
        need = min(cost, self.cap)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.level -= cost
        self.minute = max(0.0, self.minute - cost)

    def remaining(self) -> int:
        return int(self.minute)

    def reset_s(self) -> float:
        return (self.limit - self.minute) / self.rate


@dataclass
class FaultPlan:
    by_match: dict[str, list[str]] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    rate: float = 0.0
    kinds: list[str] = field(default_factory=lambda: ["500"])
    answers: dict[str, str] = field(default_factory=dict)  # substring -> completion text override
    require_key: str | None = None  # answer 401 unless this key is sent


class Refusal(Exception):
    """A request the real API refuses: HTTP status, error type/code, message, param."""

    def __init__(
        self, status: int, etype: str, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.etype, self.message, self.param = status, etype, message, param
        self.code = code if code is not None else etype


_OPENAI_FIELDS = frozenset(
    "model messages max_tokens max_completion_tokens temperature top_p n stream stream_options stop "
    "presence_penalty frequency_penalty logit_bias logprobs top_logprobs user seed response_format tools "
    "tool_choice parallel_tool_calls functions function_call reasoning_effort service_tier store metadata "
    "modalities audio prediction web_search_options prompt_cache_key prompt_cache_retention "
    "safety_identifier verbosity".split()
)
_ANTHROPIC_FIELDS = frozenset(
    "model messages max_tokens system temperature top_p top_k stop_sequences stream metadata tools "
    "tool_choice thinking service_tier container mcp_servers context_management output_format "
    "output_config".split()
)
_ERROR_FAULTS = frozenset(["429", "503", "500", "529", "400", "401", "403", "context", "drop", "malformed"])
_REASONING_UNSUPPORTED = ("logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias")


def _unsupported(p: str, hint: str = "") -> Refusal:
    msg = f"Unsupported parameter: '{p}' is not supported with this model.{hint}"
    return Refusal(400, "invalid_request_error", msg, p, "unsupported_parameter")


def _unsupported_value(p: str, v: Any, supported: str) -> Refusal:
    shown = f"'{v}'" if isinstance(v, str) else json.dumps(v)
    msg = f"Unsupported value: '{p}' does not support {shown} with this model. {supported}"
    return Refusal(400, "invalid_request_error", msg, p, "unsupported_value")


def _quote_list(xs: Iterable[str]) -> str:
    q = [f"'{x}'" for x in xs]
    return ", ".join(q[:-1]) + f", and {q[-1]}" if len(q) > 2 else " and ".join(q)


@dataclass
class _Plan:
    """One answer, worked out before anything is committed (cache writes, bill)."""

    provider: str
    model: str
    payload: dict
    usage: dict[str, int]  # input, cached, written, output, reasoning
    cache_keys: list[tuple[tuple, float]]  # entries to write or refresh: (key, ttl)
    max_out: int  # output tokens the request may use (rate-limit estimate)
    prompt: str  # prompt_of(body)


class FakeLLMServer:
    """Serve both APIs on 127.0.0.1; `latency` seconds per answer. Thread-safe counters in `self.log`."""

    def __init__(
        self,
        latency: float = 0.0,
        port: int = 0,
        faults: FaultPlan | None = None,
        record: bool = True,
        *,
        strict: bool = True,
        models: Mapping[str, Model] | Iterable[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        itpm: int | None = None,
        otpm: int | None = None,
        burst: float = 1.0,
        openai_cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`models`: extra names, as {name: Model} or "openai:NAME" / "anthropic:NAME" (plain chat models).
        `strict=False` serves any model name and skips the parameter rules (limits and caching still apply)."""
        self.latency = latency
        self.port = port
        self.faults = faults or FaultPlan()
        self.record = record
        self.strict = strict
        self.models = dict(MODELS)
        if isinstance(models, Mapping):
            self.models.update(models)
        else:
            for spec in models or ():
                provider, _, name = spec.partition(":")
                if provider not in ("openai", "anthropic") or not name:
                    raise ValueError(f"models: {spec!r} is not openai:NAME or anthropic:NAME")
                self.models[name] = Model(provider)
        self.limits: dict[str, int | None] = {}
        self.burst = burst
        self.set_limits(rpm=rpm, tpm=tpm, itpm=itpm, otpm=otpm, burst=burst)
        self.openai_cache_ttl = openai_cache_ttl
        self.clock = clock
        self.bodies: list[dict] = []  # request bodies (and headers seen), when keep_bodies is set
        self.keep_bodies = False
        self.log: list[dict[str, Any]] = []
        self.count = 0
        self.outcomes: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._bill: dict[tuple[str, str, str], dict[str, int]] = {}
        self._cache: dict[tuple, tuple[float, float]] = {}  # key -> (expires at, ttl)
        self._buckets: dict[tuple[str, str, str], Bucket] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        # batch APIs
        self.batch_polls = 1
        self.batch_calls: dict[str, int] = {}
        self.batch_submitted: dict[str, int] = {}
        self.batch_keys: list[str] = []  # API keys seen by batch endpoints (tests check none is stored)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}  # openai
        self.msg_batches: dict[str, dict] = {}  # anthropic
        self._batch_state: dict[str, dict] = {}

    # -- urls ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        return self.url

    # -- control ------------------------------------------------------------------------------
    def set_faults(self, plan: FaultPlan | dict) -> None:
        with self._lock:
            self.faults = plan if isinstance(plan, FaultPlan) else FaultPlan(**plan)
            self._attempts.clear()

    def set_limits(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        itpm: int | None = None,
        otpm: int | None = None,
        burst: float | None = None,
    ) -> None:
        """Advertised per-minute limits (None: unlimited); starts every bucket full."""
        for k, v in (("rpm", rpm), ("tpm", tpm), ("itpm", itpm), ("otpm", otpm)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if burst is not None and not burst > 0:
            raise ValueError(f"burst must be > 0 seconds, got {burst!r}")
        lock = getattr(self, "_lock", None) or threading.Lock()
        with lock:
            self.limits = {"rpm": rpm, "tpm": tpm, "itpm": itpm, "otpm": otpm}
            self.burst = burst if burst is not None else self.burst
            self._buckets = {}

    def reset(self) -> None:
        """Counters, the bill, the prompt caches and the rate-limit buckets back to a fresh server's."""
        with self._lock:
            self.log.clear()
            self.outcomes.clear()
            self.count = 0
            self.max_in_flight = 0
            self._attempts.clear()
            self._bill.clear()
            self._cache.clear()
            self._buckets.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            outcomes = dict(self.outcomes)
            bill = [
                {"provider": p, "model": m, "mode": mode, **counts}
                for (p, m, mode), counts in sorted(self._bill.items())
            ]
            return {
                "count": self.count,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "outcomes": outcomes,
                "bill": bill,
                "limits": {k: v for k, v in self.limits.items() if v is not None},
            }

    def bill(self, provider: str, model: str, mode: str = "online") -> dict[str, int]:
        """The bill's row for one provider, model (as requested) and mode; zeros if none."""
        with self._lock:
            return dict(self._bill.get((provider, model, mode)) or self._bill_row())

    @staticmethod
    def _bill_row() -> dict[str, int]:
        keys = ("requests", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
        return dict.fromkeys((*keys, "reasoning_tokens", "rate_limited", "failed"), 0)

    def _bill_add(self, provider: str, model: Any, mode: str, **add: int) -> None:
        with self._lock:
            row = self._bill.setdefault((provider, str(model), mode), self._bill_row())
            for k, v in add.items():
                row[k] += v

    # -- validation: what the real APIs refuse ----------------------------------------------------
    def resolve(self, provider: str, name: Any) -> Model | None:
        """The family of a model name (snapshots and -latest resolve) on this provider's API, else None."""
        if not isinstance(name, str) or not name:
            return None
        for n in (name, _SNAPSHOT.sub("", name)):
            m = self.models.get(n)
            if m is not None:
                return m if m.provider == provider else None
        return None

    def _check_openai(self, body: dict) -> Model:
        name = body.get("model")
        if not name:
            raise Refusal(400, "invalid_request_error", "you must provide a model parameter", code="")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise Refusal(
                400,
                "invalid_request_error",
                "Missing required parameter: 'messages'.",
                "messages",
                "missing_required_parameter",
            )
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                msg = f"Invalid type for 'messages[{i}]': expected an object with a 'role'."
                raise Refusal(400, "invalid_request_error", msg, f"messages[{i}]", "invalid_type")
        for p in ("max_tokens", "max_completion_tokens"):
            v = body.get(p)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                msg = f"Invalid '{p}': integer below minimum value. Expected a value >= 1, but got {v!r} instead."
                raise Refusal(400, "invalid_request_error", msg, p, "integer_below_min_value")
        model = self.resolve("openai", name)
        if not self.strict:
            return model or Model("openai")
        if model is None:
            msg = f"The model `{name}` does not exist or you do not have access to it."
            raise Refusal(404, "invalid_request_error", msg, None, "model_not_found")
        if model.open_weights:
            return model
        extra = next((k for k in body if k not in _OPENAI_FIELDS), None)
        if extra is not None:
            msg = f"Unrecognized request argument supplied: {extra}"
            raise Refusal(400, "invalid_request_error", msg, None, "")
        effort = body.get("reasoning_effort")
        if not model.reasoning:
            if effort is not None:
                raise _unsupported("reasoning_effort")
            return model
        if body.get("max_tokens") is not None:
            raise _unsupported("max_tokens", " Use 'max_completion_tokens' instead.")
        for p in ("temperature", "top_p"):
            v = body.get(p)
            if v is not None and v != 1:
                raise _unsupported_value(p, v, "Only the default (1) value is supported.")
        if body.get("stop") is not None and not model.stop:
            raise _unsupported("stop")
        for p in _REASONING_UNSUPPORTED:
            if body.get(p):
                raise _unsupported(p)
        if effort is not None and effort not in model.efforts:
            supported = f"Supported values are: {_quote_list(model.efforts)}."
            raise _unsupported_value("reasoning_effort", effort, supported)
        return model

    def _check_anthropic(self, body: dict) -> Model:
        def bad(msg: str) -> Refusal:
            return Refusal(400, "invalid_request_error", msg)

        name = body.get("model")
        if not name:
            raise bad("model: Field required")
        if self.strict:
            extra = next((k for k in body if k not in _ANTHROPIC_FIELDS), None)
            if extra is not None:
                raise bad(f"{extra}: Extra inputs are not permitted")
        mt = body.get("max_tokens")
        if mt is None:
            raise bad("max_tokens: Field required")
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise bad("max_tokens: Input should be greater than or equal to 1")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise bad(
                "messages: Field required" if msgs is None else "messages: at least one message is required"
            )
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        model = self.resolve("anthropic", name)
        if not self.strict:
            return model or Model("anthropic")
        if model is None:
            raise Refusal(404, "not_found_error", f"model: {name}")
        t = body.get("temperature")
        if t is not None and not (isinstance(t, (int, float)) and 0 <= t <= 1):
            raise bad("temperature: Input should be less than or equal to 1")
        if model.one_sampler and t is not None and body.get("top_p") is not None:
            raise bad(
                "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
            )
        return model

    # -- answers (shared by online and batch endpoints) ------------------------------------------
    def _completion_text(self, prompt: str, json_mode: bool, cut_emoji: bool = False) -> str:
        for sub, text in self.faults.answers.items():
            if sub in prompt:
                return text + (" \ud83d" if cut_emoji else "")
        h = hashlib.sha1(_utf8(prompt)).hexdigest()[:8]
        if 'Reply with one line: "Score: N"' in prompt:  # the LLM-judge prompt (recipes/judge.yaml)
            return f"The steps hold up. Score: {1 + int(h, 16) % 5}"
        label = default_label(prompt)
        rationale = f"The fake teacher reasons about request {h} step by step."
        if cut_emoji:  # an emoji cut in half: a lone high surrogate, JSON-escaped on the wire
            rationale += " \ud83d"
        if json_mode:
            return json.dumps({"rationale": rationale, "label": label}, ensure_ascii=not cut_emoji)
        return f"{rationale} So the answer is {label}."

    def _text_for(self, prompt: str, fault: str | None, json_mode: bool) -> str:
        if fault == "badjson":
            return "{not json"
        return self._completion_text(prompt, json_mode, cut_emoji=fault == "surrogate")

    def _cached(self, key: tuple, now: float) -> bool:
        e = self._cache.get(key)
        return e is not None and e[0] > now

    def plan_openai(self, body: dict, fault: str | None = None) -> _Plan:
        """Validate and work out one chat completion (nothing committed). Raises Refusal."""
        model = self._check_openai(body)
        name = str(body["model"])
        parts = [
            json.dumps(body[k], sort_keys=True, ensure_ascii=False)
            for k in ("tools", "response_format")
            if body.get(k)
        ]
        parts += [f"<|{m['role']}|>{_text_of(m.get('content'))}<|end|>" for m in body["messages"]]
        stream = _utf8("".join(parts))
        prompt_tokens = (len(stream) + 3) // 4 + REPLY_TOKENS
        # automatic prefix caching: every 128-token prefix from the model's minimum up
        now = self.clock()
        cached, keys = 0, []
        if prompt_tokens >= model.cache_min:
            h = hashlib.sha1()
            step = CACHE_STEP * 4
            for k in range(1, len(stream) // step + 1):
                h.update(stream[(k - 1) * step : k * step])
                if k * CACHE_STEP < model.cache_min:
                    continue
                key = ("openai", name, h.digest())
                keys.append((key, self.openai_cache_ttl))
                if self._cached(key, now):
                    cached = k * CACHE_STEP
        prompt = prompt_of(body)
        json_mode = bool(body.get("response_format")) or "JSON" in prompt[:2000]
        text = self._text_for(prompt, fault, json_mode)
        budget = body.get("max_completion_tokens") or body.get("max_tokens")
        r = 0
        if model.reasoning:
            r = reasoning_tokens(prompt, body.get("reasoning_effort") or model.default_effort)
        finish = "stop"
        if budget is not None and r + count_tokens(text) > budget:
            finish = "length"
            if budget <= r:  # the budget ran out while reasoning: no answer at all
                r, text = budget, ""
            else:
                text = _cut(text, budget - r)
        ct = r + count_tokens(text)
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": ct,
                "total_tokens": prompt_tokens + ct,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": r,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        usage = {"input": prompt_tokens, "cached": cached, "written": 0, "output": ct, "reasoning": r}
        max_out = budget if budget is not None else ct
        return _Plan("openai", name, payload, usage, keys, max_out, prompt)

    def plan_anthropic(self, body: dict, fault: str | None = None) -> _Plan:
        """Validate and work out one message (nothing committed). Raises Refusal."""
        model = self._check_anthropic(body)
        name = str(body["model"])
        blocks: list[tuple[str, Any]] = []  # (role, block) in cache order: system, then messages
        system = body.get("system")
        if isinstance(system, str):
            blocks.append(("system", system))
        elif isinstance(system, list):
            blocks += [("system", b) for b in system]
        firsts = set()
        for m in body["messages"]:
            c = m.get("content")
            firsts.add(len(blocks))
            blocks += [(m["role"], b) for b in c] if isinstance(c, list) else [(m["role"], c)]
        cum, digests, marks = [], [], []
        h, total = hashlib.sha1(), 0
        for i, (role, b) in enumerate(blocks):
            cc = b.get("cache_control") if isinstance(b, dict) else None
            if isinstance(b, dict):
                text = b["text"] if b.get("type") == "text" and isinstance(b.get("text"), str) else None
                if text is None:
                    text = json.dumps({k: v for k, v in b.items() if k != "cache_control"}, sort_keys=True)
            else:
                text = "" if b is None else str(b)
            total += count_tokens(text) + (MSG_TOKENS if i in firsts else 0)
            if i in firsts:
                h.update(_utf8(f"\x1e{role}\x1f"))
            h.update(_utf8(text) + b"\x1d")
            cum.append(total)
            digests.append(h.digest())
            if cc is not None:
                if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
                    raise Refusal(
                        400, "invalid_request_error", "cache_control.type: Input should be 'ephemeral'"
                    )
                ttl = cc.get("ttl", "5m")
                if ttl not in TTL:
                    raise Refusal(
                        400, "invalid_request_error", "cache_control.ttl: Input should be '5m' or '1h'"
                    )
                marks.append((i, TTL[ttl]))
        if len(marks) > 4:
            msg = f"A maximum of 4 blocks with cache_control may be provided. Found {len(marks)}."
            raise Refusal(400, "invalid_request_error", msg)
        now = self.clock()
        read, read_i = 0, -1
        for bp, _ in marks:  # the longest cached prefix ending within CACHE_LOOKBACK blocks of a marker
            for j in range(bp, max(-1, bp - CACHE_LOOKBACK), -1):
                if self._cached(("anthropic", name, digests[j]), now):
                    if cum[j] > read:
                        read, read_i = cum[j], j
                    break
        keys: list[tuple[tuple, float]] = []
        if read_i >= 0:
            key = ("anthropic", name, digests[read_i])
            keys.append((key, (self._cache.get(key) or (0.0, TTL["5m"]))[1]))  # a hit refreshes its TTL
        written, by_ttl, prev = 0, {300.0: 0, 3600.0: 0}, read
        for bp, ttl in marks:
            if bp > read_i and cum[bp] >= model.cache_min:
                keys.append((("anthropic", name, digests[bp]), ttl))
                if cum[bp] > prev:
                    by_ttl[ttl] += cum[bp] - prev
                    written += cum[bp] - prev
                    prev = cum[bp]
        prompt = prompt_of(body)
        text = self._text_for(prompt, fault, "JSON" in prompt[:2000])
        stop = "end_turn"
        if count_tokens(text) > body["max_tokens"]:
            text, stop = _cut(text, body["max_tokens"]), "max_tokens"
        out = count_tokens(text)
        payload = {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": name,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": total - read - written,
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": by_ttl[300.0],
                    "ephemeral_1h_input_tokens": by_ttl[3600.0],
                },
                "output_tokens": out,
                "service_tier": "standard",
            },
        }
        usage = {"input": total, "cached": read, "written": written, "output": out, "reasoning": 0}
        return _Plan("anthropic", name, payload, usage, keys, body["max_tokens"], prompt)

    def _commit(self, plan: _Plan, mode: str) -> dict:
        """Write/refresh the plan's cache entries and bill it; returns its payload."""
        now = self.clock()
        u = plan.usage
        with self._lock:
            if len(self._cache) > 200_000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            for key, ttl in plan.cache_keys:
                self._cache[key] = (now + ttl, ttl)
        self._bill_add(
            plan.provider,
            plan.model,
            mode,
            requests=1,
            input_tokens=u["input"],
            cached_input_tokens=u["cached"],
            cache_write_tokens=u["written"],
            output_tokens=u["output"],
            reasoning_tokens=u["reasoning"],
        )
        return plan.payload

    def answer_openai(self, body: dict, fault: str | None = None, mode: str = "online") -> dict:
        """A chat.completion for `body` (caches and bill updated). Raises Refusal where the API would."""
        return self._commit(self.plan_openai(body, fault), mode)

    def answer_anthropic(self, body: dict, fault: str | None = None, mode: str = "online") -> dict:
        """A message for `body` (caches and bill updated). Raises Refusal where the API would."""
        return self._commit(self.plan_anthropic(body, fault), mode)

    # -- rate limits ------------------------------------------------------------------------------
    _DIMS = {
        "openai": (("requests", "rpm"), ("tokens", "tpm")),
        "anthropic": (("requests", "rpm"), ("input-tokens", "itpm"), ("output-tokens", "otpm")),
    }

    def _admit(self, plan: _Plan) -> tuple[dict[str, str], web.Response | None]:
        """Charge the plan to its model's buckets: (rate-limit headers, None) or (headers, a 429)."""
        dims = [(d, self.limits[k]) for d, k in self._DIMS[plan.provider] if self.limits.get(k)]
        if not dims:
            return {}, None
        u = plan.usage
        if plan.provider == "openai":
            cost = {"requests": 1, "tokens": u["input"] + plan.max_out}
        else:
            cost = {"requests": 1, "input-tokens": u["input"] - u["cached"], "output-tokens": plan.max_out}
        now = self.clock()
        with self._lock:
            buckets = {}
            for d, limit in dims:
                key = (plan.provider, plan.model, d)
                if key not in self._buckets:
                    self._buckets[key] = Bucket(limit, self.burst, now)
                buckets[d] = self._buckets[key]
            waits = {d: b.wait(cost[d], now) for d, b in buckets.items()}
            worst = max(waits, key=lambda d: waits[d])
            if waits[worst] == 0:
                for d, b in buckets.items():
                    # Anthropic charges the actual output (it estimated max_tokens to admit)
                    b.take(u["output"] if d == "output-tokens" else cost[d])
            headers = self._rl_headers(plan.provider, buckets)
            used = buckets[worst].limit - buckets[worst].remaining()
        if waits[worst] == 0:
            return headers, None
        self._bill_add(plan.provider, plan.model, "online", rate_limited=1)
        return headers, self._rate_limited(
            plan, worst, buckets[worst].limit, used, cost[worst], waits[worst], headers
        )

    def _rl_headers(self, provider: str, buckets: dict[str, Bucket]) -> dict[str, str]:
        h: dict[str, str] = {}
        if provider == "openai":
            for d, b in buckets.items():
                h[f"x-ratelimit-limit-{d}"] = str(b.limit)
                h[f"x-ratelimit-remaining-{d}"] = str(b.remaining())
                h[f"x-ratelimit-reset-{d}"] = go_duration(b.reset_s())
            return h
        now = datetime.now(timezone.utc)

        def at(s: float) -> str:
            return (now + timedelta(seconds=math.ceil(s))).strftime("%Y-%m-%dT%H:%M:%SZ")

        for d, b in buckets.items():
            h[f"anthropic-ratelimit-{d}-limit"] = str(b.limit)
            h[f"anthropic-ratelimit-{d}-remaining"] = str(b.remaining())
            h[f"anthropic-ratelimit-{d}-reset"] = at(b.reset_s())
        tok = [b for d, b in buckets.items() if d != "requests"]
        if tok:  # the most restrictive token limit in effect
            b = min(tok, key=lambda b: b.remaining())
            h["anthropic-ratelimit-tokens-limit"] = str(b.limit)
            h["anthropic-ratelimit-tokens-remaining"] = str(b.remaining())
            h["anthropic-ratelimit-tokens-reset"] = at(b.reset_s())
        return h

    def _rate_limited(
        self, plan: _Plan, dim: str, limit: int, used: int, cost: int, wait: float, headers: dict[str, str]
    ) -> web.Response:
        headers = dict(headers)
        if math.isfinite(wait):
            headers["retry-after"] = str(max(1, math.ceil(wait)))
        if plan.provider == "openai":
            what = "requests per min (RPM)" if dim == "requests" else "tokens per min (TPM)"
            if math.isfinite(wait):
                headers["retry-after-ms"] = str(math.ceil(wait * 1000))
                msg = (
                    f"Rate limit reached for {plan.model} in organization org-fake on {what}: Limit {limit}, "
                    f"Used {used}, Requested {cost}. Please try again in {go_duration(wait)}. "
                    "Visit https://platform.openai.com/account/rate-limits to learn more."
                )
            else:
                msg = (
                    f"Request too large for {plan.model} in organization org-fake on {what}: Limit {limit}, "
                    f"Requested {cost}. The input or output tokens must be reduced in order to run "
                    "successfully. Visit https://platform.openai.com/account/rate-limits to learn more."
                )
            body = {
                "error": {
                    "message": msg,
                    "type": "requests" if dim == "requests" else "tokens",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
        else:
            what = dim.replace("-", " ")
            msg = (
                f"This request would exceed your organization's rate limit of {limit} {what} per minute "
                f"(model: {plan.model}). For details, refer to: https://docs.claude.com/en/api/rate-limits. "
                "You can see the response headers for current usage. Please reduce the prompt length or the "
                "maximum tokens requested, or try again later."
            )
            body = {"type": "error", "error": {"type": "rate_limit_error", "message": msg}}
        return web.json_response(body, status=429, headers=headers)

    # -- fault selection ----------------------------------------------------------------------
    def _pick_fault(self, prompt: str) -> str | None:
        f = self.faults
        h = hashlib.sha1(_utf8(prompt)).hexdigest()
        with self._lock:
            n = self._attempts.get(h, 0)
            self._attempts[h] = n + 1
            for sub, faults in f.by_match.items():
                if sub in prompt:
                    return faults[n] if n < len(faults) else None
            if f.queue:
                return f.queue.pop(0)
        if f.rate and n == 0 and int(h[:8], 16) / 0xFFFFFFFF < f.rate:
            return f.kinds[int(h[8:12], 16) % len(f.kinds)]
        return None

    # -- HTTP ---------------------------------------------------------------------------------
    def _error(
        self, provider: str, status: int, etype: str, message: str, headers: dict | None = None
    ) -> web.Response:
        if provider == "anthropic":
            body = {"type": "error", "error": {"type": etype, "message": message}}
        else:
            body = {"error": {"message": message, "type": etype, "code": etype, "param": None}}
        return web.json_response(body, status=status, headers=headers)

    def _refuse(self, provider: str, r: Refusal) -> web.Response:
        if provider == "anthropic":
            body: dict = {"type": "error", "error": {"type": r.etype, "message": r.message}}
        else:
            body = {
                "error": {"message": r.message, "type": r.etype, "param": r.param, "code": r.code or None}
            }
        return web.json_response(body, status=r.status)

    async def _handle(self, request: web.Request, provider: str) -> web.StreamResponse:
        t_recv = time.time()
        with self._lock:
            self.count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        outcome = "ok"
        prompt = ""
        try:
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                outcome = "400"
                return self._error(provider, 400, "invalid_request_error", "body is not JSON")
            if not isinstance(body, dict):
                outcome = "400"
                return self._error(provider, 400, "invalid_request_error", "body is not a JSON object")
            key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            if self.keep_bodies:
                with self._lock:
                    self.bodies.append(
                        {"path": request.path, "body": body, "key": key, "headers": dict(request.headers)}
                    )
            if self.faults.require_key is not None and key != self.faults.require_key:
                outcome = "401"
                # Echo the key like careless servers do: the client must still never store or print it.
                return self._error(provider, 401, "authentication_error", f"invalid api key {key!r}")
            planner = self.plan_anthropic if provider == "anthropic" else self.plan_openai
            try:
                plan = planner(body)
            except Refusal as r:
                outcome = r.code or r.etype
                self._bill_add(provider, body.get("model"), "online", failed=1)
                return self._refuse(provider, r)
            prompt = plan.prompt
            rl_headers, limited = self._admit(plan)
            if limited is not None:
                outcome = "rate_limited"
                return limited
            fault = self._pick_fault(prompt)
            name, _, arg = (fault or "").partition(":")
            if name == "slow":
                await asyncio.sleep(float(arg or 5))
            elif self.latency:
                await asyncio.sleep(self.latency)
            outcome = fault or "ok"
            if name in _ERROR_FAULTS:
                self._bill_add(provider, plan.model, "online", failed=1)
            if name in ("429", "503"):
                headers = {**rl_headers, "Retry-After": arg} if arg else rl_headers
                etype = "rate_limit_error" if name == "429" else "overloaded_error"
                return self._error(provider, int(name), etype, "slow down", headers)
            if name in ("500", "529"):
                etype = "api_error" if name == "500" else "overloaded_error"
                return self._error(provider, int(name), etype, "the fake server failed", rl_headers)
            if name in ("400", "403"):
                msg = "the fake server refuses this request"
                return self._error(provider, int(name), "invalid_request_error", msg, rl_headers)
            if name == "401":
                return self._error(
                    provider, 401, "authentication_error", f"invalid api key {key!r}", rl_headers
                )
            if name == "context":
                msg = "This model's maximum context length is 8192 tokens; prompt is too long"
                return self._error(provider, 400, "context_length_exceeded", msg, rl_headers)
            if name == "drop":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            if name == "malformed":
                return web.Response(
                    text='{"id": "x", "choices": [{"message": ', content_type="application/json"
                )
            if name in ("badjson", "surrogate"):
                plan = planner(body, name)
            payload = self._commit(plan, "online")
            id_header = "request-id" if provider == "anthropic" else "x-request-id"
            return web.json_response(payload, headers={**rl_headers, id_header: payload["id"]})
        finally:
            with self._lock:
                self.in_flight -= 1
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
                if self.record:
                    self.log.append(
                        {
                            "t_recv": t_recv,
                            "t_sent": time.time(),
                            "provider": provider,
                            "outcome": outcome,
                            "prompt_sha": hashlib.sha1(_utf8(prompt)).hexdigest()[:12],
                        }
                    )

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "anthropic")

    async def _control_faults(self, request: web.Request) -> web.Response:
        self.set_faults(await request.json())
        return web.json_response({"ok": True})

    async def _control_limits(self, request: web.Request) -> web.Response:
        try:
            self.set_limits(**(await request.json()))
        except (TypeError, ValueError) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=400)
        return web.json_response({"ok": True})

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    # -- batch APIs ---------------------------------------------------------------------------
    def _bcount(self, request: web.Request, name: str) -> None:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
            "Bearer "
        )
        with self._lock:
            self.batch_calls[name] = self.batch_calls.get(name, 0) + 1
            if key:
                self.batch_keys.append(key)

    def _line_outcome(self, body: dict, provider: str) -> tuple[str, Any]:
        """('ok', payload) | ('expired', None) | ('error', (status, etype, message[, code, param])) for one
        batch line; a line the API would refuse fails as it would online, before any fault is drawn."""
        planner = self.plan_anthropic if provider == "anthropic" else self.plan_openai
        try:
            plan = planner(body)
        except Refusal as r:
            with self._lock:
                self.outcomes[r.code or r.etype] = self.outcomes.get(r.code or r.etype, 0) + 1
            self._bill_add(provider, body.get("model"), "batch", failed=1)
            return "error", (r.status, r.etype, r.message, r.code or None, r.param)
        fault = self._pick_fault(plan.prompt)
        name = (fault or "").partition(":")[0]
        with self._lock:
            self.outcomes[fault or "ok"] = self.outcomes.get(fault or "ok", 0) + 1
        if name in ("", "badjson", "surrogate"):
            return "ok", self._commit(planner(body, name) if name else plan, "batch")
        self._bill_add(provider, plan.model, "batch", failed=1)
        if name == "expire":
            return "expired", None
        if name == "context":
            return "error", (400, "invalid_request_error", "prompt is too long: context_length_exceeded")
        status = int(name) if name.isdigit() else 500
        etype = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        return "error", (status, etype, "the fake server failed this request")

    def _finish_openai(self, b: dict, cancelled: bool = False) -> None:
        st = self._batch_state[b["id"]]
        out, err = [], []
        n_ok = n_fail = 0
        expired = False
        lines = st["lines"]
        for i, line in enumerate(lines):
            cid = line["custom_id"]
            if cancelled and i >= len(lines) // 2:
                continue  # never ran: no line at all
            kind, val = self._line_outcome(line["body"], "openai")
            if kind == "ok":
                n_ok += 1
                resp = {"status_code": 200, "request_id": f"req_{uuid.uuid4().hex[:8]}", "body": val}
                out.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:8]}",
                        "custom_id": cid,
                        "response": resp,
                        "error": None,
                    }
                )
            elif kind == "expired":
                expired = True
                n_fail += 1
                err.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:8]}",
                        "custom_id": cid,
                        "response": None,
                        "error": {
                            "code": "batch_expired",
                            "message": "This request could not be executed before the completion window expired.",
                        },
                    }
                )
            else:
                n_fail += 1
                status, etype, msg, *more = val
                code, param = more if more else (etype, None)
                body = {"error": {"message": msg, "type": etype, "code": code, "param": param}}
                resp = {"status_code": status, "request_id": f"req_{uuid.uuid4().hex[:8]}", "body": body}
                err.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:8]}",
                        "custom_id": cid,
                        "response": resp,
                        "error": None,
                    }
                )
        now = int(time.time())
        if out:
            fid = f"file-out-{uuid.uuid4().hex[:10]}"
            self.files[fid] = "".join(json.dumps(x) + "\n" for x in out).encode()
            b["output_file_id"] = fid
        if err:
            fid = f"file-err-{uuid.uuid4().hex[:10]}"
            self.files[fid] = "".join(json.dumps(x) + "\n" for x in err).encode()
            b["error_file_id"] = fid
        b["status"] = "cancelled" if cancelled else "expired" if expired else "completed"
        b[
            {"cancelled": "cancelled_at", "expired": "expired_at", "completed": "completed_at"}[b["status"]]
        ] = now
        b["request_counts"] = {"total": len(lines), "completed": n_ok, "failed": n_fail}

    async def _o_file_create(self, request: web.Request) -> web.Response:
        self._bcount(request, "files.create")
        form = await request.post()
        f = form["file"]
        data = f.file.read()
        fid = f"file-{uuid.uuid4().hex[:12]}"
        self.files[fid] = data
        return web.json_response(
            {
                "id": fid,
                "object": "file",
                "bytes": len(data),
                "created_at": int(time.time()),
                "filename": f.filename,
                "purpose": form.get("purpose", "batch"),
                "status": "processed",
            }
        )

    async def _o_file_content(self, request: web.Request) -> web.Response:
        self._bcount(request, "files.content")
        fid = request.match_info["id"]
        if fid not in self.files:
            return self._error("openai", 404, "not_found", f"no file {fid}")
        return web.Response(body=self.files[fid], content_type="application/octet-stream")

    async def _o_batch_create(self, request: web.Request) -> web.Response:
        self._bcount(request, "batches.create")
        body = await request.json()
        fid = body.get("input_file_id")
        if fid not in self.files:
            return self._error("openai", 400, "invalid_request_error", f"no file {fid}")
        lines = [json.loads(x) for x in self.files[fid].decode().splitlines() if x.strip()]
        for line in lines:
            self.batch_submitted[line["custom_id"]] = self.batch_submitted.get(line["custom_id"], 0) + 1
        bid = f"batch_{uuid.uuid4().hex[:12]}"
        b = {
            "id": bid,
            "object": "batch",
            "endpoint": body.get("endpoint"),
            "errors": None,
            "input_file_id": fid,
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "expires_at": int(time.time()) + 86400,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self.batches[bid] = b
        self._batch_state[bid] = {"lines": lines, "polls": self.batch_polls}
        if self.batch_polls <= 0:
            self._finish_openai(b)
        return web.json_response(b)

    async def _o_batch_get(self, request: web.Request) -> web.Response:
        self._bcount(request, "batches.retrieve")
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return self._error("openai", 404, "not_found", "no such batch")
        st = self._batch_state[b["id"]]
        if b["status"] == "cancelling":
            self._finish_openai(b, cancelled=True)
        elif b["status"] in ("validating", "in_progress"):
            st["polls"] -= 1
            if st["polls"] <= 0:
                self._finish_openai(b)
            else:
                b["status"] = "in_progress"
        return web.json_response(b)

    async def _o_batch_cancel(self, request: web.Request) -> web.Response:
        self._bcount(request, "batches.cancel")
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return self._error("openai", 404, "not_found", "no such batch")
        if b["status"] in ("validating", "in_progress"):
            b["status"] = "cancelling"
            b["cancelling_at"] = int(time.time())
        return web.json_response(b)

    async def _o_batch_list(self, request: web.Request) -> web.Response:
        self._bcount(request, "batches.list")
        items = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
        after, limit = request.query.get("after"), int(request.query.get("limit", 20))
        if after:
            ids = [b["id"] for b in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )

    def _a_view(self, b: dict) -> dict:
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def _finish_anthropic(self, b: dict, cancelled: bool = False) -> None:
        st = self._batch_state[b["id"]]
        results = []
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        reqs = st["lines"]
        for i, r in enumerate(reqs):
            if cancelled and i >= len(reqs) // 2:
                res = {"type": "canceled"}
            else:
                kind, val = self._line_outcome(r["params"], "anthropic")
                if kind == "ok":
                    res = {"type": "succeeded", "message": val}
                elif kind == "expired":
                    res = {"type": "expired"}
                else:
                    status, etype, msg, *_ = val
                    res = {
                        "type": "errored",
                        "error": {"type": "error", "error": {"type": etype, "message": msg}},
                    }
            counts[res["type"]] += 1
            results.append({"custom_id": r["custom_id"], "result": res})
        st["results"] = results
        b["processing_status"] = "ended"
        b["ended_at"] = _iso()
        b["request_counts"] = counts
        b["results_url"] = f"{self.url}/v1/messages/batches/{b['id']}/results"

    async def _a_batch_create(self, request: web.Request) -> web.Response:
        self._bcount(request, "messages.batches.create")
        body = await request.json()
        reqs = body.get("requests") or []
        for r in reqs:
            self.batch_submitted[r["custom_id"]] = self.batch_submitted.get(r["custom_id"], 0) + 1
        bid = f"msgbatch_{uuid.uuid4().hex[:12]}"
        b = {
            "id": bid,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": len(reqs),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "ended_at": None,
            "created_at": _iso(),
            "expires_at": _iso(86400),
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
            "_t": time.time(),
        }
        self.msg_batches[bid] = b
        self._batch_state[bid] = {"lines": reqs, "polls": self.batch_polls}
        if self.batch_polls <= 0:
            self._finish_anthropic(b)
        return web.json_response(self._a_view(b))

    async def _a_batch_get(self, request: web.Request) -> web.Response:
        self._bcount(request, "messages.batches.retrieve")
        b = self.msg_batches.get(request.match_info["id"])
        if b is None:
            return self._error("anthropic", 404, "not_found_error", "no such batch")
        st = self._batch_state[b["id"]]
        if b["processing_status"] == "canceling":
            self._finish_anthropic(b, cancelled=True)
        elif b["processing_status"] == "in_progress":
            st["polls"] -= 1
            if st["polls"] <= 0:
                self._finish_anthropic(b)
        return web.json_response(self._a_view(b))

    async def _a_batch_results(self, request: web.Request) -> web.Response:
        self._bcount(request, "messages.batches.results")
        b = self.msg_batches.get(request.match_info["id"])
        if b is None or b["processing_status"] != "ended":
            return self._error("anthropic", 404, "not_found_error", "results not available")
        text = "".join(json.dumps(x) + "\n" for x in self._batch_state[b["id"]]["results"])
        return web.Response(text=text, content_type="application/binary")

    async def _a_batch_cancel(self, request: web.Request) -> web.Response:
        self._bcount(request, "messages.batches.cancel")
        b = self.msg_batches.get(request.match_info["id"])
        if b is None:
            return self._error("anthropic", 404, "not_found_error", "no such batch")
        if b["processing_status"] == "in_progress":
            b["processing_status"] = "canceling"
            b["cancel_initiated_at"] = _iso()
        return web.json_response(self._a_view(b))

    async def _a_batch_list(self, request: web.Request) -> web.Response:
        self._bcount(request, "messages.batches.list")
        items = sorted(self.msg_batches.values(), key=lambda b: b["_t"], reverse=True)
        after, limit = request.query.get("after_id"), int(request.query.get("limit", 20))
        if after:
            ids = [b["id"] for b in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return web.json_response(
            {
                "data": [self._a_view(b) for b in page],
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            }
        )

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._openai),
            web.post("/v1/messages", self._anthropic),
            web.post("/v1/files", self._o_file_create),
            web.get("/v1/files/{id}/content", self._o_file_content),
            web.post("/v1/batches", self._o_batch_create),
            web.get("/v1/batches", self._o_batch_list),
            web.get("/v1/batches/{id}", self._o_batch_get),
            web.post("/v1/batches/{id}/cancel", self._o_batch_cancel),
            web.post("/v1/messages/batches", self._a_batch_create),
            web.get("/v1/messages/batches", self._a_batch_list),
            web.get("/v1/messages/batches/{id}", self._a_batch_get),
            web.get("/v1/messages/batches/{id}/results", self._a_batch_results),
            web.post("/v1/messages/batches/{id}/cancel", self._a_batch_cancel),
            web.post("/_control/faults", self._control_faults),
            web.post("/_control/limits", self._control_limits),
            web.get("/_control/stats", self._control_stats),
            web.post("/_control/reset", self._control_reset),
        ]

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024**2)
        app.add_routes(self._routes())
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=4096)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # -- running in a thread (tests) -------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            self._ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-llm-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake LLM server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Serve in the foreground (a separate process for benchmarks); prints `READY <url>` once listening."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--no-record", action="store_true", help="keep no per-request log (long benchmarks)")
    ap.add_argument("--rpm", type=int, help="requests per minute, per model (both APIs)")
    ap.add_argument("--tpm", type=int, help="OpenAI tokens per minute, per model")
    ap.add_argument("--itpm", type=int, help="Anthropic input tokens per minute, per model")
    ap.add_argument("--otpm", type=int, help="Anthropic output tokens per minute, per model")
    ap.add_argument("--burst", type=float, default=1.0, help="seconds of a limit a burst may use (default 1)")
    ap.add_argument("--lenient", action="store_true", help="serve any model; no parameter rules")
    ap.add_argument(
        "--model", action="append", default=[], help="serve this extra openai:NAME / anthropic:NAME"
    )
    ap.add_argument("--cache-ttl", type=float, default=300.0, help="OpenAI prompt-cache TTL, seconds")
    ap.add_argument("--batch-polls", type=int, default=1, help="retrieves before a batch ends")
    args = ap.parse_args()
    srv = FakeLLMServer(
        latency=args.latency,
        port=args.port,
        record=not args.no_record,
        strict=not args.lenient,
        models=args.model,
        rpm=args.rpm,
        tpm=args.tpm,
        itpm=args.itpm,
        otpm=args.otpm,
        burst=args.burst,
        openai_cache_ttl=args.cache_ttl,
    )
    srv.batch_polls = args.batch_polls
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(srv._start())
    print(f"READY {srv.url}", flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        loop.run_until_complete(srv._runner.cleanup())


if __name__ == "__main__":
    sys.exit(main())
