"""The progress bar of a generation run (stderr, only on a terminal)."""

from __future__ import annotations

import time
from typing import Any


class Progress:
    """A rich bar of calls (requests that share a prompt are one call): calls/s, ETA, spend, retries,
    rate-limit waits and failures."""

    def __init__(self, total: int, done: int, enabled: bool, label: str = "generate"):
        self.enabled = enabled and total > 0
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} calls/s"),
            TimeRemainingColumn(),
            TextColumn(
                "${task.fields[spend]} · retries {task.fields[retries]} · 429s {task.fields[throttled]} · "
                "failed {task.fields[failed]}"
            ),
            console=Console(stderr=True),
            refresh_per_second=4,
            transient=False,
        )
        self.t0 = time.perf_counter()
        self.base = done
        self.task = self.p.add_task(
            "gen", total=total, completed=done, rate="-", spend="0.00", retries=0, throttled=0, failed=0
        )
        self.p.start()

    def update(self, c: Any) -> None:
        if not self.enabled:
            return
        n = c.answered + c.failed
        el = max(1e-6, time.perf_counter() - self.t0)
        spend = f"{c.spend:.2f}" if c.spend_known else f"{c.spend:.2f}+?"
        self.p.update(
            self.task,
            completed=self.base + n,
            rate=f"{n / el:.0f}",
            spend=spend,
            retries=c.retries,
            throttled=c.rate_limited,
            failed=c.failed,
        )

    def close(self) -> None:
        if self.enabled:
            self.p.stop()
