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
`temperature` together with `top_p`; from Opus 4.7 on (Opus 4.7/4.8/5/5.5, Sonnet 5/5.5, Haiku 5.5, Fable)
they reject `temperature`, `top_p` and `top_k` outright, 400 "`temperature` is deprecated for this model."
(https://platform.claude.com/docs/en/about-claude/models/migration-guide#migrating-to-claude-opus-4-7); their
adaptive thinking is not modelled (no thinking blocks or tokens). Anthropic rejects unknown top-level fields
and a missing `max_tokens`.

Structured outputs (Anthropic, https://platform.claude.com/docs/en/build-with-claude/structured-outputs):
`output_config: {"format": {"type": "json_schema", "schema": ...}}` is generally available, no beta header,
on the models that support it (`Model.structured`: Opus 4.5+, Sonnet 4.5+, Haiku 4.5+, the Claude 5 models);
any other model gets a 400. The deprecated top-level `output_format` still works during the transition, but
only with the beta header it was introduced under (`anthropic-beta: structured-outputs-2025-11-13`), and not
together with `output_config.format`. The schema must stay within the documented JSON Schema subset, else a
400 naming the offending keyword: no numerical constraints (`minimum`, `maximum`, `exclusiveMinimum`,
`exclusiveMaximum`, `multipleOf`), no string length constraints (`minLength`, `maxLength`), no array
constraints beyond `minItems` 0 or 1, `additionalProperties: false` on every object, no external or recursive
`$ref`, and only scalars in `enum`. The answer is then JSON matching the schema.

The Responses API (`_check_responses`, https://platform.openai.com/docs/api-reference/responses/create) has
its own field list: an unknown field (`seed`, `stop`, `messages`, `max_tokens`...) is 400
`unknown_parameter`; an unknown model is 400 `model_not_found` (param `model`, "The requested model '...'
does not exist."); `input` is required; `max_output_tokens` must be >= 16; reasoning models reject
`temperature` and `top_p` outright ("Unsupported parameter: 'temperature' is not supported with this
model.", code null), other models reject `reasoning.effort`; `reasoning.summary` is auto, concise or
detailed; a strict `text.format` json_schema must give every object `additionalProperties: false` and list
every property in `required` (400 `invalid_json_schema`, param `text.format.schema`).

Service tiers (both APIs): `service_tier` is auto, default, flex, priority or scale. A model serves flex
and priority only where OpenAI offers them (`Model.tiers`: flex on gpt-5, gpt-5-mini, gpt-5-nano, o3 and
o4-mini, https://platform.openai.com/docs/guides/flex-processing; priority on the models listed on
https://openai.com/api-priority-processing/); elsewhere, and for auto/default/scale, the request is served
at the default tier. The answer's `service_tier` says which tier served it, as the real answers do
(https://developers.openai.com/api/docs/guides/priority-processing).

Gemini's rules live with its API (`gemini_api.py`); its model families are registered here (2.5 Pro, Flash,
Flash-Lite; 3 Pro/Flash previews, 3.1 Pro preview, 3.1 Flash-Lite), with Google's 404 NOT_FOUND for the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

#: The `anthropic-beta` header values of the request being planned (set by the server around the planner:
#: online from the request's header, in a batch from the create call's).
ANTHROPIC_BETAS: ContextVar[frozenset[str]] = ContextVar("anthropic_betas", default=frozenset())
#: The beta under which `output_format` was introduced; still honoured for it during the transition.
STRUCTURED_BETA = "structured-outputs-2025-11-13"


@dataclass(frozen=True)
class Model:
    """What the stand-in enforces for one model family."""

    provider: str  # "openai" (chat completions), "anthropic" (messages) or "gemini" (generateContent)
    efforts: tuple[str, ...] = ()  # reasoning efforts accepted; empty: not a reasoning model
    default_effort: str = "medium"
    stop: bool = True  # accepts `stop`
    cache_min: int = 1024  # the shortest prefix the provider caches, in tokens
    one_sampler: bool = False  # Anthropic: `temperature` and `top_p` cannot both be given
    no_sampling: bool = False  # Anthropic Opus 4.7+ / Claude 5: no `temperature`, `top_p` or `top_k` at all
    structured: bool = False  # Anthropic: takes `output_config.format` (structured outputs)
    open_weights: bool = False  # an OpenAI-compatible server (vLLM, Ollama): no OpenAI parameter rules
    tiers: tuple[str, ...] = ()  # OpenAI service tiers besides default it serves (flex, priority)
    # Gemini (efforts above: the thinkingLevel values a level-based model takes, default_effort its default)
    budget: tuple[int, int] = (0, 0)  # the thinkingBudget range; (0, 0): no thinking at all
    can_off: bool = True  # thinkingBudget 0 turns thinking off
    thinks: bool = False  # thinks when the request says nothing (a dynamic budget or the default level)
    max_output: int = 65536  # the maxOutputTokens ceiling

    @property
    def reasoning(self) -> bool:
        return bool(self.efforts)


_CHAT = Model("openai")
_CHAT_PRIORITY = Model("openai", tiers=("priority",))
_GPT5 = Model("openai", ("minimal", "low", "medium", "high"), stop=False, tiers=("flex", "priority"))
_GPT5_NANO = Model("openai", ("minimal", "low", "medium", "high"), stop=False, tiers=("flex",))
_OSERIES = Model("openai", ("low", "medium", "high"), stop=False)
_OSERIES_FLEX = Model("openai", ("low", "medium", "high"), stop=False, tiers=("flex", "priority"))
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
            "gpt-5-chat-latest",
            "chatgpt-4o-latest",
        ],
        _CHAT,
    ),
    **dict.fromkeys(["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"], _CHAT_PRIORITY),
    **dict.fromkeys(["gpt-5", "gpt-5-mini"], _GPT5),
    "gpt-5-nano": _GPT5_NANO,
    **dict.fromkeys(["o1", "o3-mini"], _OSERIES),
    **dict.fromkeys(["o3", "o4-mini"], _OSERIES_FLEX),
    # names an OpenAI-compatible server serves in the tests (CompatTeacher)
    **dict.fromkeys(["llama", "llama3", "meta-llama/Llama-3.1-8B-Instruct"], _OPEN),
    **dict.fromkeys(["claude-3-haiku", "claude-3-5-haiku"], Model("anthropic", cache_min=2048)),
    **dict.fromkeys(
        ["claude-3-opus", "claude-3-5-sonnet", "claude-3-7-sonnet", "claude-sonnet-4", "claude-opus-4"],
        _CLAUDE,
    ),
    "claude-opus-4-1": _CLAUDE_NEW,
    **dict.fromkeys(
        ["claude-sonnet-4-5", "claude-sonnet-4-6"], Model("anthropic", one_sampler=True, structured=True)
    ),
    **dict.fromkeys(
        ["claude-haiku-4-5", "claude-opus-4-5", "claude-opus-4-6"],
        Model("anthropic", cache_min=4096, one_sampler=True, structured=True),
    ),
    # https://platform.claude.com/docs/en/build-with-claude/prompt-caching: 2048 on Opus 4.7, 512 on Opus 5 and
    # Fable 5, 1024 on Opus 4.8 and Sonnet 5 (and the default where none is published)
    "claude-opus-4-7": Model("anthropic", cache_min=2048, no_sampling=True, structured=True),
    **dict.fromkeys(
        ["claude-opus-4-8", "claude-sonnet-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5"],
        Model("anthropic", no_sampling=True, structured=True),
    ),
    **dict.fromkeys(
        ["claude-opus-5", "claude-fable-5", "claude-fable-5-1", "claude-fable-5-2"],
        Model("anthropic", cache_min=512, no_sampling=True, structured=True),
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
#: The Responses API's request fields (https://platform.openai.com/docs/api-reference/responses/create).
_RESPONSES_FIELDS = frozenset(
    "model input instructions max_output_tokens max_tool_calls temperature top_p top_logprobs reasoning text "
    "tools tool_choice parallel_tool_calls previous_response_id conversation include metadata store stream "
    "stream_options background truncation service_tier user safety_identifier prompt prompt_cache_key "
    "prompt_cache_retention".split()
)
SERVICE_TIERS = ("auto", "default", "flex", "priority", "scale")
REASONING_SUMMARIES = ("auto", "concise", "detailed")
#: The Responses API's smallest `max_output_tokens`.
MIN_OUTPUT_TOKENS = 16


def served_tier(model: Model, asked: Any) -> str:
    """The tier that serves a request asking for `asked`: flex or priority where the model offers it,
    otherwise the default tier (auto and scale included)."""
    return asked if asked in ("flex", "priority") and asked in model.tiers else "default"


def _invalid_value(p: str, v: Any, allowed: Iterable[str]) -> Refusal:
    msg = f"Invalid value: {json.dumps(v)}. Supported values are: {_quote_list(allowed)}."
    return Refusal(400, "invalid_request_error", msg, p, "invalid_value")


def _strict_schema_error(schema: Any, path: tuple[str, ...] = ()) -> str | None:
    """Why `schema` is not a strict-mode schema (every object closed, every property required), else None."""
    if not isinstance(schema, dict):
        return f"In context={path}, schema must be a JSON Schema object."
    if schema.get("type") == "object":
        if schema.get("additionalProperties") is not False:
            return f"In context={path}, 'additionalProperties' is required to be supplied and to be false."
        props = schema.get("properties") or {}
        missing = [k for k in props if k not in (schema.get("required") or [])]
        if missing:
            return f"In context={path}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing[0]}'."
        for k, sub in props.items():
            why = _strict_schema_error(sub, (*path, "properties", k))
            if why:
                return why
    items = schema.get("items")
    if isinstance(items, dict):
        return _strict_schema_error(items, (*path, "items"))
    return None


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


#: The most output tokens a model family writes; a larger `max_tokens`/`max_completion_tokens` is refused with
#: the provider's 400 (model pages: https://platform.openai.com/docs/models/gpt-4o-mini "16,384 max output
#: tokens", gpt-4.1 32,768, gpt-5 128,000, o3/o4-mini 100,000; https://docs.anthropic.com/en/docs/about-claude/models/overview
#: Sonnet 4/4.5 and Haiku 4.5 64K, Opus 4/4.1 32K, Claude 3.5 Haiku 8,192). Families not listed are not checked.
MAX_OUTPUT = {
    "gpt-4o-mini": 16_384, "gpt-4o": 16_384, "gpt-4.1": 32_768, "gpt-4.1-mini": 32_768, "gpt-4.1-nano": 32_768,
    "gpt-5": 128_000, "gpt-5-mini": 128_000, "gpt-5-nano": 128_000, "o3": 100_000, "o4-mini": 100_000,
    "claude-sonnet-4-5": 64_000, "claude-sonnet-4": 64_000, "claude-haiku-4-5": 64_000,
    "claude-opus-4": 32_000, "claude-opus-4-1": 32_000, "claude-3-5-haiku": 8_192,
}  # fmt: skip


def max_output(name: str) -> int | None:
    return MAX_OUTPUT.get(name) or MAX_OUTPUT.get(_SNAPSHOT.sub("", name))


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
        limit, asked = max_output(name), body.get("max_completion_tokens") or body.get("max_tokens")
        if limit and isinstance(asked, int) and asked > limit:
            msg = (
                f"max_tokens is too large: {asked}. This model supports at most {limit} completion tokens, "
                f"whereas you provided {asked}."
            )
            raise Refusal(400, "invalid_request_error", msg, "max_tokens", "invalid_value")
        extra = next((k for k in body if k not in _OPENAI_FIELDS), None)
        if extra is not None:
            msg = f"Unrecognized request argument supplied: {extra}"
            raise Refusal(400, "invalid_request_error", msg, None, "")
        self._check_tier(body)
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

    def _check_tier(self, body: dict) -> None:
        tier = body.get("service_tier")
        if tier is not None and tier not in SERVICE_TIERS:
            raise _invalid_value("service_tier", tier, SERVICE_TIERS)

    def _check_responses(self, body: dict) -> Model:
        """What POST /v1/responses refuses (see the module docstring)."""
        name = body.get("model")
        if not name:
            raise Refusal(
                400,
                "invalid_request_error",
                "Missing required parameter: 'model'.",
                "model",
                "missing_required_parameter",
            )
        inp = body.get("input")
        if not (isinstance(inp, str) and inp) and not (isinstance(inp, list) and inp):
            raise Refusal(
                400,
                "invalid_request_error",
                "Missing required parameter: 'input'.",
                "input",
                "missing_required_parameter",
            )
        for i, m in enumerate(inp if isinstance(inp, list) else []):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system", "developer"):
                msg = f"Invalid value for 'input[{i}].role': expected one of 'user', 'assistant', 'system', 'developer'."
                raise Refusal(400, "invalid_request_error", msg, f"input[{i}].role", "invalid_value")
        mot = body.get("max_output_tokens")
        if mot is not None and (not isinstance(mot, int) or isinstance(mot, bool) or mot < MIN_OUTPUT_TOKENS):
            msg = (
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                f"{MIN_OUTPUT_TOKENS}, but got {mot!r} instead."
            )
            raise Refusal(400, "invalid_request_error", msg, "max_output_tokens", "integer_below_min_value")
        model = self.resolve("openai", name)
        if not self.strict:
            return model or Model("openai")
        if model is None:
            msg = f"The requested model '{name}' does not exist."
            raise Refusal(400, "invalid_request_error", msg, "model", "model_not_found")
        if model.open_weights:
            return model
        extra = next((k for k in body if k not in _RESPONSES_FIELDS), None)
        if extra is not None:
            msg = f"Unknown parameter: '{extra}'."
            raise Refusal(400, "invalid_request_error", msg, extra, "unknown_parameter")
        self._check_tier(body)
        reasoning = body.get("reasoning") or {}
        if not isinstance(reasoning, dict):
            msg = "Invalid type for 'reasoning': expected an object."
            raise Refusal(400, "invalid_request_error", msg, "reasoning", "invalid_type")
        summary = reasoning.get("summary")
        if summary is not None and summary not in REASONING_SUMMARIES:
            raise _invalid_value("reasoning.summary", summary, REASONING_SUMMARIES)
        effort = reasoning.get("effort")
        if model.reasoning:
            for p in ("temperature", "top_p"):
                if body.get(p) is not None:
                    msg = f"Unsupported parameter: '{p}' is not supported with this model."
                    raise Refusal(400, "invalid_request_error", msg, p, "")
            if effort is not None and effort not in model.efforts:
                supported = f"Supported values are: {_quote_list(model.efforts)}."
                raise _unsupported_value("reasoning.effort", effort, supported)
        elif effort is not None or summary is not None:
            raise _unsupported("reasoning.effort" if effort is not None else "reasoning.summary")
        fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            fname = fmt.get("name")
            if not isinstance(fname, str) or not fname:
                raise Refusal(
                    400,
                    "invalid_request_error",
                    "Missing required parameter: 'text.format.name'.",
                    "text.format.name",
                    "missing_required_parameter",
                )
            why = _strict_schema_error(fmt.get("schema")) if fmt.get("strict") else None
            if why is None and not isinstance(fmt.get("schema"), dict):
                why = "In context=(), schema must be a JSON Schema object."
            if why:
                msg = f"Invalid schema for response_format '{fname}': {why}"
                raise Refusal(400, "invalid_request_error", msg, "text.format.schema", "invalid_json_schema")
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
        limit = max_output(str(name))
        if self.strict and limit and mt > limit:
            raise bad(
                f"max_tokens: {mt} > {limit}, which is the maximum allowed number of output tokens for {name}"
            )
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
        if model.no_sampling:
            for p in ("temperature", "top_p", "top_k"):
                if body.get(p) is not None:
                    raise bad(f"`{p}` is deprecated for this model.")
        if t is not None and not (isinstance(t, (int, float)) and 0 <= t <= 1):
            raise bad("temperature: Input should be less than or equal to 1")
        if model.one_sampler and t is not None and body.get("top_p") is not None:
            raise bad(
                "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
            )
        _check_output_format(body, model, str(name))
        return model


def output_schema(body: dict) -> dict | None:
    """The JSON schema an Anthropic request asks the answer to follow (structured outputs), else None."""
    cfg = body.get("output_config")
    fmt = cfg.get("format") if isinstance(cfg, dict) else None
    if fmt is None:
        fmt = body.get("output_format")
    return fmt.get("schema") if isinstance(fmt, dict) else None


def _check_output_format(body: dict, model: Model, name: str) -> None:
    """Structured outputs as the docs describe them (see the module docstring)."""

    def bad(msg: str) -> Refusal:
        return Refusal(400, "invalid_request_error", msg)

    cfg = body.get("output_config")
    if cfg is not None and not isinstance(cfg, dict):
        raise bad("output_config: Input should be a valid dictionary")
    fmt = (cfg or {}).get("format")
    legacy = body.get("output_format")
    if legacy is not None:
        if STRUCTURED_BETA not in ANTHROPIC_BETAS.get():
            raise bad("output_format: Extra inputs are not permitted")
        if fmt is not None:
            raise bad("output_format: cannot be combined with output_config.format; use output_config.format")
        fmt, where = legacy, "output_format"
    else:
        where = "output_config.format"
    if fmt is None:
        return
    if not model.structured:
        raise bad(f"{where}: structured outputs are not supported for model {name!r}")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise bad(f"{where}.type: Input should be 'json_schema'")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise bad(f"{where}.schema: Field required")
    problem = _schema_problem(schema, schema, "schema", set())
    if problem:
        raise bad(f"{where}.{problem}")


_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_LENGTHS = ("minLength", "maxLength", "maxItems", "maxProperties", "minProperties", "uniqueItems")


def _schema_problem(node: Any, root: dict, path: str, refs: set[str]) -> str | None:
    """Where `node` leaves the JSON Schema subset structured outputs accept, and why; None when it does not."""
    if isinstance(node, list):
        for i, x in enumerate(node):
            p = _schema_problem(x, root, f"{path}.{i}", refs)
            if p:
                return p
        return None
    if not isinstance(node, dict):
        return None
    for k in _NUMERIC:
        if k in node:
            return f"{path}: numerical constraints are not supported ('{k}')"
    for k in _LENGTHS:
        if k in node:
            return f"{path}: '{k}' is not supported"
    if node.get("minItems", 0) not in (0, 1):
        return f"{path}: 'minItems' only supports the values 0 and 1"
    if "enum" in node and any(isinstance(v, (dict, list)) for v in node["enum"]):
        return f"{path}.enum: only strings, numbers, booleans and null are supported"
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties") is not False:
            return f"{path}: 'additionalProperties' must be explicitly set to false for objects"
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#"):
            return f"{path}.$ref: external references are not supported"
        if ref in refs:
            return f"{path}.$ref: recursive schemas are not supported"
        target: Any = root
        for part in ref.lstrip("#/").split("/") if ref != "#" else []:
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            return f"{path}.$ref: cannot resolve {ref!r}"
        p = _schema_problem(target, root, path, refs | {ref})
        if p:
            return p
    props = node.get("properties")
    for prop, sub in (props if isinstance(props, dict) else {}).items():
        p = _schema_problem(sub, root, f"{path}.properties.{prop}", refs)
        if p:
            return p
    for k in ("items", "anyOf", "allOf"):
        if k in node:
            p = _schema_problem(node[k], root, f"{path}.{k}", refs)
            if p:
                return p
    return None
