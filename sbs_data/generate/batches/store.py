"""The batch job store: the only module (besides workspace.py and the migrations) that names the batch tables.

`sbs_batch_runs` holds one row per batch run (a `generate --mode batch` command and the arguments that
re-plan it), `sbs_batches` one row per provider job, `sbs_batch_requests` the (cache key, example, sample)
rows of each job; see migrations/005_batches.sql. The rest of the package reads them as typed rows (`BatchRun`,
`Job`, `JobRequest`) and changes them through the functions here. Every timestamp written is `now()`: UTC,
naive (the batches view shows UTC).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sbs_data import SbsError
from sbs_data.generate import cache as cache_mod
from sbs_data.workspace import Workspace

OPEN_STATES = ("submitting", "submitted", "ended")


def now() -> datetime:
    """UTC, naive: every timestamp the batch package writes (the batches view shows UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


# -- typed rows -----------------------------------------------------------------------------------
@dataclass
class BatchRun:
    """A row of sbs_batch_runs (`args` decoded)."""

    run_id: str
    provider: str
    model: str
    teacher: str
    source: str
    out_name: str
    args: dict[str, Any]
    config_hash: str
    requests: int | None
    max_rounds: int
    status: str  # open | done | cancelled
    version_id: int | None


@dataclass
class Job:
    """A row of sbs_batches: one provider job."""

    job_id: str  # deterministic: sbs-<run>-r<round>-p<part>
    run_id: str
    provider: str
    model: str
    round: int
    part: int
    state: str  # submitting | submitted | ended | collected | failed
    provider_status: str | None
    provider_batch_id: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    n_requests: int
    bytes: int | None
    n_succeeded: int | None
    n_errored: int | None
    n_expired: int | None
    n_canceled: int | None
    error: str | None
    created_at: datetime
    submitted_at: datetime | None
    ended_at: datetime | None
    collected_at: datetime | None

    @property
    def batch_id(self) -> str:
        """The provider's batch id; every job past submission has one."""
        if self.provider_batch_id is None:
            raise SbsError(f"batch job {self.job_id}: no provider batch id recorded")
        return self.provider_batch_id


class JobRequest(NamedTuple):
    """A row of sbs_batch_requests, less the job: one request of a job."""

    key: str  # the cache key (the provider's custom_id)
    example_id: str | None
    sample_idx: int | None


_RUN_COLS = tuple(f.name for f in fields(BatchRun))
_JOB_COLS = tuple(f.name for f in fields(Job))
_JOB_UPDATABLE = frozenset(_JOB_COLS) - {"job_id", "run_id", "created_at"}


# -- runs -----------------------------------------------------------------------------------------
def load_run(ws: Workspace, run_id: str) -> BatchRun:
    rows = ws.all(f"SELECT {', '.join(_RUN_COLS)} FROM sbs_batch_runs WHERE run_id = ?", [run_id])
    if not rows:
        raise SbsError(f"no batch run {run_id!r}")
    row = dict(zip(_RUN_COLS, rows[0]))
    row["args"] = json.loads(row["args"])
    return BatchRun(**row)


def select_runs(ws: Workspace, run: str | None = None, *, only_open: bool = True) -> list[str]:
    """RUN as a run id, a unique run-id prefix or an output dataset name; none: every unfinished run."""
    if run is None:
        where = "WHERE version_id IS NULL AND status IN ('open', 'cancelled')" if only_open else ""
        return [r[0] for r in ws.all(f"SELECT run_id FROM sbs_batch_runs {where} ORDER BY created_at")]
    exact = ws.all("SELECT run_id FROM sbs_batch_runs WHERE run_id = ?", [run])
    if exact:
        return [exact[0][0]]
    pre = ws.all("SELECT run_id FROM sbs_batch_runs WHERE starts_with(run_id, ?) ORDER BY created_at", [run])
    if len(pre) == 1:
        return [pre[0][0]]
    if len(pre) > 1:
        raise SbsError(f"batch run {run!r} is ambiguous: {', '.join(r[0] for r in pre)}")
    named = ws.all(
        "SELECT run_id FROM sbs_batch_runs WHERE out_name = ? ORDER BY created_at DESC LIMIT 1", [run]
    )
    if named:
        return [named[0][0]]
    raise SbsError(f"no batch run {run!r} (see `sbs-data batches status`)")


def latest_run(ws: Workspace) -> list[str]:
    """The most recently created run, finished or not (none: [])."""
    return [r[0] for r in ws.all("SELECT run_id FROM sbs_batch_runs ORDER BY created_at DESC LIMIT 1")]


def open_run_like(ws: Workspace, chash: str, out_name: str) -> str | None:
    """An open run of the same plan and output (the same command again before collecting), newest first."""
    same = ws.all(
        "SELECT run_id FROM sbs_batch_runs WHERE status = 'open' AND version_id IS NULL AND config_hash = ? "
        "AND out_name = ? ORDER BY created_at DESC LIMIT 1",
        [chash, out_name],
    )
    return same[0][0] if same else None


def insert_run(
    ws: Workspace,
    *,
    run_id: str,
    provider: str,
    model: str,
    teacher: str,
    source: str,
    out_name: str,
    args: dict[str, Any],
    chash: str,
    requests: int,
    max_rounds: int,
) -> None:
    """Record a batch run (status 'open'), committed."""
    with ws.transaction():
        ws.execute(
            "INSERT INTO sbs_batch_runs (run_id, provider, model, teacher, source, out_name, args, "
            "config_hash, requests, max_rounds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                provider,
                model,
                teacher,
                source,
                out_name,
                json.dumps(args, default=str),
                chash,
                requests,
                max_rounds,
                now(),
            ],
        )


