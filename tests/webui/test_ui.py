"""The script in the WebUI's own page (Debian's chromium through Playwright): pick it, upload a target, run.

Through the UI, gradio hands the script temp-file objects for the uploads (the API sends base64 strings), and
the result's comment carries the report's path.
"""

import re

from live_support import set_number
from PIL import Image

from lib_pinning.options import SCRIPT_CONTROLS, tooltip

PREFIX = "#script_txt2img_prompt_pinning_"


def test_a_run_from_the_page_with_an_uploaded_target(page, webui, tmp_path):
    target = tmp_path / "target.png"
    Image.new("RGB", (64, 64), (30, 90, 200)).save(target)
    page.fill("#txt2img_prompt textarea", "a red cube on a table")
    for control, value in (("width", 64), ("height", 64), ("steps", 2), ("batch_size", 2)):
        set_number(page, f"#txt2img_{control} input[type=number]", value)
    page.fill("#txt2img_seed input", "5")
    page.click("#txt2img_script_container #script_list input")
    page.locator("#txt2img_script_container #script_list li", has_text="Prompt pinning").click()
    page.wait_for_selector(PREFIX + "targets", state="visible")

    # every control is there with its tooltip on its whole block, the file upload's included
    for spec in SCRIPT_CONTROLS:
        assert page.locator(PREFIX + spec.name).count() == 1, spec.name
    page.wait_for_function(f"document.querySelector('{PREFIX}targets').title.length > 0", timeout=10_000)
    for spec in SCRIPT_CONTROLS:
        assert page.locator(PREFIX + spec.name).get_attribute("title") == tooltip(spec), spec.name

    page.set_input_files(PREFIX + "targets input[type=file]", str(target))
    set_number(page, PREFIX + "generations input", 1)
    page.click(PREFIX + "cmaes .label-wrap")  # the CMA-ES accordion
    set_number(page, PREFIX + "lambda_ input", 2)
    page.click("#txt2img_generate")
    page.wait_for_function("Array.from(document.querySelectorAll('#html_log_txt2img'))"
                           ".some(e => e.innerText.includes('Report:'))", timeout=600_000)
    log = page.locator("#html_log_txt2img").last.inner_text()
    info = page.locator("#html_info_txt2img").last.inner_text()
    assert "Prompt pinning done after 1 generation: " in log
    assert "cube" in info and "Seed: 5" in info
    report = re.search(r"Report: (\S+index\.html)", log).group(1)
    status, record = webui.request("/file=" + report.replace("index.html", "run.json"))
    assert status == 200 and record["status"] == "done" and record["options"]["targets"] == ["upload 1"]
    assert record["best"]["prompt"] in info
