"""Prompt evolution inside the WebUI (lib_pinning.webui.evolution and its tab), offline: the stand-in A1111 of
tests/fake_webui.py renders with the embedded model. The live proof is tests/webui/test_live_evolution.py."""

import logging
import re

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

import fake_webui
from lib_pinning.chooser import Choice
from lib_pinning.errors import InputError
from lib_pinning.evolution import EvolutionService
from lib_pinning.record import read_record
from report_support import shared_small_run

SETTINGS = {"seed": 5, "batch": 2, "steps": 3, "sampler": "DPM++ 2M", "scheduler": "Karras", "cfg_scale": 3.0,
            "width": 16, "height": 16}
OPTIONS = {"lambda_": 4, "generations": 3, "cma_seed": 2}


@pytest.fixture
def webui(monkeypatch, tmp_path):
    logger = logging.getLogger("lib_pinning")
    saved = logger.handlers[:], logger.level, logger.propagate
    fake = fake_webui.install(monkeypatch, tmp_path)
    fake.opts.outdir_txt2img_samples = str(tmp_path / "outputs")
    fake.evolution = __import__("lib_pinning.webui.evolution", fromlist=["service"])
    yield fake
    service = fake.evolution._service
    if service is not None:
        service.shutdown()
    fake.evolution._service = None
    fake_webui.uninstall()
    logger.handlers[:], logger.level, logger.propagate = saved


def waiting(run, generation):
    shown = run.chooser.wait_shown(60)
    assert shown is not None and shown.generation == generation, (run.error, run.record() and run.record().ending)
    return shown


def test_a_run_renders_through_the_webui_pipeline_and_records_each_choice_and_breeding(webui, tmp_path):
    service = webui.evolution.service()
    assert service.folder == tmp_path / "outputs" / "prompt_evolution"
    run = service.start("a red circle", "blue", {**SETTINGS, **OPTIONS})
    shown = waiting(run, 0)
    assert len(shown.prompts) == 4 and all(len(images) == 2 for images in shown.images)
    assert all(texts[0].endswith("Seed: 5") and texts[1].endswith("Seed: 6") for texts in shown.infotexts)
    run.chooser.submit(0, Choice.breeding(0, 2))
    waiting(run, 1)
    assert run.state()["waiting"]["candidates"][0]["parents"] == ["0000-000", "0000-002"]
    webui.state.interrupted = True  # left over from another job (A1111's API interrupt never clears it)
    run.chooser.submit(1, Choice.favourites([1]))
    waiting(run, 2)  # the run goes on: the flag counts only while the run renders
    run.chooser.submit(2, Choice.favourites([3]))
    assert run.done.wait(60) and run.error == ""
    record = read_record(run.folder)
    assert record.status == "done" and record.objective.mode == "choice"
    assert record.render.seeds == [5, 6] and record.render.sampler == "DPM++ 2M" and record.render.width == 16
    assert record.generations[1].individuals[0].parents == ["0000-000", "0000-002"]
    assert record.best.id == "0002-003"
    # every render went through process_images: the baseline and 3 generations of 4
    assert len(webui.renders) == 1 + 3 * 4 and all(seeds == [5, 6] for _, _, seeds, _ in webui.renders)
    assert webui.state.job == ""  # each generation's WebUI job ended


@pytest.mark.parametrize("values, says", [
    ({"sampler": "Nope"}, "'Nope' is not a sampler of this WebUI.*DPM\\+\\+ 2M"),
    ({"scheduler": "Nope"}, "'Nope' is not a schedule type.*Karras"),
    ({"width": 0}, "Width"), ({"batch": 1}, "Batch size"), ({"colour": 1}, "unknown option: colour"),
    ({"tags": ["red"]}, "Target tags")])
def test_bad_settings_are_refused_naming_them_before_a_folder_exists(webui, tmp_path, values, says):
    service = webui.evolution.service()
    with pytest.raises(InputError, match=says):
        service.start("a red circle", "", {**SETTINGS, **OPTIONS, **values})
    assert service.names() == [] and webui.renders == []


def test_a_seed_of_minus_one_draws_one_and_the_run_records_it(webui):
    job = webui.evolution.make_job("a red circle", "", {**SETTINGS, **OPTIONS, "seed": -1}, chooser=None)
    seeds = job.record.render.seeds
    assert 0 <= seeds[0] < 2**32 and seeds[1] == seeds[0] + 1 and webui.renders == []