def close_run(ws: Workspace, run_id: str, status: str, version_id: int) -> None:
    """The run is finished: its status ('done' or 'cancelled') and the version it built, committed."""
    with ws.transaction():
        ws.execute(
            "UPDATE sbs_batch_runs SET status = ?, version_id = ?, finished_at = ? WHERE run_id = ?",
            [status, version_id, now(), run_id],
        )


def mark_cancelled(ws: Workspace, run_id: str) -> None:
    """An unfinished run becomes 'cancelled' (a finished one is left as it is), committed."""
    with ws.transaction():
        ws.execute(
            "UPDATE sbs_batch_runs SET status = 'cancelled' WHERE run_id = ? AND version_id IS NULL",
            [run_id],
        )


def run_summary(ws: Workspace, run_id: str, state: str) -> dict[str, Any]:
    """What `collect`, `wait` and `cancel` report for one run."""
    r = ws.all(
        "SELECT r.teacher, r.out_name, r.requests, r.status, v.dataset || '@' || v.num FROM sbs_batch_runs r "
        "LEFT JOIN sbs_versions v ON v.version_id = r.version_id WHERE r.run_id = ?",
        [run_id],
    )[0]
    j = ws.all(
        "SELECT count(*), count(*) FILTER (WHERE state IN ('submitting', 'submitted', 'ended')), "
        "coalesce(sum(n_requests), 0), coalesce(sum(n_succeeded), 0), coalesce(sum(n_errored), 0), "
        "coalesce(sum(n_expired), 0), coalesce(sum(n_canceled), 0), max(round) FROM sbs_batches WHERE run_id = ?",
        [run_id],
    )[0]
    spent = cache_mod.spent_usd(ws, run_id)
    return {
        "run": run_id,
        "teacher": r[0],
        "output": r[1],
        "requests": r[2],
        "run_status": r[3],
        "state": state,
        "jobs": j[0],
        "open_jobs": j[1],
        "rounds": (j[7] + 1) if j[7] is not None else 0,
        "submitted": j[2],
        "succeeded": j[3],
        "errored": j[4],
        "expired": j[5],
        "canceled": j[6],
        "spent_usd": round(spent, 6) if spent is not None else None,
        "version": r[4],
    }


# -- jobs -----------------------------------------------------------------------------------------
def jobs(ws: Workspace, run_id: str) -> list[Job]:
    """A run's jobs, by round and part."""
    rows = ws.all(
        f"SELECT {', '.join(_JOB_COLS)} FROM sbs_batches WHERE run_id = ? ORDER BY round, part", [run_id]
    )
    return [Job(*r) for r in rows]


def update_job(ws: Workspace, job_id: str, **changes: Any) -> None:
    """Set some columns of one job (and its updated_at), committed (or as part of the caller's transaction)."""
    unknown = set(changes) - _JOB_UPDATABLE
    if unknown:
        raise ValueError(f"not an updatable job column: {', '.join(sorted(unknown))}")
    changes["updated_at"] = now()
    sets = ", ".join(f"{k} = ?" for k in changes)
    with ws.transaction():
        ws.execute(f"UPDATE sbs_batches SET {sets} WHERE job_id = ?", [*changes.values(), job_id])


def job_requests(ws: Workspace, job_id: str) -> list[JobRequest]:
    """The (cache_key, example_id, sample_idx) of one job's requests."""
    return [
        JobRequest(*r)
        for r in ws.all(
            "SELECT cache_key, example_id, sample_idx FROM sbs_batch_requests WHERE job_id = ?", [job_id]
        )
    ]


def count_jobs(ws: Workspace, run_id: str, states: tuple[str, ...]) -> int:
    """How many of a run's jobs are in one of `states`."""
    marks = ", ".join("?" for _ in states)
    return ws.one(
        f"SELECT count(*) FROM sbs_batches WHERE run_id = ? AND state IN ({marks})", [run_id, *states]
    )


def claimed_batch_ids(ws: Workspace) -> set[str]:
    """Every provider batch id some job (of any run) has recorded: reconciling never adopts one of these."""
    return {
        r[0] for r in ws.all("SELECT provider_batch_id FROM sbs_batches WHERE provider_batch_id IS NOT NULL")
    }


