"""Prompt <-> genome: the evolvable words of a prompt, their A1111 weights, and the pinned prompt text.

A1111 (v1.10.1) reads a positive prompt in this order, and this module mirrors each step:

1. extra networks `<name:args>` are cut out;
2. the text is split into sub-prompts at `AND`; each may end in a `:weight` of its own;
3. prompt editing `[a:b:n]` and alternation `[a|b]` are resolved per step (only when the whole
   sub-prompt fits that grammar; otherwise the text is taken literally);
4. emphasis `(x)` `[x]` `(x:1.3)` gives each text fragment a weight, `BREAK` starts a new chunk;
5. CLIP tokenizes every fragment on its own.

The negative prompt goes through steps 3-5 only (A1111 keeps `AND` and `<...>` there as text).

A *word* is a run of text CLIP never splits across (letters, one digit, a run of other characters), so
`(word:w)` re-tokenizes to the same tokens. Everything else passes through verbatim and is never evolved:
the syntax above (a part inside emphasis is wrapped as `(part:m)` to keep it), words with a negative
weight (|base + gene| would flip them) and words glued to a frozen part without whitespace (they may share
CLIP units with its text). `Genome.frozen` lists them once, for a notice.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Iterable, Sequence, Union

POSITIVE = "positive"
NEGATIVE = "negative"
GRANULARITIES = ("word", "tag")


class PromptError(ValueError):
    """A prompt that cannot be pinned (no words, or a weight A1111 itself cannot read)."""


@dataclass(frozen=True)
class Gene:
    """One evolved value: a word, or with granularity "tag" every word of a comma-separated chunk."""

    text: str
    side: str
    base_weights: tuple[float, ...]  # the A1111 weight of each word the gene covers
    words: tuple[str, ...]


# --------------------------------------------------------------------------------------------------
# Emphasis: A1111's parse_prompt_attention, reimplemented.

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
class _Frozen:
    """A part that is never evolved. `multiplier` is the emphasis around it (None: outside emphasis)."""

    text: str
    multiplier: float | None = None


@dataclass
class _Run:
    """One entry of A1111's emphasis result; `origins` holds the source offset of each character."""

    text: str
    weight: float
    origins: list[int]
    atom: _Frozen | None = None  # a frozen part taking the emphasis of its place
    swallowed: tuple[tuple[int, str], ...] = ()  # whitespace around a BREAK: (offset, character)

    def merge(self, other: _Run) -> None:
        self.text += other.text
        self.origins += other.origins


_Segment = tuple[int, Union[str, _Frozen]]  # (source offset, emphasis syntax or a frozen part)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """The (fragment, weight) pairs A1111's parse_prompt_attention gives; a BREAK is ("BREAK", -1)."""
    merged = _merge_equal_weights(_emphasis_runs([(0, text)])) or [_Run("", 1.0, [])]
    return [(run.text, run.weight) for run in merged]


def _emphasis_runs(segments: Sequence[_Segment]) -> list[_Run]:
    """The weighted runs of `segments`, before A1111 merges equal neighbours."""
    runs: list[_Run] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            run.weight *= factor

    for offset, part in segments:
        if isinstance(part, _Frozen):
            runs.append(_Run("", 1.0, [offset], atom=part))
            continue
        for match in _EMPHASIS_LEXEME.finditer(part):
            lexeme, weight, at = match.group(), match.group(1), offset + match.start()
            if lexeme.startswith("\\"):
                runs.append(_Run(lexeme[1:], 1.0, [at + 1] if len(lexeme) == 2 else []))
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


def _append_text(text: str, at: int, runs: list[_Run]) -> None:
    """Plain text, with each BREAK as a ("BREAK", -1) run that emphasis scales like any other."""
    start = 0
    for match in _BREAK.finditer(text):
        runs.append(_Run(text[start : match.start()], 1.0, list(range(at + start, at + match.start()))))
        keyword = match.start() + match.group().index("BREAK")
        swallowed = tuple((at + i, text[i]) for i in range(match.start(), match.end()) if text[i].isspace())
        runs.append(_Run("BREAK", -1, list(range(at + keyword, at + keyword + 5)), swallowed=swallowed))
        start = match.end()
    runs.append(_Run(text[start:], 1.0, list(range(at + start, at + len(text)))))