def test_after_a_webui_restart_a_run_resumes_from_its_folder_and_a_pinning_folder_is_refused(webui, tmp_path):
    first = webui.evolution.service()
    run = first.start("a red circle", "blue", {**SETTINGS, **OPTIONS})
    waiting(run, 0)
    run.chooser.submit(0, Choice.favourites([1, 2]))
    waiting(run, 1)
    first.shutdown()  # the WebUI stops: generation 1 was shown, not chosen
    assert run.done.is_set() and read_record(run.folder).status == "interrupted"
    again = EvolutionService(first.folder, webui.evolution.make_job, webui.evolution.resume_job)
    resumed = again.resume(run.name, {"generations": 3})
    shown = waiting(resumed, 1)
    assert len(shown.prompts) == 4
    resumed.chooser.submit(1, Choice.favourites([0]))
    waiting(resumed, 2)
    resumed.chooser.submit(2, Choice.favourites([0]))
    assert resumed.done.wait(60)
    record = read_record(run.folder)
    assert record.status == "done" and [g.individuals[0].place for g in record.generations] == [None, 0, 0]
    with pytest.raises(InputError, match="only generations may change"):
        webui.evolution.resume_job(run.folder, chooser=None, steps=4)
    with pytest.raises(InputError, match="pinning run, not a prompt evolution run"):
        webui.evolution.resume_job(shared_small_run(), chooser=None)


def test_the_routes_are_mounted_on_the_webuis_app_once(webui):
    app = FastAPI()
    for callback in webui.callbacks:
        callback(None, app)
    mounted = len(app.routes)
    for callback in webui.callbacks:
        callback(None, app)  # "Reload UI"
    assert len(app.routes) == mounted
    with TestClient(app) as client:
        refused = client.post("/prompt-pinning/v1/evolutions", json={"prompt": "x", "options": {"sampler": "Nope"}})
        assert refused.status_code == 422 and "not a sampler" in refused.json()["detail"]
        assert client.get("/prompt-pinning/v1/evolutions").json() == []
        wrong = client.post("/prompt-pinning/v1/breed", json={"first": {"prompt": "a"}, "second": {"prompt": "a"}})
        assert wrong.status_code == 422 and "same prompts" in wrong.json()["detail"]  # the WebUI's breeder


# --- the tab ------------------------------------------------------------------------------------------------

def _tab(webui):
    """Build the tab as A1111 does: txt2img's controls first (remembered), then the extension's tabs."""
    tab = webui.module.evolution_tab
    made = {}
    for elem_id, name in tab.TXT2IMG.items():
        made[name] = fake_webui.Block(elem_id=elem_id)
        for callback in webui.component_callbacks:
            callback(made[name], elem_id=elem_id)
    (block, title, elem_id), = webui.tab_callbacks[0]()
    return tab, made, title


def test_the_tab_starts_from_txt2img_clicks_favourites_breeds_and_sends_a_picture_to_txt2img(webui):
    tab, made, title = _tab(webui)
    assert title == "Prompt evolution" and list(tab._txt2img) == list(tab.TXT2IMG.values())
    send = webui.pastes[0]
    assert send["tabname"] == "txt2img" and send["source_text_component"].kwargs["elem_id"] == \
        "prompt_evolution_infotext"
    txt2img = {"prompt": "a red circle", "negative_prompt": "blue", **SETTINGS}
    run_update, status, grid, favourites, shown, tree, infotext = tab.start(
        4, 3, 1.0, "weights", "", -1, *[txt2img[name] for name in tab._txt2img])
    assert run_update["value"] == "00001" and "generation 0 waits" in status, status
    assert len(grid) == 4 and grid[0][0].size == (32, 16) and grid[0][1].startswith("1: ")
    assert favourites["choices"] == ["1", "2", "3", "4"] and shown == {"run": "00001", "generation": 0}
    picked, tree, infotext = tab.select(shown, [], fake_webui.SimpleNamespace(index=2))
    assert picked == ["3"] and "Candidate 3 of generation 0" in tree and infotext.endswith("Seed: 5")
    picked, _, _ = tab.select(shown, ["1", "3"], fake_webui.SimpleNamespace(index=2))  # clicks only add
    assert picked == ["1", "3"]
    status, *_ = tab.breed(shown, ["1"])
    assert "pick two favourites, not 1" in status and "generation 0 waits" in status  # nothing lost
    status, grid, favourites, shown, *_ = tab.breed(shown, ["1", "3"])
    assert shown["generation"] == 1, status
    _, tree, _ = tab.select(shown, [], fake_webui.SimpleNamespace(index=0))
    assert "0000-000 ✓" in tree and "0000-002 ✓" in tree  # a child's parents, both chosen
    pictures = re.findall(r'<img src="/file=([^"]+)"', tree)  # with their first seed's picture (seed 5)
    folder = webui.evolution.service().get("00001").folder.resolve()
    assert pictures == [str(folder / "00000000" / id / "seed-5.png") for id in ("0000-000", "0000-002")]
    stale = tab.next_generation({"run": "00001", "generation": 0}, ["1"])  # an old page's choice
    assert "waits for a choice in generation 1, not in generation 0" in stale[0]
    # a reloaded page: ↻ shows the run that waits
    run_update, status, grid, favourites, shown, *_ = tab.refresh(None)
    assert run_update["value"] == "00001" and shown == {"run": "00001", "generation": 1} and len(grid) == 4
    status, grid, favourites, shown, *_ = tab.next_generation(shown, ["2"])
    assert shown["generation"] == 2
    assert "<td>circle</td>" in tab.winners("00001") or "<td>red</td>" in tab.winners("00001")
    status, grid, favourites, shown, *_ = tab.stop("00001")
    assert shown is None and "interrupted" in status and grid == []
    status, grid, favourites, shown, *_ = tab.resume("00001", 3)
    assert shown == {"run": "00001", "generation": 2}


