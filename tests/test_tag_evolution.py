"""Prompt evolution of tags present or absent (lib_pinning.tags, lib_pinning.genetic): the genome of a prompt's
comma-separated tags and a pool, the genetic algorithm's selection, crossover and mutation (DEAP's operators), the
record of every child's two parents, resume, and which tags win."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning.chooser import Choice, ClosestChooser
from lib_pinning.embedded import EmbeddedModel
from lib_pinning.embedded_run import evolve, pin, resume
from lib_pinning.errors import InputError
from lib_pinning.genetic import WEIGHT_RANGE
from lib_pinning.rendering import Rendered, RunStopped
from lib_pinning.tags import TagGenome, split_tags
from lib_pinning.winners import word_statistics
from report_support import without_timings

SMALL = dict(batch=2, steps=4, prototypes=6, size=16, progress=False, cma_seed=3, generations=4, lambda_=6,
             evolve="tags", report=False)
PROMPT = "a red circle, blue sky, (green grass:1.2), <lora:x:1>, night"


# --- the genome ------------------------------------------------------------------------------------------------


def test_tags_are_the_comma_separated_parts_outside_brackets_as_a1111_reads_them():
    assert split_tags(" a, (b, c:1.2) ,, [d, e:f:3], g\\, h ,") == ["a", "(b, c:1.2)", "[d, e:f:3]", "g\\, h"]
    assert split_tags("1girl, smile, :), >_<, heart <3, b}") == ["1girl", "smile", ":)", ">_<", "heart <3", "b}"]
    assert split_tags("<lora:a,b:1>, x, (y, z") == ["<lora:a,b:1>", "x", "(y, z"]  # an open bracket: the rest


def test_the_genome_writes_the_tags_present_with_their_weights():
    genome = TagGenome(PROMPT, "dark", pool=["moon", "Night", "stars", " night "])
    assert genome.words == ["a red circle", "blue sky", "(green grass:1.2)", "night", "moon", "stars"]
    assert genome.base_weights() == [1, 1, 1, 1, 0, 0] and genome.frozen == ("<lora:x:1>",)
    assert genome.notes == ("tag pool: already in the prompt or the pool, so not added twice: Night, night",)
    assert genome.prompt([0] * 6) == (PROMPT, "dark")  # the user's prompt as written
    # a prompt tag's gene -1 leaves it out, another weight wraps it; a pool tag's gene w adds it at weight w
    assert genome.prompt([-1, 0.25, -0.5, 0, 1, 0.123456]) == (
        "(blue sky:1.25), ((green grass:1.2):0.5), <lora:x:1>, night, moon, (stars:0.1235)", "dark")


def test_and_subprompts_keep_their_weights_and_pool_tags_join_the_first():
    from lib_pinning.frozen_syntax import SUBPROMPT

    genome = TagGenome("a red cat, grass AND a blue dog, sky :0.3", pool=["moon"])
    assert genome.words == ["a red cat", "grass", "a blue dog", "sky", "moon"]
    positive, _ = genome.prompt([0, -1, 0, -1, 1])
    assert positive == "a red cat, moon AND a blue dog :0.3"
    subprompts = [SUBPROMPT.fullmatch(text) for text in positive.split("AND")]  # A1111's reading
    assert [part.group(1).strip() for part in subprompts] == ["a red cat, moon", "a blue dog"]
    assert positive.split("AND")[1].endswith(":0.3")


@pytest.mark.parametrize("prompt, pool, says", [
    ("<lora:x:1>", (), "no tag to switch on or off"),
    ("a, b", ("c, d",), "'c, d' is not one tag"),
    ("a, b", ("x AND y",), "is not one tag")])
def test_a_prompt_or_pool_without_tags_to_evolve_is_refused_before_anything_is_written(tmp_path, prompt, pool, says):
    with pytest.raises(InputError, match=says):
        evolve(prompt, chooser=Favourites([0]), out=tmp_path / "run", tag_pool=pool, **SMALL)
    assert not (tmp_path / "run").exists()


def test_a_typed_tag_pool_is_split_as_a_prompt_is():
    from lib_pinning.options import PinOptions, parse

    assert parse(PinOptions, {"tag_pool": "moon, cat\\, dog, (red hair, blue eyes:1.2),"}).tag_pool == (
        "moon", "cat\\, dog", "(red hair, blue eyes:1.2)")


@pytest.mark.parametrize("values, says", [(dict(evolve="tags"), "Evolve.*prompt evolution runs"),
                                          (dict(tag_pool=("moon",)), "Tag pool.*only used when Evolve is tags"),
                                          (dict(mutation_rate=0.5), "Mutation rate.*only used when Evolve is tags")])
def test_tag_options_are_refused_where_they_mean_nothing(tmp_path, values, says):
    with pytest.raises(InputError, match=says):
        pin("a red circle", out=tmp_path / "run", **{**SMALL, "evolve": "weights", **values})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("values, says", [(dict(keep=("blue sky",)), "Keep fixed.*not used when Evolve is tags"),
                                          (dict(granularity="tag"), "Gene per.*not used when Evolve is tags"),
                                          (dict(mutation_rate=0), "Mutation rate.*greater than 0|above 0|more than 0"),
                                          (dict(tag_pool=[f"tag{n}" for n in range(1001)]), "at most 1000 can be")])
def test_what_tags_cannot_use_is_refused_before_anything_is_written(tmp_path, values, says):
    with pytest.raises(InputError, match=says):
        evolve(PROMPT, chooser=Favourites([0]), out=tmp_path / "run", **{**SMALL, **values})
    assert not (tmp_path / "run").exists()


# --- the genetic algorithm ------------------------------------------------------------------------------------


class Favourites:
    """Picks the given candidates, or (`present`) those whose prompt has that tag; stops at `stop_at`."""

    def __init__(self, picks=(), present: str | None = None, stop_at: int | None = None, breed_at: int | None = None):
        self.picks, self.present, self.stop_at, self.breed_at = list(picks), present, stop_at, breed_at
        self.seen = []

    def choose(self, generation, prompts, batches):
        self.seen.append(generation)
        if generation == self.stop_at:
            raise RunStopped()
        if generation == self.breed_at:
            return Choice.breeding(0, 1)
        if self.present is not None:
            having = [index for index, (prompt, _) in enumerate(prompts) if self.present in split_tags(prompt)]
            return Choice.favourites(having or [0])
        return Choice.favourites(self.picks)


def _individuals(record):
    return {individual.id: individual for generation in record.generations for individual in generation.individuals}


def _present(individual, bases):
    return [abs(base + gene) > 0 for base, gene in zip(bases, individual.weights)]


def test_without_mutation_every_child_takes_each_tag_from_one_of_its_two_chosen_parents(tmp_path):
    record = evolve(PROMPT, chooser=Favourites([0, 2, 3]), tag_pool=["moon", "stars"], mutation_rate=1e-12,
                    **SMALL).record
    found = _individuals(record)
    for before, generation in zip(record.generations, record.generations[1:]):
        chosen = {individual.id for individual in before.individuals if individual.chosen}
        assert chosen == {before.individuals[index].id for index in (0, 2, 3)}
        for child in generation.individuals:
            assert len(child.parents) == 2 and set(child.parents) <= chosen, child.parents
            first, second = (found[parent].weights for parent in child.parents)
            assert all(gene in (a, b) for gene, a, b in zip(child.weights, first, second)), child.id


def test_with_one_favourite_every_child_is_its_mutant():
    record = evolve(PROMPT, chooser=Favourites([2]), tag_pool=["moon"], **SMALL).record
    for before, generation in zip(record.generations, record.generations[1:]):
        assert all(child.parents == [before.individuals[2].id] for child in generation.individuals)


def test_with_mutation_rate_1_every_tag_of_every_child_switches(tmp_path):
    """cxUniform then mutFlipBit at rate 1: each tag is the opposite of one parent's, and present ones keep a weight
    in WEIGHT_RANGE (mutGaussian clipped)."""
    record = evolve(PROMPT, chooser=Favourites([1, 4]), tag_pool=["moon"], mutation_rate=1.0, sigma=0.5,
                    **SMALL).record
    bases, found = record.genome.base_weights, _individuals(record)
    first_generation = record.generations[0].individuals
    assert all(_present(individual, bases) == [False, False, False, False, True] for individual in first_generation)
    for generation in record.generations[1:]:
        for child in generation.individuals:
            present = _present(child, bases)
            parents = [_present(found[parent], bases) for parent in child.parents]
            assert all(p != a for p, a, b in zip(present, *parents) if a == b), child.id  # flipped from c ∈ {a, b}
            weights = [round(abs(base + gene), 4) for base, gene in zip(bases, child.weights)]
            assert all(WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1] for weight in weights if weight), weights


def test_a_generations_children_differ_from_their_parents_and_each_other_and_the_global_rngs_are_untouched():
    records = []
    for seed in (11, 12):  # the run neither depends on the global RNGs nor changes them
        random.seed(seed)
        np.random.seed(seed)
        before = random.getstate(), np.random.get_state()[1].copy()
        records.append(evolve(PROMPT, chooser=Favourites([0, 1]), tag_pool=["moon", "stars"], **SMALL).record)
        assert random.getstate() == before[0] and (np.random.get_state()[1] == before[1]).all()
    record = records[0]
    assert [i.prompt for i in _individuals(record).values()] == [i.prompt for i in _individuals(records[1]).values()]
    found = _individuals(record)
    for generation in record.generations:
        prompts = [individual.prompt for individual in generation.individuals]
        assert len(set(prompts)) == len(prompts)
        for child in generation.individuals:
            assert all(found[parent].prompt != child.prompt for parent in child.parents)
    assert record.generations[0].individuals[0].prompt != record.baseline.prompt


def test_a_tag_run_stopped_and_resumed_ends_as_the_uninterrupted_run(tmp_path):
    options = dict(SMALL, tag_pool=["moon", "stars"], generations=5)
    whole = evolve(PROMPT, chooser=Favourites([0, 3], breed_at=1), out=tmp_path / "whole", **options)
    stopped = evolve(PROMPT, chooser=Favourites([0, 3], breed_at=1, stop_at=2), out=tmp_path / "part", **options)
    assert stopped.status == "interrupted" and len(stopped.record.generations) == 2
    chooser = Favourites([0, 3], breed_at=1)
    resumed = resume(tmp_path / "part", chooser=chooser, progress=False, report=False)
    assert chooser.seen == [2, 3, 4]
    assert without_timings(resumed.record) == without_timings(whole.record)
    bred = whole.record.generations[2].individuals[0]  # the breeding's first child: both parents
    assert bred.parents == [whole.record.generations[1].individuals[index].id for index in (0, 1)]


def test_which_tags_win_names_the_pool_tag_the_chooser_wants_present(tmp_path):
    record = evolve("a red circle, blue sky, green grass", chooser=Favourites(present="moon"),
                    tag_pool=["moon", "stars", "night"], **{**SMALL, "generations": 5}).record
    statistics = word_statistics([record])
    assert statistics[0].word == "moon" and statistics[0].measure == "present" and statistics[0].p_value < 0.01
    assert statistics[0].chosen_raised == statistics[0].chosen  # every favourite has it
    with pytest.raises(InputError, match="evolve different things"):
        weights = evolve("a red circle", chooser=Favourites([0]), **{**SMALL, "evolve": "weights"}).record
        word_statistics([record, weights])


def test_the_report_of_a_tag_run_plots_the_share_of_each_tag_present_per_generation(tmp_path):
    from lib_pinning.report import files, run_figures
    from lib_pinning.report.figures import png

    options = {**SMALL, "report": True, "generations": 3}
    record = evolve(PROMPT, chooser=Favourites([1, 2]), tag_pool=["moon"], out=tmp_path / "run", **options).record
    figure = run_figures.tags_figure(record)
    lines = {line.get_gid(): line for axes in figure.axes for line in axes.get_lines()}
    for tag in range(len(record.genome.words)):  # counted here from the prompts each individual was rendered with
        tag_text = record.genome.words[tag]
        having = [[tag_text in split_tags(individual.prompt) or f"({tag_text}:" in individual.prompt
                   for individual in generation.individuals] for generation in record.generations]
        chosen = [[h for h, individual in zip(row, generation.individuals) if individual.chosen]
                  for row, generation in zip(having, record.generations)]
        assert list(lines[f"rendered {tag}"].get_ydata()) == [np.mean(row) for row in having], tag_text
        assert list(lines[f"chosen {tag}"].get_ydata()) == [np.mean(row) for row in chosen], tag_text
    assert (tmp_path / "run" / files.TAGS_PLOT).read_bytes() == png(figure)
    assert not (tmp_path / "run" / files.CMA_PLOT).exists()  # a genetic algorithm has no CMA-ES state
    assert "Tags present per generation" in (tmp_path / "run" / files.INDEX).read_text(encoding="utf-8")


class Ranks:
    def __init__(self, answer):
        self.answer = answer

    def choose(self, generation, prompts, batches):
        return self.answer


def test_a_ranking_selects_its_mu_best_and_favourites_are_all_selected():
    ranked = evolve(PROMPT, chooser=Ranks(Choice.ranking([5, 4, 3, 2, 1, 0])), tag_pool=["moon"], **SMALL).record
    assert ranked.resolved["mu"] == 3
    for before, after in zip(ranked.generations, ranked.generations[1:]):
        best = {before.individuals[index].id for index in (5, 4, 3)}
        assert set().union(*(child.parents for child in after.individuals)) <= best
    liked = evolve(PROMPT, chooser=Ranks(Choice.favourites([0, 1, 2, 3, 4])), tag_pool=["moon"], **SMALL).record
    for before, after in zip(liked.generations, liked.generations[1:]):
        parents = set().union(*(child.parents for child in after.individuals))
        assert parents <= {individual.id for individual in before.individuals[:5]} and len(parents) > 3


def _runs_on(device: str, folder) -> dict:
    """Both genomes' runs, scripted by index (their genes do not depend on the pictures), with reports."""
    return {kind: evolve(PROMPT, chooser=Favourites([0, 2], breed_at=1), out=folder / f"{kind}-{device}",
                         **{**SMALL, "evolve": kind, "report": True, "device": device}).record
            for kind in ("weights", "tags")}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_prompt_evolution_on_a_cuda_device_proposes_and_renders_what_it_does_on_the_cpu(tmp_path):
    cpu, cuda = _runs_on("cpu", tmp_path), _runs_on("cuda", tmp_path)
    for kind in ("weights", "tags"):
        assert cuda[kind].status == "done" and cuda[kind].render.extra["device"].startswith("cuda")
        assert [i.prompt for i in _individuals(cuda[kind]).values()] == [i.prompt for i in _individuals(cpu[kind]).values()]
        for seed in cuda[kind].render.seeds:  # 8-bit pictures of the same prompt: at most a level or two apart
            pictures = [np.asarray(Image.open(tmp_path / f"{kind}-{device}" / "best" / f"seed-{seed}.png"), dtype=int)
                        for device in ("cpu", "cuda")]
            assert np.abs(pictures[0] - pictures[1]).max() <= 2, (kind, seed)
    model = {device: EmbeddedModel(count=6, size=16, device=torch.device(device)) for device in ("cpu", "cuda")}
    distances = {}
    for device, each in model.items():  # the scripted chooser's ꟻLIP on the pictures' device
        batches = [Rendered(each.prototypes[[index, index]]) for index in (1, 4, 2)]
        distances[device] = ClosestChooser(each.prototypes[4:5], count=2).distances(batches)
    np.testing.assert_allclose(distances["cuda"], distances["cpu"], atol=1e-5)


