"""Prompt <-> genome: the evolvable words of a prompt, their A1111 weights, and the pinned prompt text.

A1111 (v1.10.1) reads a positive prompt in this order, and this module mirrors each step:

1. extra networks `<name:args>` are cut out;
2. the text is split into sub-prompts at `AND`; each may end in a `:weight` of its own;
3. prompt editing `[a:b:n]` and alternation `[a|b]` are resolved per step (only when the whole
   sub-prompt fits that grammar; otherwise the text is taken literally);
4. emphasis `(x)` `[x]` `(x:1.3)` gives each text fragment a weight, `BREAK` starts a new chunk;
5. CLIP tokenizes every fragment on its own.

The negative prompt goes through steps 3-5 only (A1111 keeps `AND` and `<...>` there as text).
`frozen_syntax` recognizes the syntax of steps 1-3, `emphasis` reimplements step 4, and `words` splits text
into the units of step 5.

A *word* (see `words`) is a run of text CLIP never splits across, so `(word:w)` re-tokenizes to the same
tokens. Everything else passes through verbatim and is never evolved:
the syntax above (a part inside emphasis is wrapped as `(part:m)` to keep it), words with a negative
weight (|base + gene| would flip them) and words glued to a frozen part without whitespace (they may share
CLIP units with its text). `Genome.frozen` lists them once, for a notice.

Words the user leaves alone are not genes either, and not listed: words made only of punctuation and symbols
(unless `punctuation=True`) and the words of `keep` (runs of words, matched case-insensitively wherever they
occur in either prompt). A prompt side whose text holds both a `<` and an HTML entity (`&amp;`) is kept as
written, with a note: CLIP's text cleaning (ftfy) decodes entities only in a fragment without a `<`, so how one
word reads there depends on which others share its fragment.

The pinned prompt writes a gene's word as `(word:w)`, w rounded to 4 decimals, and a word that is not a gene
with its exact weight, `(word:w)`. A word of weight 1 that is not a gene, or whose gene leaves it at 1 at the
written precision, is written bare, as the prompt wrote it. Bare text joins its neighbours, so bare words are
used only once the genome's own reading of the prompt equals that of the fully parenthesized one (checked once
per pattern of bare words, then cached); otherwise every word is parenthesized.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Iterable, Sequence, Union

from .emphasis import Frozen, PromptError, Run, Segment, emphasis_runs, merge_equal_weights
from .frozen_syntax import AND, EXTRA_NETWORK, SUBPROMPT, construct_spans, glue_breaks
from .words import pieces, split_words

POSITIVE = "positive"
NEGATIVE = "negative"
GRANULARITIES = ("word", "tag")
_PUNCTUATION = ("P", "Sm", "Sk", "Sc")  # Unicode categories of punctuation and of maths, modifier, currency signs
_HTML_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")  # what ftfy.fix_text may decode (ftfy.chardata)
MAX_WEIGHT = 1000.0  # beyond it conditioning overflows (1.1**1000 from nested brackets renders NaN)


@dataclass(frozen=True)
class Gene:
    """One evolved value: a word, or with granularity "tag" every word of a comma-separated chunk."""

    text: str
    side: str
    base_weights: tuple[float, ...]  # the A1111 weight of each word the gene covers
    words: tuple[str, ...]


# --------------------------------------------------------------------------------------------------
# Layout: what a prompt is made of, in order; words carry their gene.

_SPACE_OR_TEXT = re.compile(r"\s|\S(?:.*\S)?", re.S)


@dataclass(frozen=True)
class _Word:
    """A word as written in the pinned prompt: `(text:weight)`, the weight moved by its gene if it has one."""

    text: str
    weight: float  # A1111 weight in the source prompt
    evolvable: bool
    gene: int | None = None
    chosen: bool = False  # left alone by the user's choice (kept, or punctuation): not listed as frozen


_Item = Union[str, _Word, Frozen]  # a str is spacing, written as is
_Placed = tuple[int, int, _Item]  # (source offset, 0 for parts cut out before parsing else 1, item)


def _positive_layout(text: str, embeddings: tuple[str, ...]) -> list[_Item]:
    """Steps 1-4 of the module docstring; extra networks go back where they were."""
    body = EXTRA_NETWORK.sub("", text)
    placed: list[_Placed] = []
    start = 0
    for separator in [*AND.finditer(body), None]:
        end = separator.start() if separator else len(body)
        placed += _subprompt_items(body, start, end, embeddings)
        if separator:
            placed.append((separator.start(), 1, Frozen("AND")))
            start = separator.end()
    return _in_order(_keywords_apart(_sorted(placed)) + _networks(text))


def _networks(text: str) -> list[_Placed]:
    """Each extra network at its offset in the text A1111 reads once they are cut out."""
    placed: list[_Placed] = []
    removed = 0
    for match in EXTRA_NETWORK.finditer(text):
        placed.append((match.start() - removed, 0, Frozen(match.group())))
        removed += len(match.group())
    return placed


def _subprompt_items(body: str, start: int, end: int, embeddings: tuple[str, ...]) -> list[_Placed]:
    text = body[start : start + len(SUBPROMPT.fullmatch(body, start, end).group(1))]
    text_end = start + len(text)
    placed = _emphasis_items(text, start, glue_breaks(text, construct_spans(text)), embeddings)
    for match in _SPACE_OR_TEXT.finditer(body, text_end, end):  # the sub-prompt's weight and spacing
        item = match.group()
        placed.append((match.start(), 1, item if item.isspace() else Frozen(item)))
    return placed


def _negative_layout(text: str, embeddings: tuple[str, ...]) -> list[_Item]:
    """Steps 3-4; extra networks are text there, kept whole like prompt editing."""
    constructs = glue_breaks(text, construct_spans(text))
    networks = [m.span() for m in EXTRA_NETWORK.finditer(text) if not _overlaps(m.span(), constructs)]
    placed = _emphasis_items(text, 0, sorted(constructs + networks), embeddings)
    return _in_order(_keywords_apart(_sorted(placed)))


def _overlaps(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(start < span[1] and span[0] < end for start, end in spans)


def _sorted(placed: list[_Placed]) -> list[_Placed]:
    return sorted(placed, key=lambda entry: entry[:2])


def _in_order(placed: list[_Placed]) -> list[_Item]:
    return [item for _, _, item in _sorted(placed)]


def _keywords_apart(placed: list[_Placed]) -> list[_Placed]:
    """A space between two keywords (AND, BREAK) that only dropped syntax kept apart, so they stay two."""
    result: list[_Placed] = []
    for entry in placed:
        if result and _is_keyword(result[-1][2]) and _is_keyword(entry[2]):
            result.append((*entry[:2], " "))
        result.append(entry)
    return result


def _is_keyword(item: _Item) -> bool:
    return isinstance(item, Frozen) and item.text in ("AND", "BREAK")


def _emphasis_items(
    text: str, offset: int, frozen_spans: list[tuple[int, int]], embeddings: tuple[str, ...]
) -> list[_Placed]:
    """The items of one emphasis scope; `frozen_spans` are opaque parts that take the emphasis of their place."""
    segments: list[Segment] = []
    start = 0
    for span_start, span_end in frozen_spans:
        segments.append((offset + start, text[start:span_start]))
        segments.append((offset + span_start, Frozen(text[span_start:span_end])))
        start = span_end
    segments.append((offset + start, text[start:]))
    placed: list[_Placed] = []
    fragment_ids: list[int] = []
    fragment_id, previous = 0, None
    for fragment in merge_equal_weights(emphasis_runs(segments)):
        fragment_id += fragment.weight != previous  # A1111 also joins a frozen part's text to equal neighbours
        previous = fragment.weight
        items = _fragment_items(fragment, embeddings)
        placed += items
        fragment_ids += [fragment_id] * len(items)
    return _settle_neighbours(placed, fragment_ids)


def _fragment_items(fragment: Run, embeddings: tuple[str, ...]) -> list[_Placed]:
    if fragment.atom:
        return [(fragment.origins[0], 1, Frozen(fragment.atom.text, _finite(fragment.weight, fragment.atom.text)))]
    if fragment.text == "BREAK" and fragment.weight == -1:  # exactly what A1111 takes as a chunk break
        return [(fragment.origins[0], 1, Frozen("BREAK")), *((at, 1, char) for at, char in fragment.swallowed)]
    _finite(fragment.weight, fragment.text)
    items: list[_Placed] = []
    for start, end, is_word in pieces(fragment.text, embeddings):
        piece = fragment.text[start:end]
        item = _Word(piece, fragment.weight, evolvable=fragment.weight >= 0) if is_word else piece
        items.append((fragment.origins[start], 1, item))
    return _shield_breaks(items)


def _shield_breaks(items: list[_Placed]) -> list[_Placed]:
    """A text BREAK of weight -1 written alone would read as a chunk break: it takes the spacing beside it
    (no tokens) into its parentheses, so its fragment stays text as in the source."""
    result: list[_Placed] = []
    for at, order, item in items:
        last = result[-1][2] if result else None
        if _lone_break(item) and isinstance(last, str):
            result[-1] = (result[-1][0], order, replace(item, text=last + item.text))
        elif isinstance(item, str) and _lone_break(last):
            result[-1] = (*result[-1][:2], replace(last, text=last.text + item))
        else:
            result.append((at, order, item))
    return result


def _lone_break(item: object) -> bool:
    return isinstance(item, _Word) and item.text == "BREAK" and item.weight == -1


def _finite(weight: float, text: str) -> float:
    """A weight the run can write and render: finite and at most MAX_WEIGHT either way."""
    if not math.isfinite(weight):
        raise PromptError(f"the emphasis weight of {_shown(text)} is not a finite number ({weight})")
    if abs(weight) > MAX_WEIGHT:
        raise PromptError(f"the emphasis weight of {_shown(text)} is {weight:.4g}: at most {MAX_WEIGHT} either way "
                          "can be pinned (nested brackets multiply: ten levels of ( ) give 2.59)")
    return weight


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _settle_neighbours(placed: list[_Placed], fragment_ids: list[int]) -> list[_Placed]:
    """Words glued to a frozen part (same fragment, no whitespace between) may share CLIP units with its
    text, so they keep their weights. Touching neighbours from different fragments are tokenized apart: a
    space (which changes no token) keeps them apart where their text could fuse or join a glued run."""
    glued = _glued(placed, fragment_ids)
    result: list[_Placed] = []
    for k, (at, order, item) in enumerate(placed):
        if k in glued and isinstance(item, _Word):
            item = replace(item, evolvable=False)
        if k and fragment_ids[k - 1] != fragment_ids[k] and _needs_space(placed[k - 1][2], item, {k - 1, k} & glued):
            result.append((at, order, " "))
        result.append((at, order, item))
    return result


def _needs_space(left: _Item, right: _Item, glued: set[int]) -> bool:
    """Whether two touching text parts of different fragments could fuse once a word's weight changes."""
    words = sum(isinstance(item, _Word) for item in (left, right))
    parts = sum(_takes_emphasis(item) for item in (left, right))
    if words == 0 or words + parts < 2:
        return False
    return bool(glued) or _fuses(left, right)


