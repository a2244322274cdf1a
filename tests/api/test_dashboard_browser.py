"""The dashboard in a real browser: Debian's headless chromium (Selenium, /usr/bin/chromedriver)
against ``candlekeep serve`` as a process, on data that real jobs put there.

One site, one server and one browser serve every test here (that is what keeps the file
near 20 s); the tests read but never change the data, except the refresh test, which adds
one failed run. ``CANDLEKEEP_SCREENSHOT=docs/img/dashboard.png`` also writes the page's
screenshot there (the README's image).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.api.dashboard_fixtures import (
    FAILING_JOB,
    FIRST_ERROR,
    Site,
    chromium,
    dashboard_site,
    need_chromium,
    until,
)
from tests.api.serving import TOKEN

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    need_chromium()
    with dashboard_site(tmp_path_factory.mktemp("dashboard")) as s:
        yield s


@pytest.fixture(scope="module")
def browser(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def submit_token(driver: WebDriver, token: str) -> None:
    """Fill in and send the login form the browser is on."""
    field = until(driver, "the login form",
                  lambda d: d.find_element(By.CSS_SELECTOR, "input[name=token]"))
    field.clear()
    field.send_keys(token)
    field.submit()


def drawn(driver: WebDriver) -> str | None:
    """When the page last had an answer from every route (None before the first)."""
    return driver.find_element(By.ID, "updated").get_attribute("data-updated-at") or None


def open_page(driver: WebDriver, site: Site, query: str = "") -> None:
    """The dashboard, signed in, once its panels have drawn what the API said."""
    driver.get(site.url + "/" + query)
    if urlsplit(driver.current_url).path == "/login":
        submit_token(driver, TOKEN)
    until(driver, "the first refresh", drawn)


def text(driver: WebDriver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def cell(driver: WebDriver, series: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'#heatmap td[data-series="{series}"]')


def test_sign_in_with_the_token(browser: WebDriver, site: Site) -> None:
    browser.delete_all_cookies()
    browser.get(site.url + "/?refresh=1")
    assert urlsplit(browser.current_url).path == "/login"
    submit_token(browser, "not-the-token")
    until(browser, "the refusal", lambda d: "That is not the API token." in d.page_source)
    assert browser.get_cookies() == []

    submit_token(browser, TOKEN)
    until(browser, "the dashboard after signing in", drawn)
    assert urlsplit(browser.current_url)[2:4] == ("/", "refresh=1")
    assert [c["name"] for c in browser.get_cookies()] == ["candlekeep_session"]
    assert TOKEN not in browser.get_cookies()[0]["value"] and TOKEN not in browser.page_source
    banner = browser.find_element(By.ID, "conn-error")
    assert not banner.is_displayed()

    # The session ends under an open page: its next refresh says so and links the form.
    browser.delete_all_cookies()
    until(browser, "the sign-in notice", lambda d: banner.is_displayed())
    assert "Sign in needed" in banner.text
    link = banner.find_element(By.LINK_TEXT, "Sign in")
    assert urlsplit(link.get_attribute("href"))[2:4] == ("/login", "next=%2F%3Frefresh%3D1")
    link.click()
    submit_token(browser, TOKEN)
    until(browser, "the dashboard after signing in again", drawn)
    assert urlsplit(browser.current_url)[2:4] == ("/", "refresh=1")


def test_the_page_shows_what_the_api_says(browser: WebDriver, site: Site,
                                          tmp_path: Path) -> None:
    browser.get_log("browser")  # what earlier tests left
    open_page(browser, site)
    assert browser.find_elements(By.CSS_SELECTOR, ".failed, .panel-error:not([hidden])") == []

    # Health banner: no daemon runs and data is stale, so the worst component is degraded.
    health = site.api("/system/health")
    assert health["status"] == "degraded"
    assert text(browser, "#overall") == "DEGRADED"
    assert "status-degraded" in browser.find_element(By.ID, "banner").get_attribute("class")
    state_db = browser.find_element(By.CSS_SELECTOR, '[data-component="state_db:state_db"]')
    assert "status-ok" in state_db.get_attribute("class")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#components li")) == len(
        health["components"])

    # Jobs: every configured job, the failing one's last run failed, next ticks shown.
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#jobs .job-name strong")]
    assert names == ["ingest", "gaps", "freshness", FAILING_JOB]
    failing = browser.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job="{FAILING_JOB}"]')
    assert failing.find_element(By.CSS_SELECTOR, ".last .pill").text == "failed"
    assert failing.find_element(By.CSS_SELECTOR, ".next").text.startswith("in ")

    # Freshness heatmap: fresh, stale and never-written series.
    assert "status-ok" in cell(browser, "sim:BTC/USDT:1m").get_attribute("class")
    assert "status-stale" in cell(browser, "sim:ETH/USDT:1m").get_attribute("class")
    assert "status-stale" in cell(browser, "sim:ETH/USDT:1h").get_attribute("class")
    missing = cell(browser, "replay:SOL/USDT:1h")
    assert "status-missing" in missing.get_attribute("class") and missing.text == "none"

    # Coverage: the API's figure for a series with holes, and a complete one.
    coverage = {c["series"]: c for c in site.api("/coverage")}
    holed = next(s for s, c in coverage.items() if 0 < c["coverage_pct"] < 100)
    bar = browser.find_element(By.CSS_SELECTOR, f'#coverage li[data-series="{holed}"]')
    shown = float(bar.find_element(By.CLASS_NAME, "bar-figure").text.rstrip("%"))
    assert shown == pytest.approx(coverage[holed]["coverage_pct"], abs=0.05)
    assert f"{coverage[holed]['missing']} missing" in bar.text
    full = browser.find_element(By.CSS_SELECTOR, '#coverage li[data-series="sim:BTC/USDT:1h"]')
    assert full.find_element(By.CLASS_NAME, "bar-figure").text == "100%"

    # Open gaps: the summary's count and the first open gap with its size.
    summary = site.api("/gaps/summary")
    assert summary["open"] > 0
    assert browser.find_element(By.CSS_SELECTOR, "#gap-summary dd").text == str(
        summary["open"])
    gap = site.api("/gaps?status=open&limit=1")["items"][0]
    shown_gap = browser.find_element(By.CSS_SELECTOR, f'#gaps li[data-series="{gap["series"]}"]')
    assert f"{gap['candles']} candle" in shown_gap.text

    # Failures: the error as text, markup in it never becomes markup.
    failure = browser.find_element(By.CSS_SELECTOR, f'#failures li[data-job="{FAILING_JOB}"]')
    assert "exit status 3" in failure.text
    assert FIRST_ERROR in failure.text
    assert failure.find_elements(By.CSS_SELECTOR, "error, code") == []

    # Nothing failed in the page: no script error, nothing its CSP refused.
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    target = os.environ.get("CANDLEKEEP_SCREENSHOT")
    if target:
        (REPO / target).write_bytes(shot.read_bytes())


def test_the_page_refreshes_itself(browser: WebDriver, site: Site) -> None:
    open_page(browser, site, "?refresh=1")
    assert text(browser, "#cadence") == "refreshes every 1 s"
    first = drawn(browser)
    hostile = "disk full <img src=x onerror=window.__xss=1>"
    site.fail_job(hostile)
    until(browser, "the new failure after a refresh",
          lambda d: hostile in d.find_element(By.ID, "failures").text)
    assert drawn(browser) != first
    assert browser.find_elements(By.CSS_SELECTOR, "#failures img") == []
    assert browser.execute_script("return window.__xss") is None


def test_an_api_that_stops_answering_is_shown(browser: WebDriver, site: Site) -> None:
    open_page(browser, site, "?refresh=1")
    banner = browser.find_element(By.ID, "conn-error")
    assert not banner.is_displayed()
    with site.frozen():
        until(browser, "the connection error", lambda d: banner.is_displayed(), timeout=15)
        assert "The API is not answering" in banner.text and "no answer within" in banner.text
        assert "degraded" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")
        last = text(browser, "#updated").removeprefix("updated ")
        assert f"Figures below are from {last}." in banner.text
    until(browser, "recovery once the API answers again",
          lambda d: not banner.is_displayed(), timeout=15)
    assert "degraded" not in browser.find_element(By.TAG_NAME, "body").get_attribute("class")


def test_page_and_assets_come_from_the_package_only(site: Site) -> None:
    page = site.served.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = site.served.get("/static/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    for name in ("index.html", "nope.js", "..%2Fdashboard.py", "%2e%2e%2fauth.py"):
        resp = site.served.get(f"/static/{name}")
        assert resp.status_code == 404 and resp.json()["detail"], name
    assert site.served.get("/static/dashboard.css", token=None).status_code == 401
