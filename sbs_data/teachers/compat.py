"""`openai-compat:MODEL` for OpenAI-compatible servers (vLLM, Ollama, llama.cpp server, TGI...).

Several `--base-url` values spread the load: each request goes to the replica with the fewest requests in
flight. The base URLs are not part of the cache key (replicas serve the same model), only the lineage.
"""

from __future__ import annotations

import os
from typing import Any

from sbs_data import SbsError
from sbs_data.teachers.base import Request, Response, Teacher, safe_url
from sbs_data.teachers.openai import OpenAITeacher, make_client


class CompatTeacher(OpenAITeacher):
    provider = "openai-compat"
    max_tokens_param = "max_tokens"
    #: Chat Completions is what every compatible server speaks; `--api responses` for those that also
    #: serve the Responses API (vLLM does).
    reasoning_api = "chat"
    # json_schema is not supported everywhere (Ollama, llama.cpp); vLLM and TGI accept it, not always in
    # strict mode. The prompt also spells the format out, and the engine validates the result either way.
    strict_schema = False

    def __init__(
        self,
        model: str,
        base_urls: list[str],
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: str = "aiohttp",
        prompt_cache: bool = True,
    ):
        # Local servers usually need no key; the SDK insists on one, so a placeholder is sent.
        key = (
            api_key or os.environ.get("OPENAI_COMPAT_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        )
        super().__init__(
            model,
            base_url=base_urls[0],
            api_key=key,
            timeout=timeout,
            transport=transport,
            prompt_cache=prompt_cache,
        )
        self.base_urls = list(base_urls)
        self._clients: list[Any] = []
        self._inflight: list[int] = [0] * len(self.base_urls)

    @classmethod
    def create(cls, model: str, *, base_urls: tuple[str, ...] = (), ws: Any = None, **opts: Any) -> Teacher:
        """The registry's factory for `openai-compat:MODEL`: --base-url (repeatable), else OPENAI_BASE_URL."""
        urls = list(base_urls) or [u for u in [os.environ.get("OPENAI_BASE_URL")] if u]
        if not urls:
            raise SbsError("openai-compat:MODEL needs --base-url URL (e.g. http://localhost:8000/v1)")
        return cls(model, base_urls=urls, **opts)

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key and self._api_key != "EMPTY" else ()

    def lineage(self) -> dict[str, Any]:
        d = super().lineage()
        d["base_url"] = [safe_url(u) for u in self.base_urls]
        return d

    def use_service_tier(self, tier: str) -> None:
        raise SbsError(
            f"--service-tier is an OpenAI option (openai:MODEL); {self.spec} is a compatible server without tiers"
        )

    async def complete(self, req: Request) -> Response:
        if not self._clients:
            self._clients = [
                make_client(u, self._api_key, self.timeout, self.transport) for u in self.base_urls
            ]
        i = min(range(len(self._clients)), key=self._inflight.__getitem__)
        self._inflight[i] += 1
        try:
            return await self._call(self._clients[i], req)
        finally:
            self._inflight[i] -= 1

    async def aclose(self) -> None:
        for c in self._clients:
            await c.close()
        self._clients = []


#: The registry's factory for `openai-compat:MODEL`.
create = CompatTeacher.create
