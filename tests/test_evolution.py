"""Prompt evolution (lib_pinning.chooser, lib_pinning.breeding, lib_pinning.winners): a chooser's choice as the
fitness of the search, the record of every choice and every individual's parents, breeding, and which words win. A scripted chooser leading
runs towards a hidden prompt, through the HTTP routes: tests/test_evolution_api.py."""

import math

import numpy as np
import pytest
import torch

from lib_pinning.breeding import children, slerp
from lib_pinning.chooser import Choice, ClosestChooser
from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer
from lib_pinning.embedded_run import breed_prompts, evolve, resume
from lib_pinning.errors import InputError
from lib_pinning.record import GenomeRecord, Generation, Individual, read_record
from lib_pinning.rendering import Rendered, RunStopped
from lib_pinning.report.images import png_bytes, to_pixels
from lib_pinning.search import _decode
from lib_pinning.winners import word_statistics
from report_support import without_timings

SMALL = dict(batch=2, steps=4, prototypes=6, size=16, progress=False, cma_seed=3, generations=4, lambda_=5)


class FirstAndThird:
    """Ranks candidates 2 and 0 (in that order); stops the run at `stop_at` if given."""

    def __init__(self, stop_at: int | None = None, tied: bool = False):
        self.stop_at, self.tied, self.seen = stop_at, tied, []

    def choose(self, generation, prompts, batches):
        self.seen.append((generation, len(prompts), len(batches)))
        if generation == self.stop_at:
            raise RunStopped()
        return Choice.favourites([2, 0]) if self.tied else Choice.ranking([2, 0])


# --- the choice -----------------------------------------------------------------------------------------------


def test_a_ranking_and_favourites_become_losses_places_and_chosen():
    ranking = Choice.ranking([3, 1])
    assert ranking.places(4) == [None, 1, None, 0]
    assert ranking.losses(4) == [1.0, 0.25, 1.0, 0.0]
    assert ranking.chosen(4) == [False, True, False, True]
    favourites = Choice.favourites([3, 1])
    assert favourites.places(4) == [None, 0, None, 0]
    assert favourites.losses(4) == [1.0, 0.0, 1.0, 0.0]
    full = Choice.ranking([2, 0, 3, 1, 4])  # every candidate ranked: the first half counts as chosen
    assert full.losses(5) == [0.2, 0.6, 0.0, 0.4, 0.8]
    assert full.chosen(5) == [True, False, True, True, False]  # places 0, 1, 2 of 5


@pytest.mark.parametrize("choice, says", [(Choice.ranking([]), "at least one"), (Choice.ranking([0, 5]), "candidate 5"),
                                          (Choice.favourites([1, 1]), "twice"), (Choice.ranking([-1]), "candidate -1"),
                                          (Choice.ranking([0.5]), "whole number.*got 0.5"),
                                          (Choice.favourites([True]), "whole number.*got True")])
def test_a_wrong_choice_is_refused_naming_what_is_wrong(choice, says):
    with pytest.raises(InputError, match=says):
        choice.check(5)


def test_numpy_indices_are_whole_numbers_too():
    assert Choice.favourites(np.array([3, 1])).order == (3, 1)
    Choice.ranking(np.arange(2)).check(2)


class Answers:
    def __init__(self, answer):
        self.answer = answer

    def choose(self, generation, prompts, batches):
        return self.answer


@pytest.mark.parametrize("answer, says", [([0], "answered list, not a Choice"), (None, "answered NoneType"),
                                          (Choice.ranking([9]), "candidate 9")])
def test_a_chooser_that_answers_wrongly_fails_the_run_with_a_message_and_a_saved_record(tmp_path, answer, says):
    result = evolve("a red circle", chooser=Answers(answer), out=tmp_path / "run", report=False, **SMALL)
    assert result.status == "failed" and says in result.record.ending.message
    assert read_record(tmp_path / "run").status == "failed"


def test_the_scripted_chooser_picks_the_candidates_closest_to_its_target():
    model = EmbeddedModel(count=6, size=16)
    target = model.prototypes[4:5]
    batches = [Rendered(model.prototypes[[index, index]]) for index in (1, 4, 2)]
    chooser = ClosestChooser(target, count=2, ranking=True)
    choice = chooser.choose(0, [("", "")] * 3, batches)
    assert choice.order[0] == 1 and chooser.history[0][1] == 0.0
    assert choice == Choice.ranking(sorted(range(3), key=lambda index: chooser.history[0][index])[:2])