def _glued(placed: list[_Placed], fragment_ids: list[int]) -> set[int]:
    """Indices of the touching runs (one fragment, no spacing) that hold a frozen part with emphasis."""
    glued: set[int] = set()
    run: list[int] = []
    for k, (_, _, item) in enumerate([*placed, (0, 0, "")]):
        if run and (isinstance(item, str) or fragment_ids[k] != fragment_ids[run[0]]):
            if any(_takes_emphasis(placed[j][2]) for j in run):
                glued.update(run)
            run = []
        if not isinstance(item, str):
            run.append(k)
    return glued


def _takes_emphasis(item: _Item) -> bool:
    return isinstance(item, Frozen) and item.multiplier is not None


def _fuses(left: _Item, right: _Item) -> bool:
    if not (isinstance(left, _Word) and isinstance(right, _Word)):
        return False
    return split_words(left.text + right.text) != split_words(left.text) + split_words(right.text)


def _assign_genes(items: list[_Item], side: str, granularity: str, genes: list[Gene]) -> list[_Item]:
    """Give every evolvable word its gene (appended to `genes`); a tag ends at a comma, AND or BREAK."""
    assigned: list[_Item] = []
    tag: list[_Word] = []
    text = ""  # the tag's words, a space where the prompt had whitespace between them
    spaced = False

    def close_tag() -> None:
        nonlocal text
        if tag:
            genes.append(Gene(text, side, tuple(w.weight for w in tag), tuple(w.text for w in tag)))
            tag.clear()
            text = ""

    for item in items:
        if isinstance(item, _Word) and item.evolvable:
            item = replace(item, gene=len(genes))
            text += (" " if tag and spaced else "") + item.text
            tag.append(item)
            spaced = False
            if granularity == "word" or "," in item.text:
                close_tag()
        elif (isinstance(item, Frozen) and item.text in ("AND", "BREAK")) or (
                isinstance(item, _Word) and "," in item.text):
            close_tag()
        spaced = spaced or (isinstance(item, str) and item.isspace())
        assigned.append(item)
    close_tag()
    return assigned


