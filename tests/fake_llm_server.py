"""A loopback stand-in for the OpenAI chat-completions and Anthropic messages HTTP APIs, with fault injection.

Used by the tests (in a background thread: `with FakeLLMServer(latency=0.05) as srv: srv.openai_url`) and by
the throughput benchmark (as a separate process: `python tests/fake_llm_server.py --latency 0.1`, which
prints `READY <url>` and is steered over HTTP at /_control/*).

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
They are applied by three rules, checked in order:
  by_match {substring: [fault, ...]}   requests whose prompt contains substring get the faults in turn, one
                                       per attempt (then normal answers): deterministic per row
  queue [fault, ...]                   the next requests, whatever they are, in arrival order
  rate R with kinds [..]               a stable R fraction of distinct prompts fails on its first attempt
                                       with one of kinds (chosen by the prompt's hash)

Batch endpoints (OpenAI Batch API: POST /v1/files, GET /v1/files/{id}/content, POST /v1/batches,
GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel; Anthropic Message Batches: POST /v1/messages/batches,
GET /v1/messages/batches[/{id}[/results]], POST .../{id}/cancel). Each line is answered with
`answer_openai(body)` / `answer_anthropic(body)`, so batch and online answers are identical, and the same fault
plan applies per line (one attempt per submission): `expire` makes the line expire; 400/401/403/context/
429/5xx become per-line errors; badjson as online. A batch ends after `batch_polls` retrieves (0: at once);
cancelling answers the first half of the lines and cancels the rest. Counters: `batch_calls` (per endpoint)
and `batch_submitted` (per custom_id: how many times it was sent in a batch).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def _iso(offset: float = 0.0) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(time.time() + offset, timezone.utc).isoformat().replace("+00:00", "Z")


def prompt_of(body: dict) -> str:
    """All the text of a request (system + messages), as one string."""
    parts = []
    if isinstance(body.get("system"), str):
        parts.append(body["system"])
    for m in body.get("messages") or []:
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(b.get("text", "") for b in c if isinstance(b, dict))
        parts.append(str(c))
    return "\n".join(parts)


def default_label(prompt: str) -> str:
    """A plausible answer for the last question in the prompt, so the task parsers find a label."""
    last = prompt.rsplit("\n\n", 1)[-1]
    m = re.search(r"\(a\)\s*([^\n]+)", last)
    if m:
        return f"(a) {m.group(1).strip()}"
    if "Premise:" in last or "Hypothesis:" in last:
        return "entailment"
    return "(40 + 2)"


@dataclass
class FaultPlan:
    by_match: dict[str, list[str]] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    rate: float = 0.0
    kinds: list[str] = field(default_factory=lambda: ["500"])
    answers: dict[str, str] = field(default_factory=dict)  # substring -> completion text override
    require_key: str | None = None  # answer 401 unless this key is sent


class FakeLLMServer:
    """Serve both APIs on 127.0.0.1; `latency` seconds per answer. Thread-safe counters in `self.log`."""

    def __init__(
        self, latency: float = 0.0, port: int = 0, faults: FaultPlan | None = None, record: bool = True
    ):
        self.latency = latency
        self.port = port
        self.faults = faults or FaultPlan()
        self.record = record
        self.bodies: list[dict] = []  # request bodies (and headers seen), when keep_bodies is set
        self.keep_bodies = False
        self.log: list[dict[str, Any]] = []
        self.count = 0
        self.outcomes: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
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

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self.outcomes.clear()
            self.count = 0
            self.max_in_flight = 0
            self._attempts.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            outcomes = dict(self.outcomes)
            return {
                "count": self.count,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "outcomes": outcomes,
            }

    # -- answers (shared by online and, later, batch endpoints) ----------------------------------
    def _completion_text(self, body: dict, json_mode: bool) -> str:
        prompt = prompt_of(body)
        for sub, text in self.faults.answers.items():
            if sub in prompt:
                return text
        h = hashlib.sha1(prompt.encode()).hexdigest()[:8]
        if 'Reply with one line: "Score: N"' in prompt:  # the LLM-judge prompt (recipes/judge.yaml)
            return f"The steps hold up. Score: {1 + int(h, 16) % 5}"
        label = default_label(prompt)
        rationale = f"The fake teacher reasons about request {h} step by step."
        if json_mode:
            return json.dumps({"rationale": rationale, "label": label})
        return f"{rationale} So the answer is {label}."

    def answer_openai(self, body: dict, fault: str | None = None) -> dict:
        json_mode = bool(body.get("response_format")) or "JSON" in prompt_of(body)[:2000]
        text = "{not json" if fault == "badjson" else self._completion_text(body, json_mode)
        pt = max(1, len(prompt_of(body)) // 4)
        ct = max(1, len(text) // 4)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        }

    def answer_anthropic(self, body: dict, fault: str | None = None) -> dict:
        json_mode = "JSON" in prompt_of(body)[:2000]
        text = "{not json" if fault == "badjson" else self._completion_text(body, json_mode)
        return {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": max(1, len(prompt_of(body)) // 4),
                "output_tokens": max(1, len(text) // 4),
            },
        }

    # -- fault selection ----------------------------------------------------------------------
    def _pick_fault(self, prompt: str) -> str | None:
        f = self.faults
        h = hashlib.sha1(prompt.encode()).hexdigest()
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
            prompt = prompt_of(body)
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
            fault = self._pick_fault(prompt)
            name, _, arg = (fault or "").partition(":")
            if name == "slow":
                await asyncio.sleep(float(arg or 5))
            elif self.latency:
                await asyncio.sleep(self.latency)
            outcome = fault or "ok"
            if name in ("429", "503"):
                headers = {"Retry-After": arg} if arg else None
                etype = "rate_limit_error" if name == "429" else "overloaded_error"
                return self._error(provider, int(name), etype, "slow down", headers)
            if name in ("500", "529"):
                etype = "api_error" if name == "500" else "overloaded_error"
                return self._error(provider, int(name), etype, "the fake server failed")
            if name in ("400", "403"):
                return self._error(
                    provider, int(name), "invalid_request_error", "the fake server refuses this request"
                )
            if name == "401":
                return self._error(provider, 401, "authentication_error", f"invalid api key {key!r}")
            if name == "context":
                msg = "This model's maximum context length is 8192 tokens; prompt is too long"
                return self._error(provider, 400, "context_length_exceeded", msg)
            if name == "drop":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            if name == "malformed":
                return web.Response(
                    text='{"id": "x", "choices": [{"message": ', content_type="application/json"
                )
            payload = (
                self.answer_anthropic(body, name)
                if provider == "anthropic"
                else self.answer_openai(body, name)
            )
            return web.json_response(payload, headers={"x-request-id": payload["id"]})
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
                            "prompt_sha": hashlib.sha1(prompt.encode()).hexdigest()[:12],
                        }
                    )

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "anthropic")

    async def _control_faults(self, request: web.Request) -> web.Response:
        self.set_faults(await request.json())
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
        """('ok', payload) | ('expired', None) | ('error', (status, etype, message)) for one batch line."""
        fault = self._pick_fault(prompt_of(body))
        name = (fault or "").partition(":")[0]
        with self._lock:
            self.outcomes[fault or "ok"] = self.outcomes.get(fault or "ok", 0) + 1
        if name == "expire":
            return "expired", None
        if name in ("", "badjson"):
            payload = (
                self.answer_anthropic(body, name)
                if provider == "anthropic"
                else self.answer_openai(body, name)
            )
            return "ok", payload
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
                status, etype, msg = val
                body = {"error": {"message": msg, "type": etype, "code": etype, "param": None}}
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
                    status, etype, msg = val
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
    args = ap.parse_args()
    srv = FakeLLMServer(latency=args.latency, port=args.port, record=not args.no_record)
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
