"""Faults and the answer text.

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
  served:NAME    200 whose body says model NAME answered (a provider serving another model than the one asked;
                 Gemini's `modelVersion`)
  filtered       200 stopped by the provider's content filter (OpenAI finish_reason content_filter, Responses
                 API incomplete_details.reason content_filter, Anthropic stop_reason refusal), its text cut
                 short; Gemini finishReason SAFETY with no content
They are applied by three rules, checked in order:
  by_match {substring: [fault, ...]}   requests whose prompt contains substring get the faults in turn, one
                                       per attempt (then normal answers): deterministic per row
  queue [fault, ...]                   the next requests, whatever they are, in arrival order
  rate R with kinds [..]               a stable R fraction of distinct prompts fails on its first attempt
                                       with one of kinds (chosen by the prompt's hash)
A request the real API would refuse (unknown model, bad parameter, over a rate limit) is refused before any
fault is drawn. The default answer names a plausible label for the last question; a prompt that says
"The correct answer is X" gets X (`FaultPlan.answers` overrides the text).

In batches the same plan applies per line (one attempt per submission): `expire` makes the line expire;
400/401/403/context/429/5xx become per-line errors; badjson as online; a line the API would refuse (unknown
model, bad parameter) becomes that error.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .models import Refusal
from .tokens import utf8

#: Faults that answer 200 with a body that says something unusual (see `alter`).
BODY_FAULTS = frozenset(["served", "filtered"])


def alter(payload: dict, provider: str, fault: str) -> dict:
    """The answer as a body fault (`served:NAME`, `filtered`) changes it; other faults leave it as it is.
    Chat Completions, Responses API, Anthropic and Gemini bodies alike (told apart by their shape)."""
    name, _, arg = fault.partition(":")
    gemini = "candidates" in payload
    if name == "served":
        payload["modelVersion" if gemini else "model"] = arg
    elif name == "filtered" and gemini:  # a SAFETY block: the candidate has no content parts
        payload["candidates"][0]["finishReason"] = "SAFETY"
        payload["candidates"][0]["content"] = {"role": "model"}
    elif name == "filtered" and payload.get("object") == "response":  # the Responses API
        payload["status"] = "incomplete"
        payload["incomplete_details"] = {"reason": "content_filter"}
        for item in payload.get("output") or []:
            if item.get("type") == "message":
                item["status"] = "incomplete"
                item["content"] = [{"type": "output_text", "text": "The", "annotations": [], "logprobs": []}]
    elif name == "filtered" and provider == "anthropic":
        payload["stop_reason"] = "refusal"
        payload["content"] = [{"type": "text", "text": "I"}]
    elif name == "filtered":
        choice = payload["choices"][0]
        choice["finish_reason"] = "content_filter"
        choice["message"]["content"] = "The"
    return payload


@dataclass
class FaultPlan:
    by_match: dict[str, list[str]] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    rate: float = 0.0
    kinds: list[str] = field(default_factory=lambda: ["500"])
    answers: dict[str, str] = field(default_factory=dict)  # substring -> completion text override
    require_key: str | None = None  # answer 401 unless this key is sent


#: Faults that answer with an error (billed as failed).
ERROR_FAULTS = frozenset(
    ["429", "503", "500", "529", "400", "401", "403", "context", "drop", "malformed", "noquota"]
)

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


class Faults:
    """Fault selection, answer text and batch-line outcomes (a FakeLLMServer mixin: reads and writes
    `faults`, `_attempts` and `outcomes` under `_lock`)."""

    faults: FaultPlan
    outcomes: dict[str, int]
    _attempts: dict[str, int]
    _lock: threading.Lock

    def set_faults(self, plan: FaultPlan | dict) -> None:
        with self._lock:
            self.faults = plan if isinstance(plan, FaultPlan) else FaultPlan(**plan)
            self._attempts.clear()

    # -- fault selection ----------------------------------------------------------------------
    def _pick_fault(self, prompt: str) -> str | None:
        f = self.faults
        h = hashlib.sha1(utf8(prompt)).hexdigest()
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

    # -- answer text (shared by online and batch endpoints) ----------------------------------------
    def _completion_text(self, prompt: str, json_mode: bool, cut_emoji: bool = False) -> str:
        for sub, text in self.faults.answers.items():
            if sub in prompt:
                return text + (" \ud83d" if cut_emoji else "")
        h = hashlib.sha1(utf8(prompt)).hexdigest()[:8]
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

    def _line_outcome(self, body: dict, provider: str, api: str = "chat") -> tuple[str, Any]:
        """('ok', payload) | ('expired', None) | ('error', (status, etype, message[, code, param])) for one
        batch line (`api`: an OpenAI line's chat or responses); a line the API would refuse fails as it would
        online, before any fault is drawn. Batch lines are served at the batch price, not a service tier."""
        if provider == "anthropic":
            planner: Any = self.plan_anthropic
        else:
            planner = partial(self.plan_responses if api == "responses" else self.plan_openai, mode="batch")
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
        if name in BODY_FAULTS:
            return "ok", alter(self._commit(plan, "batch"), provider, fault or "")
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