# --------------------------------------------------------------------------------------------------
# The genome and the pinned prompt.

_KEYWORD_START = re.compile(r"\b(?:A(?=ND\b)|B(?=REAK\b))")  # first letter of an AND or a BREAK


class Genome:
    """The evolvable words of a prompt pair; `prompt(values)` writes the pinned prompt for one individual."""

    def __init__(
        self,
        genes: tuple[Gene, ...],
        positive: tuple[_Item, ...],
        negative: tuple[_Item, ...],
        embeddings: tuple[str, ...] = (),
        keep: tuple[str, ...] = (),
        punctuation: bool = False,
        notes: tuple[str, ...] = (),
    ):
        self.genes = genes
        self.notes = notes  # why whole prompt sides are kept as written
        self.embeddings = embeddings
        self.keep, self.punctuation = keep, punctuation  # what the words left alone were chosen by
        self._layouts = (positive, negative)
        self.frozen = tuple(dict.fromkeys(_frozen_text(item) for item in positive + negative if _frozen_text(item)))
        self._bare_writing_reads_right: dict[tuple[bool, ...], bool] = {}

    @property
    def words(self) -> list[str]:
        return [gene.text for gene in self.genes if gene.side == POSITIVE]

    @property
    def negative_words(self) -> list[str]:
        return [gene.text for gene in self.genes if gene.side == NEGATIVE]

    def __len__(self) -> int:
        return len(self.genes)

    def base_weights(self) -> list[float]:
        """One weight per gene: its word's A1111 weight; for a tag, the mean over its words."""
        return [sum(gene.base_weights) / len(gene.base_weights) for gene in self.genes]

    def prompt(self, weights: Sequence[float]) -> tuple[str, str]:
        """(positive, negative) text; each word written `(word:|base + value|)` with the value of its gene."""
        values = [float(value) for value in weights]
        if len(values) != len(self.genes):
            raise ValueError(f"expected {len(self.genes)} gene values, got {len(values)}")
        if not all(math.isfinite(value) for value in values):
            raise ValueError("gene values must be finite numbers")
        bare = tuple(_as_written(item, values) and item.weight == 1.0 for layout in self._layouts
                     for item in layout if isinstance(item, _Word))
        if not any(bare):
            return self._write(values, ())
        if bare not in self._bare_writing_reads_right:
            self._bare_writing_reads_right[bare] = _reading(*self._write(values, bare)) == _reading(
                *self._write(values, ()))
        return self._write(values, bare if self._bare_writing_reads_right[bare] else ())

    def _write(self, values: list[float], bare: tuple[bool, ...]) -> tuple[str, str]:
        """(positive, negative) text; word k is written bare when bare[k] (an empty tuple: none is)."""
        flags = iter(bare)
        written = []
        for layout in self._layouts:
            parts = [(item, _render(item, values, bool(next(flags, False)) if isinstance(item, _Word) else False))
                     for item in layout]
            written.append(_join(parts))
        return written[0], written[1]


