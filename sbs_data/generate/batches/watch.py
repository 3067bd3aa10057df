"""Watching batch runs: `status` (the jobs, refreshed from the provider), `wait` (with its display), `cancel`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from sbs_data import SbsError
from sbs_data.generate.batches import collection, store
from sbs_data.generate.batches.submission import BatchSettings, cancel_job, context, resume
from sbs_data.teachers.batch_api import BatchAPI
from sbs_data.workspace import Workspace


def status(
    ws: Workspace,
    run: str | None = None,
    *,
    poll: bool = True,
    settings: BatchSettings | None = None,
    api: BatchAPI | None = None,
) -> list[dict[str, Any]]:
    """One row per job of the selected runs, refreshed from the provider (submits and downloads nothing)."""
    s = settings or BatchSettings()
    runs = store.select_runs(ws, run, only_open=run is None)
    if run is None and not runs:
        runs = store.latest_run(ws)
    for run_id in runs:
        if poll and store.count_jobs(ws, run_id, ("submitted",)):
            ctx = context(ws, run_id, s, api)
            try:
                collection.poll(ws, ctx)
            finally:
                if api is None:
                    ctx.api.close()
    return store.job_table(ws, runs)


def cancel(
    ws: Workspace,
    run: str | None = None,
    *,
    settings: BatchSettings | None = None,
    api: BatchAPI | None = None,
) -> list[dict[str, Any]]:
    """Ask the provider to cancel every open job of a run; answers that arrived are kept (collect them)."""
    s = settings or BatchSettings()
    runs = store.select_runs(ws, run)
    if run is None and len(runs) > 1:
        raise SbsError(f"several open batch runs ({', '.join(runs)}): name the one to cancel")
    if not runs:
        raise SbsError("no open batch run to cancel")
    out = []
    for run_id in runs:
        store.mark_cancelled(ws, run_id)
        ctx = context(ws, run_id, s, api)
        try:
            resume(ws, ctx, s)  # a job left 'submitting' is found and cancelled, or marked never-submitted
            for job in store.jobs(ws, run_id):
                if job.state == "submitted":
                    cancel_job(ws, ctx, job)
        finally:
            if api is None:
                ctx.api.close()
        out.append(store.run_summary(ws, run_id, "cancelled"))
    return out


def wait(
    ws: Workspace,
    run: str | None = None,
    *,
    settings: BatchSettings | None = None,
    api: BatchAPI | None = None,
    collect_results: bool = True,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Block until the selected runs are finished (collecting and re-submitting on the way), or with
    `collect_results=False` until every submitted job has ended. A rich display shows progress."""
    s = settings or BatchSettings()
    runs = store.select_runs(ws, run)
    if not runs:
        return []
    t0 = time.monotonic()
    show = s.progress if s.progress is not None else sys.stderr.isatty()
    display = _WaitDisplay(show)
    try:
        while True:
            if collect_results:
                summaries = [collection.collect(ws, r, settings=s, api=api)[0] for r in runs]
                finished = all(x["state"] == "done" for x in summaries)
            else:
                status(ws, run, settings=s, api=api)
                summaries = [store.run_summary(ws, r, "waiting") for r in runs]
                finished = not any(store.count_jobs(ws, r, ("submitting", "submitted")) for r in runs)
            display.update(ws, runs)
            if finished:
                return summaries
            if timeout is not None and time.monotonic() - t0 >= timeout:
                raise SbsError(
                    f"batch runs still open after {timeout:g} s; wait again later (nothing is lost)"
                )
            sleep(s.poll_interval)
    finally:
        display.close()


class _WaitDisplay:
    """One rich bar per run: requests with a result out of requests submitted, plus job states."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            refresh_per_second=2,
        )
        self.p.start()

    def update(self, ws: Workspace, runs: list[str]) -> None:
        if not self.enabled:
            return
        for run_id in runs:
            rows = store.job_progress(ws, run_id)
            total = sum(r[2] for r in rows) or 1
            done = sum(min(r[2], r[3]) for r in rows)
            states: dict[str, int] = {}
            for r in rows:
                states[r[1] or r[0]] = states.get(r[1] or r[0], 0) + 1
            detail = ", ".join(f"{n} {k}" for k, n in sorted(states.items()))
            if run_id not in self.tasks:
                self.tasks[run_id] = self.p.add_task(run_id, total=total, completed=done, detail=detail)
            else:
                self.p.update(self.tasks[run_id], total=total, completed=done, detail=detail)

    def close(self) -> None:
        if self.enabled:
            self.p.stop()
