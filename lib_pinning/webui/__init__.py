"""The AUTOMATIC1111 glue: the only code of the extension that talks to the WebUI.

`script_args`, `targets` and `bridge` are pure Python (tested without A1111); `samplers`, `renderer`, `run`,
`ui`, `api`, `text_model` and `console` import the WebUI's `modules` (A1111's or Forge's), gradio or fastapi, so
they are imported only inside the WebUI (or beside stand-ins: tests/fake_webui.py, tests/test_webui_variants.py).
"""