# --- the run ------------------------------------------------------------------------------------------------


def test_a_chooser_run_records_every_choice_and_every_individuals_parents(tmp_path):
    chooser = FirstAndThird()
    result = evolve("a red circle", "blue", chooser=chooser, out=tmp_path / "run", **SMALL)
    record = result.record
    assert result.status == "done" and record.ending.cause == "generations"  # never stops by itself
    assert record.objective.mode == "choice" and record.objective.pairs == []
    assert (record.objective.target_count, record.objective.target_source) == (0, "none")
    assert record.objective.target_hashes == [] and not (tmp_path / "run" / "targets").exists()
    assert [seen[0] for seen in chooser.seen] == [0, 1, 2, 3]
    mu = record.resolved["mu"]
    previous = None
    for generation in record.generations:
        places = [individual.place for individual in generation.individuals]
        assert places == [1, None, 0, None, None]
        assert [individual.chosen for individual in generation.individuals] == [True, False, True, False, False]
        assert [individual.loss for individual in generation.individuals] == [0.2, 1.0, 0.0, 1.0, 1.0]
        parents = generation.individuals[0].parents
        assert all(individual.parents == parents for individual in generation.individuals)
        if previous is None:
            assert parents == []  # drawn around the prompt
        else:  # DEAP's mu best of the previous generation (a stable sort by loss)
            ranked = sorted(previous.individuals, key=lambda individual: individual.loss)
            assert parents == [individual.id for individual in ranked[:mu]]
        previous = generation
    last = record.generations[-1].individuals[2]
    assert (record.best.id, record.best.generation) == (last.id, 3)  # the latest first choice
    assert read_record(tmp_path / "run") == record
    assert (tmp_path / "run" / "index.html").exists()


def test_the_parents_are_the_candidates_the_next_centroid_is_recombined_from(tmp_path):
    """Oracle: DEAP's own update moves the centroid to the weighted mean of exactly those candidates."""
    result = evolve("a red circle", "blue", chooser=FirstAndThird(), **SMALL)
    generations = result.record.generations
    weights = _decode(result.record.state["search"]["strategy"]["weights"])  # DEAP's recombination weights
    for before, after in zip(generations, generations[1:]):
        by_id = {individual.id: np.asarray(individual.weights) for individual in before.individuals}
        recombined = sum(w * by_id[parent] for w, parent in zip(weights, after.individuals[0].parents))
        np.testing.assert_allclose(before.cma.centroid, recombined, atol=1e-9)  # the state after its update


def test_an_interrupted_chooser_run_resumes_to_the_uninterrupted_record(tmp_path):
    quiet = dict(SMALL, report=False)
    whole = evolve("a red circle", "blue", chooser=FirstAndThird(tied=True), out=tmp_path / "whole", **quiet)
    stopped = evolve("a red circle", "blue", chooser=FirstAndThird(stop_at=2, tied=True), out=tmp_path / "part",
                     **quiet)
    assert stopped.status == "interrupted" and len(stopped.record.generations) == 2
    chooser = FirstAndThird(tied=True)
    resumed = resume(tmp_path / "part", chooser=chooser, progress=False, report=False)
    assert [seen[0] for seen in chooser.seen] == [2, 3]
    assert without_timings(resumed.record) == without_timings(whole.record)


@pytest.mark.parametrize("values, says", [(dict(semantic_weight=0.5), "Semantic weight"),
                                          (dict(tags=("red",)), "Target tags"), (dict(size_limit=1.0), "Size limit")])
def test_what_only_a_loss_uses_is_refused_in_a_chooser_run_before_anything_is_written(tmp_path, values, says):
    with pytest.raises(InputError, match=says):
        evolve("a red circle", chooser=FirstAndThird(), out=tmp_path / "run", **SMALL, **values)
    assert not (tmp_path / "run").exists()


def test_a_resume_of_a_pinning_run_with_a_chooser_is_refused(tmp_path):
    from lib_pinning.embedded_run import pin
    pin("a red circle", out=tmp_path / "run", report=False, **SMALL)
    with pytest.raises(InputError, match="loss|choice"):
        resume(tmp_path / "run", chooser=FirstAndThird(), progress=False)


# --- breeding two candidates ------------------------------------------------------------------------------------


