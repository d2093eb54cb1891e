"""/dashboard in headless Chromium: the token is typed into the page (never in the URL), the page
shows the example model's worker and version, and updates by itself after jobs run.

`MLSTACK_UPDATE_SCREENSHOTS=1 bin/test tests/test_dashboard_browser.py` refreshes docs/dashboard.png."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from support.browser import chromium
from support.infra import REPO
from support.stack import Stack

MODEL = "CLF_IRIS"
IRIS = ["5.1;3.5;1.4;0.2", "6.7;3.0;5.2;2.3"]
# The README's picture; refreshed only on request, so that a test run leaves the tree as it was.
DOCS_SCREENSHOT = REPO / "docs" / "dashboard.png"
UPDATE_ENV = "MLSTACK_UPDATE_SCREENSHOTS"


def test_dashboard_data_needs_the_client_token(main_stack: Stack) -> None:
    url = f"{main_stack.apis[0].url}/dashboard/data"
    assert httpx.get(url, timeout=10).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": f"Bearer {main_stack.worker_token}"}, timeout=10)
    assert wrong.status_code == 401
    ok = httpx.get(url, headers={"Authorization": f"Bearer {main_stack.api_token}"}, timeout=10)
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"
    page = httpx.get(f"{main_stack.apis[0].url}/dashboard", timeout=10)
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    names = {m["model"] for m in ok.json()["models"]}
    assert {"TEST_ECHO", "TEST_SLOW"} <= names


def test_dashboard_shows_workers_and_updates(example_worker: Stack, tmp_path: Path) -> None:
    stack = example_worker
    client = stack.client()
    version = client.run(MODEL, "predict", IRIS, timeout=60)["model_version"]
    base = stack.apis[0].url
    with chromium() as driver:
        d = driver  # selenium WebDriver
        d.get(f"{base}/dashboard")  # type: ignore[attr-defined]
        d.find_element(By.ID, "token").send_keys(stack.api_token)  # type: ignore[attr-defined]
        d.find_element(By.ID, "connect").click()  # type: ignore[attr-defined]
        card = f'section[data-model="{MODEL}"]'
        wait = WebDriverWait(d, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{card} .worker-row"))
        loaded = d.find_element(By.CSS_SELECTOR, f"{card} .worker-row .loaded-version").text  # type: ignore[attr-defined]
        assert loaded == str(version)
        assert d.find_element(By.CSS_SELECTOR, f"{card} .worker-row .state").text == "ok"  # type: ignore[attr-defined]
        assert stack.api_token not in d.current_url  # type: ignore[attr-defined]
        assert not d.find_element(By.ID, "login").is_displayed()  # type: ignore[attr-defined]

        def jobs_last_hour(d: object) -> int:
            return int(d.find_element(By.CSS_SELECTOR, f"{card} .jobs-last-hour b").text)  # type: ignore[attr-defined]

        before = jobs_last_hour(d)
        for _ in range(3):
            client.run(MODEL, "predict", IRIS, timeout=60)
        client.run(MODEL, "info", timeout=60)
        # The page refreshes by itself (every 5 s): no reload here.
        WebDriverWait(d, 30).until(lambda d: jobs_last_hour(d) >= before + 4)
        p95 = d.find_element(By.CSS_SELECTOR, f"{card} .p95 b").text  # type: ignore[attr-defined]
        assert p95 != "—"
        d.execute_script("window.scrollTo(0, 0)")  # type: ignore[attr-defined]
        shot = DOCS_SCREENSHOT if os.environ.get(UPDATE_ENV) == "1" else tmp_path / "dashboard.png"
        assert d.save_screenshot(str(shot))  # type: ignore[attr-defined]
        assert shot.stat().st_size > 10_000
        assert d.execute_script("return window.localStorage.length") == 0  # type: ignore[attr-defined]
