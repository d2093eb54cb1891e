"""/docs works without internet: Swagger UI's files come from the package, not a CDN (headless Chromium
whose resolver knows no outside host)."""

from __future__ import annotations

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from support.browser import chromium
from support.stack import Stack

ENDPOINTS = {"/inference", "/status", "/feedback", "/get_feedback", "/cancel", "/version"}


def test_docs_page_uses_only_local_assets(main_stack: Stack) -> None:
    base = main_stack.apis[0].url
    html = httpx.get(f"{base}/docs", timeout=10).text
    assert "/static/swagger-ui/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"):
        r = httpx.get(f"{base}/static/swagger-ui/{asset}", timeout=10)
        assert r.status_code == 200 and len(r.content) > 1000, asset


def test_docs_lists_the_endpoints_offline(main_stack: Stack) -> None:
    with chromium() as driver:
        driver.get(f"{main_stack.apis[0].url}/docs")  # type: ignore[attr-defined]

        def paths(d: object) -> set[str]:
            found = d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")  # type: ignore[attr-defined]
            return {e.get_attribute("data-path") or e.text for e in found}

        listed = WebDriverWait(driver, 30).until(lambda d: paths(d) if paths(d) >= ENDPOINTS else None)
        assert listed >= ENDPOINTS
        assert not any(p.startswith("/worker") for p in listed)  # worker endpoints stay hidden
