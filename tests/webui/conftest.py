"""Live tests against a running AUTOMATIC1111 WebUI with this extension installed (README: "Live tests").

Set WEBUI_URL (e.g. http://127.0.0.1:7861, started with --api); without it every test here is skipped.
"""

import pytest
from live_support import WEBUI_URL, WebUI


@pytest.fixture(scope="session")
def webui() -> WebUI:
    if not WEBUI_URL:
        pytest.skip("WEBUI_URL is not set: no live WebUI to test against")
    return WebUI(WEBUI_URL)
