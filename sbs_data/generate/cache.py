"""The request cache: content-addressed keys, bulk lookup, a durable batched writer, stats and explain.

A key is sha256 of the canonical JSON of everything that can change an answer: provider, endpoint, model,
the fully rendered system prompt and messages, every generation param, the output schema and the sample
index (plus adapter extras, e.g. replay's example id). API keys and base URLs are never ingredients.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from sbs_data.generate.answer import Answer, Failure, storable_text
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
# This module is the only one that names sbs_cache (besides workspace.py and the migrations); others ask it
# for SQL over the cache with the functions below (a test enforces it).


def missing_condition(column: str = "cache_key") -> str:
    """SQL condition: the key in `column` has no answer in the cache (the one anti-join over sbs_cache)."""
    return f"{column} NOT IN (SELECT cache_key FROM sbs_cache)"


def missing(sql: str, columns: str = "*") -> str:
    """SQL selecting `columns` (of alias `p`) from the rows of `sql` whose `cache_key` has no answer yet."""
    return f"SELECT {columns} FROM ({sql}) p WHERE {missing_condition('p.cache_key')}"


def answers_with_prefix() -> str:
    """SQL subquery: the cached answers whose key starts with the one parameter (`?`): a key-prefix slice."""
    return "(SELECT * FROM sbs_cache WHERE starts_with(cache_key, ?))"


def answer_rows(ws: Any, keys: list[str], columns: list[str]) -> dict[str, tuple]:
    """{key: (text, *columns)} for the cached keys among `keys`."""
    if not keys:
        return {}
    cols = "".join(f", c.{c}" for c in columns)
    rows = ws.all(
        f"SELECT c.cache_key, c.text{cols} FROM sbs_cache c WHERE c.cache_key IN (SELECT unnest(?::VARCHAR[]))",
        [keys],
    )
    return {r[0]: r[1:] for r in rows}


def spent_usd(ws: Any, run_id: str) -> float | None:
    """What the answers a run paid for cost, in USD (None when it paid for none)."""
    return ws.one("SELECT sum(cost_usd) FROM sbs_cache WHERE run_id = ?", [run_id])


def present(ws: Any, keys: list[str]) -> set[str]:
    """The keys among `keys` that have an answer (through a cursor of its own: safe while a writer runs)."""
    if not keys:
        return set()
    out: set[str] = set()
    for batch in ws.batches(
        "SELECT cache_key FROM sbs_cache WHERE cache_key IN (SELECT unnest(?::VARCHAR[]))", [list(set(keys))]
    ):
        out.update(batch.column(0).to_pylist())
    return out


def texts(ws: Any, keys: list[str]) -> dict[str, str | None]:
    """{key: completion text} for the cached keys among `keys`."""
    if not keys:
        return {}
    rows = ws.all(
        "SELECT cache_key, text FROM sbs_cache WHERE cache_key IN (SELECT unnest(?::VARCHAR[]))",
        [list(set(keys))],
    )
    return dict(rows)


# -- the durable writer ---------------------------------------------------------------------------
_CACHE_COLS = (
    "cache_key provider endpoint model subject request text finish_reason prompt_tokens completion_tokens "
    "cached_tokens cache_write_tokens reasoning_tokens request_id latency_ms cost_usd attempts run_id repaired "
    "usage_estimated teacher_reasoning service_tier served_model"
).split()
_INT = pl.Int32
_CACHE_TYPES = {
    "prompt_tokens": _INT,
    "completion_tokens": _INT,
    "cached_tokens": _INT,
    "cache_write_tokens": _INT,
    "reasoning_tokens": _INT,
    "attempts": _INT,
    "latency_ms": pl.Float64,
    "cost_usd": pl.Float64,
    "repaired": pl.Boolean,
    "usage_estimated": pl.Boolean,
}
_FAIL_COLS = "cache_key provider model example_id sample_idx kind status error attempts run_id".split()
_FAIL_TYPES = {"sample_idx": _INT, "status": _INT, "attempts": _INT}


def _table(rows: list[dict], cols: list[str], types: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        {c: [r.get(c) for r in rows] for c in cols}, schema={c: types.get(c, pl.Utf8) for c in cols}
    )


def answer_row(
    a: Answer, teacher: Teacher, *, subject: str | None, request: str | None, run_id: str | None
) -> dict:
    """A cache row: the answer plus who answered what (never keys)."""
    return {
        **a.as_row(),
        "provider": teacher.provider,
        "endpoint": teacher.endpoint,
        "model": teacher.model,
        "subject": subject,
        "request": request,
        "run_id": run_id,
    }


def failure_row(f: Failure, teacher: Teacher, run_id: str | None) -> dict:
    return {**f.as_row(), "provider": teacher.provider, "model": teacher.model, "run_id": run_id}


def write(ws: Any, answers: list[dict], failures: list[dict]) -> None:
    """Store answer rows (INSERT OR IGNORE on the key: an answer is never replaced) and failure rows, in one
    transaction (joining the caller's, when there is one). Used by the online writer and batch collect."""
    with ws.transaction():
        if answers:
            for r in answers:  # the last line of defence: a text DuckDB cannot hold must not lose the batch
                for col in ("text", "teacher_reasoning"):
                    if r.get(col) is not None:
                        fixed, changed = storable_text(r[col])
                        if changed:
                            r[col], r["repaired"] = fixed, True
            with ws.registered("_sbs_cache_batch", _table(answers, _CACHE_COLS, _CACHE_TYPES)) as t:
                ws.execute(
                    f"INSERT OR IGNORE INTO sbs_cache ({', '.join(_CACHE_COLS)}) SELECT {', '.join(_CACHE_COLS)} FROM {t}"
                )
        if failures:
            with ws.registered("_sbs_fail_batch", _table(failures, _FAIL_COLS, _FAIL_TYPES)) as t:
                ws.execute(
                    f"INSERT INTO sbs_failures ({', '.join(_FAIL_COLS)}) SELECT {', '.join(_FAIL_COLS)} FROM {t}"
                )


# -- the journal: answers survive kill -9 from the moment they arrive ------------------------------
def journal_dir(ws: Any) -> Path:
    return Path(f"{ws.path}.journal")


def replay_journals(ws: Any) -> int:
    """Fold answers journaled by runs that died before their cache commit into the cache, then remove the
    journals. A torn last line (killed mid-write) is skipped. Returns the number of answers recovered."""
    d = journal_dir(ws)
    if not d.is_dir():
        return 0
    n = 0
    for f in sorted(d.glob("*.jsonl")):
        rows = []
        with open(f, "rb") as fh:
            for line in fh:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # the line a kill cut short
        if rows:
            before = ws.one("SELECT count(*) FROM sbs_cache")
            write(ws, rows, [])
            n += ws.one("SELECT count(*) FROM sbs_cache") - before
        f.unlink()
    with contextlib.suppress(OSError):
        d.rmdir()
    return n


@dataclass
class CacheWriter:
    """Journals every answer the moment it arrives (one append-mode write: survives kill -9), and commits
    answers and failures to DuckDB in small transactions at most `flush_interval` s later.

    Fed by a queue from the request tasks; the DuckDB work runs in a worker thread so the event loop keeps
    the network busy. After a SIGKILL the next run folds the journal in (`replay_journals`), so at most the
    requests in flight are paid twice. The journal is a series of segments, a new one per flush; a segment
    is deleted once every answer in it is committed, so the journal stays small on long runs.
    """

    ws: Any
    teacher: Teacher
    run_id: str | None = None
    flush_interval: float = 0.25
    max_batch: int = 2000
    journal: bool = True
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    written: int = 0
    failures_written: int = 0
    flushes: int = 0
    _task: asyncio.Task | None = None
    _fd: int | None = None
    _path: Path | None = None
    _lost: bool = False
    _seq: int = 0  # answers journaled so far; each queued answer carries its number
    _segments: int = 0
    _closed: list[tuple[Path, int]] = field(default_factory=list)  # (segment, its last answer's number)

    def start(self) -> None:
        if self.journal and self._fd is None:
            self._open_segment()
        self._task = asyncio.create_task(self._run())

    def _open_segment(self) -> None:
        d = journal_dir(self.ws)
        d.mkdir(exist_ok=True)
        self._path = d / f"{self.run_id or 'run'}-{os.getpid()}-{self._segments:06d}.jsonl"
        self._segments += 1
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def answer(self, a: Answer, item: Any) -> None:
        row = answer_row(
            a, self.teacher, subject=item.subject, request=item.ingredients_json, run_id=self.run_id
        )
        self._seq += 1
        if self._fd is not None:
            os.write(self._fd, json.dumps(row, ensure_ascii=False).encode() + b"\n")
        self.queue.put_nowait(("a", row, self._seq))

    def failure(self, f: Failure, item: Any = None) -> None:
        self.queue.put_nowait(("f", failure_row(f, self.teacher, self.run_id), 0))

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
            if self._fd is not None:  # later answers go to a new segment; this one ends at self._seq
                os.close(self._fd)
                assert self._path is not None
                self._closed.append((self._path, self._seq))
                self._open_segment()
            await asyncio.to_thread(self._write, batch)
            self._drop_committed(max((n for k, _, n in batch if k == "a"), default=0))
            if stop:
                return

    def _drop_committed(self, upto: int) -> None:
        """Delete the closed segments whose answers are all committed (the queue is first in, first out)."""
        if self._lost:
            return  # keep the journal: the next run folds these answers in
        while self._closed and self._closed[0][1] <= upto:
            self._closed.pop(0)[0].unlink(missing_ok=True)

    def _write(self, batch: list[tuple[str, dict, int]]) -> None:
        answers = [r for k, r, _ in batch if k == "a"]
        failures = [r for k, r, _ in batch if k == "f"]
        try:
            write(self.ws, answers, failures)
        except BaseException:
            self._lost = True
            raise
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
        """Write whatever is still queued (after the event loop was torn down), then drop the journal:
        everything in it is committed."""
        batch = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None:
                batch.append(item)
        if batch:
            self._write(batch)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self._path is not None:
                self._closed.append((self._path, self._seq))
            self._drop_committed(self._seq)
            if not self._closed:
                with contextlib.suppress(OSError):
                    journal_dir(self.ws).rmdir()


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
