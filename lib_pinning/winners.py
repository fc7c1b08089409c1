"""Which words win: over one or several prompt evolution runs (lib_pinning.chooser), how often each word was
raised — its weight above the weight the prompt gives it — among the chosen individuals, against all rendered
ones. Per word: counts and rates, a one-sided exact test (raised more often among the chosen than among the
others) and a 95 % Clopper–Pearson interval of the rate among the chosen (scipy's).

The test compares chosen and unchosen individuals within each generation: the search moves its population from
one generation to the next, so a word can be raised in most of a late generation, chosen or not, and pooling
generations would credit the drift to the choice. Each generation is a 2×2 table with its margins fixed; the
count of chosen-and-raised over all generations (and runs) has the distribution of a sum of independent
hypergeometric counts, and the p-value is its upper tail (the exact conditional test of stratified 2×2 tables;
with one generation it is Fisher's exact test).

In a run that evolves tags (lib_pinning.tags) a tag counts when it is present (its weight above 0), not raised:
the statistics are of the tags present among the chosen against all rendered.

Words are matched across runs by their side (prompt or negative prompt) and their text; a word written twice in a
prompt is two genes, told apart as "word", "word (2)".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .errors import InputError
from .record import RunRecord

SIDES = ("prompt", "negative")


@dataclass(frozen=True)
class WordStatistic:
    side: str                   # "prompt" or "negative"
    word: str
    chosen_raised: int          # chosen individuals with the word raised
    chosen: int                 # chosen individuals
    rendered_raised: int        # rendered individuals (chosen or not) with the word raised
    rendered: int               # rendered individuals
    p_value: float              # one-sided Fisher's exact test: over-represented among the chosen
    interval: tuple[float, float]  # 95 % Clopper–Pearson interval of chosen_raised / chosen
    measure: str = "raised"     # what "raised" counts: a word's weight above the prompt's, or a tag "present"

    @property
    def chosen_rate(self) -> float:
        return self.chosen_raised / self.chosen if self.chosen else 0.0

    @property
    def rendered_rate(self) -> float:
        return self.rendered_raised / self.rendered if self.rendered else 0.0


def gene_labels(record: RunRecord) -> list[tuple[str, str]]:
    """(side, label) of every gene; a repeated word on one side gets its occurrence number."""
    labels, seen = [], {}
    for side, words in zip(SIDES, (record.genome.words, record.genome.negative_words)):
        for word in words:
            seen[side, word] = seen.get((side, word), 0) + 1
            count = seen[side, word]
            labels.append((side, word if count == 1 else f"{word} ({count})"))
    return labels


def word_statistics(records: Sequence[RunRecord]) -> list[WordStatistic]:
    """Per word of the runs' prompts, most over-represented among the chosen first (by p-value, then by the rate
    difference). Raises an InputError when a run is not a prompt evolution run or nothing was chosen."""
    strata: dict[tuple[str, str], list[tuple[int, int, int, int]]] = {}  # per generation: (a, chosen, raised, n)
    kinds = {measure(record) for record in records}
    if len(kinds) > 1:
        raise InputError("these runs evolve different things (word weights in some, tags in others): count the runs "
                         "of one kind together")
    kind = kinds.pop() if kinds else "raised"
    for record in records:
        if record.objective.mode != "choice":
            raise InputError(f"the run of {record.prompt!r} is a pinning run (loss {record.objective.mode!r}), not a "
                             "prompt evolution run: it has no choices to count")
        labels = gene_labels(record)
        counts = _present if kind == "present" else _raised
        for generation in record.generations:
            chosen = [individual.chosen for individual in generation.individuals]
            for gene, (label, base) in enumerate(zip(labels, record.genome.base_weights)):
                raised = [counts(base, individual.weights[gene]) for individual in generation.individuals]
                both = sum(r and c for r, c in zip(raised, chosen))
                strata.setdefault(label, []).append((both, sum(chosen), sum(raised), len(chosen)))
    if not any(stratum[1] for tables in strata.values() for stratum in tables):
        raise InputError("no individual of these runs was chosen yet: there is nothing to count")
    statistics = []
    for (side, word), tables in strata.items():
        chosen_raised, chosen, rendered_raised, rendered = (sum(column) for column in zip(*tables))
        interval = stats.binomtest(chosen_raised, chosen).proportion_ci() if chosen else (0.0, 1.0)
        statistics.append(WordStatistic(side, word, chosen_raised, chosen, rendered_raised, rendered,
                                        stratified_p_value(tables), (float(interval[0]), float(interval[1])),
                                        kind))
    order = {label: index for index, label in enumerate(strata)}
    return sorted(statistics, key=lambda s: (s.p_value, -(s.chosen_rate - s.rendered_rate), order[s.side, s.word]))


def measure(record: RunRecord) -> str:
    """What a run's statistics count: "present" (a run evolving tags) or "raised" (word weights)."""
    return "present" if record.options.get("evolve") == "tags" else "raised"


def _raised(base: float, gene: float) -> bool:
    return abs(base + gene) > abs(base)


def _present(base: float, gene: float) -> bool:
    return abs(base + gene) > 0


def stratified_p_value(tables: Sequence[tuple[int, int, int, int]]) -> float:
    """P(sum of the tables' chosen-and-raised counts >= the observed sum), each table's count hypergeometric
    given its margins: (chosen and raised, chosen, raised, individuals) per table."""
    distribution = np.ones(1)  # P(sum = s) for s = 0, 1, ...
    for _, chosen, raised, count in tables:
        counts = np.arange(min(chosen, raised) + 1)
        pmf = stats.hypergeom(count, raised, chosen).pmf(counts)
        distribution = np.convolve(distribution, pmf)
    observed = sum(table[0] for table in tables)
    return float(min(1.0, distribution[observed:].sum()))
