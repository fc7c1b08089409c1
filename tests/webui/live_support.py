"""HTTP helpers of the live WebUI tests."""

import base64
import io
import json
import os
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

WEBUI_URL = os.environ.get("WEBUI_URL", "").rstrip("/")


class WebUI:
    def __init__(self, url: str):
        self.url = url

    def request(self, path: str, payload=None, timeout: float = 1800) -> tuple[int, object]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")

    def get(self, path: str):
        status, body = self.request(path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, payload: dict):
        status, body = self.request(path, payload)
        assert status == 200, (path, status, body)
        return body


def decode_image(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"), dtype=np.int16)


def encode_image(image: Image.Image) -> str:
    stream = io.BytesIO()
    image.save(stream, format="PNG")
    return "data:image/png;base64," + base64.b64encode(stream.getvalue()).decode()


def set_number(page, selector: str, value) -> None:
    """Type a number into a gradio number box of the page (Playwright) and commit it."""
    box = page.locator(selector)
    box.fill(str(value))
    box.press("Enter")
