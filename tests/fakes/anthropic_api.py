"""The Anthropic API: messages (POST /v1/messages) and Message Batches (POST /v1/messages/batches,
GET /v1/messages/batches[/{id}[/results]], POST .../{id}/cancel).

Prompt caching (explicit, https://platform.claude.com/docs/en/build-with-claude/prompt-caching):
  `cache_control: {"type": "ephemeral"[, "ttl": "5m"|"1h"]}` on system or message blocks (at most 4; a mark
  without `ttl` is 5 minutes). Marks of both lifetimes may be mixed, longer ones first: a 1-hour mark after a
  5-minute one is a 400. The prefix up to and including a marked block is written if it reaches the model's
  minimum (`Model.cache_min`: 1024 tokens by default; 2048 for Haiku 3/3.5 and Opus 4.7; 4096 for Haiku 4.5
  and Opus 4.5/4.6; 512 for Opus 5 and Fable; shorter ones are processed uncached, no error). A hit is the
  longest cached prefix ending at a block boundary within 20 blocks before a marker; it refreshes the
  entry's TTL. Usage: `input_tokens` (the uncached rest), `cache_creation_input_tokens` (every token
  written), `cache_read_input_tokens`, `cache_creation: {"ephemeral_5m_input_tokens",
  "ephemeral_1h_input_tokens"}` (the write by lifetime) and `output_tokens`; the bill keeps the write by
  lifetime too (`cache_write_5m_tokens`, `cache_write_1h_tokens`), since the two are priced apart (1.25x and
  2x input).

Structured outputs: `output_config.format` (or the deprecated `output_format` under its beta header) is
  checked by the model rules (`models.py`), and the answer is the JSON the schema asks for.

Batches: each request is answered with `answer_anthropic(body)`, so batch and online answers are identical,
and the same fault plan applies per line (see `faults`); the create call's `anthropic-beta` header applies to
every line. A batch ends after `batch_polls` retrieves (0: at
once); cancelling answers the first half of the lines and cancels the rest. `batch_submitted` counts, per
custom_id, how many times it was sent in a batch.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .accounting import Plan
from .models import ANTHROPIC_BETAS, Refusal, output_schema
from .tokens import CACHE_LOOKBACK, MSG_TOKENS, TTL, count_tokens, cut, prompt_of, utf8


def _iso(offset: float = 0.0) -> str:
    return datetime.fromtimestamp(time.time() + offset, timezone.utc).isoformat().replace("+00:00", "Z")


def betas_of(request: web.Request) -> frozenset[str]:
    """The `anthropic-beta` header's values (comma-separated, possibly repeated)."""
    return frozenset(
        v.strip() for h in request.headers.getall("anthropic-beta", []) for v in h.split(",") if v.strip()
    )


class AnthropicAPI:
    """The Anthropic endpoints (a FakeLLMServer mixin: uses the model rules, faults, accounting and HTTP
    helpers of the others, and the `msg_batches`, `_batch_state` stores)."""

    batch_polls: int
    batch_submitted: dict[str, int]
    msg_batches: dict[str, dict]
    _batch_state: dict[str, dict]

    def _anthropic_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self._anthropic),
            web.post("/v1/messages/batches", self._a_batch_create),
            web.get("/v1/messages/batches", self._a_batch_list),
            web.get("/v1/messages/batches/{id}", self._a_batch_get),
            web.get("/v1/messages/batches/{id}/results", self._a_batch_results),
            web.post("/v1/messages/batches/{id}/cancel", self._a_batch_cancel),
        ]

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "anthropic")

    # -- answers --------------------------------------------------------------------------------
    def plan_anthropic(self, body: dict, fault: str | None = None) -> Plan:
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
                h.update(utf8(f"\x1e{role}\x1f"))
            h.update(utf8(text) + b"\x1d")
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
                if marks and TTL[ttl] > marks[-1][1]:
                    msg = (
                        "cache_control: a block with ttl '1h' cannot come after a block with ttl '5m'; "
                        "cache entries with a longer TTL must appear before those with a shorter TTL"
                    )
                    raise Refusal(400, "invalid_request_error", msg)
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
        text = self._text_for(prompt, fault, output_schema(body) is not None or "JSON" in prompt[:2000])
        stop = "end_turn"
        if count_tokens(text) > body["max_tokens"]:
            text, stop = cut(text, body["max_tokens"]), "max_tokens"
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
        usage = {
            "input": total,
            "cached": read,
            "written": written,
            "written_1h": by_ttl[TTL["1h"]],
            "output": out,
            "reasoning": 0,
        }
        return Plan("anthropic", name, payload, usage, keys, body["max_tokens"], prompt)

    def answer_anthropic(self, body: dict, fault: str | None = None, mode: str = "online") -> dict:
        """A message for `body` (caches and bill updated). Raises Refusal where the API would."""
        return self._commit(self.plan_anthropic(body, fault), mode)

    # -- Message Batches ------------------------------------------------------------------------
    def _a_view(self, b: dict) -> dict:
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def _finish_anthropic(self, b: dict, cancelled: bool = False) -> None:
        st = self._batch_state[b["id"]]
        betas = ANTHROPIC_BETAS.set(st.get("betas", frozenset()))
        try:
            self._finish_lines(b, st["lines"], cancelled)
        finally:
            ANTHROPIC_BETAS.reset(betas)

    def _finish_lines(self, b: dict, reqs: list[dict], cancelled: bool) -> None:
        st = self._batch_state[b["id"]]
        results = []
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
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
        self._batch_state[bid] = {"lines": reqs, "polls": self.batch_polls, "betas": betas_of(request)}
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