def _frozen_text(item: _Item) -> str:
    if isinstance(item, Frozen) or (isinstance(item, _Word) and not item.evolvable and not item.chosen):
        return item.text.strip()
    return ""


def _as_written(word: _Word, values: list[float]) -> bool:
    """Not a gene, or a gene whose weight is the word's own weight at the written precision."""
    return word.gene is None or _rounded(abs(word.weight + values[word.gene])) == _rounded(word.weight)


def _render(item: _Item, values: list[float], bare: bool = False) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Frozen):
        return item.text if item.multiplier in (None, 1.0) else f"({item.text}:{_exact(item.multiplier)})"
    if bare:
        return _escape(item.text)
    if item.gene is None:  # not evolved: its exact source weight
        return f"({_escape(item.text)}:{_exact(item.weight)})"
    return f"({_escape(item.text)}:{_rounded(abs(item.weight + values[item.gene]))})"


def _join(parts: list[tuple[_Item, str]]) -> str:
    """The written parts in order, kept apart where joining them would read differently.

    A lone backslash (which A1111 drops) keeps a `<` off a word character after it, where joined bare words would
    otherwise spell an extra network `<name:...>`. A BREAK keyword gets spaces (which A1111's BREAK swallows)
    where it touches other text: in the source a lone backslash or a prompt-editing bracket may have ended the
    text before it, and glued to a word character it would read as text.
    """
    text = ""
    keyword_before = False
    for item, part in parts:
        keyword = _is_keyword(item) and item.text == "BREAK"
        if text.endswith("<") and (part[:1].isalnum() or part[:1] == "_"):
            text += "\\"
        if text and part and ((keyword and not text[-1].isspace()) or (keyword_before and not part[0].isspace())):
            text += " "
        text += part
        keyword_before = keyword
    return text


