"""The Prompt evolution tab in the WebUI's own page (Debian's chromium through Playwright) and its HTTP routes:
favourites clicked for three generations, two pictures bred, one sent to txt2img, the page reloaded, the run
continued; what the page did is in the run's record."""

import re

from live_support import set_number

V1 = "/prompt-pinning/v1"
PROMPT, NEGATIVE, SEED = "a red cube on a table", "blurry", 5


def status(page) -> str:
    return page.locator("#prompt_evolution_status").last.inner_text()


def wait_status(page, text: str, timeout: float = 600_000) -> str:
    page.wait_for_function("text => Array.from(document.querySelectorAll('#prompt_evolution_status'))"
                           ".some(e => e.innerText.includes(text))", arg=text, timeout=timeout)
    return status(page)


def click_pictures(page, *numbers: int) -> None:
    """Click candidates (0-based) in the grid: each click makes one a favourite."""
    for number in numbers:
        page.locator("#prompt_evolution_grid .thumbnail-item").nth(number).click()
    page.wait_for_function("n => document.querySelectorAll('#prompt_evolution_favourites input:checked').length == n",
                           arg=len(numbers), timeout=30_000)


def open_tab(page) -> None:
    page.locator("#tabs button", has_text="Prompt evolution").click()
    page.wait_for_selector("#prompt_evolution_start", state="visible")


def test_favourites_for_three_generations_a_breeding_send_to_txt2img_and_a_reload(page, webui):
    page.fill("#txt2img_prompt textarea", PROMPT)
    page.fill("#txt2img_neg_prompt textarea", NEGATIVE)
    for control, value in (("width", 64), ("height", 64), ("steps", 2), ("batch_size", 2)):
        set_number(page, f"#txt2img_{control} input[type=number]", value)
    page.fill("#txt2img_seed input", str(SEED))
    open_tab(page)
    set_number(page, "#prompt_evolution_candidates input", 4)
    set_number(page, "#prompt_evolution_generations input", 8)
    page.click("#prompt_evolution_start")
    name = re.search(r"Run (\d{5})", wait_status(page, "generation 0 waits")).group(1)
    assert page.locator("#prompt_evolution_grid .thumbnail-item").count() == 4

    for generation in range(3):  # favourites, three times
        click_pictures(page, 0, 2)
        page.click("#prompt_evolution_next")
        wait_status(page, f"generation {generation + 1} waits")

    click_pictures(page, 1, 3)  # breed two pictures
    page.click("#prompt_evolution_breed")
    wait_status(page, "generation 4 waits")
    page.locator("#prompt_evolution_grid .thumbnail-item").nth(0).click()
    page.wait_for_function("document.querySelector('#prompt_evolution_tree').innerText.includes('0003-003')",
                           timeout=30_000)
    tree = page.locator("#prompt_evolution_tree").last.inner_text()
    assert "Candidate 1 of generation 4" in tree and "0003-001 ✓" in tree and "0003-003 ✓" in tree
    shown = webui.get(f"{V1}/evolutions/{name}")["waiting"]
    child = shown["candidates"][0]
    assert shown["generation"] == 4 and child["parents"] == ["0003-001", "0003-003"]

    page.click("#prompt_evolution_send")  # its picture's parameters, in txt2img
    page.wait_for_function("p => document.querySelector('#txt2img_prompt textarea').value == p", arg=child["prompt"],
                           timeout=30_000)
    assert page.input_value("#txt2img_neg_prompt textarea") == child["negative_prompt"]
    assert page.input_value("#txt2img_seed input") == str(SEED)

    page.reload()  # the run waits in the WebUI: the reloaded tab shows it again
    page.wait_for_selector("#txt2img_prompt textarea", timeout=120_000)
    open_tab(page)
    assert f"Run {name}" in wait_status(page, "generation 4 waits", timeout=60_000)
    click_pictures(page, 2)
    page.click("#prompt_evolution_next")
    wait_status(page, "generation 5 waits")
    page.click("#prompt_evolution_stop")
    wait_status(page, "interrupted")

    state = webui.get(f"{V1}/evolutions/{name}")
    status_code, record = webui.request("/file=" + state["folder"] + "/run.json")
    assert status_code == 200 and record["status"] == "interrupted" and record["objective"]["mode"] == "choice"
    generations = record["generations"]
    assert len(generations) == 5
    for generation in generations[:3]:
        assert [individual["chosen"] for individual in generation["individuals"]] == [True, False, True, False]
    assert [individual["chosen"] for individual in generations[3]["individuals"]] == [False, True, False, True]
    assert all(individual["parents"] == ["0003-001", "0003-003"] for individual in generations[4]["individuals"])
    assert generations[4]["individuals"][0]["prompt"] == child["prompt"]
    assert [individual["chosen"] for individual in generations[4]["individuals"]] == [False, False, True, False]
    assert record["render"]["seeds"] == [SEED, SEED + 1] and record["negative_prompt"] == NEGATIVE
    winners = webui.get(f"{V1}/winners?runs={name}")
    assert {statistic["word"] for statistic in winners} >= {"red", "cube", "table"}