def test_children_lie_between_their_parents_or_take_each_gene_from_one_and_the_same_seed_breeds_the_same():
    first, second = np.array([0.0, 1.0, -2.0, 0.5, 3.0]), np.array([1.0, -1.0, 2.0, 0.5, 0.0])
    bred = children(first, second, 5, (7, 1))
    np.testing.assert_allclose(bred[0], first + (second - first) / 4)
    np.testing.assert_allclose(bred[2], first + (second - first) * 3 / 4)
    for child in bred[3:]:
        assert all(gene in (a, b) for gene, a, b in zip(child, first, second))
    assert all(np.array_equal(a, b) for a, b in zip(bred, children(first, second, 5, (7, 1))))
    many = np.arange(64.0), -np.arange(64.0)
    assert not np.array_equal(children(*many, 2, (7, 1))[1], children(*many, 2, (7, 2))[1])


class Breeder(FirstAndThird):
    """Breeds candidates 1 and 3 of generation `at`, else ranks as FirstAndThird."""

    def __init__(self, at: int = 1, stop_at: int | None = None):
        super().__init__(stop_at=stop_at, tied=True)
        self.at = at

    def choose(self, generation, prompts, batches):
        choice = super().choose(generation, prompts, batches)
        return Choice.breeding(1, 3) if generation == self.at else choice


def test_breeding_two_candidates_begins_the_next_generation_with_their_children(tmp_path):
    record = evolve("a red circle", "blue", chooser=Breeder(at=1), out=tmp_path / "run", **SMALL).record
    bred, after = record.generations[1].individuals, record.generations[2].individuals
    assert [individual.place for individual in bred] == [None, 0, None, 0, None]
    first, second = np.asarray(bred[1].weights), np.asarray(bred[3].weights)
    for child, t in zip(after[:2], (1 / 3, 2 / 3)):
        assert child.parents == [bred[1].id, bred[3].id]
        np.testing.assert_allclose(child.weights, first + (second - first) * t, atol=1e-12)
    for child in after[2:4]:
        assert child.parents == [bred[1].id, bred[3].id]
        assert all(gene in (a, b) for gene, a, b in zip(child.weights, first, second))
    drawn = after[4].parents  # the rest of the generation is drawn by CMA-ES, around the favourites
    assert bred[1].id in drawn and bred[3].id in drawn and after[4].weights not in (first.tolist(), second.tolist())
    assert all(individual.parents == record.generations[3].individuals[0].parents
               for individual in record.generations[3].individuals)  # one breeding, one generation
    assert len({individual.prompt for individual in after}) == len(after)


def test_a_run_stopped_after_a_breeding_resumes_with_the_same_children(tmp_path):
    quiet = dict(SMALL, report=False)
    whole = evolve("a red circle", "blue", chooser=Breeder(at=1), out=tmp_path / "whole", **quiet)
    stopped = evolve("a red circle", "blue", chooser=Breeder(at=1, stop_at=2), out=tmp_path / "part", **quiet)
    assert len(stopped.record.generations) == 2
    resumed = resume(tmp_path / "part", chooser=Breeder(at=1), progress=False, report=False)
    assert without_timings(resumed.record) == without_timings(whole.record)


def test_breeding_takes_two_different_candidates():
    with pytest.raises(InputError, match="twice"):
        Choice.breeding(2, 2).check(5)
    with pytest.raises(InputError, match="two candidates"):
        Choice((1, 2, 3), tied=True, breed=True).check(5)


# --- breeding two different prompts ---------------------------------------------------------------------------


def test_slerp_turns_at_a_steady_rate_keeping_the_norm_and_is_linear_for_parallel_or_zero_vectors():
    first, second = torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 3.0], [2.0, 2.0]])
    for t in (0.0, 0.3, 0.5, 1.0):
        mixed = slerp(first, second, t)
        # row 0: a quarter turn at a steady rate, on the circle of radius 3
        assert math.isclose(math.atan2(mixed[0, 1], mixed[0, 0]), t * math.pi / 2, abs_tol=1e-6)
        assert math.isclose(float(mixed[0].norm()), 3.0, rel_tol=1e-6)
        assert torch.allclose(mixed[1], (1 - t) * first[1] + t * second[1])  # parallel: a straight line
    assert torch.allclose(slerp(torch.zeros(3), torch.ones(3), 0.25), torch.full((3,), 0.25))
    assert slerp(first.half(), second.half(), 0.5).dtype == torch.float16
    with pytest.raises(ValueError, match="cannot be mixed"):
        slerp(torch.ones(2, 3), torch.ones(3, 3), 0.5)


