"""Frozen syntax: recognition of extra networks, AND, sub-prompt weights, prompt editing and alternation.

These constructs pass through a pinned prompt verbatim and are never evolved.
"""

from __future__ import annotations

import re

EXTRA_NETWORK = re.compile(r"<\w+:[^>]+>")
AND = re.compile(r"\bAND\b")
# A sub-prompt: its text, then optional whitespace, ":weight" and whitespace (A1111's re_weight).
SUBPROMPT = re.compile(r"(.*?)\s*(?::\s*[-+]?(?:\d+\.?|\d*\.\d+))?\s*", re.S)
_BREAK_WORD = re.compile(r"BREAK")
# What may follow the last ":" of [a:b:n]: lark's SIGNED_NUMBER between optional whitespace.
_WHEN = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def construct_spans(text: str) -> list[tuple[int, int]]:
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


def glue_breaks(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Prompt-editing spans widened over each BREAK that touches them, so that the two stay one part.

    A1111 resolves prompt editing first, and reads BREAK as a keyword only between word boundaries: in
    `a BREAK[x::3]` it is text ("BREAKx") for three steps and a keyword after. Only the text as written keeps
    both readings, so the BREAK and the construct pass through as one frozen part.
    """
    spans = sorted(spans)
    while True:
        for match in _BREAK_WORD.finditer(text):
            start, end = match.span()
            if any(a <= start < b for a, b in spans):
                continue
            before_ok = start == 0 or not _is_word_char(text[start - 1])
            after_ok = end == len(text) or not _is_word_char(text[end])
            touched = [(a, b) for a, b in spans if (a == end and before_ok) or (b == start and after_ok)]
            if touched:
                merged = (min(start, *(a for a, _ in touched)), max(end, *(b for _, b in touched)))
                spans = sorted([span for span in spans if span not in touched] + [merged])
                break
        else:
            return spans


def _is_word_char(char: str) -> bool:
    return bool(re.match(r"\w", char))
