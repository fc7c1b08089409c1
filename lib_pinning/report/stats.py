"""stats.json: everything about one individual in one readable file."""

from __future__ import annotations

import dataclasses

from ..record import Generation, Individual
from .context import RunContext
from .files import image_name


def individual_stats(context: RunContext, generation: Generation, individual: Individual) -> dict:
    return {
        "id": individual.id,
        "generation": generation.index,
        "prompt": individual.prompt,
        "negative_prompt": individual.negative_prompt,
        "loss": individual.loss,
        "loss_mode": context.record.objective.mode,
        "weights": [{"word": label, "gene": gene} for label, gene in zip(context.gene_names, individual.weights)],
        "images": [{"seed": seed, "file": image_name(seed), "loss": loss}
                   for seed, loss in zip(context.seeds, individual.image_losses)],
        "pairs": [{"images": [context.image_label(a), context.image_label(b)], "loss": loss}
                  for (a, b), loss in zip(context.pairs, individual.pair_losses)],
        "seconds_render": individual.seconds_render,
        "seconds_loss": individual.seconds_loss,
        "seeds": context.seeds,
        "render": dataclasses.asdict(context.record.render),
        "cma_after_generation": dataclasses.asdict(generation.cma),
    }