def job_table(ws: Workspace, runs: list[str]) -> list[dict[str, Any]]:
    """`batches status`: one row per job of the runs, as recorded."""
    if not runs:
        return []
    marks = ", ".join("?" for _ in runs)
    cols = (
        "run_id job_id provider round part state provider_status provider_batch_id n_requests n_succeeded "
        "n_errored n_expired n_canceled error submitted_at ended_at collected_at"
    ).split()
    rows = ws.all(
        f"SELECT {', '.join(cols)} FROM sbs_batches WHERE run_id IN ({marks}) ORDER BY created_at, round, part",
        runs,
    )
    return [dict(zip(cols, r)) for r in rows]


def job_progress(ws: Workspace, run_id: str) -> list[tuple[str, str | None, int, int]]:
    """(state, provider_status, requests, requests with a result) of each of a run's jobs."""
    return ws.all(
        "SELECT state, provider_status, n_requests, coalesce(n_succeeded, 0) + coalesce(n_errored, 0) + "
        "coalesce(n_expired, 0) + coalesce(n_canceled, 0) FROM sbs_batches WHERE run_id = ?",
        [run_id],
    )


# -- keys held by jobs ----------------------------------------------------------------------------
_OPEN_KEYS = (
    "SELECT r.cache_key FROM sbs_batch_requests r JOIN sbs_batches b USING (job_id) "
    f"WHERE b.state IN {OPEN_STATES}"
)


def unsendable(ws: Workspace, keys: list[str], run_id: str | None, retryable: list[str]) -> set[str]:
    """Of `keys`, those an open job (of any run) may still answer and those whose latest failure in run
    `run_id` is of a kind not in `retryable`."""
    q = (
        f"WITH k AS (SELECT DISTINCT unnest(?::VARCHAR[]) AS cache_key) "
        f"SELECT cache_key FROM k WHERE cache_key IN ({_OPEN_KEYS}) "
        "UNION SELECT f.cache_key FROM sbs_failures f SEMI JOIN k USING (cache_key) WHERE f.run_id = ? "
        "GROUP BY f.cache_key HAVING NOT list_contains(?::VARCHAR[], arg_max(f.kind, f.attempts))"
    )
    return {r[0] for r in ws.all(q, [keys, run_id, retryable])}


def open_elsewhere(ws: Workspace, run_id: str, keys: list[str]) -> int:
    """How many of `keys` an open job of another run may still answer."""
    q = (
        "SELECT count(*) FROM sbs_batch_requests r JOIN sbs_batches b USING (job_id) "
        f"WHERE b.state IN {OPEN_STATES} AND b.run_id <> ? AND r.cache_key IN (SELECT unnest(?::VARCHAR[]))"
    )
    return ws.one(q, [run_id, keys])


# -- staging and recording a round ----------------------------------------------------------------
# A round's requests wait in a DuckDB temp table (part, key, example, sample), not in Python, until
# `record_round` turns them into jobs.
_STAGE = "_sbs_batch_stage"


def stage_open(ws: Workspace) -> None:
    """An empty stage (any earlier one is replaced)."""
    ws.execute(
        f"CREATE OR REPLACE TEMP TABLE {_STAGE} (seq BIGINT, part INTEGER, cache_key VARCHAR, "
        "example_id VARCHAR, sample_idx INTEGER)"
    )


def stage_add(ws: Workspace, rows: list[tuple]) -> None:
    """Append (seq, part, cache_key, example_id, sample_idx) rows to the stage."""
    import polars as pl

    schema = {
        "seq": pl.Int64,
        "part": pl.Int32,
        "cache_key": pl.Utf8,
        "example_id": pl.Utf8,
        "sample_idx": pl.Int32,
    }
    ws.insert_frame(_STAGE, pl.DataFrame(rows, schema=schema, orient="row"))


def stage_drop(ws: Workspace) -> None:
    ws.execute(f"DROP TABLE IF EXISTS {_STAGE}")


def record_round(
    ws: Workspace, run_id: str, provider: str, model: str, round_: int, parts: list[tuple[int, int]]
) -> None:
    """Commit the staged round: every job's intent row ('submitting', with its deterministic job id) and its
    requests, in one transaction, before any provider call; the stage is dropped."""
    at = now()
    prefix = f"sbs-{run_id}-r{round_}-p"
    try:
        with ws.transaction():
            for i, (n, size) in enumerate(parts):
                ws.execute(
                    "INSERT INTO sbs_batches (job_id, run_id, provider, model, round, part, state, n_requests, "
                    "bytes, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'submitting', ?, ?, ?, ?)",
                    [f"{prefix}{i}", run_id, provider, model, round_, i, n, size, at, at],
                )
            ws.execute(
                "INSERT INTO sbs_batch_requests (job_id, cache_key, example_id, sample_idx) "
                f"SELECT ? || CAST(part AS VARCHAR), cache_key, example_id, sample_idx FROM {_STAGE} ORDER BY seq",
                [prefix],
            )
    finally:
        stage_drop(ws)
