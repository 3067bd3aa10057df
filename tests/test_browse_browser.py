"""`sbs-data browse` in headless Chromium, against a real server process: pages, filters, keyboard review,
verdicts surviving `kill -9`, the apply button, and export of the reviewed selection; hostile teacher text
stays inert. One server and workspace for the module (restarted once, by the kill test)."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from browser_helpers import screenshot_path
from review_helpers import Server, build_reviewable

from sbs_data.export.options import ExportOptions
from sbs_data.export.shards import export
from sbs_data.workspace import Workspace


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    db = tmp_path_factory.mktemp("browser") / "w.duckdb"
    with Workspace.open(db) as ws:
        build_reviewable(ws)
    srv = Server(db)
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait(10)


@pytest.fixture
def page(browser):
    p = browser.new_page(viewport={"width": 1280, "height": 800})
    p.dialogs, p.answer = [], None  # type: ignore[attr-defined]

    def on_dialog(d):
        """Record every dialog; answer a prompt the test expects (`page.answer`), dismiss any other."""
        p.dialogs.append(d.message)  # type: ignore[attr-defined]
        if p.answer is not None:  # type: ignore[attr-defined]
            d.accept(p.answer)  # type: ignore[attr-defined]
            p.answer = None  # type: ignore[attr-defined]
        else:
            d.dismiss()

    p.on("dialog", on_dialog)
    yield p
    p.close()


def _cell(page, example: str, sample: int) -> str:
    return f'tr[data-example="{example}"][data-sample="{sample}"] td.verdict'


def test_pages_render_and_hostile_text_stays_inert(app_server, page):
    base = app_server.url
    page.goto(base + "/")
    assert page.locator("#versions tbody tr").count() == 4
    page.screenshot(path=str(screenshot_path("browse-versions.png")))
    page.goto(base + "/v/rv-sel@1")
    assert page.locator("#rows tbody tr.row").count() == 26
    hostile = page.locator('tr[data-example="h000"][data-sample="0"] td.rationale')
    assert "<script>window.__pwned = 1</script>" in hostile.inner_text()
    page.screenshot(path=str(screenshot_path("browse-version.png")))
    page.goto(base + "/v/rv-sel@1/row/h000")
    assert "<svg onload=window.__pwned=3>" in page.locator("#input").inner_text()
    assert page.locator("article.card").count() == 2
    page.hover("#input")  # the onmouseover payload, were it markup
    page.screenshot(path=str(screenshot_path("browse-row.png")), full_page=True)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("script").count() == 1  # only the app's own
    assert page.dialogs == []  # type: ignore[attr-defined]
    page.goto(base + "/v/rv-sel@1/report")
    assert page.locator("svg").count() >= 2
    page.screenshot(path=str(screenshot_path("browse-report.png")), full_page=True)
    page.goto(base + "/sql")
    page.fill("#sql", "SELECT ref, kind, row_count FROM versions ORDER BY ref")
    page.click("#sql-form button")
    page.wait_for_selector("#sql-result")
    assert page.locator("#sql-result tbody tr").count() == 4
    page.screenshot(path=str(screenshot_path("browse-sql.png")))


def test_filter_judge_with_keyboard_reload_and_open_a_row(app_server, page):
    base = app_server.url
    page.goto(base + "/v/rv-sel@1")
    page.select_option('select[name="split"]', "train")
    page.select_option("#sig", "words")
    page.fill("#sig-lo", "1")
    page.select_option("#sort", "-vote_share")
    page.click('#filters button[type="submit"]')
    page.wait_for_url(re.compile(r"split=train"))
    assert "min.words=1" in page.url and "sort=-vote_share" in page.url
    assert "_sig" not in page.url and "teacher=" not in page.url
    rows = page.locator("#rows tbody tr.row")
    assert rows.count() == 22  # 11 train examples x 2 samples
    assert rows.first.get_attribute("data-example") == "tr001"  # vote share 1.0 first, then the default order
    page.select_option("#sort", "")
    page.click('#filters button[type="submit"]')
    page.wait_for_url(re.compile(r"^[^?]*\?split=train&min\.words=1$"))
    page.keyboard.press("j")  # first row: h000 #0
    page.keyboard.press("j")  # h000 #1
    page.keyboard.press("r")  # drop it; the cursor moves on to tr000 #0
    page.wait_for_selector(_cell(page, "h000", 1) + ".drop")
    page.keyboard.press("a")  # keep tr000 #0
    page.wait_for_selector(_cell(page, "tr000", 0) + ".keep")
    page.keyboard.press("j")  # tr001 #0
    page.keyboard.press("k")  # back to tr000 #1
    page.answer = "restates the question"
    page.keyboard.press("j")  # tr001 #0
    page.keyboard.press("Shift+R")  # drop with a reason (a prompt)
    page.wait_for_selector(_cell(page, "tr001", 0) + ".drop")
    page.screenshot(path=str(screenshot_path("browse-judged.png")))
    page.reload()
    page.screenshot(path=str(screenshot_path("browse-reviewed.png")))
    assert page.locator(_cell(page, "h000", 1)).inner_text() == "drop"
    assert page.locator(_cell(page, "tr000", 0)).inner_text() == "keep"
    assert page.locator(_cell(page, "tr001", 0)).get_attribute("title") == "restates the question"
    page.keyboard.press("j")
    page.keyboard.press("o")  # open the row
    page.wait_for_url(re.compile(r"/row/h000$"))
    page.keyboard.press("j")
    page.keyboard.press("a")  # sample 0 of h000, on the row page
    page.wait_for_selector('article[data-sample="0"] .verdict.keep')
    page.keyboard.press("n")
    page.wait_for_url(re.compile(r"/row/te000$"))


def test_verdict_survives_kill9_then_apply_and_export(app_server, page, tmp_path):
    base = app_server.url
    page.goto(base + "/v/rv-sel@1?split=test")
    page.keyboard.press("j")
    page.keyboard.press("r")  # te000 #0: drop
    page.wait_for_selector(_cell(page, "te000", 0) + ".drop")
    app_server.kill9()  # the response came back, so the verdict is committed
    app_server.start()
    base = app_server.url
    page.goto(base + "/v/rv-sel@1?split=test")
    assert page.locator(_cell(page, "te000", 0)).inner_text() == "drop"
    page.fill("#apply-name", "rv-reviewed")
    page.click("#apply")
    page.wait_for_selector("#applied-link")
    assert "made rv-reviewed@1" in page.locator("#apply-result").inner_text()
    page.click("#applied-link")
    page.wait_for_url(re.compile(r"/v/rv-reviewed@1"))
    page.goto(base + "/v/rv-reviewed@1?rule=review")
    judged = {
        (r.get_attribute("data-example"), r.get_attribute("data-sample"))
        for r in page.locator("#rows tbody tr.row").all()
    }
    assert judged == {("te000", "0"), ("tr001", "0")}  # h000 #1 was dropped by the recipe already
    out = app_server.stop()
    assert "stopped" in out
    with Workspace.open(app_server.db) as ws:
        res = export(ws, "rv-reviewed@1", tmp_path / "out", ExportOptions(validation_fraction=None))
    m = json.loads((res.out / "manifest.json").read_text())
    keys = set()
    for info in m["splits"].values():
        for shard in info["shards"]:
            keys |= {
                (r["example_id"], r["sample_idx"]) for r in pq.read_table(res.out / shard["path"]).to_pylist()
            }
    assert ("te000", 0) not in keys and ("tr001", 0) not in keys and ("h000", 1) not in keys
    assert ("te000", 1) in keys and ("tr000", 0) in keys and len(keys) == 19
