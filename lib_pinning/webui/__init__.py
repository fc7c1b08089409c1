"""The AUTOMATIC1111 glue: the only code of the extension that talks to the WebUI.

`controls`, `targets` and `bridge` are pure Python (tested without A1111); `samplers`, `renderer`,
`run`, `ui` and `api` import A1111's `modules` and gradio, so they are imported only inside the WebUI.
"""
