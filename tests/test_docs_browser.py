"""The docs pages in a real headless Chromium, with every request off 127.0.0.1 blocked."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.helpers import require_docs_files

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_docs_files()  # The pages load their files from the app: every other host is cut off.
    if CHROMIUM is None:
        message = "no chromium on PATH: install Debian's chromium package (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """Yield a page whose requests to any host but 127.0.0.1 fail, and the list of those attempted."""
    elsewhere: list[str] = []

    def cut_network(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context = browser.new_context()
    context.route("**/*", cut_network)
    yield context.new_page(), elsewhere
    context.close()


def test_swagger_ui_tries_out_create_note(live_server: str, page: tuple[Page, list[str]]) -> None:
    tab, elsewhere = page
    tab.goto(f"{live_server}/docs")
    expect(tab.locator(".opblock-summary-path", has_text="/notes/")).to_have_count(2)
    post = tab.locator(".opblock-post")
    post.locator(".opblock-summary").click()
    post.get_by_role("button", name="Try it out").click()
    post.get_by_role("button", name="Execute").click()
    expect(post.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    assert httpx.get(f"{live_server}/notes/").json() == [{"id": 1, "text": "string", "completed": True}]
    assert elsewhere == []


def test_redoc_shows_both_operations(live_server: str, page: tuple[Page, list[str]]) -> None:
    tab, elsewhere = page
    tab.goto(f"{live_server}/redoc")
    expect(tab.get_by_role("heading", name="Read Notes")).to_be_visible()
    expect(tab.get_by_role("heading", name="Create Note")).to_be_visible()
    assert elsewhere == []


def test_oauth2_redirect_hands_the_token_back_to_swagger_ui(live_server: str, page: tuple[Page, list[str]]) -> None:
    """The page an OAuth2 flow comes back to runs Swagger UI's script, which gives the token to the opener."""
    tab, elsewhere = page
    tab.goto(f"{live_server}/docs")
    tab.evaluate(
        """() => {
            window.swaggerUIRedirectOauth2 = {
                auth: {name: "oauth2", schema: {get: () => "implicit"}},
                state: "s1",
                redirectUrl: window.location.origin + "/docs/oauth2-redirect",
                callback: (result) => { window.oauth2Result = result; },
                errCb: (error) => { window.oauth2Error = error; },
            };
        }"""
    )
    with tab.expect_popup() as popup:
        tab.evaluate("() => { window.open('/docs/oauth2-redirect#access_token=t0k3n&state=s1'); }")
    popup.value.wait_for_event("close")
    result = tab.evaluate("() => window.oauth2Result")
    assert result["token"] == {"access_token": "t0k3n", "state": "s1"}
    assert result["isValid"] is True
    assert tab.evaluate("() => window.oauth2Error") is None
    assert elsewhere == []
