"""The Gemini API (generativelanguage.googleapis.com) as the google-genai SDK calls it, under `/gemini`
(`FakeLLMServer.gemini_url`; the OpenAI stand-in owns `/v1/batches` and `/v1/files` at the root). Both API
versions are served: the SDK defaults to v1, Google's reference uses v1beta.

  POST /{v}/models/{model}:generateContent        https://ai.google.dev/api/generate-content
  POST /{v}/models/{model}:batchGenerateContent   https://ai.google.dev/api/batch-api
  GET  /{v}/batches[?pageSize&pageToken], GET /{v}/batches/{id}, POST /{v}/batches/{id}:cancel,
  DELETE /{v}/batches/{id}                         (a batch is a long-running operation: name, metadata, done)
  POST /upload/{v}/files                           resumable upload: `start` answers an x-goog-upload-url,
                                                   where `upload, finalize` sends the bytes
  GET  /{v}/files/{id}, GET /{v}/files/{id}:download?alt=media   https://ai.google.dev/api/files

Requests. Field names are accepted in both spellings, camelCase and the proto's snake_case, as every proto3 JSON
parser does (https://protobuf.dev/programming-guides/json/; the SDK itself sends `thinkingConfig` as
`{"thinking_budget": ...}`). An unknown field is a 400 INVALID_ARGUMENT `Unknown name "x" at '...': Cannot find
field.`; so is a `responseSchema` (the OpenAPI-subset Schema) holding a key it lacks, such as
`additionalProperties`, while `responseJsonSchema` takes JSON Schema (checked for structure: types, properties,
items, required); either needs `responseMimeType: application/json`, and not both may be set
(https://ai.google.dev/gemini-api/docs/structured-output). Also refused, as 400: empty `contents`, a role other
than user/model, temperature outside [0, 2], topP outside [0, 1], maxOutputTokens outside [1, 65536], more
than 5 stop sequences, a thinkingBudget outside the model's range (2.5 Pro: 128-32768 and never 0; Flash:
0-24576; Flash-Lite: 0 or 512-24576; -1 is dynamic), a thinkingLevel the model lacks or on a 2.5 model, and
thinkingBudget with thinkingLevel (https://ai.google.dev/gemini-api/docs/thinking). An unknown model is 404
NOT_FOUND. No key is 403 PERMISSION_DENIED; a wrong one (`FaultPlan.require_key`) a 400 whose ErrorInfo reason
is API_KEY_INVALID. Errors are `{"error": {"code", "message", "status", "details"}}`
(https://ai.google.dev/gemini-api/docs/troubleshooting, https://cloud.google.com/apis/design/errors).

Answers. promptTokenCount = the system instruction's and each content's tokens, 4 per content (and for the
system instruction), plus the response schema's (it counts toward the input limit). Implicit caching, on for
2.5 and later models (https://ai.google.dev/gemini-api/docs/caching): a prompt of at least the model's minimum
(2,048 tokens for 2.5 models, 4,096 for Gemini 3) is cached per model in 128-token steps of the system
instruction + contents stream; a later prompt sharing a cached prefix reports the longest one as
`cachedContentTokenCount` (entries live `gemini_cache_ttl` seconds from last use). Thinking
(`thoughtsTokenCount`, deterministic per prompt): a dynamic budget or a level thinks like the OpenAI stand-in's
efforts (dynamic as medium); an explicit budget B thinks B/4-B/2 tokens; `includeThoughts` adds a thought
summary part. Thoughts count against maxOutputTokens (default 65536): out of budget while thinking gives no
content and finishReason MAX_TOKENS, during the answer a cut answer. Zero counts are left out, as proto3 JSON
leaves them. The bill: input = promptTokenCount, cached = cachedContentTokenCount, output = candidates +
thoughts (thoughts are billed as output, https://ai.google.dev/gemini-api/docs/pricing), reasoning = thoughts.

Faults (`faults.py`): 429[:S] is RESOURCE_EXHAUSTED with QuotaFailure, Help and, given S, a RetryInfo
`retryDelay: "Ss"`; no header says anything (Gemini sends no rate-limit headers,
https://ai.google.dev/gemini-api/docs/rate-limits). 500 INTERNAL, 503/529 UNAVAILABLE ("The model is
overloaded"), 400, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, context (400 "The input token count ... exceeds
the maximum"), noquota (429 "Your prepayment credits are depleted"), drop, malformed, slow, badjson, surrogate,
lieusage as for the others; served:NAME sets `modelVersion`, filtered ends the candidate with finishReason SAFETY
and no content. Over an advertised limit (`rpm`,
`tpm` = input tokens per minute, per model) the 429 carries the wait as RetryInfo (whole seconds, at least 1).

Batches (https://ai.google.dev/gemini-api/docs/batch-api): inline requests (`inputConfig.requests.requests`,
each `{request, metadata}`; a create body over 20 MB is refused) or a JSONL file of `{key, request}` lines
uploaded through the Files API (`inputConfig.fileName`); `displayName` is required. States BATCH_STATE_PENDING,
RUNNING, then SUCCEEDED after `batch_polls` retrieves (0: at once), or CANCELLED (cancel: no output), or EXPIRED
when any line draws the `expire` fault (a whole batch expires; no output, nothing billed). Each line is
answered as online (the same fault plan, one draw per submission); output: `inlinedResponses` in request order
with each request's metadata, or a generated `responsesFile` of `{key, response | error}` lines, an error being
a google.rpc.Status (`code` a google.rpc.Code). `batch_submitted` counts, per key, the submissions.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .accounting import Plan
from .faults import BODY_FAULTS, ERROR_FAULTS, alter
from .models import Model, Refusal
from .tokens import CACHE_STEP, MSG_TOKENS, REASONING, count_tokens, cut, utf8

#: HTTP status -> (google.rpc.Code name, its number), https://cloud.google.com/apis/design/errors
STATUS = {
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    403: ("PERMISSION_DENIED", 7),
    404: ("NOT_FOUND", 5),
    409: ("ABORTED", 10),
    429: ("RESOURCE_EXHAUSTED", 8),
    499: ("CANCELLED", 1),
    500: ("INTERNAL", 13),
    503: ("UNAVAILABLE", 14),
    504: ("DEADLINE_EXCEEDED", 4),
}
_RPC = "type.googleapis.com/google.rpc."
_INLINE_LIMIT = 20 * 1000 * 1000  # "keep the total request size under 20MB"
_MAX_STOPS = 5
_TOP = {
    "model",
    "contents",
    "systemInstruction",
    "generationConfig",
    "safetySettings",
    "tools",
    "toolConfig",
    "cachedContent",
    "serviceTier",
    "store",
    "labels",
}
_GEN = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
}
_THINK = {"thinkingBudget", "thinkingLevel", "includeThoughts"}
#: The keys of the OpenAPI-subset Schema `responseSchema` takes (https://ai.google.dev/api/caching#Schema).
_SCHEMA = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
_SCHEMA_TYPES = {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_JSON_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_CAMEL = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )


def _bad(message: str, field: str | None = None) -> Refusal:
    return Refusal(400, "INVALID_ARGUMENT", message, field)


def _fields(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    """`obj` with its keys in camelCase, refusing what the message lacks."""
    if not isinstance(obj, dict):
        raise _bad(f"Invalid value at '{where}': expected an object", where)
    out = {}
    for k, v in obj.items():
        c = camel(k)
        if c not in allowed:
            raise _bad(
                f"Invalid JSON payload received. Unknown name \"{k}\" at '{where}': Cannot find field.", where
            )
        out[c] = v
    return out


def _text(content: Any, where: str) -> str:
    if not isinstance(content, dict):
        raise _bad(f"Invalid value at '{where}'", where)
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _bad(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.", where)
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def _check_api_schema(s: Any, where: str) -> None:
    """responseSchema: the OpenAPI subset; a key it lacks is an unknown field."""
    if not isinstance(s, dict):
        raise _bad(f"Invalid value at '{where}'", where)
    for k, v in s.items():
        c = camel(k)
        if c not in _SCHEMA:
            raise _bad(
                f"Invalid JSON payload received. Unknown name \"{k}\" at '{where}': Cannot find field.", where
            )
        if c == "type" and str(v).upper() not in _SCHEMA_TYPES:
            raise _bad(
                f"Invalid value at '{where}.type' ({v}), expected one of {sorted(_SCHEMA_TYPES)}", where
            )
        if c == "properties":
            for name, sub in (v or {}).items():
                _check_api_schema(sub, f"{where}.properties[{name}].value")
        if c == "items":
            _check_api_schema(v, f"{where}.items")


def _check_json_schema(s: Any, where: str) -> None:
    """responseJsonSchema: JSON Schema, checked for structure."""
    if isinstance(s, bool):
        return
    if not isinstance(s, dict):
        raise _bad(f"{where}: a JSON Schema must be an object or a boolean", where)
    t = s.get("type")
    types = t if isinstance(t, list) else [t] if t is not None else []
    for x in types:
        if x not in _JSON_TYPES:
            raise _bad(f"{where}.type: {x!r} is not a JSON Schema type", where)
    props = s.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise _bad(f"{where}.properties must be an object", where)
        for name, sub in props.items():
            _check_json_schema(sub, f"{where}.properties.{name}")
    req = s.get("required")
    if req is not None and (not isinstance(req, list) or not all(isinstance(r, str) for r in req)):
        raise _bad(f"{where}.required must be a list of property names", where)
    for k in ("items", "additionalProperties"):
        if s.get(k) is not None:
            _check_json_schema(s[k], f"{where}.{k}")
    for k in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(s.get(k) or []):
            _check_json_schema(sub, f"{where}.{k}[{i}]")


def _number(cfg: dict, key: str, lo: float, hi: float) -> None:
    v = cfg.get(key)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        field = f"generation_config.{_snake(key)}"
        raise _bad(f"* GenerateContentRequest.{field}: {key} must be in the range [{lo:g}, {hi:g}]", field)


def _tokens_for(prompt: str, lo: int, hi: int, salt: str) -> int:
    h = int(hashlib.sha1(utf8(prompt + "\x00" + salt)).hexdigest()[:8], 16)
    return lo + h % (hi - lo + 1) if hi > lo else lo


class GeminiAPI:
    """The Gemini endpoints (a FakeLLMServer mixin: uses the model rules, faults, accounting and HTTP helpers
    of the others, and the `g_batches`, `g_files` stores)."""

    gemini_cache_ttl: float
    batch_polls: int
    batch_submitted: dict[str, int]
    g_batches: dict[str, dict]
    g_files: dict[str, dict]
    g_uploads: dict[str, dict]

    @property
    def gemini_url(self) -> str:
        return f"{self.url}/gemini"

    def _gemini_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/gemini/{version}/models/{call}", self._g_models),
            web.get("/gemini/{version}/batches", self._g_batch_list),
            web.get("/gemini/{version}/batches/{call}", self._g_batch_get),
            web.post("/gemini/{version}/batches/{call}", self._g_batch_post),
            web.delete("/gemini/{version}/batches/{call}", self._g_batch_delete),
            web.post("/gemini/upload/{version}/files", self._g_upload),
            web.get("/gemini/{version}/files/{call}", self._g_file_get),
        ]

    # -- HTTP helpers ---------------------------------------------------------------------------------
    @staticmethod
    def gemini_error(
        status: int, message: str, details: list[dict] | None = None, headers: dict | None = None
    ) -> web.Response:
        err: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": STATUS.get(status, ("UNKNOWN", 2))[0],
        }
        if details:
            err["details"] = details
        return web.json_response({"error": err}, status=status, headers=headers)

    def gemini_refusal(self, r: Refusal) -> web.Response:
        details = None
        if r.param:
            details = [
                {
                    "@type": _RPC + "BadRequest",
                    "fieldViolations": [{"field": r.param, "description": r.message}],
                }
            ]
        return self.gemini_error(r.status, r.message, details)

    @staticmethod
    def quota_exceeded(model: str, retry: float | None, metric: str = "requests") -> web.Response:
        """429 RESOURCE_EXHAUSTED as the API sends it: QuotaFailure, Help and (when it knows) RetryInfo."""
        quota = (
            "InputTokensPerModelPerMinute" if metric == "tokens" else "RequestsPerMinutePerProjectPerModel"
        )
        details: list[dict] = [
            {
                "@type": _RPC + "QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": f"generativelanguage.googleapis.com/generate_content_paid_tier_{metric}",
                        "quotaId": f"GenerateContentPaidTier{quota}",
                        "quotaDimensions": {"location": "global", "model": model},
                    }
                ],
            },
            {
                "@type": _RPC + "Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
        ]
        msg = (
            "You exceeded your current quota, please check your plan and billing details. For more information "
            "on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
        )
        if retry is not None:
            msg += f" Please retry in {retry:g}s."
            details.append({"@type": _RPC + "RetryInfo", "retryDelay": f"{retry:g}s"})
        return GeminiAPI.gemini_error(429, msg, details)

    def gemini_fault(self, name: str, arg: str, model: str) -> web.Response:
        """The answer to an error fault drawn for a generateContent call."""
        if name == "429":
            return self.quota_exceeded(model, float(arg) if arg else None)
        if name == "noquota":  # AI Studio prepaid billing with no credit left: also a 429 RESOURCE_EXHAUSTED
            msg = (
                "Your prepayment credits are depleted. Please go to AI Studio at https://ai.studio/projects to "
                "manage your project and billing."
            )
            return self.gemini_error(429, msg)
        if name in ("503", "529"):
            return self.gemini_error(503, "The model is overloaded. Please try again later.")
        if name == "500":
            return self.gemini_error(
                500,
                "An internal error has occurred. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting",
            )
        if name == "401":
            msg = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."
            return self.gemini_error(401, msg)
        if name == "403":
            return self.gemini_error(403, "The caller does not have permission")
        if name == "context":
            return self.gemini_error(
                400, "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
            )
        return self.gemini_error(400, "Request contains an invalid argument.")

    @staticmethod
    def bad_key() -> web.Response:
        details = [
            {
                "@type": _RPC + "ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
        return GeminiAPI.gemini_error(400, "API key not valid. Please pass a valid API key.", details)

    @staticmethod
    def no_key() -> web.Response:
        msg = (
            "Method doesn't allow unregistered callers (callers without established identity). Please use API "
            "Key or other form of API consumer identity to call this API."
        )
        return GeminiAPI.gemini_error(403, msg)

    def _g_key(self, request: web.Request) -> web.Response | None:
        """403 without a key, 400 API_KEY_INVALID with the wrong one (when the fault plan requires one)."""
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return self.no_key()
        if self.faults.require_key is not None and key != self.faults.require_key:
            return self.bad_key()
        return None

    # -- generateContent ------------------------------------------------------------------------------
    async def _g_models(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        version = request.match_info["version"]
        if method == "generateContent":
            return await self._handle(request, "gemini", extra={"model": model, "_version": version})
        if method == "batchGenerateContent":
            return await self._g_batch_create(request, model, version)
        return self.gemini_error(404, f"Method {method or '(none)'} not found.")

    def _g_model(self, name: Any, version: str, method: str = "generateContent") -> Model:
        model = self.resolve("gemini", name)
        if model is not None:
            return model
        if not self.strict:
            return Model("gemini", budget=(1, 24576), thinks=True, cache_min=2048)
        raise Refusal(
            404,
            "NOT_FOUND",
            f"models/{str(name).removeprefix('models/')} is not found for API version {version}, or is not "
            f"supported for {method}. Call ListModels to see the list of available models and their supported "
            "methods.",
        )

    def plan_gemini(self, body: dict, fault: str | None = None) -> Plan:
        """Validate and work out one generateContent answer (nothing committed). Raises Refusal."""
        name = str(body.get("model") or "").removeprefix("models/")
        version = str(body.get("_version") or "v1beta")
        req = {k: v for k, v in body.items() if not k.startswith("_")}
        req = (
            _fields(req, _TOP, "GenerateContentRequest")
            if self.strict
            else {camel(k): v for k, v in req.items()}
        )
        model = self._g_model(name, version)
        contents = req.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _bad("* GenerateContentRequest.contents: contents is not specified", "contents")
        system = req.get("systemInstruction")
        pieces: list[tuple[str, str]] = []
        if system is not None:
            pieces.append(("system", _text(system, "system_instruction")))
        for i, c in enumerate(contents):
            role = c.get("role", "user") if isinstance(c, dict) else None
            if role not in ("user", "model"):
                raise _bad("Please use a valid role: user, model.", f"contents[{i}].role")
            pieces.append((role, _text(c, f"contents[{i}]")))
        cfg = req.get("generationConfig") or {}
        cfg = (
            _fields(cfg, _GEN, "generation_config") if self.strict else {camel(k): v for k, v in cfg.items()}
        )
        thinking = cfg.get("thinkingConfig") or {}
        thinking = _fields(thinking, _THINK, "generation_config.thinking_config") if self.strict else thinking
        schema_tokens = self._g_check_config(cfg, thinking, model, name)
        prompt = "\n".join(text for _, text in pieces)
        stream = utf8("".join(f"\x1e{role}\x1f{text}" for role, text in pieces))
        prompt_tokens = sum(count_tokens(text) + MSG_TOKENS for _, text in pieces) + schema_tokens
        cached, keys = self._g_cache(name, model, stream, prompt_tokens)
        thoughts = self._g_thoughts(model, thinking, prompt)
        json_mode = cfg.get("responseMimeType") == "application/json" or "JSON" in prompt[:2000]
        text = self._text_for(prompt, fault, json_mode)
        for stop in cfg.get("stopSequences") or []:
            at = text.find(stop) if stop else -1
            if at >= 0:
                text = text[:at]
        budget = int(cfg.get("maxOutputTokens") or model.max_output)
        finish = "STOP"
        if thoughts + count_tokens(text) > budget:
            finish = "MAX_TOKENS"
            if budget <= thoughts:  # the budget ran out while thinking: no answer at all
                thoughts, text = budget, ""
            else:
                text = cut(text, budget - thoughts)
        out = count_tokens(text)
        parts: list[dict] = []
        if thinking.get("includeThoughts") and thoughts:
            parts.append(
                {
                    "text": f"Thinking about request {hashlib.sha1(utf8(prompt)).hexdigest()[:8]}.",
                    "thought": True,
                }
            )
        if text:
            parts.append({"text": text})
        content: dict[str, Any] = {"role": "model"}
        if parts:
            content["parts"] = parts
        usage: dict[str, Any] = {"promptTokenCount": prompt_tokens}
        if out:
            usage["candidatesTokenCount"] = out
        usage["totalTokenCount"] = prompt_tokens + out + thoughts
        if cached:
            usage["cachedContentTokenCount"] = cached
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt_tokens}]
        if cached:
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        payload = {
            "candidates": [{"content": content, "finishReason": finish, "index": 0}],
            "usageMetadata": usage,
            "modelVersion": name,
            "responseId": uuid.uuid4().hex[:22],
        }
        bill = {
            "input": prompt_tokens,
            "cached": cached,
            "written": 0,
            "output": out + thoughts,
            "reasoning": thoughts,
        }
        return Plan("gemini", name, payload, bill, keys, budget, prompt)

    def _g_check_config(self, cfg: dict, thinking: dict, model: Model, name: str) -> int:
        """generationConfig's rules; the response schema's tokens (they count toward the input)."""
        if not self.strict:
            return 0
        _number(cfg, "temperature", 0.0, 2.0)
        _number(cfg, "topP", 0.0, 1.0)
        mot = cfg.get("maxOutputTokens")
        if mot is not None and (
            isinstance(mot, bool) or not isinstance(mot, int) or not 1 <= mot <= model.max_output
        ):
            raise _bad(
                f"Unable to submit request because it has a maxOutputTokens value of {mot} but the supported range "
                f"is from 1 (inclusive) to {model.max_output + 1} (exclusive). Update the value and try again.",
                "generation_config.max_output_tokens",
            )
        stops = cfg.get("stopSequences")
        if stops is not None and (not isinstance(stops, list) or len(stops) > _MAX_STOPS):
            raise _bad(
                f"* GenerateContentRequest.generation_config.stop_sequences: at most {_MAX_STOPS} stop sequences",
                "generation_config.stop_sequences",
            )
        mime = cfg.get("responseMimeType")
        if mime is not None and mime not in ("text/plain", "application/json", "text/x.enum"):
            raise _bad(
                f"* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, "
                f"`application/json`, `text/x.enum`; got {mime!r}",
                "generation_config.response_mime_type",
            )
        api, js = cfg.get("responseSchema"), cfg.get("responseJsonSchema")
        if api is not None and js is not None:
            raise _bad(
                "responseSchema and responseJsonSchema cannot both be set",
                "generation_config.response_json_schema",
            )
        if (api is not None or js is not None) and mime not in ("application/json", "text/x.enum"):
            raise _bad(
                "* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be set to "
                "application/json when a response schema is set",
                "generation_config.response_mime_type",
            )
        if api is not None:
            _check_api_schema(api, "generation_config.response_schema")
        if js is not None:
            _check_json_schema(js, "generation_config.response_json_schema")
        self._g_check_thinking(thinking, model, name)
        schema = api if api is not None else js
        return count_tokens(json.dumps(schema, sort_keys=True)) if schema is not None else 0

    def _g_check_thinking(self, thinking: dict, model: Model, name: str) -> None:
        budget, level = thinking.get("thinkingBudget"), thinking.get("thinkingLevel")
        field = "generation_config.thinking_config"
        if budget is not None and level is not None:
            raise _bad("You can only set only one of thinking budget and thinking level.", field)
        if model.budget == (0, 0) and (level is not None or budget not in (None, 0)):
            raise _bad(f"Thinking is not enabled for models/{name}.", field)
        if level is not None:
            if not model.efforts:
                raise _bad("Thinking level is not supported for this model.", f"{field}.thinking_level")
            if str(level).lower() not in model.efforts:
                allowed = ", ".join(e.upper() for e in model.efforts)
                raise _bad(
                    f"Thinking level {level} is not supported for models/{name}. Supported levels: {allowed}.",
                    f"{field}.thinking_level",
                )
        if budget is None or budget == -1:
            return
        lo, hi = model.budget
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise _bad(f"Invalid value at '{field}.thinking_budget' ({budget!r})", f"{field}.thinking_budget")
        if budget == 0:
            if not model.can_off:
                raise _bad(
                    "Budget 0 is invalid. This model only works in thinking mode.", f"{field}.thinking_budget"
                )
            return
        if not lo <= budget <= hi:
            raise _bad(
                f"The thinking budget {budget} is invalid. Please choose a value between {lo} and {hi}.",
                f"{field}.thinking_budget",
            )

    def _g_cache(self, name: str, model: Model, stream: bytes, prompt_tokens: int) -> tuple[int, list]:
        """Implicit caching: the longest cached 128-token step of the stream, and the entries to write."""
        if not model.cache_min or prompt_tokens < model.cache_min:
            return 0, []
        now = self.clock()
        h = hashlib.sha1()
        step = CACHE_STEP * 4
        cached, keys = 0, []
        for k in range(1, len(stream) // step + 1):
            h.update(stream[(k - 1) * step : k * step])
            if k * CACHE_STEP < model.cache_min:
                continue
            key = ("gemini", name, h.digest())
            keys.append((key, self.gemini_cache_ttl))
            if self._cached(key, now):
                cached = k * CACHE_STEP
        return cached, keys

    def _g_thoughts(self, model: Model, thinking: dict, prompt: str) -> int:
        if model.budget == (0, 0):
            return 0
        budget, level = thinking.get("thinkingBudget"), thinking.get("thinkingLevel")
        if budget is None and level is None:
            if not model.thinks:
                return 0
            if model.efforts:
                level = model.default_effort
            else:
                budget = -1
        if level is not None:
            lo, hi = REASONING[str(level).lower()]
            return _tokens_for(prompt, lo, hi, str(level).lower())
        if budget == 0:
            return 0
        if budget == -1:
            lo, hi = REASONING["medium"]
            return _tokens_for(prompt, lo, hi, "dynamic")
        return _tokens_for(prompt, int(budget) // 4, int(budget) // 2, f"budget{budget}")

    def answer_gemini(self, body: dict, fault: str | None = None, mode: str = "online") -> dict:
        """A GenerateContentResponse for `body` (caches and bill updated). Raises Refusal where the API would."""
        return self._commit(self.plan_gemini(body, fault), mode)

    # -- Batch Mode -----------------------------------------------------------------------------------
    def _g_view(self, b: dict) -> dict:
        meta = {k: v for k, v in b.items() if not k.startswith("_")}
        meta["@type"] = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
        op: dict[str, Any] = {"name": b["name"], "metadata": meta}
        if b["state"] in (
            "BATCH_STATE_SUCCEEDED",
            "BATCH_STATE_FAILED",
            "BATCH_STATE_CANCELLED",
            "BATCH_STATE_EXPIRED",
        ):
            op["done"] = True
            if "output" in b:
                op["response"] = {
                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
                    **b["output"],
                }
        return op

    async def _g_batch_create(self, request: web.Request, model_name: str, version: str) -> web.Response:
        self._bcount(request, "gemini.batches.create")
        denied = self._g_key(request)
        if denied is not None:
            return denied
        raw = await request.read()
        if len(raw) > _INLINE_LIMIT:
            return self.gemini_error(400, f"Request payload size exceeds the limit: {_INLINE_LIMIT} bytes.")
        try:
            self._g_model(model_name, version, "batchGenerateContent")
            batch = json.loads(raw).get("batch")
            if not isinstance(batch, dict):
                raise _bad("* BatchGenerateContentRequest.batch: batch is required", "batch")
            batch = {camel(k): v for k, v in batch.items()}
            if not batch.get("displayName"):
                raise _bad(
                    "* BatchGenerateContentRequest.batch.display_name: display_name is required",
                    "batch.display_name",
                )
            lines = self._g_batch_lines({camel(k): v for k, v in (batch.get("inputConfig") or {}).items()})
        except Refusal as r:
            return self.gemini_refusal(r)
        except (ValueError, AttributeError):
            return self.gemini_error(400, "Invalid JSON payload received.")
        for key, _, _ in lines:
            self.batch_submitted[key] = self.batch_submitted.get(key, 0) + 1
        bid = uuid.uuid4().hex[:16]
        now = time.time()
        b: dict[str, Any] = {
            "name": f"batches/{bid}",
            "model": f"models/{model_name}",
            "displayName": batch["displayName"],
            "createTime": _iso(now),
            "updateTime": _iso(now),
            "batchStats": {"requestCount": str(len(lines)), "pendingRequestCount": str(len(lines))},
            "state": "BATCH_STATE_PENDING",
            "_model": model_name,
            "_lines": lines,
            "_file": "fileName" in {camel(k) for k in (batch.get("inputConfig") or {})},
            "_polls": self.batch_polls,
            "_t": now,
        }
        self.g_batches[bid] = b
        if self.batch_polls <= 0:
            self._g_finish(b)
        return web.json_response(self._g_view(b))

    def _g_batch_lines(self, cfg: dict) -> list[tuple[str, dict, dict]]:
        """(key, request, metadata) per request of an inputConfig (inline, or the JSONL file it names)."""
        if cfg.get("fileName"):
            f = self.g_files.get(str(cfg["fileName"]).removeprefix("files/"))
            if f is None:
                raise Refusal(404, "NOT_FOUND", f"File {cfg['fileName']} not found.")
            out = []
            for n, raw in enumerate(f["data"].decode("utf-8").splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    raise _bad(
                        f"The input file has an invalid JSON line at line {n}.", "input_config.file_name"
                    ) from None
                out.append((str(line.get("key", n)), line.get("request") or {}, {}))
            return out
        reqs = cfg.get("requests")
        if not isinstance(reqs, dict) or not isinstance(reqs.get("requests"), list):
            raise _bad(
                "* BatchGenerateContentRequest.batch.input_config: requests or file_name is required",
                "input_config",
            )
        out = []
        for i, r in enumerate(reqs["requests"]):
            meta = r.get("metadata") or {}
            out.append((str(meta.get("key", i)), r.get("request") or {}, meta))
        return out

    def _g_finish(self, b: dict, cancelled: bool = False) -> None:
        """End a batch: every line answered as online (one fault draw each), or none when it expires."""
        now = time.time()
        b["updateTime"] = b["endTime"] = _iso(now)
        n = len(b["_lines"])
        if cancelled:
            b["state"] = "BATCH_STATE_CANCELLED"
            b["batchStats"] = {"requestCount": str(n), "pendingRequestCount": "0"}
            return
        drawn = []
        for key, req, meta in b["_lines"]:
            body = {**req, "model": b["_model"], "_version": "v1beta"}
            try:
                plan = self.plan_gemini(body)
            except Refusal as r:
                drawn.append((key, meta, body, None, r))
                continue
            drawn.append((key, meta, body, self._pick_fault(plan.prompt), None))
        if any((f or "").partition(":")[0] == "expire" for _, _, _, f, _ in drawn):
            b["state"] = "BATCH_STATE_EXPIRED"
            b["batchStats"] = {"requestCount": str(n), "pendingRequestCount": "0"}
            with self._lock:
                self.outcomes["expire"] = self.outcomes.get("expire", 0) + 1
            return
        results, ok = [], 0
        for key, meta, body, fault, refusal in drawn:
            res = self._g_line(body, fault, refusal)
            ok += "response" in res
            results.append((key, meta, res))
        if b["_file"]:
            fid = f"batch-{uuid.uuid4().hex[:12]}"
            data = "".join(json.dumps({"key": k, **res}) + "\n" for k, _, res in results).encode()
            self.g_files[fid] = self._g_file_meta(fid, b["displayName"], data, "GENERATED")
            b["output"] = {"responsesFile": f"files/{fid}"}
        else:
            inlined = [{**res, "metadata": meta} if meta else res for _, meta, res in results]
            b["output"] = {"inlinedResponses": {"inlinedResponses": inlined}}
        b["state"] = "BATCH_STATE_SUCCEEDED"
        b["batchStats"] = {
            "requestCount": str(n),
            "successfulRequestCount": str(ok),
            "failedRequestCount": str(n - ok),
            "pendingRequestCount": "0",
        }

    def _g_line(self, body: dict, fault: str | None, refusal: Refusal | None) -> dict:
        """One line's result: `{"response"}` or `{"error": google.rpc.Status}`."""
        name = (fault or "").partition(":")[0]
        model = body.get("model")
        if refusal is None and name not in ERROR_FAULTS:
            with self._lock:
                self.outcomes[fault or "ok"] = self.outcomes.get(fault or "ok", 0) + 1
            payload = self._commit(self.plan_gemini(body, name or None), "batch")
            return {"response": alter(payload, "gemini", fault) if name in BODY_FAULTS else payload}
        self._bill_add("gemini", model, "batch", failed=1)
        if refusal is not None:
            status, msg = refusal.status, refusal.message
        elif name == "context":
            status, msg = (
                400,
                "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
            )
        else:
            status = int(name) if name.isdigit() else 500
            status = 503 if status == 529 else status
            msg = "the fake server failed this request"
        with self._lock:
            self.outcomes[refusal.etype if refusal else name] = (
                self.outcomes.get(refusal.etype if refusal else name, 0) + 1
            )
        return {"error": {"code": STATUS.get(status, ("UNKNOWN", 2))[1], "message": msg}}

    async def _g_batch_get(self, request: web.Request) -> web.Response:
        self._bcount(request, "gemini.batches.get")
        denied = self._g_key(request)
        if denied is not None:
            return denied
        b = self.g_batches.get(request.match_info["call"])
        if b is None:
            return self.gemini_error(404, "Requested entity was not found.")
        if b["state"] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            b["_polls"] -= 1
            if b["_polls"] <= 0:
                self._g_finish(b)
            else:
                b["state"] = "BATCH_STATE_RUNNING"
        return web.json_response(self._g_view(b))

    async def _g_batch_post(self, request: web.Request) -> web.Response:
        bid, _, method = request.match_info["call"].partition(":")
        if method != "cancel":
            return self.gemini_error(404, f"Method {method or '(none)'} not found.")
        self._bcount(request, "gemini.batches.cancel")
        denied = self._g_key(request)
        if denied is not None:
            return denied
        b = self.g_batches.get(bid)
        if b is None:
            return self.gemini_error(404, "Requested entity was not found.")
        if b["state"] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            self._g_finish(b, cancelled=True)
        return web.json_response({})

    async def _g_batch_delete(self, request: web.Request) -> web.Response:
        self._bcount(request, "gemini.batches.delete")
        if self.g_batches.pop(request.match_info["call"], None) is None:
            return self.gemini_error(404, "Requested entity was not found.")
        return web.json_response({})

    async def _g_batch_list(self, request: web.Request) -> web.Response:
        self._bcount(request, "gemini.batches.list")
        denied = self._g_key(request)
        if denied is not None:
            return denied
        items = sorted(self.g_batches.values(), key=lambda b: b["_t"], reverse=True)
        size = max(1, min(int(request.query.get("pageSize", 50)), 1000))
        start = int(request.query.get("pageToken") or 0)
        page = items[start : start + size]
        out: dict[str, Any] = {"operations": [self._g_view(b) for b in page]}
        if start + size < len(items):
            out["nextPageToken"] = str(start + size)
        return web.json_response(out)

    # -- Files API ------------------------------------------------------------------------------------
    def _g_file_meta(self, fid: str, display: str | None, data: bytes, source: str) -> dict:
        now = time.time()
        return {
            "name": f"files/{fid}",
            "displayName": display or fid,
            "mimeType": "application/jsonl",
            "sizeBytes": str(len(data)),
            "createTime": _iso(now),
            "updateTime": _iso(now),
            "expirationTime": _iso(now + 48 * 3600),
            "sha256Hash": hashlib.sha256(data).hexdigest(),
            "uri": f"{self.gemini_url}/v1beta/files/{fid}",
            "state": "ACTIVE",
            "source": source,
            "data": data,
        }

    async def _g_upload(self, request: web.Request) -> web.Response:
        command = request.headers.get("X-Goog-Upload-Command", "")
        upload_id = request.query.get("upload_id")
        if upload_id is None:  # start: the file's metadata; answer where to send the bytes
            self._bcount(request, "gemini.files.upload")
            denied = self._g_key(request)
            if denied is not None:
                return denied
            if "start" not in command:
                return self.gemini_error(400, "Resumable upload: the first request must be a start command.")
            meta = (await request.json() or {}).get("file") or {}
            meta = {camel(k): v for k, v in meta.items()}
            uid = uuid.uuid4().hex
            self.g_uploads[uid] = {"meta": meta, "data": b""}
            url = f"{self.gemini_url}/upload/{request.match_info['version']}/files?upload_id={uid}"
            return web.json_response({}, headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"})
        up = self.g_uploads.get(upload_id)
        if up is None:
            return self.gemini_error(404, "No such upload session.")
        offset = int(request.headers.get("X-Goog-Upload-Offset", "0"))
        if offset != len(up["data"]):
            return self.gemini_error(
                400, f"Upload offset {offset} does not match {len(up['data'])} bytes received."
            )
        up["data"] += await request.read()
        if "finalize" not in command:
            return web.json_response({}, headers={"x-goog-upload-status": "active"})
        del self.g_uploads[upload_id]
        fid = uuid.uuid4().hex[:12]
        f = self._g_file_meta(fid, up["meta"].get("displayName"), up["data"], "UPLOADED")
        f["mimeType"] = up["meta"].get("mimeType") or "application/octet-stream"
        self.g_files[fid] = f
        view = {k: v for k, v in f.items() if k != "data"}
        return web.json_response({"file": view}, headers={"x-goog-upload-status": "final"})

    async def _g_file_get(self, request: web.Request) -> web.StreamResponse:
        fid, _, method = request.match_info["call"].partition(":")
        self._bcount(request, "gemini.files.download" if method == "download" else "gemini.files.get")
        denied = self._g_key(request)
        if denied is not None:
            return denied
        f = self.g_files.get(fid)
        if f is None:
            return self.gemini_error(404, f"File files/{fid} not found.")
        if method == "download":
            if f["source"] != "GENERATED":
                return self.gemini_error(400, "Only generated files can be downloaded.")
            return web.Response(body=f["data"], content_type="application/octet-stream")
        return web.json_response({k: v for k, v in f.items() if k != "data"})