def _reading(positive: str, negative: str) -> list[tuple]:
    """How the genome reads a written prompt pair: every word with its weight and every frozen part, in order."""
    layouts = (_positive_layout(positive, ()), _negative_layout(negative, ()))
    return [(side, type(item).__name__, item.text.strip(), getattr(item, "weight", getattr(item, "multiplier", None)))
            for side, layout in enumerate(layouts) for item in layout if not isinstance(item, str)]


def _escape(word: str) -> str:
    """Write `word` so that A1111 reads it back as exactly this text and nothing else.

    Brackets and backslashes get A1111's escapes. A lone backslash, which A1111 drops, breaks up what would
    otherwise be syntax: a `|` (alternation), `<_` (an extra network `<_:...>`), the keywords AND and BREAK.
    """
    escaped = re.sub(r"[\\()\[\]]", r"\\\g<0>", word)
    escaped = _KEYWORD_START.sub(r"\g<0>\\", escaped)
    return escaped.replace("|", "\\|").replace("<_", "<\\_")


def _rounded(weight: float) -> str:
    """4 decimals without trailing zeros: 1.0 -> "1", 0.90909 -> "0.9091"."""
    return f"{weight:.4f}".rstrip("0").rstrip(".")


def _exact(weight: float) -> str:
    """The shortest text that reads back as exactly `weight`, without an exponent (A1111 reads no "e")."""
    return format(Decimal(repr(weight)), "f")