def test_the_tab_says_what_is_wrong_and_keeps_serving(webui):
    tab, made, _ = _tab(webui)
    txt2img = {"prompt": "a red circle", "negative_prompt": "", **SETTINGS, "batch": 1}
    run_update, status, grid, *_ = tab.start(4, 3, 1.0, "weights", "", -1, *[txt2img[name] for name in tab._txt2img])
    assert "Batch size" in status and grid == []
    assert "no generation is waiting" in tab.next_generation(None, ["1"])[0]
    txt2img["batch"] = 2
    run_update, status, *_ = tab.start(None, 3, 1.0, "weights", "", -1,
                                         *[txt2img[name] for name in tab._txt2img])  # a cleared box
    assert "Lambda" in status and "a whole number is needed, got None" in status
    assert "pick a run" in tab.resume(None, 3)[0]
    run_update, status, *_ = tab.start(4, 3, 1.0, "weights", "night", -1, *[txt2img[name] for name in tab._txt2img])
    assert "(tag_pool): only used when Evolve is tags" in status


def test_the_tab_evolves_tags_from_the_prompt_and_the_pool_and_counts_the_tags_present(webui):
    tab, made, _ = _tab(webui)
    txt2img = {"prompt": "a red circle, blue sky, green grass", "negative_prompt": "dark", **SETTINGS}
    run_update, status, grid, favourites, shown, *_ = tab.start(
        4, 3, 0.3, "tags", "night, moon", -1, *[txt2img[name] for name in tab._txt2img])
    assert shown == {"run": run_update["value"], "generation": 0}, status
    record = webui.evolution.service().get(run_update["value"]).record()
    assert record.genome.words == ["a red circle", "blue sky", "green grass", "night", "moon"]
    assert record.resolved["evolve"] == "tags" and record.resolved["mutation_rate"] == 0.2  # 1 / 5 tags
    status, grid, favourites, shown, *_ = tab.next_generation(shown, ["1", "2"])
    assert shown["generation"] == 1, status
    table = tab.winners(run_update["value"])
    assert "<th>Tag</th><th>Present among the chosen</th>" in table and "<td>blue sky</td>" in table


# --- breeding two prompts -------------------------------------------------------------------------------------

FIRST = {"infotext": "a red circle\nNegative prompt: dark\nSteps: 3, Seed: 7, Size: 16x16"}
SECOND = {"prompt": "a blue square", "negative_prompt": "noise"}


def test_two_prompts_bred_in_the_webui_have_their_conditioning_slerped_through_the_denoiser_hook(webui):
    from lib_pinning.breeding import slerp
    breeding = webui.module.breeding
    webui.denoiser_hook = True
    children = breeding.breed(FIRST, SECOND, [0.25, 0.75], {"scheduler": "Karras"})
    encode = webui.model.encoder.encode
    assert [render[:3] for render in webui.renders] == [("a red circle", "dark", [7, 8])] * 2  # the first's job
    for child, (cond, uncond) in zip(children, webui.conds):
        assert cond.shape == (2, 1, 8)  # both rows of the batch mixed
        assert torch.allclose(cond, slerp(encode("a red circle"), encode("a blue square"), child.t).expand(2, 1, 8))
        assert torch.allclose(uncond, slerp(encode("dark"), encode("noise"), child.t).expand(2, 1, 8))
        assert not child.exact and child.prompt == f"a red circle :{1 - child.t:g} AND a blue square :{child.t:g}"
        assert child.infotexts[0].split("\n")[0] == child.prompt and len(child.images) == 2
    assert [child.negative_prompt for child in children] == ["dark", "noise"]  # the nearer parent's


