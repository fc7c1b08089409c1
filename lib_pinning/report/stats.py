"""stats.json: everything about one individual in one readable file."""

from __future__ import annotations

from .context import RunContext
from .files import image_name


def individual_stats(context: RunContext, generation: dict, individual: dict) -> dict:
    image_losses = individual.get("image_losses", [])
    pair_losses = individual.get("pair_losses", [])
    return {
        "id": individual["id"],
        "generation": generation["index"],
        "prompt": individual["prompt"],
        "negative_prompt": individual["negative_prompt"],
        "loss": individual["loss"],
        "loss_mode": context.options.get("loss_mode"),
        "weights": [{"word": label, "gene": gene} for label, gene in zip(context.gene_names, individual["weights"])],
        "images": [{"seed": seed, "file": image_name(seed), "loss": loss}
                   for seed, loss in zip(context.seeds, image_losses)],
        "pairs": [{"images": [context.image_label(a), context.image_label(b)], "loss": loss}
                  for (a, b), loss in zip(context.pairs, pair_losses)],
        "seconds_render": individual.get("seconds_render"),
        "seconds_loss": individual.get("seconds_loss"),
        "seeds": context.seeds,
        "sampler": context.render_settings(),
        "cma_after_generation": generation.get("cma"),
    }
