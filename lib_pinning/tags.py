"""Prompt <-> tags: the genome of tags present or absent with their weights (prompt evolution, "Evolve: tags").

A prompt's tags are its comma-separated parts (commas inside brackets do not count, nor escaped ones), each written
as the user wrote it; a pool of extra tags may be added. One gene per tag, read as the record reads every gene:
the tag's weight is |base + gene|, where the base is 1 for the prompt's own tags and 0 for the pool's, and a
weight of 0 means the tag is left out. So the gene vector 0 is the user's prompt, a prompt tag's gene -1 drops it
and a pool tag's gene w adds it at weight w.

A present tag of weight 1 is written as the user wrote it, any other weight as `(tag:w)` (w to 4 decimals, A1111's
emphasis multiplies any inside it). Parts that a weight or a removal would break are kept, always present and never
genes: extra networks (`<lora:…>`, cut out before emphasis), AND (which splits sub-prompts) and BREAK. The negative
prompt is kept as written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import InputError
from .frozen_syntax import AND, EXTRA_NETWORK

_OPENING, _CLOSING = "([{<", ")]}>"
_BREAK = re.compile(r"\bBREAK\b")


@dataclass(frozen=True)
class _Part:
    text: str
    gene: int | None  # None: kept as written, always present


class TagGenome:
    """The tags of a prompt and a pool, one gene each; `prompt(genes)` writes the tags present (see the module)."""

    def __init__(self, prompt: str, negative_prompt: str = "", pool: Iterable[str] = ()):
        parts, kept = [], []
        for text in split_tags(prompt):
            fixed = _fixed(text)
            parts.append(_Part(text, None if fixed else len(parts) - len(kept)))
            if fixed:
                kept.append(text)
        own = [part.text for part in parts if part.gene is not None]
        extra, repeated = [], []
        for tag in pool:
            tag = tag.strip()
            if not tag:
                continue
            if not _one_tag(tag):
                raise InputError(f"Tag pool: {tag!r} is not one tag (one tag has no comma outside brackets, its "
                                 "brackets pair up, and it holds no <extra network>, AND or BREAK)")
            (repeated if tag in own or tag in extra else extra).append(tag)
        self._parts = parts
        self.negative_prompt = negative_prompt
        self.words = own + extra               # one per gene: the prompt's tags, then the pool's
        self.negative_words: list[str] = []
        self._bases = [1.0] * len(own) + [0.0] * len(extra)
        self.frozen = tuple(dict.fromkeys(kept))
        self.notes = tuple([f"tag pool: already in the prompt, so not added twice: {', '.join(repeated)}"]
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
        """(positive, negative): the kept parts and the present tags, in the prompt's order, then the pool's."""
        weights = self.weights(genes)
        written = []
        own = 0
        for part in self._parts:
            if part.gene is None:
                written.append(part.text)
                continue
            own += 1
            written.append(_written(part.text, weights[part.gene]))
        written += [_written(tag, weight) for tag, weight in zip(self.words[own:], weights[own:])]
        return ", ".join(text for text in written if text), self.negative_prompt


def _fixed(text: str) -> bool:
    return bool(EXTRA_NETWORK.search(text) or AND.search(text) or _BREAK.search(text))


def _one_tag(text: str) -> bool:
    try:
        return len(split_tags(text)) == 1 and not _fixed(text)
    except InputError:
        return False


def _written(tag: str, weight: float) -> str:
    if weight == 0:
        return ""
    if weight == 1:
        return tag
    return f"({tag}:{f'{weight:.4f}'.rstrip('0').rstrip('.')})"


def split_tags(prompt: str) -> list[str]:
    """The comma-separated parts of a prompt, stripped, empty ones left out; commas inside brackets and escaped
    commas do not split. Raises an InputError when its brackets do not pair up (its tags cannot be told apart)."""
    parts, depth, start, at = [], 0, 0, 0
    while at < len(prompt):
        char = prompt[at]
        if char == "\\":
            at += 2
            continue
        if char in _OPENING:
            depth += 1
        elif char in _CLOSING:
            depth -= 1
            if depth < 0:
                raise InputError(f"Evolve tags: the prompt closes a bracket it never opened ({char!r} at character "
                                 f"{at + 1}), so its tags cannot be told apart")
        elif char == "," and depth == 0:
            parts.append(prompt[start:at])
            start = at + 1
        at += 1
    if depth:
        raise InputError("Evolve tags: the prompt leaves a bracket open, so its tags cannot be told apart")
    parts.append(prompt[start:])
    return [part.strip() for part in parts if part.strip()]