def test_the_operators_draw_exactly_what_deaps_draw_from_the_same_state():
    from deap import tools

    from lib_pinning.genetic import cx_uniform, mut_flip_bit, mut_gaussian

    for seed in range(20):
        ours = random.Random(seed)
        values = [ours.choice([0.0, 0.5, 1.0, 1.7]) for _ in range(9)]
        state = ours.getstate()
        first, second = list(values), list(reversed(values))
        cx_uniform(ours, first, second, 0.5)
        mut_flip_bit(ours, first, 0.3)
        mut_gaussian(ours, second, 0.0, 0.4, 0.6)
        outside = random.getstate()
        try:
            random.setstate(state)
            deap_first, deap_second = list(values), list(reversed(values))
            tools.cxUniform(deap_first, deap_second, 0.5)
            tools.mutFlipBit(deap_first, 0.3)
            tools.mutGaussian(deap_second, 0.0, 0.4, 0.6)
            assert (first, second) == (deap_first, deap_second) and ours.getstate() == random.getstate()
        finally:
            random.setstate(outside)


def test_other_threads_drawing_from_pythons_random_do_not_change_a_run():
    """A WebUI draws seed -1 from Python's `random` in other threads while a run proposes its children."""
    import sys
    import threading

    from lib_pinning.genetic import GeneticSearch
    from lib_pinning.options import Context, PinOptions, parse, resolve

    options = resolve(parse(PinOptions, {"evolve": "tags", "lambda_": 8, "generations": 200, "cma_seed": 5,
                                         "mutation_rate": 0.4}), Context(6))

    def proposals() -> list:
        search, seen = GeneticSearch([1, 1, 1, 1, 0, 0], options), []
        while not search.done:
            candidates = search.ask()
            seen.append([candidate.genes.tolist() for candidate in candidates])
            search.tell(candidates, [0.0 if n % 3 == 0 else 1.0 for n in range(len(candidates))])
        return seen

    quiet = proposals()
    stop = threading.Event()

    def draw():
        while not stop.is_set():
            random.seed(42)
            random.random()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns every microsecond, so that they do meet inside a draw
    thread = threading.Thread(target=draw)
    thread.start()
    try:
        busy = proposals()
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert busy == quiet
