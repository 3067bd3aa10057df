"""The process exits between submit and collect (cleanly, or killed around the provider call): nothing is
submitted twice, and a new process collects everything."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from batch_helpers import CREATE, TEACHERS, bfast, sub_env
from fakes import FakeLLMServer
from generate_helpers import cqa_examples, gen_rows

from sbs_data.generate import batches as B
from sbs_data.workspace import Workspace

N = 10


def _cli(db, env, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sbs_data.cli", *args, "--db", str(db)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_submit_in_one_process_collect_in_another(tmp_path, provider):
    db = tmp_path / "b.duckdb"
    with Workspace.open(db) as ws:
        cqa_examples(ws, n=N)
    with FakeLLMServer() as srv:
        env = sub_env(srv)
        r = _cli(db, env, "generate", "toy", "--teacher", TEACHERS[provider], "--mode", "batch", "-f", "json")
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)[0]
        run = summary["run"]
        with Workspace.open(db, read_only=True) as ws:  # recorded before the process returned
            assert ws.all("SELECT state FROM sbs_batches WHERE run_id = ?", [run]) == [("submitted",)]
        r = _cli(db, env, "batches", "status", run, "-f", "json")
        assert r.returncode == 0 and json.loads(r.stdout)[0]["state"] == "ended", r.stderr
        r = _cli(db, env, "batches", "collect", run[:12], "-f", "json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)[0]
        assert out["state"] == "done" and out["version"] == f"toy-{TEACHERS[provider].split(':')[1]}@1"
        assert srv.batch_calls[CREATE[provider]] == 1 and set(srv.batch_submitted.values()) == {1}
        assert len(srv.batch_submitted) == N and srv.count == 0
        with Workspace.open(db, read_only=True) as ws:
            assert len(gen_rows(ws, out["version"])) == N


_CRASH = """
import os, sys
sys.path.insert(0, {tests!r})
from sbs_data.generate.batches import submission as B
from sbs_data.generate.options import PlanSpec, RunOptions
from sbs_data.generate.run import generate
from sbs_data.workspace import Workspace
from batch_helpers import bfast
where = {where!r}
if where == "after_create":  # the provider made the batch, the process dies before recording its id
    B._record_created = lambda *a, **k: os._exit(9)
else:  # the intent is committed, the process dies before any provider call
    B._submit_job = lambda *a, **k: os._exit(9)
ws = Workspace.open({db!r})
generate(ws, "toy", PlanSpec({teacher!r}), RunOptions(mode="batch", batch=bfast()))
"""


@pytest.mark.parametrize(
    "provider,where",
    [
        ("openai", "after_create"),
        ("anthropic", "after_create"),
        ("gemini", "after_create"),
        ("openai", "before_create"),
        ("gemini", "before_create"),
    ],
)
def test_killed_around_the_provider_call_never_submits_twice(tmp_path, monkeypatch, provider, where):
    db = tmp_path / "c.duckdb"
    with Workspace.open(db) as ws:
        cqa_examples(ws, n=N)  # 3 jobs of at most 4
    with FakeLLMServer() as srv:
        code = _CRASH.format(
            tests=str(__import__("pathlib").Path(__file__).parent),
            where=where,
            db=str(db),
            teacher=TEACHERS[provider],
        )
        r = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=sub_env(srv),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 9, r.stderr
        created_before = srv.batch_calls.get(CREATE[provider], 0)
        assert created_before == (1 if where == "after_create" else 0)
        with Workspace.open(db) as ws:
            states = [s for (s,) in ws.all("SELECT state FROM sbs_batches ORDER BY job_id")]
            assert states == ["submitting"] * 3  # every intent was committed before the first call
            for k, v in sub_env(srv).items():
                if k.endswith(("_API_KEY", "_BASE_URL")):
                    monkeypatch.setenv(k, v)
            out = B.wait(ws, None, settings=bfast())
            assert out[0]["state"] == "done" and len(gen_rows(ws, out[0]["version"])) == N
            ids = [i for (i,) in ws.all("SELECT provider_batch_id FROM sbs_batches")]
            assert len(ids) == len(set(ids)) == 3
        assert srv.batch_calls[CREATE[provider]] == 3  # the crashed job was found, not created again
        assert len(srv.batch_submitted) == N and set(srv.batch_submitted.values()) == {1}
        if provider == "openai" and where == "after_create":
            assert srv.batch_calls["batches.list"] >= 1 and srv.batch_calls["files.create"] == 3
        if provider == "gemini" and where == "after_create":
            assert srv.batch_calls["gemini.batches.list"] >= 1


def test_cli_wait_and_cancel(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sbs_data.cli import app

    db = str(tmp_path / "w.duckdb")
    with Workspace.open(db) as ws:
        cqa_examples(ws, n=N)
    runner = CliRunner()
    with FakeLLMServer() as srv:
        for k, v in sub_env(srv).items():
            if k.endswith(("_API_KEY", "_BASE_URL")):
                monkeypatch.setenv(k, v)
        srv.batch_polls = 3
        gen = ["generate", "toy", "-T", TEACHERS["openai"], "--mode", "batch", "--db", db, "-f", "json"]
        r = runner.invoke(app, gen)
        assert r.exit_code == 0, r.output
        run = json.loads(r.stdout)[0]["run"]
        r = runner.invoke(app, ["batches", "wait", "--poll-interval", "0.01", "--db", db, "-f", "json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)[0]["version"] == "toy-gpt-4o-mini@1"
        assert srv.batch_calls["batches.retrieve"] == 3
        srv.batch_polls = 100
        r = runner.invoke(app, [*gen, "--name", "second", "--samples", "2", "--temperature", "1"])
        assert r.exit_code == 0, r.output
        second = json.loads(r.stdout)[0]["run"]
        assert second != run
        r = runner.invoke(app, ["batches", "cancel", "second", "--db", db, "-f", "json"])
        assert r.exit_code == 0 and json.loads(r.stdout)[0]["run_status"] == "cancelled", r.output
        r = runner.invoke(app, ["batches", "status", "--db", db, "-f", "json"])
        assert r.exit_code == 0 and {x["provider_status"] for x in json.loads(r.stdout)} == {"cancelled"}
        r = runner.invoke(app, ["batches", "collect", second, "--db", db, "-f", "json"])
        out = json.loads(r.stdout)[0]
        # a cancelled run is partial: its version never takes the plain name
        assert (
            out["state"] == "done" and out["version"] == "second-partial@1" and out["succeeded"] == 2 * N // 2
        )
        r = runner.invoke(app, ["batches", "cancel", "nope", "--db", db])
        assert r.exit_code == 1 and "no batch run 'nope'" in r.output
