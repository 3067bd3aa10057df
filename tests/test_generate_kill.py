"""kill -9 in the middle of `sbs-data generate`, then rerun: every row present once, little paid twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fakes import FakeLLMServer
from generate_helpers import FAKE_KEY, cqa_examples, generate_argv

from sbs_data.generate.cache import replay_journals
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate
from sbs_data.workspace import Workspace

N, CONCURRENCY, LATENCY = 80, 8, 0.2


def test_sigkill_mid_run_then_resume(tmp_path, monkeypatch):
    db = tmp_path / "kill.duckdb"
    ws = Workspace.open(db)
    cqa_examples(ws, n=N)
    ws.close()
    with FakeLLMServer(latency=LATENCY) as srv:
        env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "OPENAI_BASE_URL": srv.openai_url}
        cmd = [
            sys.executable,
            "-m",
            "sbs_data.cli",
            *generate_argv(db, "--concurrency", str(CONCURRENCY), "--no-progress"),
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while srv.count < N // 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(LATENCY + 0.1)  # let the server finish the requests it was answering
        paid_first = srv.count

        ws = Workspace.open(db)
        try:
            committed = ws.one("SELECT count(*) FROM sbs_cache")
            # every answer was journaled the moment it arrived: the next run folds them in
            recovered = replay_journals(ws)
            kept = ws.one("SELECT count(*) FROM sbs_cache")
            assert kept == committed + recovered
            assert ws.one("SELECT count(*) FROM sbs_versions WHERE dataset = 'toy-gpt-4o-mini'") == 0
            assert kept > 0, "nothing was committed before the kill"
            monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
            monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_url)
            from generate_helpers import fast

            res = generate(
                ws, "toy", PlanSpec("openai:gpt-4o-mini"), RunOptions(settings=fast(concurrency=CONCURRENCY))
            )
            repaid = srv.count - paid_first
            rows = ws.all(
                "SELECT example_id, sample_idx, parse_status FROM generations_at(?)", [res.version.ref]
            )
            assert len(rows) == N and len({(r[0], r[1]) for r in rows}) == N
            assert all(r[2] == "ok" for r in rows)
            assert (
                ws.one("SELECT count(*) FROM sbs_cache")
                == ws.one("SELECT count(DISTINCT cache_key) FROM sbs_cache")
                == N
            )
            assert repaid == N - kept  # the rerun asks only for what is not cached
            paid_twice = paid_first - kept
            assert paid_twice <= CONCURRENCY, (paid_twice, kept, paid_first)  # at most those in flight
            assert res.summary["cached"] == kept
        finally:
            ws.close()
