"""`hf:NAME_OR_PATH`: a local transformers causal LM, batched, on the GPU when there is one.

The adapter keeps the one-method interface: concurrent `complete()` calls are collected into micro-batches
(up to `batch_size`, waiting at most `batch_wait` s for stragglers) that run `generate()` in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sbs_data import SbsError
from sbs_data.teachers.base import ContextLength, Request, Response, Teacher

DEFAULT_MAX_NEW_TOKENS = 256


class HFTeacher(Teacher):
    provider = "hf"
    endpoint = "generate"
    network = False

    def __init__(self, model: str, batch_size: int = 16, batch_wait: float = 0.02, device: str | None = None):
        super().__init__(model)
        self.batch_size = max(1, batch_size)
        self.batch_wait = batch_wait
        self.device = device
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._lock = threading.Lock()
        self._model: Any = None
        self._tok: Any = None
        self.batch_sizes: list[int] = []  # observed micro-batch sizes (tests and the summary use them)

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
            except ImportError as e:
                raise SbsError("hf: teachers need `pip install sbs-data[hf]` (transformers, torch)") from e
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                tok = AutoTokenizer.from_pretrained(self.model)
                dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
                auto: Any = AutoModelForCausalLM  # its from_pretrained is typed for instances only
                model = auto.from_pretrained(self.model, dtype=dtype).to(device)
            except (OSError, ValueError) as e:
                raise SbsError(f"hf:{self.model}: cannot load model: {e}") from e
            model.eval()
            tok.padding_side = "left"  # decoder-only batching pads on the left
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            self._tok, self._model, self._device = tok, model, device

    def preflight(self) -> None:
        """Load the model up front so a bad path or a missing extra is one clear error, not one per row."""
        self._load()

    def _prompt(self, req: Request) -> str:
        tok = self._tok
        msgs = ([{"role": "system", "content": req.system}] if req.system else []) + list(req.messages)
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in msgs)  # base models: the few-shot prompt as plain text

    def _generate(self, reqs: list[Request]) -> list[Response | Exception]:
        """Run one batch (in a worker thread). Requests with different params are grouped by params."""
        import torch

        self._load()
        tok, model = self._tok, self._model
        out: list[Response | Exception] = [None] * len(reqs)  # type: ignore[list-item]
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            p = r.params
            groups.setdefault((p.get("temperature"), p.get("top_p"), p.get("max_tokens")), []).append(i)
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )
        for (temp, top_p, max_tokens), idx in groups.items():
            max_new = max_tokens or DEFAULT_MAX_NEW_TOKENS
            prompts = [self._prompt(reqs[i]) for i in idx]
            enc = tok(prompts, return_tensors="pt", padding=True).to(self._device)
            if limit and enc["input_ids"].shape[1] + max_new > limit:
                for i in idx:
                    out[i] = ContextLength(f"hf:{self.model}: prompt + max_tokens exceeds {limit} positions")
                continue
            gen: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": tok.pad_token_id}
            if temp:
                gen.update(do_sample=True, temperature=temp, top_p=top_p or 1.0)
            else:
                gen.update(do_sample=False)
            with torch.inference_mode():
                seqs = model.generate(**enc, **gen)
            n_in = enc["input_ids"].shape[1]
            prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
            for j, i in enumerate(idx):
                new = seqs[j, n_in:].tolist()
                eos = tok.eos_token_id
                if eos is not None and eos in new:  # finished early: the rest is padding
                    new, finish = new[: new.index(eos) + 1], "stop"
                else:
                    finish = "length" if len(new) >= max_new else "stop"
                n_new = len(new)
                text = tok.decode(new, skip_special_tokens=True)
                for s in _stops(reqs[i].params.get("stop")):
                    cut = text.find(s)
                    if cut >= 0:
                        text, finish = text[:cut], "stop"
                out[i] = Response(text, finish, int(prompt_lens[j]), n_new, None)
        return out

    async def _batcher(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            batch = [first]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.batch_wait
            while len(batch) < self.batch_size:
                timeout = deadline - loop.time()
                try:
                    batch.append(
                        self._queue.get_nowait()
                        if timeout <= 0
                        else await asyncio.wait_for(self._queue.get(), timeout)
                    )
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
            self.batch_sizes.append(len(batch))
            try:
                results = await asyncio.to_thread(self._generate, [r for r, _ in batch])
            except Exception as e:  # noqa: BLE001 - hand the error to every waiter
                results = [e] * len(batch)
            for (_, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    async def complete(self, req: Request) -> Response:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._batcher())
        assert self._queue is not None
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((req, fut))
        return await fut

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._worker = None


def _stops(stop: Any) -> list[str]:
    if not stop:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def create(model: str, *, base_urls: tuple[str, ...] = (), ws: Any = None, **opts: Any) -> Teacher:
    """The registry's factory for `hf:NAME_OR_PATH`; the engine's network options do not apply."""
    if base_urls:
        raise SbsError("--base-url does not apply to hf: teachers")
    opts.pop("timeout", None)
    opts.pop("prompt_cache", None)
    return HFTeacher(model, **opts)
