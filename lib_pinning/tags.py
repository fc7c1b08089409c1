"""Prompt <-> tags: the genome of tags present or absent with their weights (prompt evolution, "Evolve: tags").

A prompt's tags are its comma-separated parts, each written as the user wrote it; a pool of extra tags may be added.
Commas inside round or square brackets (emphasis, prompt editing), inside an extra network `<name:…>` and escaped
ones (`\\,`) do not split; a closing bracket without its opening one is text, as A1111 reads it, and an opening one
left open holds the rest of its sub-prompt in one tag. With `AND` the prompt's sub-prompts are split apart first:
each keeps its own weight (`… :0.3`), and the pool's tags join the first sub-prompt.

One gene per tag, read as the record reads every gene: the tag's weight is |base + gene|, where the base is 1 for
the prompt's own tags and 0 for the pool's, and a weight of 0 means the tag is left out. So the gene vector 0 is
the user's prompt (written exactly as given), a prompt tag's gene -1 drops it and a pool tag's gene w adds it at
weight w. A present tag of weight 1 is written as the user wrote it, any other weight as `(tag:w)` (w to 4
decimals; A1111's emphasis multiplies any inside it). Tags holding an extra network (`<lora:…>`, cut out before
emphasis) or BREAK are kept: always present, never genes. The negative prompt is kept as written. A pool tag the
prompt already has (ignoring case and spacing) is not added twice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import InputError
from .frozen_syntax import AND, EXTRA_NETWORK, SUBPROMPT

_BREAK = re.compile(r"\bBREAK\b")


@dataclass(frozen=True)
class _Part:
    text: str
    gene: int | None  # None: kept as written, always present


@dataclass(frozen=True)
class _Subprompt:
    parts: tuple[_Part, ...]
    weight: str  # what follows its text: spacing and A1111's ":weight" of an AND sub-prompt, as written


class TagGenome:
    """The tags of a prompt and a pool, one gene each; `prompt(genes)` writes the tags present (see the module)."""

    def __init__(self, prompt: str, negative_prompt: str = "", pool: Iterable[str] = ()):
        self.original = prompt
        self.negative_prompt = negative_prompt
        subprompts, own, kept = [], [], []
        for text in AND.split(prompt):
            body = SUBPROMPT.fullmatch(text).group(1)
            parts = []
            for tag in split_tags(body):
                fixed = bool(EXTRA_NETWORK.search(tag) or _BREAK.search(tag))
                parts.append(_Part(tag, None if fixed else len(own)))
                (kept if fixed else own).append(tag)
            subprompts.append(_Subprompt(tuple(parts), text[len(body):].strip()))
        self._subprompts = subprompts
        seen, extra, repeated = {_normal(tag) for tag in own}, [], []
        for tag in pool:
            tag = tag.strip()
            if not tag:
                continue
            if not _one_tag(tag):
                raise InputError(f"Tag pool: {tag!r} is not one tag (a tag has no comma outside brackets and holds no "
                                 "<extra network>, AND or BREAK)")
            (repeated if _normal(tag) in seen else extra).append(tag)
            seen.add(_normal(tag))
        self.words = own + extra               # one per gene: the prompt's tags, then the pool's
        self.negative_words: list[str] = []
        self._bases = [1.0] * len(own) + [0.0] * len(extra)
        self.frozen = tuple(dict.fromkeys(kept))
        self.notes = tuple([f"tag pool: already in the prompt or the pool, so not added twice: {', '.join(repeated)}"]
                           if repeated else [])
        if not self.words:
            raise InputError("Evolve tags: the prompt has no tag to switch on or off (tags are its comma-separated "
                             "parts) and the tag pool is empty")

    def __len__(self) -> int:
        return len(self.words)

    def base_weights(self) -> list[float]:
        """1 for each of the prompt's tags, 0 for each pool tag (absent until a gene adds it)."""
        return list(self._bases)

    def weights(self, genes: Sequence[float]) -> list[float]:
        """Each tag's weight, |base + gene| (0: left out), at the precision the prompt is written with."""
        values = [float(value) for value in genes]
        if len(values) != len(self._bases):
            raise ValueError(f"expected {len(self._bases)} gene values, got {len(values)}")
        if not all(math.isfinite(value) for value in values):
            raise ValueError("gene values must be finite numbers")
        return [round(abs(base + value), 4) for base, value in zip(self._bases, values)]

    def prompt(self, genes: Sequence[float]) -> tuple[str, str]:
        """(positive, negative): each sub-prompt's kept parts and present tags in the prompt's order (the pool's
        after the first sub-prompt's), with its weight; the user's own text where every tag is as written."""
        weights = self.weights(genes)
        if weights == self._bases:
            return self.original, self.negative_prompt
        own = sum(base == 1.0 for base in self._bases)
        pool = [_written(tag, weight) for tag, weight in zip(self.words[own:], weights[own:])]
        written = []
        for number, subprompt in enumerate(self._subprompts):
            texts = [part.text if part.gene is None else _written(part.text, weights[part.gene])
                     for part in subprompt.parts] + (pool if number == 0 else [])
            written.append(" ".join(filter(None, [", ".join(text for text in texts if text), subprompt.weight])))
        return " AND ".join(written), self.negative_prompt


def _normal(tag: str) -> str:
    """A tag as compared with others: case and spacing aside."""
    return " ".join(tag.split()).casefold()


def _one_tag(text: str) -> bool:
    return len(split_tags(text)) == 1 and not (EXTRA_NETWORK.search(text) or AND.search(text) or _BREAK.search(text))


def _written(tag: str, weight: float) -> str:
    if weight == 0:
        return ""
    if weight == 1:
        return tag
    return f"({tag}:{f'{weight:.4f}'.rstrip('0').rstrip('.')})"


def split_tags(text: str) -> list[str]:
    """The comma-separated parts of a prompt (or a typed tag pool), stripped, empty ones left out (see the module:
    which commas do not split)."""
    parts, depth, start, at = [], 0, 0, 0
    while at < len(text):
        char = text[at]
        network = EXTRA_NETWORK.match(text, at) if char == "<" else None
        if network:
            at = network.end()
            continue
        if char == "\\":
            at += 2
            continue
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)  # a closer without its opener is text
        elif char == "," and depth == 0:
            parts.append(text[start:at])
            start = at + 1
        at += 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]
