"""`sbs-data browse` through Starlette's TestClient: pages, filters, the verdicts API and its validation,
the token and host rules, CSRF checks, the SQL console's sandbox, hostile text escaped."""

from __future__ import annotations

import html
import re

import pytest
from review_helpers import HOSTILE_RATIONALE, build_reviewable
from starlette.testclient import TestClient
from typer.testing import CliRunner
from workspace_helpers import make_examples, make_generations

from sbs_data import SbsError
from sbs_data.cli import app as cli_app
from sbs_data.review import app as appmod
from sbs_data.review.app import check_host, create_app
from sbs_data.workspace import Workspace

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("browse") / "w.duckdb")
    gen, scored, sel = build_reviewable(ws)
    client = TestClient(create_app(ws), base_url=BASE)
    yield ws, client, sel
    ws.close()


def _rows(html: str) -> list[tuple[str, int]]:
    return [(e, int(s)) for e, s in re.findall(r'data-example="([^"]+)" data-sample="(\d+)"', html)]


def test_pages_answer(served):
    ws, c, sel = served
    home = c.get("/")
    assert home.status_code == 200
    for ref in ("rv@1", "rv-gen@1", "rv-gen@2", "rv-sel@1"):
        assert f'data-ref="{ref}"' in home.text
    page = c.get(f"/v/{sel.ref}")
    assert page.status_code == 200 and len(_rows(page.text)) == 26
    assert (
        "Content-Security-Policy" in page.headers
        and "script-src 'self'" in page.headers["Content-Security-Policy"]
    )
    row = c.get(f"/v/{sel.ref}/row/tr003")
    assert row.status_code == 200 and _rows(row.text) == [("tr003", 0), ("tr003", 1)]
    assert "relative position (0-1) of the first mention" in row.text  # a signal's meaning
    assert "So the answer is 999." in row.text  # the raw completion
    report = c.get(f"/v/{sel.ref}/report")
    assert report.status_code == 200 and "<svg" in report.text and "gold" in report.text
    assert c.get(f"/v/{sel.ref}/report.html").status_code == 200
    assert c.get("/static/app.js").status_code == 200


def test_filters_sort_search_and_paging(served):
    _, c, sel = served
    url = f"/v/{sel.ref}"
    assert {e for e, _ in _rows(c.get(url, params={"split": "test"}).text)} == {"te000", "te001"}
    dropped = _rows(c.get(url, params={"kept": "false"}).text)
    assert dropped == [("h000", 1), ("tr000", 1), ("tr003", 1), ("tr006", 1), ("tr009", 1)]
    assert _rows(c.get(url, params={"rule": "gold"}).text) == dropped
    assert len(_rows(c.get(url, params={"agree": "false"}).text)) == 5
    assert _rows(c.get(url, params={"q": "TR004 (sample 1"}).text) == [("tr004", 1)]
    assert _rows(c.get(url, params={"q": "100%"}).text) == []  # % is a literal, not a wildcard
    assert [e for e, _ in _rows(c.get(url, params={"q": "onmouseover"}).text)] == ["h000", "h000"]
    assert _rows(
        c.get(url, params={"max.vote_share": "0.5", "split": "train", "is.gold_match": "false"}).text
    ) == [
        ("h000", 1),
        ("tr000", 1),
        ("tr003", 1),
        ("tr006", 1),
        ("tr009", 1),
    ]
    by_share = _rows(c.get(url, params={"sort": "vote_share", "n": "25"}).text)
    assert len(by_share) == 25 and by_share[0][0] in {"h000", "tr000", "tr003", "tr006", "tr009"}
    page2 = c.get(url, params={"n": "25", "page": "2"}).text
    assert _rows(page2) == [("tr009", 1)] and "page 2 of 2" in page2
    desc = _rows(c.get(url, params={"sort": "-example_id", "n": "25"}).text)
    assert desc[0] == ("tr009", 0) and desc[-1] == (
        "h000",
        0,
    )  # ties keep the default order; h000 #1 is on page 2


