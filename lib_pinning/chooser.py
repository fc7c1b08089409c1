"""A person's choice as the fitness (prompt evolution): each generation's rendered candidates go to a chooser, which
answers with a ranking or a set of favourites, and the search updates from that.

CMA-ES uses only the order of its candidates' losses, so a choice is turned into losses that keep its order:
favourites 0 and the rest 1; a ranking its places (0, 1/n, 2/n, …) and the unranked 1. Losses of different
generations are not comparable (each generation's first choice has loss 0): the run's best is the latest
generation's first choice, and a chooser run never stops by itself (only its generation budget, or the chooser,
ends it).

Which candidates count as *chosen* (what the winner statistics compare with everything rendered): the favourites;
of a ranking, the ranked ones, or the first half when every candidate is ranked.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .errors import InputError
from .flip import FlipImages
from .objective import Objective, Score
from .rendering import Rendered

MODE = "choice"  # what run.json calls the objective of a chooser run


@dataclass(frozen=True)
class Choice:
    """Candidates (indices into the generation) in order of preference, best first; `tied`: favourites, all
    equally good."""

    order: tuple[int, ...]
    tied: bool = False
    breed: bool = False  # two favourites whose children take the first places of the next generation


    @classmethod
    def favourites(cls, indices: Sequence[int]) -> Choice:
        return cls(tuple(_as_index(index) for index in indices), tied=True)

    @classmethod
    def ranking(cls, indices: Sequence[int]) -> Choice:
        return cls(tuple(_as_index(index) for index in indices))

    @classmethod
    def breeding(cls, first: int, second: int) -> Choice:
        """Two favourites to breed: the next generation begins with their children (lib_pinning.breeding)."""
        return cls((_as_index(first), _as_index(second)), tied=True, breed=True)

    def check(self, count: int) -> None:
        """An InputError naming what is wrong, for a choice among `count` candidates."""
        if not self.order:
            raise InputError(f"a choice needs at least one of the {count} candidates")
        if self.breed and len(self.order) != 2:
            raise InputError(f"breeding takes two candidates, got {len(self.order)}")
        wrong = [index for index in self.order if isinstance(index, bool) or not isinstance(index, int)]
        if wrong:
            raise InputError(f"a choice names candidates by their index (a whole number), got {wrong[0]!r}")
        wrong = [index for index in self.order if not 0 <= index < count]
        if wrong:
            raise InputError(f"the choice names candidate {wrong[0]}, but the generation has candidates 0 to "
                             f"{count - 1}")
        if len(set(self.order)) != len(self.order):
            raise InputError("the choice names a candidate twice")

    def places(self, count: int) -> list[int | None]:
        """Each candidate's place in the choice (favourites all 0), None for those not in it."""
        places: list[int | None] = [None] * count
        for place, index in enumerate(self.order):
            places[index] = 0 if self.tied else place
        return places

    def losses(self, count: int) -> list[float]:
        """Losses in the choice's order: favourites 0, ranked p/count at place p, the rest 1."""
        return [1.0 if place is None else place / count for place in self.places(count)]

    def chosen(self, count: int) -> list[bool]:
        """The favourites; of a ranking, the ranked candidates, or its first half when all are ranked."""
        limit = math.ceil(count / 2) if not self.tied and len(self.order) == count else count
        return [place is not None and place < limit for place in self.places(count)]


def _as_index(value):
    """A whole number as an int (numpy's too); anything else as it is, for `Choice.check` to name."""
    try:
        return value if isinstance(value, bool) else operator.index(value)
    except TypeError:
        return value


class Chooser(Protocol):
    def choose(self, generation: int, prompts: Sequence[tuple[str, str]], batches: Sequence[Rendered]) -> Choice:
        """The choice among one generation's candidates: their (positive, negative) prompts and their batches.
        May raise RunStopped (lib_pinning.rendering) to end the run, keeping finished generations."""


class ChoiceObjective(Objective):
    """The objective of a chooser run: nothing is compared, the chooser's choice is each generation's score.
    `bred`: the two candidates of the last scored generation to breed, if its choice was to breed them."""

    ranks_generation = True

    def __init__(self, chooser: Chooser):
        super().__init__(None, "pairwise")
        self.compares = False  # no pairs, and the unperturbed prompt's batch does not stand in for targets
        self.chooser = chooser
        self.bred: tuple[int, int] | None = None

    def score(self, images: torch.Tensor) -> Score:
        """The unperturbed prompt's batch is nobody's choice."""
        return Score(1.0, [], [], [1.0] * len(images))

    def score_generation(self, generation: int, prompts: Sequence[tuple[str, str]],
                         batches: Sequence[Rendered]) -> list[tuple[Score, float]]:
        started = time.perf_counter()
        choice = self.chooser.choose(generation, prompts, batches)
        if not isinstance(choice, Choice):
            raise InputError(f"the chooser answered {type(choice).__name__}, not a Choice (Choice.favourites([...]) "
                             "or Choice.ranking([...]))")
        count = len(batches)
        choice.check(count)
        self.bred = choice.order if choice.breed else None
        seconds = (time.perf_counter() - started) / max(count, 1)
        return [(Score(loss, [], [], [loss] * len(batch.images), place=place, chosen=chosen), seconds)
                for loss, place, chosen, batch in zip(choice.losses(count), choice.places(count),
                                                      choice.chosen(count), batches)]


class ClosestChooser:
    """A scripted chooser: the `count` candidates whose images are closest (mean ꟻLIP error, each image to its own
    seed's image of `target`) to a hidden target batch, as favourites or as a ranking. Stands in for a person in
    tests and demos; `history` keeps every generation's distances."""

    def __init__(self, target: torch.Tensor, count: int = 3, ranking: bool = False):
        if count < 1:
            raise ValueError("a chooser picks at least one candidate")
        self.target, self.count, self.ranking = target, count, ranking
        self.history: list[list[float]] = []

    def distances(self, batches: Sequence[Rendered]) -> list[float]:
        """Each candidate's mean ꟻLIP error to the target, all candidates' images preprocessed at once."""
        images = torch.cat([batch.images for batch in batches])
        target = self.target.to(images.device, images.dtype)
        flip = FlipImages(torch.cat([images, target]))
        rows = torch.arange(len(images))
        seeds = torch.cat([torch.arange(len(batch.images)) for batch in batches])
        errors = flip.errors(torch.stack([rows, len(images) + seeds % len(target)], dim=1))
        return [float(part.mean()) for part in errors.split([len(batch.images) for batch in batches])]

    def choose(self, generation: int, prompts: Sequence[tuple[str, str]], batches: Sequence[Rendered]) -> Choice:
        distances = self.distances(batches)
        self.history.append(distances)
        order = sorted(range(len(batches)), key=lambda index: (distances[index], index))[:self.count]
        return Choice.ranking(order) if self.ranking else Choice.favourites(order)
