"""index.html in a real browser: Debian's chromium, headless and offline, driven by Playwright's Python API.

Playwright's own browser download is never used: it launches /usr/bin/chromium. Without chromium the tests
skip, except on CI (CI=true), where .ci/run installs it and its absence is a failure.
"""

import os
import shutil
from pathlib import Path

import pytest

from lib_pinning.record import read_record
from lib_pinning.report import html
from report_support import HOSTILE, shared_small_run, synthetic_record

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND"]


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def open_report(browser):
    """Opens a report offline and records what a reader would not want: errors, dialogs, any request."""
    contexts = []

    def open_page(index: Path):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        context.route(lambda url: not url.startswith("file:"), lambda route: route.abort())
        page = context.new_page()
        seen = {"console errors": [], "page errors": [], "dialogs": [], "requests": []}
        page.on("console", lambda message: message.type == "error" and seen["console errors"].append(message.text))
        page.on("pageerror", lambda error: seen["page errors"].append(str(error)))
        page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
        page.on("request", lambda request: seen["requests"].append(request.url))
        page.goto(index.as_uri())
        page.wait_for_function("document.documentElement.dataset.ready === 'true'")
        return page, seen

    yield open_page
    for context in contexts:
        context.close()


def table_ids(page) -> list[str]:
    return page.locator("table.individuals tbody tr td:nth-child(2) code").all_inner_texts()


def test_the_report_works_offline_shows_every_individual_and_hostile_text_literally(open_report):
    run_dir = shared_small_run()
    record = read_record(run_dir)
    page, seen = open_report(run_dir / "index.html")

    page.select_option("select.page-size", "10")
    pager = page.locator("#pager")
    assert pager.get_attribute("data-total") == "12" and pager.get_attribute("data-pages") == "2"
    ids = table_ids(page)
    page.click("#pager button.next")
    ids += table_ids(page)
    assert sorted(ids) == sorted(i.id for g in record.generations for i in g.individuals)
    page.click("#pager button.first")

    page.click("th[data-key='loss']")  # sorted by loss ascending at first: now descending
    losses = [float(text) for text in page.locator("table.individuals tbody tr td:nth-child(3) span:first-child")
              .all_inner_texts()]
    assert losses == sorted(losses, reverse=True)

    # The unperturbed prompt is shown as the user wrote it, hostile text and all, as text.
    unperturbed = page.locator("section.card", has=page.locator("h2", has_text="Unperturbed prompt"))
    assert unperturbed.locator("pre.prompt").first.inner_text() == f"a red circle {HOSTILE}"
    page.click("text=Every option of this run")
    assert page.locator("table.options code", has_text="DPM++ 2M").count() >= 1
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert page.evaluate("document.scripts.length") == 2

    page.mouse.wheel(0, 20000)  # let the lazy thumbnails load for the screenshot
    page.wait_for_load_state("networkidle")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "report_small.png", full_page=True)
    assert seen["console errors"] == [] and seen["page errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] and all(url.startswith("file://") for url in seen["requests"])


def test_the_report_of_2000_individuals_is_interactive_in_under_a_second(open_report, tmp_path):
    record = synthetic_record(generations=125, per_generation=16)
    (tmp_path / "index.html").write_text(html.index_html(tmp_path, record, []), encoding="utf-8")
    page, seen = open_report(tmp_path / "index.html")  # its images do not exist: only script errors count
    assert page.evaluate("window.reportReadyMs") < 1000
    assert page.locator("#pager").get_attribute("data-total") == "2000"
    assert page.locator("table.individuals tbody tr").count() == 25
    page.click("#pager button.last")
    assert page.locator("#pager .page").inner_text() == "Page 80 of 80"
    assert seen["page errors"] == [] and seen["dialogs"] == []


def test_a_prompt_evolution_runs_report_shows_which_words_win(open_report, tmp_path):
    from lib_pinning.chooser import Choice
    from lib_pinning.embedded_run import evolve
    from lib_pinning.winners import word_statistics

    class Second:
        def choose(self, generation, prompts, batches):
            return Choice.favourites([1, 3])

    result = evolve("a red circle", "dark", chooser=Second(), out=tmp_path / "run", batch=2, steps=3, prototypes=6,
                    size=16, progress=False, cma_seed=1, generations=3, lambda_=4)
    page, seen = open_report(tmp_path / "run" / "index.html")
    card = page.locator("section.card", has=page.locator("h2", has_text="Which words win"))
    rows = [row.split("\t") for row in card.locator("tbody tr").all_inner_texts()]
    expected = word_statistics([result.record])
    assert [row[0] for row in rows] == [s.word + (" (negative prompt)" if s.side == "negative" else "")
                                        for s in expected]
    assert [row[1] for row in rows] == [f"{s.chosen_raised} of {s.chosen}" for s in expected]
    assert all(s.chosen == 6 and s.rendered == 12 for s in expected)  # 2 of 4 chosen in each of 3 generations
    assert seen["console errors"] == [] and seen["page errors"] == []
    # a run evolving tags counts the tags present
    result = evolve("a red circle, blue sky", chooser=Second(), out=tmp_path / "tags", batch=2, steps=3, prototypes=6,
                    size=16, progress=False, cma_seed=1, generations=2, lambda_=4, evolve="tags", tag_pool=["moon"])
    page, seen = open_report(tmp_path / "tags" / "index.html")
    card = page.locator("section.card", has=page.locator("h2", has_text="Which tags win"))
    assert [text.lower() for text in card.locator("thead th").all_inner_texts()[:2]] == ["tag", "present among the chosen"]
    rows = [row.split("\t") for row in card.locator("tbody tr").all_inner_texts()]
    assert sorted(row[0] for row in rows) == ["a red circle", "blue sky", "moon"]
    assert seen["console errors"] == [] and seen["page errors"] == []
    # a pinning run's report has no such card
    page, _ = open_report(shared_small_run() / "index.html")
    assert page.locator("h2", has_text="Which words win").count() == 0