def build_genome(
    prompt: str, negative_prompt: str = "", granularity: str = "word", embeddings: Iterable[str] = (), *,
    keep: Iterable[str] = (), punctuation: bool = False,
) -> Genome:
    """The genome of a prompt pair: one gene per word ("word") or per comma-separated chunk ("tag").

    `embeddings`: names of the textual-inversion embeddings A1111 knows; each stays one word. `keep`: words or
    runs of words that are not genes; `punctuation`: also evolve words of punctuation and symbols only.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    for side, text in ((POSITIVE, prompt), (NEGATIVE, negative_prompt)):
        _check_text(side, text)
    names = tuple(embeddings)
    kept = [[word.casefold() for word in split_words(entry, names)] for entry in keep]
    genes: list[Gene] = []
    layouts, notes = [], []
    for side, text, layout in ((POSITIVE, EXTRA_NETWORK.sub("", prompt), _positive_layout(prompt, names)),
                               (NEGATIVE, negative_prompt, _negative_layout(negative_prompt, names))):
        layout = _leave_alone(layout, [run for run in kept if run], punctuation)
        if _html_sensitive(text):
            layout = [prompt if side == POSITIVE else negative_prompt]  # written verbatim: a str item
            notes.append(f"the {side} prompt is kept as written: it holds both a '<' and an HTML entity "
                         f"({_HTML_ENTITY.search(text).group()}), and CLIP's text cleaning decodes entities only in "
                         "text without a '<', so changing any word's weight could change how others read")
        layouts.append(_assign_genes(layout, side, granularity, genes))
    genome = Genome(tuple(genes), tuple(layouts[0]), tuple(layouts[1]), names, tuple(keep), punctuation, tuple(notes))
    if not genes:
        chosen = [item.text for layout in layouts for item in layout if isinstance(item, _Word) and item.chosen]
        found = f"only {', '.join(genome.frozen)}" if genome.frozen else "it is empty"
        if chosen:
            found = f"its words are all kept fixed or punctuation ({', '.join(dict.fromkeys(chosen))})"
        if notes:
            found = "; ".join(notes)
        raise PromptError(f"the prompt has no words to pin: {found}")
    return genome


def _check_text(side: str, text: str) -> None:
    """Text that can be written to run.json and read by the tokenizer: no lone surrogate, which is what Python
    makes of a byte that is not UTF-8 on the command line."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PromptError(f"the {side} prompt is not valid text: character {error.start + 1} is a byte that is "
                          "not UTF-8 (save or type the prompt as UTF-8)") from None


def _html_sensitive(text: str) -> bool:
    """Whether ftfy's reading of entities in `text` depends on where a `<` is: both occur."""
    return "<" in text and any(html.unescape(match.group()) != match.group() for match in _HTML_ENTITY.finditer(text))


def _is_punctuation(text: str) -> bool:
    return all(unicodedata.category(char).startswith(_PUNCTUATION) for char in text)


def _leave_alone(layout: list[_Item], kept: list[list[str]], punctuation: bool) -> list[_Item]:
    """The layout with the words the user leaves alone made non-genes: kept runs of words, and punctuation."""
    positions = [k for k, item in enumerate(layout) if isinstance(item, _Word)]
    words = [layout[k].text.casefold() for k in positions]
    chosen = {k for k in positions if not punctuation and _is_punctuation(layout[k].text)}
    for run in kept:
        for start in range(len(words) - len(run) + 1):
            if words[start:start + len(run)] == run and _adjacent(layout, positions[start:start + len(run)]):
                chosen.update(positions[start:start + len(run)])
    return [replace(item, evolvable=False, chosen=True) if k in chosen and item.evolvable else item
            for k, item in enumerate(layout)]


def _adjacent(layout: list[_Item], positions: list[int]) -> bool:
    """Whether the words at `positions` follow each other with only spacing between them."""
    return all(isinstance(item, str) for a, b in zip(positions, positions[1:]) for item in layout[a + 1:b])


def weights_from_prompt(genome: Genome, positive_text: str, negative_text: str = "") -> list[tuple[float, ...]]:
    """The weights a pinned prompt written from `genome` gives each gene's words (one tuple per gene)."""
    written = build_genome(positive_text, negative_text, embeddings=genome.embeddings, keep=genome.keep,
                           punctuation=genome.punctuation)
    expected = [(gene.side, word) for gene in genome.genes for word in gene.words]
    if [(gene.side, gene.text) for gene in written.genes] != expected:
        raise ValueError("the text does not have the words of this genome")
    weights = iter(gene.base_weights[0] for gene in written.genes)
    return [tuple(next(weights) for _ in gene.words) for gene in genome.genes]
