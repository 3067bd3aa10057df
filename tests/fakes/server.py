"""A loopback stand-in for the OpenAI chat-completions and responses, Anthropic messages and Gemini
generateContent HTTP APIs, with fault injection.

The server wiring: `FakeLLMServer` composes the model rules (`models`), the faults and answer text
(`faults`), the caches, bill, counters and rate limits (`accounting`) and the three APIs (`openai_api`,
`anthropic_api`, `gemini_api`), and serves them with aiohttp on 127.0.0.1, in a background thread (tests:
`with FakeLLMServer(latency=0.05) as srv: srv.openai_url`) or in the foreground (`main`, the benchmarks'
separate process: `python tests/fake_llm_server.py --latency 0.1 [--rpm N --tpm N]`, which prints
`READY <url>`).

Control: POST /_control/faults (a FaultPlan as JSON), POST /_control/limits ({"rpm", "tpm", "itpm", "otpm",
"burst"}), GET /_control/stats, POST /_control/reset (counters, bill, caches and buckets).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from .accounting import Accounting, Bucket
from .anthropic_api import AnthropicAPI, betas_of
from .faults import BODY_FAULTS, ERROR_FAULTS, FaultPlan, Faults, alter
from .gemini_api import GeminiAPI
from .models import ANTHROPIC_BETAS, MODELS, Model, ModelRules, Refusal
from .openai_api import OpenAIAPI
from .tokens import utf8


def lie_about_usage(payload: dict, how: str) -> dict:
    """The answer with a usage block no real server sends: the client must not price from it as it is."""
    field = "usageMetadata" if "usageMetadata" in payload else "usage"  # Gemini's, or the others'
    usage = payload.get(field)
    if how == "missing":
        payload.pop(field, None)
    elif isinstance(usage, dict):
        lie: object = {"negative": -5000, "huge": 10**18, "text": "many"}.get(how, -5000)
        for k in (
            "prompt_tokens",
            "completion_tokens",
            "input_tokens",
            "output_tokens",
            "promptTokenCount",
            "candidatesTokenCount",
        ):
            if k in usage:
                usage[k] = lie
    return payload


class FakeLLMServer(ModelRules, Faults, Accounting, OpenAIAPI, AnthropicAPI, GeminiAPI):
    """Serve the three APIs on 127.0.0.1; `latency` seconds per answer. Thread-safe counters in `self.log`."""

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
        """`models`: extra names, as {name: Model} or "openai:NAME" / "anthropic:NAME" / "gemini:NAME" (plain
        chat models; Gemini ones think by default, like 2.5 Flash).
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
                if provider not in ("openai", "anthropic", "gemini") or not name:
                    raise ValueError(f"models: {spec!r} is not openai:NAME, anthropic:NAME or gemini:NAME")
                extra = (
                    {"budget": (1, 24576), "thinks": True, "cache_min": 2048} if provider == "gemini" else {}
                )
                self.models[name] = Model(provider, **extra)
        self.limits: dict[str, int | None] = {}
        self.burst = burst
        self.set_limits(rpm=rpm, tpm=tpm, itpm=itpm, otpm=otpm, burst=burst)
        self.openai_cache_ttl = openai_cache_ttl
        self.gemini_cache_ttl = 300.0  # implicit cache entries: Google says "a few minutes"
        self.clock = clock
        self.bodies: list[dict] = []  # request bodies (and headers seen), when keep_bodies is set
        self.keep_bodies = False
        self.log: list[dict[str, Any]] = []
        self.count = 0
        self.outcomes: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._attempts: dict[str, int] = {}
        self.flex_busy = 0.0  # share of distinct prompts a busy flex tier turns away (see accounting)
        self.flex_busy_tries = 1
        self._flex_attempts: dict[str, int] = {}
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
        self.g_batches: dict[str, dict] = {}  # gemini
        self.g_files: dict[str, dict] = {}
        self.g_uploads: dict[str, dict] = {}
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

    # -- HTTP ---------------------------------------------------------------------------------
    def _error(
        self, provider: str, status: int, etype: str, message: str, headers: dict | None = None
    ) -> web.Response:
        if provider == "gemini":
            return self.gemini_error(status, message, headers=headers)
        if provider == "anthropic":
            body = {"type": "error", "error": {"type": etype, "message": message}}
        else:
            body = {"error": {"message": message, "type": etype, "code": etype, "param": None}}
        return web.json_response(body, status=status, headers=headers)

    def _refuse(self, provider: str, r: Refusal) -> web.Response:
        if provider == "gemini":
            return self.gemini_refusal(r)
        if provider == "anthropic":
            body: dict = {"type": "error", "error": {"type": r.etype, "message": r.message}}
        else:
            body = {
                "error": {"message": r.message, "type": r.etype, "param": r.param, "code": r.code or None}
            }
        return web.json_response(body, status=r.status)

    async def _handle(
        self, request: web.Request, provider: str, api: str = "chat", extra: dict | None = None
    ) -> web.StreamResponse:
        """One online call to `provider`'s API (`api`: OpenAI's chat or responses); `extra` joins the body
        (Gemini: the model and API version from the path)."""
        t_recv = time.time()
        with self._lock:
            self.count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        outcome = "ok"
        prompt = ""
        if provider == "anthropic":  # this request's own task: the value stays with it
            ANTHROPIC_BETAS.set(betas_of(request))
        try:
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                outcome = "400"
                return self._error(provider, 400, "invalid_request_error", "body is not JSON")
            if not isinstance(body, dict):
                outcome = "400"
                return self._error(provider, 400, "invalid_request_error", "body is not a JSON object")
            key = (
                request.headers.get("x-api-key")
                or request.headers.get("x-goog-api-key")
                or request.headers.get("authorization", "").removeprefix("Bearer ")
            )
            if self.keep_bodies:
                with self._lock:
                    self.bodies.append(
                        {"path": request.path, "body": body, "key": key, "headers": dict(request.headers)}
                    )
            if extra:
                body = {**body, **extra}
            denied = self._g_key(request) if provider == "gemini" else None
            if denied is not None:
                outcome = "401"
                return denied
            if (
                provider != "gemini"
                and self.faults.require_key is not None
                and key != self.faults.require_key
            ):
                outcome = "401"
                # Echo the key like careless servers do: the client must still never store or print it.
                return self._error(provider, 401, "authentication_error", f"invalid api key {key!r}")
            planner: Any = {"anthropic": self.plan_anthropic, "gemini": self.plan_gemini}.get(
                provider, self.plan_responses if api == "responses" else self.plan_openai
            )
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
            if self._flex_refuses(plan):
                outcome = "resource_unavailable"
                return self._flex_unavailable()
            fault = self._pick_fault(prompt)
            name, _, arg = (fault or "").partition(":")
            if name == "slow":
                await asyncio.sleep(float(arg or 5))
            elif self.latency:
                await asyncio.sleep(self.latency)
            outcome = fault or "ok"
            if name in ERROR_FAULTS:
                self._bill_add(provider, plan.model, "online", failed=1)
            if provider == "gemini" and name in ERROR_FAULTS and name not in ("drop", "malformed"):
                return self.gemini_fault(name, arg, plan.model)
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
            if name == "noquota":
                # An account out of credit. OpenAI answers 429 with type and code `insufficient_quota`
                # (https://platform.openai.com/docs/guides/error-codes: "You exceeded your current quota,
                # please check your plan and billing details"); Anthropic answers 400 invalid_request_error
                # "Your credit balance is too low to access the Anthropic API..." (its billing errors:
                # https://docs.anthropic.com/en/api/errors).
                if provider == "anthropic":
                    msg = (
                        "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
                        "Billing to upgrade or purchase credits."
                    )
                    return self._error(provider, 400, "invalid_request_error", msg, rl_headers)
                msg = (
                    "You exceeded your current quota, please check your plan and billing details. For more "
                    "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
                )
                return self._error(provider, 429, "insufficient_quota", msg, rl_headers)
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
            if (
                name == "lieusage"
            ):  # billed truly, reported falsely (issue 23): lieusage:negative|missing|huge|text
                payload = lie_about_usage(payload, arg or "negative")
            if name in BODY_FAULTS:
                payload = alter(payload, provider, fault or "")
            id_header = "request-id" if provider == "anthropic" else "x-request-id"
            rid = payload.get("id")  # Gemini answers carry a responseId and no request-id header
            return web.json_response(payload, headers={**rl_headers, id_header: rid} if rid else rl_headers)
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
                            "path": request.path,
                            "outcome": outcome,
                            "prompt_sha": hashlib.sha1(utf8(prompt)).hexdigest()[:12],
                        }
                    )

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

    def _routes(self) -> list[web.RouteDef]:
        return [
            *self._openai_routes(),
            *self._anthropic_routes(),
            *self._gemini_routes(),
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
        "--model",
        action="append",
        default=[],
        help="serve this extra openai:NAME / anthropic:NAME / gemini:NAME",
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