def test_breeding_mixes_sdxls_conditioning_into_the_webuis_own_dict_type_and_passes_forges_missing_uncond(webui):
    class DictWithShape(dict):  # A1111's (modules.prompt_parser): CFGDenoiser reads its shape after the hook
        @property
        def shape(self):
            return self["crossattn"].shape

    mixed = webui.module.breeding.mixed
    sdxl = mixed(DictWithShape(crossattn=torch.ones(2, 77, 8), vector=torch.ones(2, 4)),
                 {"crossattn": -torch.ones(1, 77, 8), "vector": torch.zeros(1, 4)}, 0.5)
    assert type(sdxl) is DictWithShape and sdxl.shape == (2, 77, 8)
    assert mixed(None, torch.ones(1, 77, 8), 0.5) is None


def test_an_interrupted_breeding_keeps_no_child_and_a_styled_picture_breeds_with_its_style(webui):
    webui.denoiser_hook = True
    webui.stop_at = 1  # Interrupt pressed during the first child
    with pytest.raises(InputError, match="interrupted: no child is kept"):
        webui.module.breeding.breed(FIRST, SECOND, [0.5], {"scheduler": "Karras"})
    webui.stop_at, webui.state.interrupted = None, False
    import sys
    parse = sys.modules["modules.infotext_utils"].parse_generation_parameters
    monkeypatched = lambda text: {**parse(text), "Styles array": ["gold"]}  # noqa: E731
    sys.modules["modules.infotext_utils"].parse_generation_parameters = monkeypatched
    try:
        webui.module.breeding.breed(FIRST, SECOND, [0.5], {"scheduler": "Karras"})
    finally:
        sys.modules["modules.infotext_utils"].parse_generation_parameters = parse
    assert webui.renders[-1][0] == "a red circle, gold"  # the fake's styles join with ", "


def test_a_webui_that_never_calls_the_denoiser_hook_refuses_to_breed_saying_so(webui):
    with pytest.raises(InputError, match="never handed its conditioning to the denoiser hook"):
        webui.module.breeding.breed(FIRST, SECOND, [0.5], {"scheduler": "Karras"})


@pytest.mark.parametrize("first, second, points, says", [
    (FIRST, FIRST, [0.5], "same prompts"), (FIRST, SECOND, [1.0], "between 0 and 1.*1.0"),
    (FIRST, SECOND, [], "1 to 16 points"), ({"prompt": 5}, SECOND, [0.5], "a parent is"),
    (FIRST, {"image": "x"}, [0.5], "a parent is"),
    (FIRST, {"prompt": "a cat <lora:cute:0.8>"}, [0.5], "second parent's prompts have extra networks")])
def test_bad_parents_and_points_are_refused_naming_them(webui, first, second, points, says):
    with pytest.raises(InputError, match=says):
        webui.module.breeding.breed(first, second, points, {"scheduler": "Karras"})
    assert webui.renders == []


def test_an_unknown_option_for_breeding_is_refused_naming_it(webui):
    with pytest.raises(InputError, match="unknown option for breeding: batch_size"):
        webui.module.breeding.breed(FIRST, SECOND, [0.5], {"batch_size": 4})


def test_prompts_of_different_chunk_counts_cannot_be_mixed(webui):
    mixed = webui.module.breeding.mixed
    with pytest.raises(InputError, match="same number of 75-token chunks"):
        mixed(torch.ones(2, 77, 8), torch.ones(1, 154, 8), 0.5)
    sdxl = mixed({"crossattn": torch.ones(2, 77, 8), "vector": torch.ones(2, 4)},
                 {"crossattn": -torch.ones(1, 77, 8), "vector": torch.zeros(1, 4)}, 0.5)
    assert sdxl["crossattn"].shape == (2, 77, 8) and torch.allclose(sdxl["vector"], torch.full((2, 4), 0.5))


def test_the_tab_breeds_a_clicked_picture_with_a_pasted_prompt_and_sends_a_child_to_txt2img(webui):
    tab, made, _ = _tab(webui)
    webui.denoiser_hook = True
    message, grid, infotexts = tab.breed_prompts(FIRST["infotext"], "a blue square", "0.3, 0.6", -1)
    assert "approximation" in message and len(grid) == 2 and grid[0][1].startswith("0.3 of the way: a red circle")
    assert tab.select_child(infotexts, fake_webui.SimpleNamespace(index=1)).startswith(
        "a red circle :0.4 AND a blue square :0.6\nNegative prompt: \n")  # the nearer parent has none
    message, grid, _ = tab.breed_prompts(FIRST["infotext"], "a blue square", "half", -1)
    assert "Points" in message and grid == []