@pytest.mark.parametrize(
    "params, message",
    [
        ({"sort": "words; DROP TABLE sbs_versions"}, "cannot sort by"),
        ({"min.nope": "1"}, "unknown signal 'nope'"),
        ({"min.words": "lots"}, "min.words must be a number"),
        ({"kept": "maybe"}, "kept must be true or false"),
        ({"n": "7"}, "n must be one of"),
        ({"verdict": "perhaps"}, "verdict filter must be"),
        ({"page": "1000000000000000000", "sort": "teacher"}, "page must be at most"),  # OFFSET past a BIGINT
        ({"page": "1000000000000000000", "split": "train"}, "page must be at most"),
    ],
)
def test_bad_page_parameters_get_a_clear_400(served, params, message):
    _, c, sel = served
    r = c.get(f"/v/{sel.ref}", params=params)
    assert r.status_code == 400 and message in html.unescape(r.text)


def test_unknown_pages_and_examples_versions(served):
    _, c, sel = served
    r = c.get("/v/nope@1")
    assert r.status_code == 404 and "no such version" in r.text
    assert c.get(f"/v/{sel.ref}/row/nope").status_code == 404
    r = c.get("/v/rv@1")
    assert r.status_code == 400 and "holds examples" in r.text


def test_hostile_teacher_text_is_escaped(served):
    _, c, sel = served
    for url in (f"/v/{sel.ref}", f"/v/{sel.ref}/row/h000", f"/v/{sel.ref}?q=script"):
        text = c.get(url).text
        assert "<script>window.__pwned" not in text and "<img src=x" not in text and "<svg onload" not in text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
    assert HOSTILE_RATIONALE.startswith("<script>")


