"""Prompt evolution over HTTP (/prompt-pinning/v1/, lib_pinning.evolution_routes) on the embedded-model server: a
scripted chooser drives runs through the routes alone; bad input, stop, resume and a server restart."""

import base64
import io
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from lib_pinning.chooser import ClosestChooser
from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer
from lib_pinning.embedded_run import DEMO_NEGATIVE, DEMO_PROMPT
from lib_pinning.genome import build_genome
from lib_pinning.options import ServeOptions, parse
from lib_pinning.record import read_record
from lib_pinning.rendering import Rendered
from lib_pinning.serve import make_app

V1 = "/prompt-pinning/v1"
SMALL = {"prototypes": 6, "size": 16, "steps": 4, "batch": 2, "generations": 3, "lambda_": 4, "cma_seed": 1}


@pytest.fixture
def server(tmp_path):
    app = make_app(parse(ServeOptions, {"evolution_dir": str(tmp_path / "evolution")}))
    with TestClient(app) as client:
        yield client


def waiting(client, name, generation=None):
    """The run's state once it waits for a choice (or has ended)."""
    for _ in range(100):
        state = client.get(f"{V1}/evolutions/{name}", params={"wait": 10}).json()
        if state["waiting"] is not None or not state["running"]:
            if generation is not None:
                assert state["waiting"]["generation"] == generation
            return state
    raise AssertionError(f"run {name} neither waits nor ends")


def ended(client, name):
    for _ in range(200):
        state = client.get(f"{V1}/evolutions/{name}").json()
        if not state["running"]:
            return state
        time.sleep(0.05)
    raise AssertionError(f"run {name} does not end")


def pictures(candidate) -> torch.Tensor:
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")) for png in candidate["images"]]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


def test_a_scripted_chooser_drives_evolution_runs_through_the_routes_towards_a_hidden_prompt(server):
    """Done when of the issue: over HTTP alone, the chosen images come closer to a hidden prompt's over 5
    generations, and the winner statistics of the experiment (6 runs) name the word that prompt raised."""
    server.app.state.evolution.report = False  # the runs' reports are tested elsewhere; here they only cost time
    settings = {"prototypes": 16, "size": 32, "steps": 6, "batch": 2, "cfg_scale": 1.5, "seed": 7, "generations": 5}
    genome = build_genome(DEMO_PROMPT, DEMO_NEGATIVE, "word")
    hidden = np.zeros(len(genome))
    hidden[genome.words.index("simple")] = 3.0
    model = EmbeddedModel(count=16, size=32)  # the server's loaded checkpoint: model seed 0
    target = EmbeddedRenderer(model, [7, 8], steps=6, cfg_scale=1.5).render([genome.prompt(hidden)])[0].images
    names, first, last = [], [], []
    for cma_seed in range(1, 7):
        started = server.post(f"{V1}/evolutions", json={"prompt": DEMO_PROMPT, "negative_prompt": DEMO_NEGATIVE,
                                                        "options": {**settings, "cma_seed": cma_seed}})
        assert started.status_code == 200, started.text
        name = started.json()["name"]
        names.append(name)
        chooser = ClosestChooser(target, count=3)
        for generation in range(5):
            state = waiting(server, name, generation)
            batches = [Rendered(pictures(candidate)) for candidate in state["waiting"]["candidates"]]
            order = chooser.choose(generation, [], batches).order
            answer = server.post(f"{V1}/evolutions/{name}/choice",
                                 json={"generation": generation, "favourites": list(order)})
            assert answer.status_code == 200, answer.text
        state = ended(server, name)
        assert (state["status"], state["ending"]["cause"]) == ("done", "generations")
        first.append(np.mean(sorted(chooser.history[0])[:3]))
        last.append(np.mean(sorted(chooser.history[-1])[:3]))
    assert np.mean(last) < np.mean(first) / 4
    winners = server.get(f"{V1}/winners", params={"runs": ",".join(names)}).json()
    prompt_words = [row for row in winners if row["side"] == "prompt"]
    assert prompt_words[0]["word"] == "simple" and prompt_words[0]["p_value"] < 0.01
    listed = server.get(f"{V1}/evolutions").json()
    assert [row["name"] for row in listed] == names and all(row["status"] == "done" for row in listed)


