"""`sbs-data browse` as a real process (no browser): the writer lock, a verdict surviving `kill -9`, the token
URL it prints, a clean Ctrl-C."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from review_helpers import Server, build_reviewable
from typer.testing import CliRunner

from sbs_data.cli import app
from sbs_data.workspace import Workspace

runner = CliRunner()


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_verdict_survives_kill9_and_the_server_holds_the_writer_lock(tmp_path):
    db = tmp_path / "w.duckdb"
    with Workspace.open(db) as ws:
        build_reviewable(ws, n=4)
    srv = Server(db, "rv-sel")
    srv.start()
    try:
        assert "preparing rv-sel@1" in srv.printed and f"{srv.url}/v/rv-sel@1" in srv.printed
        busy = runner.invoke(app, ["review", "status", "--db", str(db)])
        assert busy.exit_code == 1 and "in use by another sbs-data process" in busy.output
        assert "sbs-data browse` holds it until stopped" in " ".join(busy.output.split())
        status, out = _post(
            srv.url + "/api/verdicts",
            {"ref": "rv-sel@1", "example_id": "tr002", "sample": 1, "verdict": "drop"},
        )
        assert status == 200 and out["stored"][0]["verdict"] == "drop"
        status, out = _post(
            srv.url + "/api/verdicts", {"ref": "rv-sel@1", "example_id": "zz", "verdict": "drop"}
        )
        assert status == 400 and "no example 'zz'" in out["error"]
        srv.kill9()  # no shutdown, no checkpoint: the verdict must already be committed
        st = runner.invoke(app, ["review", "status", "--db", str(db), "-f", "json"])
        assert st.exit_code == 0, st.output
        assert [(r["ref"], r["reviewed"], r["drop"]) for r in json.loads(st.stdout)] == [("rv-sel@1", 1, 1)]
        srv.start()
        with urllib.request.urlopen(srv.url + "/api/verdicts?ref=rv-sel@1", timeout=30) as r:
            got = json.loads(r.read())["verdicts"]
        assert [(v["example_id"], v["sample"], v["verdict"]) for v in got] == [("tr002", 1, "drop")]
        out_text = srv.stop()
        assert "stopped" in out_text
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)


def test_token_url_is_printed_and_required(tmp_path):
    db = tmp_path / "w.duckdb"
    with Workspace.open(db) as ws:
        build_reviewable(ws, n=2)
    srv = Server(db, "--token", "tok-123456789")
    srv.start()
    try:
        assert f"{srv.url}/?token=tok-123456789" in srv.printed
        try:
            urllib.request.urlopen(srv.url + "/", timeout=30)
            raise AssertionError("answered without the token")
        except urllib.error.HTTPError as e:
            assert e.code == 403
        req = urllib.request.Request(srv.url + "/", headers={"X-SBS-Token": "tok-123456789"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200 and b"rv-sel@1" in r.read()
        status, _ = _post(
            srv.url + "/api/verdicts", {"ref": "rv-sel@1", "example_id": "tr000", "verdict": "keep"}
        )
        assert status == 403
        srv.stop()
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait(10)