def _merge_equal_weights(runs: list[_Run]) -> list[_Run]:
    """Join neighbours of equal weight, as A1111 does before tokenizing (frozen parts stay apart)."""
    merged: list[_Run] = []
    for run in runs:
        last = merged[-1] if merged else None
        if last and not last.atom and not run.atom and last.weight == run.weight:
            last.merge(run)
        else:
            merged.append(replace(run, origins=list(run.origins)))
    return merged


# --------------------------------------------------------------------------------------------------
# Words: CLIP's pre-tokenization (lower-cased, after ftfy) without ever cutting inside one of its units.

_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
# An HTML character reference: CLIP's text cleaning may decode it, so it sticks to its neighbours.
_ENTITY = re.compile(r"&(?:amp;)*#?\w+;?")


def _ftfy_table() -> dict[int, str | None]:
    """The per-character part of ftfy.fix_text, which CLIP runs first: quotes, widths, ligatures, C1 and
    control characters (its mojibake repair is not per character and is left out)."""
    table: dict[int, str | None] = {code: "'" for code in (0x02BC, 0x2018, 0x2019, 0x201A, 0x201B)}
    table.update({code: '"' for code in range(0x201C, 0x2020)})
    table.update({code: unicodedata.normalize("NFKC", chr(code)) for code in range(0xFF01, 0xFFF0)})
    table[0x3000] = " "
    ligatures = (0x132, 0x133, 0x149, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4), *range(0xFB00, 0xFB07))
    table.update({code: unicodedata.normalize("NFKC", chr(code)).replace("\u02bc", "'") for code in ligatures})
    table.update({code: bytes([code]).decode("cp1252", "ignore") or chr(code) for code in range(0x80, 0xA0)})
    removed = [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070), 0xFEFF]
    table.update({code: None for code in [*removed, *range(0xFFF9, 0xFFFD)]})
    return table


_FTFY = _ftfy_table()


def split_words(text: str, embeddings: Iterable[str] = ()) -> list[str]:
    """CLIP's pre-tokenization units of plain text, in the original spelling; no unit is ever cut.

    Each occurrence of an `embeddings` name (textual inversion) stays one word: A1111 finds an embedding
    by its tokens inside one fragment.
    """
    return [text[start:end] for start, end, is_word in _pieces(text, tuple(embeddings)) if is_word]


def _pieces(text: str, embeddings: tuple[str, ...] = ()) -> list[tuple[int, int, bool]]:
    """Cover `text` with (start, end, is_word) pieces; non-words are whitespace or characters CLIP drops."""
    clusters = _clusters(text)
    cleaned = [_clean(text[start:end]) for start, end, _ in clusters]
    inside_unit = {at for start, end in _clip_units("".join(cleaned)) for at in range(start + 1, end)}
    pieces: list[tuple[int, int, bool]] = []
    at = 0
    after_text = after_entity = False  # what the last cluster CLIP sees was (deleted controls are unseen)
    for k, (start, end, is_entity) in enumerate(clusters):
        is_text = bool(cleaned[k].strip())
        if at in inside_unit or (is_text and after_text and (is_entity or after_entity)):
            while not pieces[-1][2]:  # unseen controls in between join the word
                pieces.pop()
            pieces[-1] = (pieces[-1][0], end, True)
        else:
            pieces.append((start, end, is_text))
        if cleaned[k]:
            after_text, after_entity = is_text, is_entity and is_text
        at += len(cleaned[k])
    return _join_names(text, pieces, embeddings)


def _join_names(text: str, pieces: list[tuple[int, int, bool]], names: tuple[str, ...]) -> list[tuple[int, int, bool]]:
    """Merge the pieces that spell one of `names` (case-insensitive, starting and ending on piece bounds)."""
    starts, ends = {start for start, _, _ in pieces}, {end for _, end, _ in pieces}
    spans = [m.span() for name in names if name.strip() for m in re.finditer(re.escape(name), text, re.I)]
    joined: list[tuple[int, int, bool]] = []
    for start, end, is_word in pieces:
        inside = any(s in starts and e in ends and s < start < e for s, e in spans)
        if inside:
            joined[-1] = (joined[-1][0], end, True)
        else:
            joined.append((start, end, is_word))
    return joined