def test_a_scripted_chooser_evolves_tags_through_the_routes_towards_a_hidden_prompt(server):
    """The same with the genome of tags: the hidden prompt leaves out one of the prompt's tags and adds one of the
    pool's; the chosen images come closer to it over 5 generations and that pool tag wins, counted as present."""
    server.app.state.evolution.report = False
    prompt, pool = "a red circle, blue sky, green grass, soft light", ["night", "moon", "simple", "painting"]
    settings = {"prototypes": 16, "size": 32, "steps": 6, "batch": 2, "cfg_scale": 1.5, "seed": 7, "generations": 5,
                "lambda_": 8, "evolve": "tags", "tag_pool": pool}
    model = EmbeddedModel(count=16, size=32)
    hidden = "a red circle, green grass, soft light, simple"
    target = EmbeddedRenderer(model, [7, 8], steps=6, cfg_scale=1.5).render([(hidden, "")])[0].images
    names, first, last = [], [], []
    for cma_seed in range(1, 5):
        started = server.post(f"{V1}/evolutions", json={"prompt": prompt, "options": {**settings, "cma_seed": cma_seed}})
        assert started.status_code == 200, started.text
        names.append(started.json()["name"])
        chooser = ClosestChooser(target, count=3)
        for generation in range(5):
            state = waiting(server, names[-1], generation)
            batches = [Rendered(pictures(candidate)) for candidate in state["waiting"]["candidates"]]
            assert all(len(candidate["parents"]) == (2 if generation else 0) for candidate in state["waiting"]["candidates"])
            order = chooser.choose(generation, [], batches).order
            answer = server.post(f"{V1}/evolutions/{names[-1]}/choice",
                                 json={"generation": generation, "favourites": list(order)})
            assert answer.status_code == 200, answer.text
        assert ended(server, names[-1])["status"] == "done"
        first.append(np.mean(sorted(chooser.history[0])[:3]))
        last.append(np.mean(sorted(chooser.history[-1])[:3]))
    assert np.mean(last) < np.mean(first) / 4
    winners = server.get(f"{V1}/winners", params={"runs": ",".join(names)}).json()
    assert (winners[0]["word"], winners[0]["measure"]) == ("simple", "present") and winners[0]["p_value"] < 0.01


def test_bad_requests_answer_with_what_is_wrong(server, tmp_path):
    refused = server.post(f"{V1}/evolutions", json={"prompt": "a red circle", "options": {"steps": 0}})
    assert refused.status_code == 422 and "Steps" in refused.json()["detail"]
    assert server.post(f"{V1}/evolutions", json={"prompt": 5}).status_code == 422
    tags = server.post(f"{V1}/evolutions", json={"prompt": "a red circle", "options": {"tags": ["red"]}})
    assert tags.status_code == 422 and "Target tags" in tags.json()["detail"]
    assert server.get(f"{V1}/evolutions/00042").status_code == 404
    (tmp_path / "evolution" / "00007").mkdir(parents=True)  # a numbered folder that holds no run
    assert server.get(f"{V1}/evolutions").json() == []
    name = server.post(f"{V1}/evolutions", json={"prompt": "a red circle", "options": SMALL}).json()["name"]
    assert name == "00008"  # never a number already taken
    waiting(server, name, 0)
    wrong_generation = server.post(f"{V1}/evolutions/{name}/choice", json={"generation": 1, "favourites": [0]})
    assert wrong_generation.status_code == 409 and "generation 0" in wrong_generation.json()["detail"]
    out_of_range = server.post(f"{V1}/evolutions/{name}/choice", json={"generation": 0, "ranking": [9]})
    assert out_of_range.status_code == 422 and "candidate 9" in out_of_range.json()["detail"]
    both = server.post(f"{V1}/evolutions/{name}/choice", json={"generation": 0, "ranking": [0], "favourites": [1]})
    assert both.status_code == 422
    three = server.post(f"{V1}/evolutions/{name}/choice", json={"generation": 0, "breed": [0, 1, 2]})
    assert three.status_code == 422 and "breed" in three.json()["detail"]
    twice = server.post(f"{V1}/evolutions/{name}/choice", json={"generation": 0, "breed": [1, 1]})
    assert twice.status_code == 422 and "twice" in twice.json()["detail"]
    assert server.get(f"{V1}/evolutions/{name}").json()["waiting"]["generation"] == 0  # still waiting
    assert server.get(f"{V1}/winners", params={"runs": name}).status_code == 422  # nothing chosen yet
    server.post(f"{V1}/evolutions/{name}/stop")
    assert ended(server, name)["status"] == "interrupted"


def test_two_candidates_bred_over_http_are_the_next_generations_first_parents_and_their_ancestry(server):
    name = server.post(f"{V1}/evolutions", json={"prompt": "a red circle", "options": SMALL}).json()["name"]
    first = waiting(server, name, 0)["waiting"]["candidates"]
    assert all(candidate["parents"] == [] and candidate["infotexts"] == [] for candidate in first)
    assert server.post(f"{V1}/evolutions/{name}/choice", json={"generation": 0, "breed": [3, 1]}).status_code == 200
    candidates = waiting(server, name, 1)["waiting"]["candidates"]
    assert [candidate["parents"] for candidate in candidates] == [["0000-003", "0000-001"]] * 4  # all 4 are children
    assert server.post(f"{V1}/evolutions/{name}/choice", json={"generation": 1, "favourites": [2]}).status_code == 200
    later = waiting(server, name, 2)["waiting"]["candidates"]
    assert all(candidate["parents"] and "0001-002" in candidate["parents"] for candidate in later)
    tree = server.get(f"{V1}/evolutions/{name}/individuals/0001-002/ancestry").json()
    assert [[member["id"] for member in level] for level in tree] == [["0001-002"], ["0000-001", "0000-003"]]
    assert tree[1][0]["chosen"] and tree[1][1]["chosen"]
    server.post(f"{V1}/evolutions/{name}/stop")
    assert ended(server, name)["status"] == "interrupted"