def test_children_of_two_prompts_on_the_embedded_model_are_exactly_their_written_prompts():
    model = EmbeddedModel(count=6, size=16)
    values = dict(batch=2, size=16, prototypes=6, steps=4, seed=3)
    first, second = ("a red circle, soft light", "dark"), ("a (blue:1.2) square", "noise, stripes")
    children = breed_prompts(first, second, (0.25, 0.5, 0.75), **values)
    encode = model.encoder.encode
    for child in children:
        assert child.exact and torch.allclose(encode(child.prompt), slerp(encode(first[0]), encode(second[0]), child.t),
                                              atol=1e-6)
        assert torch.allclose(encode(child.negative_prompt), slerp(encode(first[1]), encode(second[1]), child.t),
                              atol=1e-6)
    renderer = EmbeddedRenderer(model, [3, 4], steps=4)
    parents = [[png_bytes(pixels) for pixels in to_pixels(batch.images)] for batch in renderer.render([first, second])]
    bred = [child.images for child in children]
    assert bred[0] == [png_bytes(p) for p in to_pixels(renderer.render([(children[0].prompt,
                                                                           children[0].negative_prompt)])[0].images)]
    assert len({tuple(images) for images in [*parents, *bred]}) == 5  # unlike both parents and each other
    assert [child.images for child in breed_prompts(first, second, (0.25, 0.5, 0.75), **values)] == bred


# --- which words win ------------------------------------------------------------------------------------------


def _record_of(genes_and_chosen, words=("red", "circle"), negative=("blue",), base=(1.0, 1.0, 1.0)):
    """A chooser run's record made by hand: one generation, one individual per (genes, chosen)."""
    record = evolve("a red circle", "blue", chooser=FirstAndThird(), **{**SMALL, "generations": 1}).record
    record.genome = GenomeRecord(list(words), list(negative), list(base), [])
    individuals = [Individual(f"0000-{n:03d}", "f", list(genes), 0.0, "", "", [], [], 0.0, 0.0, None, chosen)
                   for n, (genes, chosen) in enumerate(genes_and_chosen)]
    record.generations = [Generation(0, len(individuals), 0.0, 0.0, 1.0, record.generations[0].cma, individuals)]
    return record


def _fisher_greater(a, b, c, d):
    """P(X >= a) for the hypergeometric count of the 2x2 table [[a, b], [c, d]] with its margins fixed."""
    row, column, total = a + b, a + c, a + b + c + d
    return sum(math.comb(column, k) * math.comb(total - column, row - k)
               for k in range(a, min(row, column) + 1)) / math.comb(total, row)


def test_word_statistics_count_raised_words_among_the_chosen_with_an_exact_test():
    # "red" raised in all 4 chosen and 1 of 6 others; "circle" lowered (|1 - 0.5|) or raised by magnitude
    # (|1 - 2.5| = 1.5); "blue" never raised.
    rows = ([([0.5, -0.5, -0.2], True)] * 3 + [([0.3, -2.5, 0.0], True)]
            + [([-0.4, 0.5, 0.0], False)] * 5 + [([0.1, 0.5, -0.1], False)])
    statistics = {(s.side, s.word): s for s in word_statistics([_record_of(rows)])}
    red, circle, blue = statistics["prompt", "red"], statistics["prompt", "circle"], statistics["negative", "blue"]
    assert (red.chosen_raised, red.chosen, red.rendered_raised, red.rendered) == (4, 4, 5, 10)
    assert (circle.chosen_raised, circle.rendered_raised) == (1, 7)
    assert (blue.chosen_raised, blue.rendered_raised) == (0, 0)
    assert red.p_value == pytest.approx(_fisher_greater(4, 0, 1, 5), rel=1e-12)
    assert circle.p_value == pytest.approx(_fisher_greater(1, 3, 6, 0), rel=1e-12)
    assert red.chosen_rate == 1.0 and red.rendered_rate == 0.5
    assert red.interval[1] == 1.0 and red.interval[0] == pytest.approx(0.025 ** (1 / 4), rel=1e-9)  # Clopper-Pearson
    assert list(statistics)[0] == ("prompt", "red")


def test_word_statistics_refuse_pinning_runs_and_runs_without_choices(tmp_path):
    from lib_pinning.embedded_run import pin
    with pytest.raises(InputError, match="pinning run"):
        word_statistics([pin("a red circle", report=False, **SMALL).record])
    with pytest.raises(InputError, match="nothing to count"):
        word_statistics([_record_of([([0.5, 0.0, 0.0], False)])])
