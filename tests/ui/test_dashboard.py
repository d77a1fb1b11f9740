"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real gateway."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import MASTER_KEY, Process, gateway_config, start_gateway

CHROMIUM = os.environ.get("MMPROXY_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
HELLO = [{"role": "user", "content": "Hello"}]
ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def gw(simulator: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_gateway(tmp_path_factory.mktemp("ui"), gateway_config(simulator.url))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} not found: apt-get install chromium (or set MMPROXY_TEST_CHROMIUM)"
    with sync_playwright() as playwright:
        # The flags keep Chromium off the network it would otherwise reach for at start-up.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


class Console:
    """Errors the page logged or threw: a dashboard that works has none."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))


def _login(browser: Browser, url: str, key: str) -> tuple[Page, Console]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page)
    page.goto(f"{url}/ui")
    page.fill("#key", key)
    page.click("button[type=submit]")
    return page, console


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _new_key(url: str, **fields: object) -> str:
    response = httpx.post(f"{url}/key/generate", json=fields, headers=ADMIN)
    response.raise_for_status()
    return response.json()["key"]


def _ask(url: str, key: str, model: str, times: int = 1) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    for _ in range(times):
        client.chat.completions.create(model=model, messages=HELLO)


def _table(page: Page, heading: str) -> dict[str, list[str]]:
    """The rows of the table under a section heading, by their first cell."""
    rows = page.locator(f"section:has(h2:text-is('{heading}')) tbody tr")
    return {cells[0]: cells[1:] for cells in (rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count()))}


def test_every_tab_loads_without_errors_and_the_numbers_match_the_api(browser: Browser, gw: Process):
    _ask(gw.url, MASTER_KEY, "gpt-4o", times=3)
    _ask(gw.url, MASTER_KEY, "mini", times=2)
    page, console = _login(browser, gw.url, MASTER_KEY)
    page.wait_for_selector("section:has(h2:text-is('Totals')) tbody tr")
    _shot(page, "overview")
    report = httpx.get(f"{gw.url}/spend/report?group_by=model", headers=ADMIN).json()["groups"]
    shown = _table(page, "Totals")
    for row in report:
        assert shown[row["group"]][0] == f"{row['requests']:,}"  # the Requests column
    for tab in ("routing", "cache", "deployments", "live", "keys"):
        page.click(f"nav a[data-tab={tab}]")
        expect(page.locator("#status")).to_have_text(re.compile("^updated"))
        _shot(page, tab)
    assert console.errors == []


def test_a_key_is_created_and_revoked_from_the_page(browser: Browser, gw: Process):
    page, console = _login(browser, gw.url, MASTER_KEY)
    page.click("nav a[data-tab=keys]")
    page.fill("input[name=key_alias]", "made-in-the-browser")
    page.fill("input[name=max_budget]", "5")
    page.click("#new-key button[type=submit]")
    created = page.locator("#created-key").inner_text()
    assert created.startswith("sk-")
    _ask(gw.url, created, "gpt-4o")  # the new key works at once
    listed = httpx.get(f"{gw.url}/key/list?return_full_object=true", headers=ADMIN).json()["keys"]
    assert any(k["key_alias"] == "made-in-the-browser" and k["max_budget"] == 5 for k in listed)
    page.wait_for_selector("button[data-key=made-in-the-browser]")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("button[data-key=made-in-the-browser]")
    page.wait_for_selector("button[data-key=made-in-the-browser]", state="detached")
    with pytest.raises(openai.AuthenticationError):
        _ask(gw.url, created, "gpt-4o")
    assert console.errors == []


def test_a_virtual_key_sees_only_its_own_requests_and_no_key_management(browser: Browser, gw: Process):
    own = _new_key(gw.url, key_alias="viewer")
    _ask(gw.url, own, "gpt-4o", times=2)
    _ask(gw.url, MASTER_KEY, "gpt-4o", times=1)
    page, console = _login(browser, gw.url, own)
    page.wait_for_selector("section:has(h2:text-is('Totals')) tbody tr")
    assert _table(page, "Totals")["gpt-4o"][0] == "2"
    assert page.locator("nav a[data-tab=keys]").count() == 0
    # The API refuses what the page hides.
    response = page.request.post(f"{gw.url}/key/generate", data="{}", headers={"x-mmproxy-ui": "1"})
    assert response.status == 403
    assert console.errors == []


def test_the_live_log_shows_requests_as_they_finish(browser: Browser, gw: Process):
    page, console = _login(browser, gw.url, MASTER_KEY)
    page.click("nav a[data-tab=live]")
    page.wait_for_selector("table.live")
    time.sleep(0.3)  # the feed is connected
    _ask(gw.url, MASTER_KEY, "mini", times=3)
    page.wait_for_selector("table.live tbody tr:nth-child(3)")
    cells = page.locator("table.live tbody tr").first.locator("td").all_inner_texts()
    assert cells[1] == "200" and cells[2] == "mini"
    assert MASTER_KEY not in page.content()
    _shot(page, "live")
    assert console.errors == []


def test_a_wrong_key_stays_on_the_login_page(browser: Browser, gw: Process):
    page, _ = _login(browser, gw.url, "sk-not-a-key-at-all")
    assert page.locator("p.error").inner_text() == "invalid API key"
    assert page.locator("#key").count() == 1


def test_the_session_cookie_acts_only_with_the_dashboard_header(browser: Browser, gw: Process):
    page, _ = _login(browser, gw.url, MASTER_KEY)
    page.wait_for_selector(".tiles")
    cookie = next(c for c in page.context.cookies() if c["name"] == "mmproxy_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and MASTER_KEY not in cookie["value"]
    jar = {"mmproxy_ui": cookie["value"]}
    # What a cross-site form could send (the cookie, no custom header) is refused.
    assert httpx.post(f"{gw.url}/key/generate", json={}, cookies=jar).status_code == 401
    assert httpx.post(f"{gw.url}/key/generate", json={}, cookies=jar, headers={"x-mmproxy-ui": "1"}).status_code == 200
    forged = cookie["value"].rsplit(".", 1)[0] + "." + "0" * 64
    assert httpx.get(f"{gw.url}/ui/api/report", cookies={"mmproxy_ui": forged},
                     headers={"x-mmproxy-ui": "1"}).status_code == 401