def test_verdicts_api_round_trip_and_validation(served):
    ws, c, sel = served
    ok = c.post(
        "/api/verdicts",
        json={"ref": sel.ref, "example_id": "tr007", "sample": 1, "verdict": "drop", "reason": "r"},
    )
    assert ok.status_code == 200 and ok.json()["stored"][0]["verdict"] == "drop"
    ok = c.post("/api/verdicts", json={"ref": sel.ref, "example_id": "tr007", "sample": 1, "verdict": "keep"})
    got = c.get("/api/verdicts", params={"ref": sel.ref}).json()["verdicts"]
    assert [(v["example_id"], v["sample"], v["verdict"], v["reason"]) for v in got] == [
        ("tr007", 1, "keep", None)
    ]
    assert _rows(c.get(f"/v/{sel.ref}", params={"verdict": "keep"}).text) == [("tr007", 1)]
    bad = [
        ({"ref": "nope@1", "example_id": "tr001", "verdict": "drop"}, 404, "no such version"),
        ({"ref": sel.ref, "example_id": "zz", "verdict": "drop"}, 400, "no example 'zz'"),
        ({"ref": sel.ref, "example_id": "tr001", "verdict": "meh"}, 400, "keep or drop"),
        ({"ref": sel.ref, "example_id": "tr001", "sample": 5, "verdict": "drop"}, 400, "no sample 5"),
        ({"ref": sel.ref, "verdict": "drop"}, 400, "missing field 'example_id'"),
        (
            {"ref": sel.ref, "example_id": "tr001", "verdict": "drop", "extra": 1},
            400,
            "unknown field(s) extra",
        ),
        ({"ref": 3, "example_id": "tr001", "verdict": "drop"}, 400, "ref must be a string"),
        ([1, 2], 400, "must be a JSON object"),
    ]
    for body, status, message in bad:
        r = c.post("/api/verdicts", json=body)
        assert r.status_code == status and message in r.json()["error"], (body, r.text)
    r = c.post("/api/verdicts", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert c.get("/api/verdicts").status_code == 400
    assert c.get("/api/verdicts", params={"ref": "nope@2"}).status_code == 404
    assert len(c.get("/api/verdicts", params={"ref": sel.ref}).json()["verdicts"]) == 1


def test_state_changes_need_a_json_post_from_this_origin(served):
    _, c, sel = served
    body = {"ref": sel.ref, "example_id": "tr008", "verdict": "drop"}
    form = c.post("/api/verdicts", data=body)  # what a cross-site <form> can send
    assert form.status_code == 415
    plain = c.post("/api/verdicts", content=b'{"ref": "rv-sel@1"}', headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    cross = c.post("/api/verdicts", json=body, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "cross-origin" in cross.json()["error"]
    assert c.get("/api/apply").status_code == 405  # no state-changing GET
    same = c.post("/api/verdicts", json=body, headers={"Origin": BASE})
    assert same.status_code == 200
    rebound = c.get("/", headers={"Host": "attacker.example:8765"})
    assert rebound.status_code == 400 and "unexpected Host" in rebound.text


def test_apply_button_endpoint(served):
    ws, c, sel = served
    c.post("/api/verdicts", json={"ref": sel.ref, "example_id": "tr005", "sample": 0, "verdict": "drop"})
    r = c.post("/api/apply", json={"ref": sel.ref, "name": "rv-web"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["version"] == "rv-web@1" and out["counts"]["dropped_by_review"] >= 1
    page = c.get("/v/rv-web@1", params={"rule": "review"}).text
    assert ("tr005", 0) in _rows(page)
    r = c.post("/api/apply", json={"ref": sel.ref, "name": "bad name"})
    assert r.status_code == 400 and "bad dataset name" in r.json()["error"]
    r = c.post("/api/apply", json={"ref": sel.ref})
    assert r.status_code == 400 and "missing field 'name'" in r.json()["error"]


def test_sql_console_is_the_read_only_sandbox(served):
    ws, c, sel = served
    r = c.get("/sql", params={"q": "SELECT ref, kind FROM versions ORDER BY ref"})
    assert r.status_code == 200 and 'id="sql-result"' in r.text and "rv-sel@1" in r.text
    for q, word in [
        ("DELETE FROM sbs_verdicts", "DELETE"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
        ("INSTALL httpfs", "INSTALL"),
        ("SET lock_configuration = false", "SET"),
        ("ATTACH '/tmp/other.duckdb'", "ATTACH"),
    ]:
        r = c.get("/sql", params={"q": q})
        assert (
            r.status_code == 200 and 'id="sql-error"' in r.text and word in r.text and "--write" in r.text
        ), q
    r = c.get("/sql", params={"q": "SELECT * FROM no_such_table"})
    assert "SQL error" in r.text
    r = c.get("/sql", params={"q": "SELECT range AS i FROM range(5000)"})
    assert r.text.count("<tr><td>") == 1000 and "more not shown" in r.text
    assert ws.one("SELECT count(*) FROM sbs_versions") >= 4  # nothing was deleted
    # DuckDB calls a data-modifying CTE a SELECT, and this connection can write: the console rolls it back
    before = ws.one("SELECT count(*) FROM sbs_generations")
    for q in (
        "WITH d AS (DELETE FROM sbs_generations RETURNING *) SELECT count(*) FROM d",
        "WITH d AS (UPDATE sbs_versions SET note = 'pwned' RETURNING *) SELECT count(*) FROM d",
    ):
        c.get("/sql", params={"q": q})
    assert ws.one("SELECT count(*) FROM sbs_generations") == before > 0
    assert ws.one("SELECT count(*) FROM sbs_versions WHERE note = 'pwned'") == 0
    r = c.get("/v/" + sel.ref)
    assert r.status_code == 200  # the server goes on working after the rollbacks


def test_sql_console_stops_a_long_query_and_caps_cells(served, monkeypatch):
    """The server answers one request at a time: a query that runs on is interrupted, not left to hold every
    other page; a huge cell is cut, not sent whole."""
    _, c, sel = served
    monkeypatch.setattr(appmod, "SQL_TIMEOUT_S", 0.3)
    r = c.get("/sql", params={"q": "SELECT count(*) FROM range(3000000000) t WHERE hash(t.range) % 7 = 3"})
    assert r.status_code == 200 and "stopped after 0.3 s" in html.unescape(r.text)
    assert c.get(f"/v/{sel.ref}").status_code == 200
    r = c.get("/sql", params={"q": "SELECT repeat('x', 100000) AS big, 'small' AS s"})
    assert r.status_code == 200 and "x" * appmod.SQL_MAX_CELL_CHARS in r.text
    assert "x" * (appmod.SQL_MAX_CELL_CHARS + 1) not in r.text and "(100,000 characters)" in r.text
    assert "<td>small</td>" in r.text


def test_sql_console_reads_no_files_of_the_server(served, tmp_path):
    """Anyone who reaches the port (every local user on loopback) must not read this user's files through it."""
    _, c, _ = served
    secret = tmp_path / "secret.txt"
    secret.write_text("api-key-7f3a9\n")
    for q in (f"SELECT * FROM read_text('{secret}')", f"SELECT * FROM read_csv('{secret}')"):
        r = c.get("/sql", params={"q": q})
        assert r.status_code == 200 and "api-key-7f3a9" not in r.text and 'id="sql-error"' in r.text, q
    r = c.get("/sql", params={"q": "SELECT count(*) AS n FROM generations"})
    assert 'id="sql-result"' in r.text  # the workspace itself is still there


def test_token_guards_every_request(tmp_path):
    ws = Workspace.open(tmp_path / "t.duckdb")
    try:
        build_reviewable(ws, n=3)
        c = TestClient(create_app(ws, token="s3cret-token"), base_url=BASE, follow_redirects=False)
        assert c.get("/").status_code == 403
        assert c.get("/static/app.js").status_code == 403
        assert c.post("/api/verdicts", json={}).status_code == 403
        assert c.get("/?token=wrong-token").status_code == 403
        first = c.get("/v/rv-sel@1?token=s3cret-token&split=train")
        assert first.status_code == 303 and first.headers["location"] == "/v/rv-sel@1?split=train"
        assert (
            "HttpOnly" in first.headers["set-cookie"]
            and "samesite=strict" in first.headers["set-cookie"].lower()
        )
        assert c.get("/").status_code == 200  # the cookie carries it now
        port = BASE.rsplit(":", 1)[1]
        assert first.headers["set-cookie"].startswith(f"sbs_token_{port}=")  # per port: servers don't collide
        other = TestClient(c.app, base_url="http://127.0.0.1:9999", cookies=dict(c.cookies))
        assert other.get("/").status_code == 403  # another port's cookie is not this server's
        bare = TestClient(c.app, base_url=BASE)  # no cookie
        assert bare.get("/", headers={"X-SBS-Token": "s3cret-token"}).status_code == 200
        assert bare.get("/api/verdicts?ref=rv-sel@1").status_code == 403
    finally:
        ws.close()


def test_non_loopback_host_needs_a_token():
    check_host("127.0.0.1", None)
    check_host("localhost", None)
    check_host("::1", None)
    with pytest.raises(SbsError, match="--token"):
        check_host("0.0.0.0", None)
    with pytest.raises(SbsError, match="at least 8"):
        check_host("0.0.0.0", "short")
    check_host("0.0.0.0", "a-long-enough-token")
    r = CliRunner().invoke(cli_app, ["browse", "--host", "0.0.0.0", "--db", "/nonexistent/w.duckdb"])
    assert r.exit_code == 1 and "--host 0.0.0.0" in r.output and "--token" in r.output


def test_browse_refuses_a_missing_workspace(tmp_path, monkeypatch):
    """Like the reading commands: no empty workspace made behind a mistyped --db."""
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # never serve here
    db = tmp_path / "typo.duckdb"
    r = CliRunner().invoke(cli_app, ["browse", "--port", "0", "--db", str(db)])
    assert r.exit_code == 1 and "no workspace here" in r.output and not db.exists()


def test_row_links_reach_every_example_id(tmp_path):
    """Ids with slashes, `%`, `?`, `#`, unicode, markup, and `.`/`..` segments (which a browser resolves in a
    path, escaped or not): each row link on the version page, normalised as a browser does, opens its row."""
    ids = ["a/b", "50%", "q?x#y", "é ü", "<i>", "..", ".", "x/../y", "./rel.txt", "a//b"]
    ws = Workspace.open(tmp_path / "ids.duckdb")
    try:
        rows = [
            {"id": i, "input": f"What is {k} + 1?", "label": "1", "split": "train"} for k, i in enumerate(ids)
        ]
        ex = make_examples(ws, "ids", "svamp", rows)
        gen = make_generations(
            ws,
            ex,
            [{"example_id": i, "sample_idx": 0, "raw": "So the answer is 1."} for i in ids],
            name="ids-gen",
        )
        c = TestClient(create_app(ws), base_url=BASE)
        page = c.get(f"/v/{gen.ref}", params={"n": 25}).text
        hrefs = [html.unescape(h) for h in re.findall(r'<td><a href="([^"]+)">', page)]
        assert len(hrefs) == len(ids)
        opened = []
        for h in hrefs:
            r = c.get(h)  # httpx resolves dot segments as browsers do
            assert r.status_code == 200, (h, r.text[-300:])
            opened.append(html.unescape(re.search(r"<h1>(.*?) <small>", r.text).group(1)))
        assert sorted(opened) == sorted(ids)
        assert c.get(f"/v/{gen.ref}/row").status_code == 400
    finally:
        ws.close()


def test_browse_refuses_before_serving(tmp_path, monkeypatch):
    """An examples version, or a busy port, is a clear error before any work (no table built, nothing served)."""
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # never serve here
    db = tmp_path / "w.duckdb"
    with Workspace.open(db) as ws:
        build_reviewable(ws, n=3)
    r = CliRunner().invoke(cli_app, ["browse", "rv@1", "--port", "0", "--db", str(db)])
    assert r.exit_code == 1 and "rv@1 holds examples" in r.output and "serving" not in r.output
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = CliRunner().invoke(cli_app, ["browse", "rv-sel@1", "--port", str(port), "--db", str(db)])
        assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in r.output
        assert "preparing" not in r.output  # refused before building the version's row table
    finally:
        busy.close()


def test_browse_answers_the_loopback_address_it_binds(tmp_path, monkeypatch):
    """`--host 127.0.0.2` (any loopback address) serves its own URL; other Host names are still refused."""
    import uvicorn

    seen: dict[str, int] = {}

    def run(self, sockets=None):  # instead of serving: ask the app what the printed URL would get
        port = sockets[0].getsockname()[1]
        for name in ("127.0.0.2", "evil.example"):
            seen[name] = TestClient(self.config.app, base_url=f"http://{name}:{port}").get("/").status_code

    monkeypatch.setattr(uvicorn.Server, "run", run)
    db = tmp_path / "w.duckdb"
    Workspace.open(db).close()
    r = CliRunner().invoke(cli_app, ["browse", "--host", "127.0.0.2", "--port", "0", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert seen == {"127.0.0.2": 200, "evil.example": 400}


@pytest.mark.parametrize(
    "url, body",
    [
        ("/api/verdicts", '{"ref": "rv-sel@1", "example_id": "\\ud800", "verdict": "drop"}'),
        ("/api/verdicts", '{"ref": "rv-sel@\\udfff", "example_id": "tr001", "verdict": "drop"}'),
        ("/api/apply", '{"ref": "rv-sel@1", "name": "rv-x", "note": "\\ud800"}'),
    ],
)
def test_a_lone_surrogate_in_a_json_body_is_a_400(served, url, body):
    _, c, _ = served
    r = c.post(url, content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400 and "unpaired surrogate" in r.json()["error"]


def test_a_page_of_rows_shows_previews_and_the_row_page_the_whole_text(tmp_path):
    from review_helpers import make_examples, make_generations

    from sbs_data.review.rows import TEXT_PREVIEW_CHARS

    ws = Workspace.open(tmp_path / "long.duckdb")
    try:
        ex = make_examples(
            ws, "lg", "svamp", [{"id": "a1", "input": "q " * 3000, "label": "1", "split": "train"}]
        )
        long = "step " * 4000
        make_generations(
            ws, ex, [{"example_id": "a1", "sample_idx": 0, "raw": long + ". So the answer is 1."}]
        )
        c = TestClient(create_app(ws), base_url=BASE)
        page = c.get("/v/lg-gen@1").text
        assert (
            "step " * (TEXT_PREVIEW_CHARS // 5 - 1) in page
            and "step " * (TEXT_PREVIEW_CHARS // 5 + 1) not in page
        )
        assert "q " * (TEXT_PREVIEW_CHARS // 2 + 1) not in page
        row = c.get("/v/lg-gen@1/row/a1").text
        assert long.strip() in row
    finally:
        ws.close()


def test_a_body_over_the_cap_is_refused_before_it_is_read_whole(served):
    ws, c, sel = served
    big = b'{"ref": "' + b"x" * (70 * 1024) + b'"}'
    r = c.post("/api/verdicts", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "64 KiB" in r.json()["error"]

    def chunks():  # no Content-Length: a chunked body is counted as it arrives
        for _ in range(100):
            yield b"x" * 1024

    r = c.post("/api/verdicts", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
