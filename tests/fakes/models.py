"""Model rules: which models each API serves and the parameters it refuses (`strict=True`, the default;
`--lenient` turns the model and parameter rules off).

Models. A registry modelled on the real lists (`MODELS`): a dated snapshot (`gpt-4o-mini-2024-07-18`,
`claude-3-5-haiku-20241022`) or `-latest` alias resolves to its family. An unknown model, or one of the other
provider, gets OpenAI's 404 `model_not_found` or Anthropic's 404 `not_found_error`; `models=` adds names.
Reasoning models (o-series, gpt-5 family) reject what OpenAI rejects, with OpenAI's error bodies: 400
`unsupported_parameter` for `max_tokens` ("Use 'max_completion_tokens' instead."), `stop`, `logprobs`,
`presence_penalty`/`frequency_penalty`; 400 `unsupported_value` for `temperature`/`top_p` other than 1 and for
a `reasoning_effort` the model lacks (gpt-5: minimal/low/medium/high; o-series: low/medium/high). Other
models reject `reasoning_effort`. Anthropic's newer models (Sonnet 4.5+, Haiku 4.5, Opus 4.1+) reject
`temperature` together with `top_p`; Anthropic rejects unknown top-level fields and a missing `max_tokens`.
Gemini's rules live with its API (`gemini_api.py`); its model families are registered here (2.5 Pro, Flash,
Flash-Lite; 3 Pro/Flash previews, 3.1 Pro preview, 3.1 Flash-Lite), with Google's 404 NOT_FOUND for the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Model:
    """What the stand-in enforces for one model family."""

    provider: str  # "openai" (chat completions), "anthropic" (messages) or "gemini" (generateContent)
    efforts: tuple[str, ...] = ()  # reasoning efforts accepted; empty: not a reasoning model
    default_effort: str = "medium"
    stop: bool = True  # accepts `stop`
    cache_min: int = 1024  # the shortest prefix the provider caches, in tokens
    one_sampler: bool = False  # Anthropic: `temperature` and `top_p` cannot both be given
    open_weights: bool = False  # an OpenAI-compatible server (vLLM, Ollama): no OpenAI parameter rules
    # Gemini (efforts above: the thinkingLevel values a level-based model takes, default_effort its default)
    budget: tuple[int, int] = (0, 0)  # the thinkingBudget range; (0, 0): no thinking at all
    can_off: bool = True  # thinkingBudget 0 turns thinking off
    thinks: bool = False  # thinks when the request says nothing (a dynamic budget or the default level)
    max_output: int = 65536  # the maxOutputTokens ceiling

    @property
    def reasoning(self) -> bool:
        return bool(self.efforts)


_CHAT = Model("openai")
_GPT5 = Model("openai", ("minimal", "low", "medium", "high"), stop=False)
_OSERIES = Model("openai", ("low", "medium", "high"), stop=False)
_OPEN = Model("openai", open_weights=True)
_CLAUDE = Model("anthropic")
_CLAUDE_NEW = Model("anthropic", one_sampler=True)
# Gemini (https://ai.google.dev/gemini-api/docs/thinking): 2.5 models think by budget (Pro 128-32768 and always,
# Flash 0-24576 and by default, Flash-Lite 512-24576 and only when asked); Gemini 3 models by level, and still
# take a budget. Implicit-cache minimums from https://ai.google.dev/gemini-api/docs/caching.
_LEVELS = ("minimal", "low", "medium", "high")
_GEMINI_PRO = Model("gemini", budget=(128, 32768), can_off=False, thinks=True, cache_min=2048)
_GEMINI_FLASH = Model("gemini", budget=(1, 24576), thinks=True, cache_min=2048)
_GEMINI_LITE = Model("gemini", budget=(512, 24576), cache_min=2048)

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
    "gemini-2.5-pro": _GEMINI_PRO,
    "gemini-2.5-flash": _GEMINI_FLASH,
    "gemini-2.5-flash-lite": _GEMINI_LITE,
    **dict.fromkeys(
        ["gemini-3-pro-preview"],
        Model(
            "gemini", ("low", "high"), "high", budget=(128, 32768), can_off=False, thinks=True, cache_min=4096
        ),
    ),
    "gemini-3.1-pro-preview": Model(
        "gemini",
        ("low", "medium", "high"),
        "high",
        budget=(128, 32768),
        can_off=False,
        thinks=True,
        cache_min=4096,
    ),
    "gemini-3-flash-preview": Model(
        "gemini", _LEVELS, "high", budget=(1, 24576), thinks=True, cache_min=4096
    ),
    "gemini-3.1-flash-lite": Model(
        "gemini", _LEVELS, "minimal", budget=(1, 24576), thinks=True, cache_min=4096
    ),
}
_SNAPSHOT = re.compile(r"-(?:latest|\d{4}-\d{2}-\d{2}|\d{8}|preview-\d{2}-\d{4}|\d{3})$")


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


class ModelRules:
    """Validation, what the real APIs refuse (a FakeLLMServer mixin: reads `models` and `strict`)."""

    models: dict[str, Model]
    strict: bool

    def resolve(self, provider: str, name: Any) -> Model | None:
        """The family of a model name (snapshots and -latest resolve) on this provider's API, else None."""
        if not isinstance(name, str) or not name:
            return None
        name = name.removeprefix("models/")  # Gemini's resource names
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
