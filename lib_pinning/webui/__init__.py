"""The AUTOMATIC1111 glue: the only code of the extension that talks to the WebUI.

`controls`, `targets` and `bridge` are pure Python (tested without A1111); `samplers`, `renderer`,
`run`, `ui`, `api` and `text_model` import the WebUI's `modules` (A1111's or Forge's) and gradio, so they are
imported only inside the WebUI (or beside stand-ins in tests/test_webui_variants.py).
"""
