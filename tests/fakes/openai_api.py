"""The OpenAI API: chat completions (POST /v1/chat/completions), the Responses API (POST /v1/responses) and
the Batch API (POST /v1/files, GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches[/{id}],
POST /v1/batches/{id}/cancel).

Responses (https://platform.openai.com/docs/api-reference/responses): `instructions` and `input` (a string,
  or messages with string or `input_text` content) make the prompt, tokenized like a chat's (instructions as
  the system message); `max_output_tokens` bounds reasoning plus answer: run out while reasoning and the
  response is `status: "incomplete"`, `incomplete_details.reason: "max_output_tokens"`, with no message
  item; run out in the answer and the message is cut (also incomplete). A reasoning model's output starts
  with a `reasoning` item whose `summary` holds one `summary_text` when `reasoning.summary` was asked for
  (`detailed` longer than `concise`; none when no reasoning was done). Usage: `input_tokens`,
  `input_tokens_details.cached_tokens`, `output_tokens` (reasoning included),
  `output_tokens_details.reasoning_tokens`. Both APIs report the `service_tier` that served the request
  (see `models`), and a flex request may meet a busy flex tier (see `accounting`).

Prompt caching (automatic): a prompt of >= 1024 tokens is cached per model in 128-token steps of its token
  stream; a later prompt sharing a cached prefix reports the longest one (>= 1024, a multiple of 128) as
  `usage.prompt_tokens_details.cached_tokens`. Entries live `openai_cache_ttl` seconds (300) from last use.

Batches: each line is answered with `answer_openai(body)` (or, for `url: /v1/responses`, as POST /v1/responses
answers), so batch and online answers are identical, and the same fault plan applies per line (see `faults`).
The batch's `endpoint` must be /v1/chat/completions or /v1/responses, and every line's `url` the batch's
endpoint: otherwise the batch fails validation (status `failed`, its `errors` naming the line), as
https://platform.openai.com/docs/guides/batch describes. A batch ends after `batch_polls` retrieves (0: at once);
cancelling answers the first half of the lines and cancels the rest. `batch_submitted` counts, per
custom_id, how many times it was sent in a batch.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

from aiohttp import web

from .accounting import Plan
from .faults import default_label
from .models import Model, served_tier
from .tokens import CACHE_STEP, REPLY_TOKENS, count_tokens, cut, prompt_of, reasoning_tokens, text_of, utf8

#: The Batch API endpoints the stand-in serves, and the path of each one's online twin.
BATCH_ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/responses": "responses"}


class OpenAIAPI:
    """The OpenAI endpoints (a FakeLLMServer mixin: uses the model rules, faults, accounting and HTTP helpers
    of the others, and the `files`, `batches`, `_batch_state` stores)."""

    openai_cache_ttl: float
    batch_polls: int
    batch_submitted: dict[str, int]
    files: dict[str, bytes]
    batches: dict[str, dict]
    _batch_state: dict[str, dict]

    def _openai_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._openai),
            web.post("/v1/responses", self._responses),
            web.post("/v1/files", self._o_file_create),
            web.get("/v1/files/{id}/content", self._o_file_content),
            web.post("/v1/batches", self._o_batch_create),
            web.get("/v1/batches", self._o_batch_list),
            web.get("/v1/batches/{id}", self._o_batch_get),
            web.post("/v1/batches/{id}/cancel", self._o_batch_cancel),
        ]

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "openai")

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "openai", "responses")

    def _openai_prompt(self, name: str, model: Model, parts: list[str]) -> tuple[int, int, list]:
        """(prompt tokens, cached tokens, cache entries to write) of a prompt made of `parts`: automatic
        prefix caching, every 128-token prefix from the model's minimum up."""
        stream = utf8("".join(parts))
        prompt_tokens = (len(stream) + 3) // 4 + REPLY_TOKENS
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
        return prompt_tokens, cached, keys

    # -- answers --------------------------------------------------------------------------------
    def plan_openai(self, body: dict, fault: str | None = None, mode: str = "online") -> Plan:
        """Validate and work out one chat completion (nothing committed). Raises Refusal."""
        model = self._check_openai(body)
        name = str(body["model"])
        tier = served_tier(model, body.get("service_tier")) if mode == "online" else "default"
        parts = [
            json.dumps(body[k], sort_keys=True, ensure_ascii=False)
            for k in ("tools", "response_format")
            if body.get(k)
        ]
        parts += [f"<|{m['role']}|>{text_of(m.get('content'))}<|end|>" for m in body["messages"]]
        prompt_tokens, cached, keys = self._openai_prompt(name, model, parts)
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
                text = cut(text, budget - r)
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
            "service_tier": tier,
            "system_fingerprint": "fp_fake",
        }
        usage = {"input": prompt_tokens, "cached": cached, "written": 0, "output": ct, "reasoning": r}
        max_out = budget if budget is not None else ct
        return Plan("openai", name, payload, usage, keys, max_out, prompt, tier)

    def plan_responses(self, body: dict, fault: str | None = None, mode: str = "online") -> Plan:
        """Validate and work out one Responses API answer (nothing committed). Raises Refusal."""
        model = self._check_responses(body)
        name = str(body["model"])
        tier = served_tier(model, body.get("service_tier")) if mode == "online" else "default"
        inp = body["input"]
        messages = [{"role": "user", "content": inp}] if isinstance(inp, str) else list(inp)
        if isinstance(body.get("instructions"), str):
            messages = [{"role": "system", "content": body["instructions"]}, *messages]
        fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
        parts = [json.dumps(fmt, sort_keys=True, ensure_ascii=False)] if fmt else []
        parts += [f"<|{m['role']}|>{text_of(m.get('content'))}<|end|>" for m in messages]
        prompt_tokens, cached, keys = self._openai_prompt(name, model, parts)
        prompt = prompt_of({"messages": messages})
        json_mode = (isinstance(fmt, dict) and fmt.get("type") == "json_schema") or "JSON" in prompt[:2000]
        text = self._text_for(prompt, fault, json_mode)
        budget = body.get("max_output_tokens")
        reasoning = body.get("reasoning") or {}
        effort = reasoning.get("effort") or model.default_effort
        r = reasoning_tokens(prompt, effort) if model.reasoning else 0
        status, incomplete, answered = "completed", None, True
        if budget is not None and r + count_tokens(text) > budget:
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
            if budget <= r:  # the budget ran out while reasoning: no message at all
                r, text, answered = budget, "", False
            else:
                text = cut(text, budget - r)
        ct = r + count_tokens(text)
        output: list[dict] = []
        if model.reasoning:
            summary = []
            if reasoning.get("summary") and r:
                summary = [{"type": "summary_text", "text": self._summary_for(prompt, reasoning["summary"])}]
            output.append({"id": f"rs_{uuid.uuid4().hex[:12]}", "type": "reasoning", "summary": summary})
        if answered:
            output.append(
                {
                    "id": f"msg_{uuid.uuid4().hex[:12]}",
                    "type": "message",
                    "status": status,
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
                }
            )
        payload = {
            "id": f"resp_{uuid.uuid4().hex[:16]}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": budget,
            "model": name,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": effort if model.reasoning else None, "summary": reasoning.get("summary")},
            "service_tier": tier,
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": fmt or {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": {
                "input_tokens": prompt_tokens,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": ct,
                "output_tokens_details": {"reasoning_tokens": r},
                "total_tokens": prompt_tokens + ct,
            },
            "user": None,
            "metadata": body.get("metadata") or {},
        }
        usage = {"input": prompt_tokens, "cached": cached, "written": 0, "output": ct, "reasoning": r}
        max_out = budget if budget is not None else ct
        return Plan("openai", name, payload, usage, keys, max_out, prompt, tier)

    def _summary_for(self, prompt: str, detail: str) -> str:
        """A reasoning summary, deterministic per prompt; `detailed` says more than `concise`."""
        h = hashlib.sha1(utf8(prompt)).hexdigest()[:8]
        label = default_label(prompt)
        text = f"**Weighing request {h}**\n\nI compared each option with the question and settled on {label}."
        if detail == "detailed":
            text += (
                " The other options contradict a detail of the question, so they were ruled out one by one."
            )
        return text

    def answer_openai(self, body: dict, fault: str | None = None, mode: str = "online") -> dict:
        """A chat.completion for `body` (caches and bill updated). Raises Refusal where the API would."""
        return self._commit(self.plan_openai(body, fault), mode)

    # -- Batch API ------------------------------------------------------------------------------
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
            kind, val = self._line_outcome(line["body"], "openai", BATCH_ENDPOINTS[b["endpoint"]])
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
        endpoint = body.get("endpoint")
        if endpoint not in BATCH_ENDPOINTS:
            msg = (
                f"Invalid value: {json.dumps(endpoint)}. Supported values are: {', '.join(BATCH_ENDPOINTS)}."
            )
            return self._error("openai", 400, "invalid_request_error", msg)
        lines = [json.loads(x) for x in self.files[fid].decode().splitlines() if x.strip()]
        wrong = next((i for i, x in enumerate(lines, 1) if x.get("url") != endpoint), None)
        if wrong is None:
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
        if wrong is not None:  # fails validation: nothing runs
            b["status"], b["failed_at"] = "failed", int(time.time())
            b["request_counts"] = {"total": 0, "completed": 0, "failed": 0}
            msg = f"The URL provided for this request does not match the batch endpoint {endpoint}."
            b["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_url", "message": msg, "param": "url", "line": wrong}],
            }
        elif self.batch_polls <= 0:
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
