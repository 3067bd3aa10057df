"""The request cache: content-addressed keys, bulk lookup, a durable batched writer, stats and explain.

A key is sha256 of the canonical JSON of everything that can change an answer: provider, endpoint, model,
the fully rendered system prompt and messages, every generation param, the output schema and the sample
index (plus adapter extras, e.g. replay's example id). API keys and base URLs are never ingredients.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from sbs_data.teachers.base import Request, Teacher

KEY_VERSION = 1


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def ingredients(teacher: Teacher, req: Request) -> dict[str, Any]:
    """Everything the answer depends on, long texts replaced by their full sha256 (a Merkle-style pre-image:
    the key still covers every character, and this small dict is what the cache row stores to explain misses)."""
    ing: dict[str, Any] = {
        "v": KEY_VERSION,
        "provider": teacher.provider,
        "endpoint": teacher.endpoint,
        "model": teacher.model,
        "system": _sha(req.system) if req.system is not None else None,
        "messages": [
            {"role": m["role"], "sha": _sha(m["content"]), "chars": len(m["content"])} for m in req.messages
        ],
        "params": {k: v for k, v in sorted(req.params.items()) if v is not None},
        "schema": _sha(canonical(req.json_schema)) if req.json_schema is not None else None,
        "sample_idx": req.sample_idx,
    }
    extra = teacher.key_extra(req)
    if extra:
        ing["extra"] = extra
    return ing


def key_of(ing: dict[str, Any] | str) -> str:
    """The cache key: sha256 of the canonical JSON of the ingredients."""
    return _sha(ing if isinstance(ing, str) else canonical(ing))


def cache_key(teacher: Teacher, req: Request) -> str:
    return key_of(ingredients(teacher, req))


def subject_of(input_text: str) -> str:
    return _sha(input_text)[:16]


# -- lookup ---------------------------------------------------------------------------------------
def lookup(con: Any, keys: list[str]) -> dict[str, tuple]:
    """{key: (text, finish_reason, prompt_tokens, completion_tokens, latency_ms, cost_usd)} for cached keys."""
    if not keys:
        return {}
    con.execute("SELECT 1").fetchall()
    # polars, not pyarrow: building the first pyarrow table in a process costs ~0.4 s of lazy imports
    con.register("_sbs_keys", pl.DataFrame({"cache_key": list(set(keys))}, schema={"cache_key": pl.Utf8}))
    try:
        rows = con.execute(
            "SELECT c.cache_key, c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens, c.latency_ms, c.cost_usd "
            "FROM sbs_cache c JOIN _sbs_keys k USING (cache_key)"
        ).fetchall()
    finally:
        con.unregister("_sbs_keys")
    return {r[0]: r[1:] for r in rows}


# -- the durable writer ---------------------------------------------------------------------------
_CACHE_COLS = (
    "cache_key provider endpoint model subject request text finish_reason prompt_tokens completion_tokens "
    "request_id latency_ms cost_usd attempts run_id"
).split()
_CACHE_TYPES = {
    "prompt_tokens": pl.Int32,
    "completion_tokens": pl.Int32,
    "attempts": pl.Int32,
    "latency_ms": pl.Float64,
    "cost_usd": pl.Float64,
}
_FAIL_COLS = "cache_key provider model example_id sample_idx kind status error attempts run_id".split()
_FAIL_TYPES = {"sample_idx": pl.Int32, "status": pl.Int32, "attempts": pl.Int32}


def _table(rows: list[dict], cols: list[str], types: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        {c: [r.get(c) for r in rows] for c in cols}, schema={c: types.get(c, pl.Utf8) for c in cols}
    )


def write(ws: Any, answers: list[dict], failures: list[dict]) -> None:
    """Store answers (INSERT OR IGNORE on the key: an answer is never replaced) and failures, in one
    transaction (joining the caller's, when there is one). Used by the online writer and batch collect."""
    con = ws.con
    with ws.transaction():
        if answers:
            con.register("_sbs_cache_batch", _table(answers, _CACHE_COLS, _CACHE_TYPES))
            try:
                con.execute(
                    f"INSERT OR IGNORE INTO sbs_cache ({', '.join(_CACHE_COLS)}) "
                    f"SELECT {', '.join(_CACHE_COLS)} FROM _sbs_cache_batch"
                )
            finally:
                con.unregister("_sbs_cache_batch")
        if failures:
            con.register("_sbs_fail_batch", _table(failures, _FAIL_COLS, _FAIL_TYPES))
            try:
                con.execute(
                    f"INSERT INTO sbs_failures ({', '.join(_FAIL_COLS)}) SELECT {', '.join(_FAIL_COLS)} FROM _sbs_fail_batch"
                )
            finally:
                con.unregister("_sbs_fail_batch")


@dataclass
class CacheWriter:
    """Commits answers and failures in small transactions, at most `flush_interval` s after they arrive.

    Fed by a queue from the request tasks; the DuckDB work runs in a worker thread so the event loop keeps
    the network busy. A SIGKILL therefore loses at most the requests in flight plus the last partial batch.
    """

    ws: Any
    flush_interval: float = 0.25
    max_batch: int = 2000
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    written: int = 0
    failures_written: int = 0
    flushes: int = 0
    _task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def answer(self, row: dict) -> None:
        self.queue.put_nowait(("a", row))

    def failure(self, row: dict) -> None:
        self.queue.put_nowait(("f", row))

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            # Let a batch gather for one interval (one timer per batch, not per row), then take all of it.
            await asyncio.sleep(self.flush_interval)
            batch, stop = [item], False
            while len(batch) < self.max_batch and not self.queue.empty():
                nxt = self.queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await asyncio.to_thread(self._write, batch)
            if stop:
                return

    def _write(self, batch: list[tuple[str, dict]]) -> None:
        answers = [r for k, r in batch if k == "a"]
        failures = [r for k, r in batch if k == "f"]
        write(self.ws, answers, failures)
        self.written += len(answers)
        self.failures_written += len(failures)
        self.flushes += 1

    async def close(self) -> None:
        """Flush everything queued so far and stop."""
        if self._task is None:
            return
        self.queue.put_nowait(None)
        await asyncio.shield(self._task)
        self._task = None

    def drain_sync(self) -> None:
        """Write whatever is still queued (after the event loop was cancelled)."""
        batch = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None:
                batch.append(item)
        if batch:
            self._write(batch)


# -- stats and explain ----------------------------------------------------------------------------
def stats(ws: Any) -> list[dict[str, Any]]:
    rows = ws.all(
        """
        WITH f AS (
            SELECT provider, model, count(DISTINCT cache_key) FILTER (WHERE NOT answered_later) AS open_failures,
                   count(*) AS failed_attempts
            FROM cache_failures GROUP BY ALL)
        SELECT coalesce(c.provider, f.provider), coalesce(c.model, f.model), coalesce(c.n, 0),
               coalesce(c.pt, 0), coalesce(c.ct, 0), c.cost, coalesce(f.open_failures, 0),
               coalesce(f.failed_attempts, 0), c.first, c.last
        FROM (SELECT provider, model, count(*) AS n, sum(prompt_tokens) AS pt, sum(completion_tokens) AS ct,
                     sum(cost_usd) AS cost, min(created_at) AS first, max(created_at) AS last
              FROM sbs_cache GROUP BY ALL) c
        FULL OUTER JOIN f ON c.provider = f.provider AND c.model = f.model
        ORDER BY 1, 2
        """
    )
    cols = [
        "provider",
        "model",
        "answers",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "unanswered_failures",
        "failed_attempts",
        "first",
        "last",
    ]
    return [dict(zip(cols, r)) for r in rows]


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            _diff(old.get(k), new.get(k), f"{path}.{k}" if path else k, out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            _diff(a, b, f"{path}[{i}]", out)
    elif old != new:
        label = path.replace(".sha", "").replace(".chars", "")
        if label.startswith("messages") or label.startswith("system") or label.startswith("schema"):
            what = {"messages": "prompt text", "system": "system prompt", "schema": "output schema"}[
                label.split("[")[0].split(".")[0]
            ]
            msg = f"{what} ({label}) changed"
        else:
            msg = f"{label}: cached {json.dumps(old, default=str)} -> now {json.dumps(new, default=str)}"
        if msg not in out:
            out.append(msg)


def explain_one(ws: Any, key: str, desc: dict[str, Any], subject: str) -> dict[str, Any]:
    """Why `key` is (not) cached: a hit, a recorded failure, or the ingredients that differ from the nearest
    cached request for the same input."""
    hit = ws.all("SELECT created_at, run_id FROM sbs_cache WHERE cache_key = ?", [key])
    if hit:
        return {"status": "hit", "reason": f"cached {hit[0][0]:%Y-%m-%d %H:%M} (run {hit[0][1]})"}
    fails = ws.all(
        "SELECT kind, error FROM sbs_failures WHERE cache_key = ? ORDER BY created_at DESC LIMIT 1", [key]
    )
    cands = ws.all("SELECT request FROM sbs_cache WHERE subject = ? LIMIT 200", [subject])
    best: list[str] | None = None
    for (req_json,) in cands:
        diffs: list[str] = []
        _diff(json.loads(req_json), desc, "", diffs)
        if best is None or len(diffs) < len(best):
            best = diffs
    if best:
        reason = "; ".join(best)
    elif cands:
        reason = (
            "a cached request for this input has identical ingredients but another key (key format changed?)"
        )
    else:
        reason = "nothing cached for this input yet"
    if fails:
        reason = f"last attempt failed ({fails[0][0]}: {fails[0][1]}); " + reason
    return {"status": "miss", "reason": reason}