def _clusters(text: str) -> list[tuple[int, int, bool]]:
    """(start, end, is_entity): single characters or HTML entities, each with its combining marks."""
    clusters = []
    entities = _entity_spans(text)
    start = 0
    while start < len(text):
        end = entities.get(start, start + 1)
        if not text[start].isspace():
            end = _after_marks(text, end, entities)
        clusters.append((start, end, start in entities))
        start = end
    return clusters


def _after_marks(text: str, end: int, entities: dict[int, int]) -> int:
    """`end` moved over the combining marks NFC may fuse into the character before, also across controls
    that ftfy deletes."""
    while True:
        mark = end
        while mark < len(text) and mark not in entities and _deleted(text[mark]):
            mark += 1
        if mark == len(text) or mark in entities or unicodedata.category(text[mark])[0] != "M":
            return end
        end = mark + 1


def _entity_spans(text: str) -> dict[int, int]:
    """Start -> end of each HTML character reference, found as CLIP sees the text: without deleted controls."""
    visible = [at for at, char in enumerate(text) if not _deleted(char)]
    seen = "".join(text[at] for at in visible)
    return {visible[m.start()]: visible[m.end() - 1] + 1 for m in _ENTITY.finditer(seen)}


def _deleted(char: str) -> bool:
    return _FTFY.get(ord(char), "") is None


def _clean(cluster: str) -> str:
    return unicodedata.normalize("NFC", cluster.translate(_FTFY)).lower()


def _char_class(char: str) -> str:
    if char.isspace():
        return " "
    category = unicodedata.category(char)[0]
    return category if category in "LN" else "P"


def _clip_units(text: str) -> list[tuple[int, int]]:
    """Spans of CLIP's regex `special|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+`."""
    units = []
    start = 0
    while start < len(text):
        kind = _char_class(text[start])
        fixed = next((t for t in _SPECIAL_TOKENS + _CONTRACTIONS if text.startswith(t, start)), None)
        if fixed:
            end = start + len(fixed)
        elif kind == " ":
            start += 1
            continue
        elif kind == "N":
            end = start + 1
        else:
            end = start + 1
            while end < len(text) and _char_class(text[end]) == kind:
                end += 1
        units.append((start, end))
        start = end
    return units


# --------------------------------------------------------------------------------------------------
# Frozen syntax: extra networks, AND, prompt editing and alternation.

_EXTRA_NETWORK = re.compile(r"<\w+:[^>]+>")
_AND = re.compile(r"\bAND\b")
_KEYWORD_START = re.compile(r"\b(?:A(?=ND\b)|B(?=REAK\b))")  # first letter of an AND or a BREAK
# A sub-prompt: its text, then optional whitespace, ":weight" and whitespace (A1111's re_weight).
_SUBPROMPT = re.compile(r"(.*?)\s*(?::\s*[-+]?(?:\d+\.?|\d*\.\d+))?\s*", re.S)
_SPACE_OR_TEXT = re.compile(r"\s|\S(?:.*\S)?", re.S)
# What may follow the last ":" of [a:b:n]: lark's SIGNED_NUMBER between optional whitespace.
_WHEN = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def _construct_spans(text: str) -> list[tuple[int, int]]:
    """Outermost `[a:b:n]` / `[a|b]` spans as A1111's schedule grammar reads `text`; none if it rejects it.

    Inside a bracket group every bracket must pair up; at the top level stray brackets and colons are text,
    but a `|` outside alternation or a backslash ending the text (or a line) fails the whole parse.
    """
    found: list[tuple[int, int]] = []
    open_groups: list[tuple[int, list[int]]] = []  # (position, positions of its ':' and '|')
    at = 0
    while at < len(text):
        char = text[at]
        if char == "\\":
            if at + 1 == len(text) or text[at + 1] == "\n":
                return []
            at += 1
        elif char in "([":
            open_groups.append((at, []))
        elif char in ":|" and open_groups:
            open_groups[-1][1].append(at)
        elif char == "|":
            return []
        elif char in ")]" and open_groups:
            start, separators = open_groups.pop()
            kind = _group_kind(text, start, at, separators)
            if kind is None:  # every enclosing group is broken too: their content is top-level text now
                if _has_pipe(text, [(start, separators), *open_groups]):
                    return []
                open_groups.clear()
            elif kind == "construct":
                found.append((start, at + 1))
        at += 1
    if _has_pipe(text, open_groups):
        return []
    return _outermost(found)


