"""The browser fixture itself: Chromium renders a page, and hostile text set as text stays inert."""

from __future__ import annotations


def test_chromium_renders_text_as_text(browser):
    page = browser.new_page()
    try:
        page.set_content("<p id=x></p>")
        page.eval_on_selector("#x", "(el, t) => { el.textContent = t }", "<img src=x onerror=window.pwned=1>")
        assert page.inner_text("#x") == "<img src=x onerror=window.pwned=1>"
        assert page.evaluate("window.pwned") is None
    finally:
        page.close()
