"""The Hyperbatch fork schedule and its trees: which rows each step advances, which image descends from which.

Pure Python (no k-diffusion), so the objective's tree weighting uses it without loading the samplers.

The schedule. `schedule(B, steps)` is the original extension's even doubling schedule: with
L = ceil(log2 B) forks and d = max(1, steps // (L + 1)), level j (j = 1..L) starts at step max(0, j·d − 1)
with min(2^j, B) rows, so 20 steps at B = 8 give 4 steps at 1 row, 5 at 2, 5 at 4 and 6 at 8. For a B that is
not a power of two the last fork adds only the leftover rows (B = 7: 1, 2, 4, 7, in the same 4, 5, 5, 6 steps;
the original made the leftover fork an extra, shorter segment: 5, 6, 6, 3). When steps ≤ floor(log2 B)
there is no room to fork: every step runs the whole batch (plain sampling) and a HyperbatchFallbackWarning
says so.

Rows. Within a group of B rows, row r is image r (seed r). A fork from m to n rows appends rows m..n−1, and
row r's parent is row r − m. A fork before step 0 has no parent to share: those rows start from their own
initial noise (independent roots).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

HYPERBATCH_SUFFIX = " Hyperbatch"


class HyperbatchFallbackWarning(UserWarning):
    """Too few steps to fork: the Hyperbatch sampler samples the whole batch at every step."""


def is_hyperbatch_sampler(name: str) -> bool:
    return name.endswith(HYPERBATCH_SUFFIX)


def _level_starts(batch_size: int, steps: int) -> list[int] | None:
    """The step at which each fork's rows join; None when steps ≤ floor(log2 B) leave no room to fork."""
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch size and steps must be at least 1, got {batch_size} and {steps}")
    forks = (batch_size - 1).bit_length()  # ceil(log2 B)
    if forks and steps <= batch_size.bit_length() - 1:
        return None
    length = max(1, steps // (forks + 1))
    return [max(0, level * length - 1) for level in range(1, forks + 1)]


def forks_fit(batch_size: int, steps: int) -> bool:
    """Whether `steps` leave room to fork a batch of `batch_size` (else the sampler samples it plainly)."""
    return _level_starts(batch_size, steps) is not None


def step_sizes(batch_size: int, steps: int) -> list[int]:
    starts = _level_starts(batch_size, steps)
    if starts is None:
        return [batch_size] * steps
    return [min(batch_size, 2 ** sum(start <= step for start in starts)) for step in range(steps)]


def schedule(batch_size: int, steps: int) -> list[tuple[int, int]]:
    """[(step index i, rows that step i advances)] for i = 0..steps−1: the batch size after any fork before i.

    Example: schedule(8, 20) = [(0, 1), …, (3, 1), (4, 2), …, (8, 2), (9, 4), …, (13, 4), (14, 8), …, (19, 8)].
    When steps ≤ floor(log2 batch_size) every entry is (i, batch_size) and a HyperbatchFallbackWarning is issued
    (Python shows it once per calling line).
    """
    if not forks_fit(batch_size, steps):
        warnings.warn(f"{steps} steps leave no room to fork a batch of {batch_size} (steps must exceed "
                      f"floor(log2 {batch_size})): sampling the whole batch at every step",
                      HyperbatchFallbackWarning, stacklevel=2)
    return list(enumerate(step_sizes(batch_size, steps)))


def check_sizes(sizes: Sequence[int], batch_size: int, steps: int) -> None:
    if len(sizes) != steps or sizes[-1] != batch_size or sizes[0] < 1:
        raise ValueError(f"batch sizes must give one size per step ({steps}), start at 1 or more and end at "
                         f"the batch size {batch_size}; got {list(sizes)}")
    for previous, size in zip(sizes, sizes[1:]):
        if not previous <= size <= 2 * previous:
            raise ValueError(f"a fork can at most double the rows and never drop any; got {previous} -> {size}")


def traces_of(sizes: Sequence[int]) -> list[list[int]]:
    """For each final row, its ancestor's row at every level (one level per distinct size), root level first."""
    levels = sorted(set(sizes))
    result = []
    for row in range(levels[-1]):
        trace = [row]
        for smaller in reversed(levels[:-1]):
            trace.append(trace[-1] - smaller if trace[-1] >= smaller else trace[-1])
        result.append(trace[::-1])
    return result


def traces(batch_size: int, steps: int) -> list[list[int]]:
    """For each final image, its ancestor index at every level, root first (level K = 1 is the root).

    traces(8, 20)[5] == [0, 1, 1, 5]: image 5 was forked from row 1 at the 4→8 fork, which descends from row 1
    of the 2-row level, a child of the root 0. In the fallback every image is its own root: [[0], [1], …].
    (The original listed traces leaf first.)
    """
    return traces_of(step_sizes(batch_size, steps))


def call_traces(images: int, tree_size: int, steps: int) -> list[list[int]]:
    """Traces of `images` images sampled in calls of `tree_size` rows, each call forked as its own trees.

    A1111 samples `batch_size` rows per call, for each of `n_iter` batches. Each call's tree ids are offset so
    that no two calls share an ancestor.
    """
    if images % tree_size:
        raise ValueError(f"{images} images do not split into sampling calls of {tree_size}")
    one_call = traces(tree_size, steps)
    return [[row + call * tree_size for row in one_call[image]]
            for call in range(images // tree_size) for image in range(tree_size)]

