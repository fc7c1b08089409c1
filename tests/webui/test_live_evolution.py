"""The Prompt evolution tab in the WebUI's own page (Debian's chromium through Playwright) and its HTTP routes:
favourites clicked for three generations, two pictures bred, one sent to txt2img, the page reloaded, the run
continued; what the page did is in the run's record. Two different prompts bred through the API."""

import json
import re

import numpy as np
from live_support import decode_image, set_number

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


def start_in_txt2img(page, prompt: str) -> None:
    """txt2img's prompt and small settings (64², 2 steps, batch 2, seed SEED), then the tab."""
    page.locator("#tabs button", has_text="txt2img").first.click()
    page.wait_for_selector("#txt2img_prompt textarea", state="visible")
    page.fill("#txt2img_prompt textarea", prompt)
    page.fill("#txt2img_neg_prompt textarea", NEGATIVE)
    for control, value in (("width", 64), ("height", 64), ("steps", 2), ("batch_size", 2)):
        set_number(page, f"#txt2img_{control} input[type=number]", value)
    page.fill("#txt2img_seed input", str(SEED))
    open_tab(page)


def test_favourites_for_three_generations_a_breeding_send_to_txt2img_and_a_reload(page, webui):
    start_in_txt2img(page, PROMPT)
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


def test_two_different_prompts_breed_children_unlike_both_parents_and_each_other_reproducibly(webui):
    """Their conditioning mixed through the WebUI's denoiser hook, with the first parent's settings and seeds."""
    settings = {"steps": 3, "width": 64, "height": 64, "cfg_scale": 7, "seed": 11, "batch_size": 2,
                "sampler_name": "DPM++ 2M"}
    parents = [webui.post("/sdapi/v1/txt2img", {**settings, "prompt": prompt, "negative_prompt": negative})
               for prompt, negative in (("a red cube on a table", "blurry"), ("a green forest at night", ""))]
    infotext = json.loads(parents[0]["info"])["infotexts"][0]
    body = {"first": {"infotext": infotext}, "second": {"prompt": "a green forest at night"},
            "points": [0.25, 0.5, 0.75]}
    children = webui.post(f"{V1}/breed", body)["children"]
    again = webui.post(f"{V1}/breed", body)["children"]
    assert [child["t"] for child in children] == [0.25, 0.5, 0.75]
    pictures = [[decode_image(image) for image in parent["images"]] for parent in parents]
    pictures += [[decode_image(image) for image in child["images"]] for child in children]
    assert all(len(batch) == 2 and batch[0].shape == (64, 64, 3) for batch in pictures)
    for one in range(len(pictures)):
        for other in range(one + 1, len(pictures)):  # parents and children all differ, seed by seed
            assert all(np.abs(a - b).max() > 0 for a, b in zip(pictures[one], pictures[other])), (one, other)
    for child, repeat in zip(children, again):  # the same request: the same pictures
        assert child["images"] == repeat["images"]
        assert not child["exact"] and " AND a green forest at night :" in child["prompt"]
        assert "Seed: 11" in child["infotexts"][0] and child["infotexts"][0].startswith(child["prompt"] + "\n")
    assert [child["negative_prompt"] for child in children] == ["blurry", "", ""]
    refused = webui.request(f"{V1}/breed", {**body, "second": {"infotext": infotext}})
    assert refused[0] == 422 and "same prompts" in refused[1]["detail"]


def test_tags_evolve_from_the_tab_with_a_pool_and_the_tags_present_are_counted(page, webui):
    start_in_txt2img(page, "a red cube, on a table, soft light")
    set_number(page, "#prompt_evolution_candidates input", 4)
    set_number(page, "#prompt_evolution_generations input", 3)
    page.locator("#prompt_evolution_evolve label", has_text="tags").click()
    page.fill("#prompt_evolution_tag_pool textarea", "night, moon")
    page.click("#prompt_evolution_start")
    name = re.search(r"Run (\d{5})", wait_status(page, "generation 0 waits")).group(1)
    click_pictures(page, 0, 1)
    page.click("#prompt_evolution_next")
    wait_status(page, "generation 1 waits")
    shown = webui.get(f"{V1}/evolutions/{name}")["waiting"]
    assert all(len(candidate["parents"]) == 2 for candidate in shown["candidates"])  # two of the favourites each
    assert all(set(candidate["parents"]) <= {"0000-000", "0000-001"} for candidate in shown["candidates"])
    page.click("#prompt_evolution_winners_button")
    page.wait_for_function("document.querySelector('#prompt_evolution_winners').innerText.includes('Present')",
                           timeout=30_000)
    winners = webui.get(f"{V1}/winners?runs={name}")
    assert {row["word"] for row in winners} == {"a red cube", "on a table", "soft light", "night", "moon"}
    assert all(row["measure"] == "present" for row in winners)
    page.click("#prompt_evolution_stop")
    wait_status(page, "interrupted")
