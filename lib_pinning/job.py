"""The one job builder: options and a prompt -> genome, resolved options, search, objective, record header.

The command line, the Python API (lib_pinning.embedded_run) and the WebUI (lib_pinning.webui.run) all build their
jobs here; they differ only in the renderer they bring and in what they know about rendering (`RenderPlan`).
Every check that can refuse a run happens here, before anything is created, deleted or rendered: a refusal is
an `InputError` (an option, the prompt, a target). The caller then makes the run folder, attaches its observers
and hands the job to the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from . import options as schema
from .chooser import MODE as CHOICE, Chooser, ChoiceObjective
from .forks import forks_fit, is_hyperbatch_sampler
from .errors import InputError
from .genome import Genome, build_genome
from .losses import loss_mode, tree_weighting
from .objective import Objective, Terms
from .observer import Observer
from .options import Context, PinOptions
from .record import GenomeRecord, ObjectiveRecord, RenderRecord, RunRecord
from .rendering import Renderer
from .genetic import GeneticSearch
from .search import Search
from .semantic import Embedder
from .tags import TagGenome

log = logging.getLogger(__name__)
MAX_GENES = 1000  # CMA-ES keeps an N x N covariance and decomposes it every generation


@dataclass
class RenderPlan:
    """What the caller knows about rendering before the run starts."""

    record: RenderRecord      # what run.json says about it (seeds, sampler, steps, size, model, ...)
    sampled_steps: int        # the steps the sampler takes (img2img samples only a share of them)
    tree_size: int            # rows per sampling call: each call is its own Hyperbatch trees
    fork_strength: float = schema.FORK_STRENGTH_DEFAULT  # what fork strength -1 ("inherit") means here


@dataclass
class Job:
    genome: Genome | TagGenome
    options: PinOptions       # every formula default resolved
    search: Search | GeneticSearch
    objective: Objective
    renderer: Renderer
    record: RunRecord
    run_dir: Path | None = None
    observers: list[Observer] = field(default_factory=list)
    should_stop: Callable[[], bool] = lambda: False

    @property
    def notices(self) -> list[str]:
        return self.record.notices


def build_job(options: PinOptions, prompt: str, negative_prompt: str, plan: RenderPlan,
              make_renderer: Callable[[PinOptions], Renderer], *,
              targets: torch.Tensor | Sequence[Image.Image] = (), target_sources: Sequence[str] = (),
              masks: torch.Tensor | Sequence[Image.Image | None] = (), mask_sources: Sequence[str] = (),
              embeddings: Iterable[str] = (), embedder: Callable[[], Embedder] | None = None,
              chooser: Chooser | None = None) -> Job:
    """Check everything and assemble a job. `make_renderer(resolved options)` is called last, once all is valid.

    `targets`: decoded target images (any size: resized at the first render) or a tensor at the render size;
    `target_sources`: what run.json calls them (file paths, "upload 1", ...); `masks`, `mask_sources`: the same
    for their masks. `embedder()` gives the image embedder of the semantic loss and the tags; it is called only
    when they are used (None: this renderer has none, and they are refused). `chooser`: a prompt evolution run,
    where the chooser's choice in each generation is the fitness (lib_pinning.chooser) instead of a loss; it
    never stops by itself (patience, restarts, stop at loss, stop when pinned and the first look are off).
    """
    _check_evolve(options, chooser)
    genome = TagGenome(prompt, negative_prompt, options.tag_pool) if options.evolve == "tags" else \
        build_genome(prompt, negative_prompt, options.granularity, embeddings, keep=options.keep,
                     punctuation=options.punctuation)
    if len(genome) > MAX_GENES and options.evolve == "tags":
        raise InputError(f"the prompt and the tag pool have {len(genome)} tags: at most {MAX_GENES} can be evolved; "
                         "use a smaller tag pool")
    if len(genome) > MAX_GENES:
        raise InputError(f"the prompts have {len(genome)} words to pin: at most {MAX_GENES} can be (one weight each); "
                         "pin fewer: one gene per comma-separated tag (Gene per: tag, --granularity tag), words kept "
                         "fixed (Keep fixed, --keep), or a shorter prompt")
    seeds = plan.record.seeds
    resolved = schema.resolve(options, Context(len(genome), seeds[0], plan.fork_strength))
    if chooser is not None:
        _check_choice(resolved, len(targets))
        resolved = replace(resolved, patience=0, restarts=0, target_loss=0.0, stop_share=0.0, first_look=0)
    search = GeneticSearch(genome.base_weights(), resolved) if options.evolve == "tags" else \
        Search(len(genome), resolved)
    mode = loss_mode(resolved.loss_mode)
    if chooser is not None:
        objective, tree = ChoiceObjective(chooser), None
    else:
        tree = tree_weighting(plan.record.sampler, plan.sampled_steps, plan.tree_size,
                              enabled=resolved.hyperbatch_weights, kind=resolved.hyperbatch_weight_type,
                              scale=resolved.hyperbatch_weight_scale, force=resolved.hyperbatch_force)
        objective = Objective(targets if len(targets) else None, mode, tree, masks=masks,
                              terms=_terms(resolved, embedder))
    given = len(targets) if mode.uses_targets else 0
    target_count = given or (len(seeds) if mode.uses_targets and objective.compares else 0)
    notices = _notices(genome, resolved, plan, len(targets))
    for notice in notices:
        log.warning("notice: %s", notice)
    record = RunRecord(
        prompt=prompt, negative_prompt=negative_prompt,
        options=schema.to_record(replace(options, targets=tuple(target_sources), masks=tuple(mask_sources))),
        resolved=schema.to_record(replace(resolved, targets=tuple(target_sources), masks=tuple(mask_sources))),
        cma_constants=search.constants(), render=plan.record,
        objective=ObjectiveRecord(CHOICE if chooser is not None else mode.name, target_count,
                                  "given" if given else "baseline" if target_count else "none",
                                  [list(pair) for pair in objective.pairs(target_count, len(seeds))],
                                  None if tree is None else vars(tree).copy(),
                                  embedder=objective.terms.embedder.name if objective.terms.embedder else ""),
        genome=GenomeRecord(genome.words, genome.negative_words, genome.base_weights(), list(genome.frozen)),
        notices=notices)
    return Job(genome, resolved, search, objective, make_renderer(resolved), record)


def _check_evolve(options: PinOptions, chooser: Chooser | None) -> None:
    """Tags evolve only by a chooser; their options mean nothing to word weights."""
    if options.evolve == "tags" and chooser is None:
        raise InputError("Evolve (evolve): tags is for prompt evolution runs (a chooser's choice is the fitness); a "
                         "pinning run evolves word weights")
    tags, words = ("tag_pool", "mutation_rate"), ("granularity", "keep", "punctuation")
    unused = [schema.spec_of(PinOptions, name).title for name in (words if options.evolve == "tags" else tags)
              if getattr(options, name) != schema.spec_of(PinOptions, name).default]
    if unused and options.evolve == "tags":
        raise InputError(f"{', '.join(unused)}: not used when Evolve is tags (the tags are the prompt's comma-separated "
                         "parts, each switched on and off as a whole)")
    if unused:
        raise InputError(f"{', '.join(unused)}: only used when Evolve is tags")


def _check_choice(options: PinOptions, target_count: int) -> None:
    """A chooser run compares nothing: what only a loss uses is refused."""
    used = [label for label, value in (("Target images", target_count), ("Target masks", options.masks),
                                      ("Semantic weight", options.semantic_weight), ("Target tags", options.tags),
                                      ("Size limit", options.size_limit))
            if value]
    if used:
        raise InputError(f"{', '.join(used)}: a prompt evolution run has no loss, the chooser's choice is its "
                         "fitness; leave them out")


def _terms(options: PinOptions, embedder: Callable[[], Embedder] | None) -> Terms:
    """What each loss is made of; the embedder is made (e.g. CLIP loaded) only when the options use it."""
    uses = [name for name, used in (("Semantic weight", options.semantic_weight > 0),
                                    ("Target tags", bool(options.tags))) if used]
    made = None
    if uses:
        if embedder is None:
            raise InputError(f"{' and '.join(uses)}: this renderer has no image embedder (semantic loss and tags "
                             "need the WebUI's CLIP, or the embedded model)")
        made = embedder()
        made.check_tags(options.tags)
    return Terms(options.flip_weight, options.semantic_weight, options.tags, options.tag_weight, made)


def _notices(genome: Genome, options: PinOptions, plan: RenderPlan, target_count: int) -> list[str]:
    """What the user should know before the run, though nothing stops it."""
    notices = list(genome.notes)
    if genome.frozen:
        notices.append(f"passed through unchanged: {', '.join(genome.frozen)}")
    sampler = plan.record.sampler
    if is_hyperbatch_sampler(sampler) and not forks_fit(plan.tree_size, plan.sampled_steps):
        notices.append(f"{plan.sampled_steps} steps are too few to fork a batch of {plan.tree_size} (steps must "
                       f"exceed log2 of the batch size): {sampler} samples the whole batch at every step")
    if target_count and not loss_mode(options.loss_mode).uses_targets:
        notices.append(f"the loss is {options.loss_mode}: the target images are not used")
    if options.tags and not target_count and loss_mode(options.loss_mode).uses_targets:
        notices.append("no target images: the target tags alone score the images")
    if options.tags and options.tag_weight == 0:
        notices.append("the tag weight is 0: the target tags do not count")
    return notices


# Options a resumed run may take other values of: the budget, whether the logbook is printed, and what to resume.
RESUMABLE_CHANGES = ("generations", "log", "resume")


def resume_differences(stored: RunRecord, fresh: RunRecord) -> list[str]:
    """What keeps `fresh` (the job built for a resume) from continuing the run of `stored`, one line each."""
    found = []

    def compare(name: str, before, now) -> None:
        if before != now:
            found.append(f"{name}: {_shown(before)} in the run, {_shown(now)} now")

    compare("prompt", stored.prompt, fresh.prompt)
    compare("negative prompt", stored.negative_prompt, fresh.negative_prompt)
    recorded_defaults = schema.to_record(PinOptions())  # options newer than the run: it had their defaults
    for name in stored.options.keys() | fresh.options.keys():
        if name not in RESUMABLE_CHANGES:
            compare(name, stored.options.get(name, recorded_defaults.get(name)), fresh.options.get(name))
    for name, before in vars(stored.render).items():
        if name != "extra":
            compare(name, before, getattr(fresh.render, name))
    for name in stored.render.extra.keys() | fresh.render.extra.keys():  # each by its own name
        compare(name, stored.render.extra.get(name), fresh.render.extra.get(name))
    compare("words", (stored.genome.words, stored.genome.negative_words),
            (fresh.genome.words, fresh.genome.negative_words))
    compare("loss", (stored.objective.mode, stored.objective.target_count, stored.objective.tree),
            (fresh.objective.mode, fresh.objective.target_count, fresh.objective.tree))
    compare("embedder", stored.objective.embedder, fresh.objective.embedder)
    done, budget = len(stored.generations), fresh.resolved["generations"]
    if budget < done:
        found.append(f"generations: the run has {done} finished, {budget} asked for now (give at least {done})")
    return found


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
