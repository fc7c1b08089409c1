"""Words: CLIP's pre-tokenization (lower-cased, after ftfy) without ever cutting inside one of its units.

A *word* is a run of text CLIP never splits across (letters, one digit, a run of other characters), so
`(word:w)` re-tokenizes to the same tokens.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

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
    return [text[start:end] for start, end, is_word in pieces(text, tuple(embeddings)) if is_word]


def pieces(text: str, embeddings: tuple[str, ...] = ()) -> list[tuple[int, int, bool]]:
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