def test_two_prompts_breed_over_http_on_the_embedded_server(server):
    body = {"first": {"prompt": "a red circle", "negative_prompt": "dark"}, "second": {"prompt": "a blue square"},
            "points": [0.2, 0.8], "options": {"batch": 2, "size": 16, "steps": 4, "seed": 4}}
    answer = server.post(f"{V1}/breed", json=body)
    assert answer.status_code == 200, answer.text
    children = answer.json()["children"]
    assert [child["t"] for child in children] == [0.2, 0.8] and all(child["exact"] for child in children)
    assert all(len(child["images"]) == 2 and child["infotexts"] == [] for child in children)
    assert pictures(children[0]).shape == (2, 3, 16, 16) and not torch.equal(pictures(children[0]),
                                                                             pictures(children[1]))
    assert server.post(f"{V1}/breed", json=body).json() == answer.json()  # the same seeds: the same children
    for wrong, says in (({"points": [0]}, "between 0 and 1"), ({"first": {"infotext": "x"}}, "breeds prompts"),
                        ({"second": "a prompt"}, "breeding is"), ({"options": {"steps": 0}}, "Steps")):
        refused = server.post(f"{V1}/breed", json={**body, **wrong})
        assert refused.status_code == 422 and says in refused.json()["detail"], refused.text


def test_a_stopped_run_keeps_its_choices_and_resumes_after_a_server_restart(tmp_path):
    options = parse(ServeOptions, {"evolution_dir": str(tmp_path / "evolution")})
    with TestClient(make_app(options)) as client:
        client.app.state.evolution.report = False  # what matters here is run.json
        name = client.post(f"{V1}/evolutions", json={"prompt": "a red circle", "negative_prompt": "blue",
                                                     "options": SMALL}).json()["name"]
        for generation in range(2):
            waiting(client, name, generation)
            client.post(f"{V1}/evolutions/{name}/choice", json={"generation": generation, "favourites": [1, 2]})
        waiting(client, name, 2)
    # the server stopped (its shutdown ends waiting runs): the two finished choices are in run.json
    record = read_record(tmp_path / "evolution" / name)
    assert record.status == "interrupted" and len(record.generations) == 2
    assert [i.place for i in record.generations[1].individuals] == [None, 0, 0, None]
    with TestClient(make_app(options)) as client:  # a new server over the same folder
        client.app.state.evolution.report = False
        listed = client.get(f"{V1}/evolutions").json()
        assert listed == [{"name": name, "status": "interrupted", "running": False, "generations": 2}]
        resumed = client.post(f"{V1}/evolutions/{name}/resume", json={})
        assert resumed.status_code == 200, resumed.text
        state = waiting(client, name, 2)  # the generation it had shown, again
        assert len(state["waiting"]["candidates"]) == 4
        client.post(f"{V1}/evolutions/{name}/choice", json={"generation": 2, "ranking": [3]})
        assert ended(client, name)["status"] == "done"
        last = read_record(tmp_path / "evolution" / name).generations[2].individuals
        tree = client.get(f"{V1}/evolutions/{name}/individuals/{last[3].id}/ancestry").json()
        assert [len(level) for level in tree][0] == 1 and tree[0][0]["place"] == 0
        assert tree[-1][0]["id"].startswith("0000-") and tree[-1][0]["parents"] == []  # back to generation 0
        assert {member["id"] for member in tree[1]} == set(tree[0][0]["parents"])
        assert client.get(f"{V1}/evolutions/{name}/individuals/9999-000/ancestry").status_code == 404


def test_two_resumes_at_once_start_one_run(server):
    """A double click on Resume: the second is refused while the first builds its job, never a second writer."""
    import threading
    name = server.post(f"{V1}/evolutions", json={"prompt": "a red circle", "options": SMALL}).json()["name"]
    waiting(server, name, 0)
    server.post(f"{V1}/evolutions/{name}/stop")
    ended(server, name)
    service = server.app.state.evolution
    slow, building = service.resume_job, threading.Event()

    def slow_resume_job(*args, **kwargs):
        building.set()
        time.sleep(0.5)
        return slow(*args, **kwargs)

    service.resume_job = slow_resume_job
    answers = []
    first = threading.Thread(target=lambda: answers.append(server.post(f"{V1}/evolutions/{name}/resume").status_code))
    first.start()
    building.wait(10)
    second = server.post(f"{V1}/evolutions/{name}/resume")
    first.join()
    assert answers == [200] and second.status_code == 409 and "still running" in second.json()["detail"]
    waiting(server, name, 0)
    server.post(f"{V1}/evolutions/{name}/stop")
    assert ended(server, name)["status"] == "interrupted"
