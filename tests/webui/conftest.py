"""Live tests against a running AUTOMATIC1111 WebUI with this extension installed (README: "Live tests").

Set WEBUI_URL (e.g. http://127.0.0.1:7861, started with --api); without it every test here is skipped.
"""

import shutil

import pytest
from live_support import WEBUI_URL, WebUI


@pytest.fixture(scope="session")
def webui() -> WebUI:
    if not WEBUI_URL:
        pytest.skip("WEBUI_URL is not set: no live WebUI to test against")
    return WebUI(WEBUI_URL)


@pytest.fixture(scope="module")
def page(webui):
    """The WebUI's page in Debian's chromium (Playwright), once per test module."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(webui.url, timeout=120_000)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=120_000)
        yield page
        browser.close()
