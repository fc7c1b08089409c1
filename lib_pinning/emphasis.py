"""A1111's emphasis: its parse_prompt_attention, reimplemented.

Emphasis `(x)` `[x]` `(x:1.3)` gives each text fragment a weight and `BREAK` starts a new chunk. Besides the
(fragment, weight) pairs A1111 gives, the runs here keep the source offset of every character, and a frozen
part (syntax that is never evolved) can stand in the text as one unit that takes the emphasis of its place.

`PromptError` lives here, in the lowest module that raises it (for a weight A1111 cannot read); `genome`
raises it too and is where callers import it from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence, Union

from .errors import InputError


class PromptError(InputError):
    """A prompt that cannot be pinned (no words, or a weight A1111 itself cannot read)."""


_ROUND = 1.1
_SQUARE = 1 / 1.1
# One lexeme of emphasis syntax, in A1111's order of preference.
_EMPHASIS_LEXEME = re.compile(
    r"""\\[()\[\]\\]             # escaped literal
      | \\                       # lone backslash: dropped
      | [(\[]
      | :\s*([+-]?[.\d]+)\s*\)   # closes a round bracket with an explicit weight
      | [)\]]
      | [^\\()\[\]:]+
      | :""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class Frozen:
    """A part that is never evolved. `multiplier` is the emphasis around it (None: outside emphasis)."""

    text: str
    multiplier: float | None = None


@dataclass
class Run:
    """One entry of A1111's emphasis result; `origins` holds the source offset of each character."""

    text: str
    weight: float
    origins: list[int]
    atom: Frozen | None = None  # a frozen part taking the emphasis of its place
    swallowed: tuple[tuple[int, str], ...] = ()  # whitespace around a BREAK: (offset, character)

    def merge(self, other: Run) -> None:
        self.text += other.text
        self.origins += other.origins


Segment = tuple[int, Union[str, Frozen]]  # (source offset, emphasis syntax or a frozen part)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """The (fragment, weight) pairs A1111's parse_prompt_attention gives; a BREAK is ("BREAK", -1)."""
    merged = merge_equal_weights(emphasis_runs([(0, text)])) or [Run("", 1.0, [])]
    return [(run.text, run.weight) for run in merged]


def emphasis_runs(segments: Sequence[Segment]) -> list[Run]:
    """The weighted runs of `segments`, before A1111 merges equal neighbours."""
    runs: list[Run] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            run.weight *= factor

    for offset, part in segments:
        if isinstance(part, Frozen):
            runs.append(Run("", 1.0, [offset], atom=part))
            continue
        for match in _EMPHASIS_LEXEME.finditer(part):
            lexeme, weight, at = match.group(), match.group(1), offset + match.start()
            if lexeme.startswith("\\"):
                runs.append(Run(lexeme[1:], 1.0, [at + 1] if len(lexeme) == 2 else []))
            elif lexeme in ("(", "["):
                (rounds if lexeme == "(" else squares).append(len(runs))
            elif weight is not None and rounds:
                scale(rounds.pop(), _read_weight(weight))
            elif lexeme == ")" and rounds:
                scale(rounds.pop(), _ROUND)
            elif lexeme == "]" and squares:
                scale(squares.pop(), _SQUARE)
            else:
                _append_text(lexeme, at, runs)
    for start in rounds:  # unclosed brackets weight everything after them, rounds first as in A1111
        scale(start, _ROUND)
    for start in squares:
        scale(start, _SQUARE)
    return runs


def _read_weight(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # A1111 fails the same way on e.g. "(x:1.2.3)"
        raise PromptError(f"A1111 cannot read the emphasis weight {text!r}") from None


def _append_text(text: str, at: int, runs: list[Run]) -> None:
    """Plain text, with each BREAK as a ("BREAK", -1) run that emphasis scales like any other."""
    start = 0
    for match in _BREAK.finditer(text):
        runs.append(Run(text[start : match.start()], 1.0, list(range(at + start, at + match.start()))))
        keyword = match.start() + match.group().index("BREAK")
        swallowed = tuple((at + i, text[i]) for i in range(match.start(), match.end()) if text[i].isspace())
        runs.append(Run("BREAK", -1, list(range(at + keyword, at + keyword + 5)), swallowed=swallowed))
        start = match.end()
    runs.append(Run(text[start:], 1.0, list(range(at + start, at + len(text)))))


def merge_equal_weights(runs: list[Run]) -> list[Run]:
    """Join neighbours of equal weight, as A1111 does before tokenizing (frozen parts stay apart)."""
    merged: list[Run] = []
    for run in runs:
        last = merged[-1] if merged else None
        if last and not last.atom and not run.atom and last.weight == run.weight:
            last.merge(run)
        else:
            merged.append(replace(run, origins=list(run.origins)))
    return merged