def _group_kind(text: str, start: int, end: int, separators: list[int]) -> str | None:
    """"emphasis", "construct", or None for a bracket pair the grammar does not allow."""
    marks = "".join(text[at] for at in separators)
    if text[start] + text[end] == "()":
        return "emphasis" if marks in ("", ":") else None
    if text[start] + text[end] != "[]":
        return None
    if not marks:
        return "emphasis"
    if set(marks) == {"|"}:
        return "construct"
    if marks in (":", "::") and _WHEN.fullmatch(text, separators[-1] + 1, end):
        return "construct"
    return None


def _has_pipe(text: str, groups: list[tuple[int, list[int]]]) -> bool:
    return any(text[at] == "|" for _, separators in groups for at in separators)


def _outermost(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if not kept or start >= kept[-1][1]:
            kept.append((start, end))
    return kept


# --------------------------------------------------------------------------------------------------
# Layout: what a prompt is made of, in order; words carry their gene.


@dataclass(frozen=True)
class _Word:
    """A word as written in the pinned prompt: `(text:weight)`, the weight moved by its gene if it has one."""

    text: str
    weight: float  # A1111 weight in the source prompt
    evolvable: bool
    gene: int | None = None


_Item = Union[str, _Word, _Frozen]  # a str is spacing, written as is
_Placed = tuple[int, int, _Item]  # (source offset, 0 for parts cut out before parsing else 1, item)


def _positive_layout(text: str, embeddings: tuple[str, ...]) -> list[_Item]:
    """Steps 1-4 of the module docstring; extra networks go back where they were."""
    body = _EXTRA_NETWORK.sub("", text)
    placed: list[_Placed] = []
    start = 0
    for separator in [*_AND.finditer(body), None]:
        end = separator.start() if separator else len(body)
        placed += _subprompt_items(body, start, end, embeddings)
        if separator:
            placed.append((separator.start(), 1, _Frozen("AND")))
            start = separator.end()
    return _in_order(_keywords_apart(_sorted(placed)) + _networks(text))


def _networks(text: str) -> list[_Placed]:
    """Each extra network at its offset in the text A1111 reads once they are cut out."""
    placed: list[_Placed] = []
    removed = 0
    for match in _EXTRA_NETWORK.finditer(text):
        placed.append((match.start() - removed, 0, _Frozen(match.group())))
        removed += len(match.group())
    return placed


def _subprompt_items(body: str, start: int, end: int, embeddings: tuple[str, ...]) -> list[_Placed]:
    text = body[start : start + len(_SUBPROMPT.fullmatch(body, start, end).group(1))]
    text_end = start + len(text)
    placed = _emphasis_items(text, start, _construct_spans(text), embeddings)
    for match in _SPACE_OR_TEXT.finditer(body, text_end, end):  # the sub-prompt's weight and spacing
        item = match.group()
        placed.append((match.start(), 1, item if item.isspace() else _Frozen(item)))
    return placed


def _negative_layout(text: str, embeddings: tuple[str, ...]) -> list[_Item]:
    """Steps 3-4; extra networks are text there, kept whole like prompt editing."""
    constructs = _construct_spans(text)
    networks = [m.span() for m in _EXTRA_NETWORK.finditer(text) if not _overlaps(m.span(), constructs)]
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
    return isinstance(item, _Frozen) and item.text in ("AND", "BREAK")


def _emphasis_items(
    text: str, offset: int, frozen_spans: list[tuple[int, int]], embeddings: tuple[str, ...]
) -> list[_Placed]:
    """The items of one emphasis scope; `frozen_spans` are opaque parts that take the emphasis of their place."""
    segments: list[_Segment] = []
    start = 0
    for span_start, span_end in frozen_spans:
        segments.append((offset + start, text[start:span_start]))
        segments.append((offset + span_start, _Frozen(text[span_start:span_end])))
        start = span_end
    segments.append((offset + start, text[start:]))
    placed: list[_Placed] = []
    fragment_ids: list[int] = []
    fragment_id, previous = 0, None
    for fragment in _merge_equal_weights(_emphasis_runs(segments)):
        fragment_id += fragment.weight != previous  # A1111 also joins a frozen part's text to equal neighbours
        previous = fragment.weight
        items = _fragment_items(fragment, embeddings)
        placed += items
        fragment_ids += [fragment_id] * len(items)
    return _settle_neighbours(placed, fragment_ids)


def _fragment_items(fragment: _Run, embeddings: tuple[str, ...]) -> list[_Placed]:
    if fragment.atom:
        return [(fragment.origins[0], 1, _Frozen(fragment.atom.text, _finite(fragment.weight, fragment.atom.text)))]
    if fragment.text == "BREAK" and fragment.weight == -1:  # exactly what A1111 takes as a chunk break
        return [(fragment.origins[0], 1, _Frozen("BREAK")), *((at, 1, char) for at, char in fragment.swallowed)]
    _finite(fragment.weight, fragment.text)
    items: list[_Placed] = []
    for start, end, is_word in _pieces(fragment.text, embeddings):
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
    if not math.isfinite(weight):
        raise PromptError(f"the emphasis weight of {text!r} is not a finite number ({weight})")
    return weight


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
    return isinstance(item, _Frozen) and item.multiplier is not None


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
        elif isinstance(item, _Frozen) and item.text in ("AND", "BREAK"):
            close_tag()
        spaced = spaced or (isinstance(item, str) and item.isspace())
        assigned.append(item)
    close_tag()
    return assigned


# --------------------------------------------------------------------------------------------------
# The genome and the pinned prompt.


class Genome:
    """The evolvable words of a prompt pair; `prompt(values)` writes the pinned prompt for one individual."""

    def __init__(
        self,
        genes: tuple[Gene, ...],
        positive: tuple[_Item, ...],
        negative: tuple[_Item, ...],
        embeddings: tuple[str, ...] = (),
    ):
        self.genes = genes
        self.embeddings = embeddings
        self._layouts = (positive, negative)
        self.frozen = tuple(dict.fromkeys(_frozen_text(item) for item in positive + negative if _frozen_text(item)))

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
        positive, negative = ("".join(_render(item, values) for item in layout) for layout in self._layouts)
        return positive, negative


def _frozen_text(item: _Item) -> str:
    if isinstance(item, _Frozen) or (isinstance(item, _Word) and not item.evolvable):
        return item.text.strip()
    return ""


def _render(item: _Item, values: list[float]) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, _Frozen):
        return item.text if item.multiplier in (None, 1.0) else f"({item.text}:{_exact(item.multiplier)})"
    if item.gene is None:  # not evolved: its exact source weight
        return f"({_escape(item.text)}:{_exact(item.weight)})"
    return f"({_escape(item.text)}:{_rounded(abs(item.weight + values[item.gene]))})"


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
    prompt: str, negative_prompt: str = "", granularity: str = "word", embeddings: Iterable[str] = ()
) -> Genome:
    """The genome of a prompt pair: one gene per word ("word") or per comma-separated chunk ("tag").

    `embeddings`: names of the textual-inversion embeddings A1111 knows; each stays one word.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    names = tuple(embeddings)
    genes: list[Gene] = []
    positive = _assign_genes(_positive_layout(prompt, names), POSITIVE, granularity, genes)
    negative = _assign_genes(_negative_layout(negative_prompt, names), NEGATIVE, granularity, genes)
    genome = Genome(tuple(genes), tuple(positive), tuple(negative), names)
    if not genes:
        found = f"only {', '.join(genome.frozen)}" if genome.frozen else "it is empty"
        raise PromptError(f"the prompt has no words to pin: {found}")
    return genome


def weights_from_prompt(genome: Genome, positive_text: str, negative_text: str = "") -> list[tuple[float, ...]]:
    """The weights a pinned prompt written from `genome` gives each gene's words (one tuple per gene)."""
    written = build_genome(positive_text, negative_text, embeddings=genome.embeddings)
    expected = [(gene.side, word) for gene in genome.genes for word in gene.words]
    if [(gene.side, gene.text) for gene in written.genes] != expected:
        raise ValueError("the text does not have the words of this genome")
    weights = iter(gene.base_weights[0] for gene in written.genes)
    return [tuple(next(weights) for _ in gene.words) for gene in genome.genes]
