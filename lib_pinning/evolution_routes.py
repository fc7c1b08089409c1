"""The HTTP routes of prompt evolution, under /prompt-pinning/v1/ (FastAPI, as A1111 and Forge serve their API):
everything the Prompt evolution tab does, scriptable. Mounted by `python -m lib_pinning serve` over the embedded
model (and by the WebUI extension over the WebUI's renderer).

    POST /prompt-pinning/v1/evolutions                     {"prompt", "negative_prompt", "options": {...}}
    GET  /prompt-pinning/v1/evolutions                     every run: name, status, generations
    GET  /prompt-pinning/v1/evolutions/{name}?wait=S       its state; the generation waiting for a choice, with
                                                           each candidate's prompts and images (PNG, base64);
                                                           waits up to S seconds (at most 60) for one
    POST /prompt-pinning/v1/evolutions/{name}/choice       {"generation": G, "favourites": [...]},
                                                           {"generation": G, "ranking": [...]} or
                                                           {"generation": G, "breed": [i, j]} (two favourites
                                                           whose children begin the next generation)
    POST /prompt-pinning/v1/evolutions/{name}/stop         ends it, keeping finished generations
    POST /prompt-pinning/v1/evolutions/{name}/resume       {"options": {"generations": N}}: goes on from its folder
    GET  /prompt-pinning/v1/evolutions/{name}/individuals/{id}/ancestry
    GET  /prompt-pinning/v1/winners?runs=00001,00002       which words win over those runs
    POST /prompt-pinning/v1/breed                          {"first": PARENT, "second": PARENT, "points": [t, ...],
                                                           "options": {...}}: children of two different prompts
                                                           (PARENT: {"prompt", "negative_prompt"}, or in a WebUI
                                                           {"infotext"}: a picture's parameters)

Bad input answers 422 naming what is wrong; a choice for a generation that is not waiting answers 409; an unknown
run or individual 404.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from .breeding import POINTS, Child
from .chooser import Choice
from .errors import InputError
from .evolution import ChoiceConflict, EvolutionService

PREFIX = "/prompt-pinning/v1"
CHOICES = {"favourites": Choice.favourites, "ranking": Choice.ranking, "breed": lambda pair: Choice.breeding(*pair)}
MAX_WAIT = 60.0


Breed = Callable[[dict, dict, Sequence[float], dict], list[Child]]  # (first, second, points, options) -> children


def evolution_router(service: EvolutionService, breed: Breed | None = None):
    """The routes over `service`; with `breed` (how this renderer breeds two prompts), /breed too."""
    from fastapi import APIRouter, Body, HTTPException

    router = APIRouter(prefix=PREFIX)

    def run_of(name: str):
        try:
            return service.get(name)
        except KeyError:
            raise HTTPException(404, f"no prompt evolution run {name!r}") from None

    def refused(error: InputError) -> HTTPException:
        return HTTPException(409 if isinstance(error, ChoiceConflict) else 422, str(error))

    @router.post("/evolutions")
    def start(body: dict[str, Any] = Body(...)) -> dict:
        prompt, negative, options = body.get("prompt"), body.get("negative_prompt", ""), body.get("options") or {}
        if not isinstance(prompt, str) or not isinstance(negative, str) or not isinstance(options, dict):
            raise HTTPException(422, "prompt and negative_prompt are text, options an object of options by name")
        try:
            return service.start(prompt, negative, options).state()
        except InputError as error:
            raise refused(error) from None

    @router.get("/evolutions")
    def runs() -> list[dict]:
        return [run_of(name).summary() for name in service.names()]

    @router.get("/evolutions/{name}")
    def state(name: str, wait: float = 0.0) -> dict:
        run = run_of(name)
        if wait > 0 and not run.done.is_set():
            run.chooser.wait_shown(min(wait, MAX_WAIT))
        return run.state()

    @router.post("/evolutions/{name}/choice")
    def choose(name: str, body: dict[str, Any] = Body(...)) -> dict:
        run = run_of(name)
        generation = body.get("generation")
        kinds = [kind for kind in CHOICES if kind in body]
        if not isinstance(generation, int) or isinstance(generation, bool) or len(kinds) != 1 \
                or not isinstance(body[kinds[0]], list) or (kinds[0] == "breed" and len(body["breed"]) != 2):
            raise HTTPException(422, "a choice is {\"generation\": G, \"favourites\": [indices]}, "
                                     "{\"generation\": G, \"ranking\": [indices, best first]} or "
                                     "{\"generation\": G, \"breed\": [index, index]}")
        choice = CHOICES[kinds[0]](body[kinds[0]])
        try:
            run.chooser.submit(generation, choice)
        except InputError as error:
            raise refused(error) from None
        return {"name": name, "generation": generation, "accepted": list(choice.order)}

    @router.post("/evolutions/{name}/stop")
    def stop(name: str) -> dict:
        run_of(name)
        service.stop(name)
        return {"name": name, "stopping": True}

    @router.post("/evolutions/{name}/resume")
    def resume(name: str, body: dict[str, Any] = Body(default={})) -> dict:
        run_of(name)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise HTTPException(422, "options is an object of options by name")
        try:
            return service.resume(name, options).state()
        except InputError as error:
            raise refused(error) from None

    @router.get("/evolutions/{name}/individuals/{individual}/ancestry")
    def ancestry(name: str, individual: str) -> list[list[dict]]:
        run_of(name)
        try:
            return service.ancestry(name, individual)
        except KeyError:
            raise HTTPException(404, f"run {name} has no individual {individual!r}") from None

    @router.get("/winners")
    def winners(runs: str) -> list[dict]:
        names = [name.strip() for name in runs.split(",") if name.strip()]
        for name in names:
            run_of(name)
        try:
            statistics = service.statistics(names)
        except InputError as error:
            raise refused(error) from None
        return [dataclasses.asdict(statistic) | {"chosen_rate": statistic.chosen_rate,
                                                 "rendered_rate": statistic.rendered_rate}
                for statistic in statistics]

    @router.post("/breed")
    def bred(body: dict[str, Any] = Body(...)) -> dict:
        if breed is None:
            raise HTTPException(404, "this server does not breed prompts")
        first, second, points = body.get("first"), body.get("second"), body.get("points", list(POINTS))
        options = body.get("options") or {}
        if not all(isinstance(parent, dict) for parent in (first, second)) or not isinstance(points, list) \
                or not isinstance(options, dict):
            raise HTTPException(422, "breeding is {\"first\": {\"prompt\": ..., \"negative_prompt\": ...}, "
                                     "\"second\": {...}, \"points\": [numbers between 0 and 1], \"options\": {...}}")
        try:
            children = breed(first, second, points, options)
        except InputError as error:
            raise refused(error) from None
        return {"children": [{"t": child.t, "prompt": child.prompt, "negative_prompt": child.negative_prompt,
                              "exact": child.exact, "infotexts": child.infotexts,
                              "images": [base64.b64encode(png).decode("ascii") for png in child.images]}
                             for child in children]}

    return router
