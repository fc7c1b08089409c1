"""The script's arguments as the WebUI hands them over: positionally from the UI or the API, or by name.

A1111 hands `run(p, *args)` the controls' values in the order `ui()` returned them: the order of
`lib_pinning.options.SCRIPT_CONTROLS`. An API client sends the same values as `script_args`, raw, and A1111 writes
them over this script's slice of one flat list by slice assignment: a list of the wrong length shifts every later
script's arguments, so it is refused here. A client may instead send one object of values by name,
`script_args: [{"generations": 20, "targets": [...]}]`; names it does not give keep their defaults.

Pure Python: no WebUI import, so the decoding is tested without A1111.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..options import SCRIPT_CONTROLS, OptionError, PinOptions, defaults, parse

NAMES = tuple(spec.name for spec in SCRIPT_CONTROLS)
# What earlier versions took: today's first 25 controls (0.1; keep and punctuation came after), the first 34
# (0.2; the Objective controls, masks to tag_weight, came after), the first 39 (before stop_share). The rest keep
# their defaults.
LEGACY_COUNTS = (25, 34, 39)


def sent_count(script, p, received: int) -> int:
    """How many values the client sent for this script.

    The API writes the client's list over this script's slice of the default arguments (A1111's and Forge's
    init_script_args), so the whole list is longer or shorter by what the client sent too many or too few. The
    UI always sends exactly `received`. Without the WebUI's bookkeeping, `received` is all there is to go by.
    """
    runner, given = getattr(p, "scripts", None), getattr(p, "script_args", None)
    scripts = getattr(runner, "scripts", None)
    if given is None or not scripts or getattr(script, "args_to", None) is None:
        return received
    expected_total = max(getattr(each, "args_to", 0) or 0 for each in scripts)
    return len(given) - expected_total + (script.args_to - script.args_from)


def decode(values: Sequence, sent: int | None = None) -> PinOptions:
    """The options from the script's arguments: positional values in control order, or one object of named ones.

    `sent`: how many values the client sent (see `sent_count`); by default as many as were received.
    """
    values = list(values)
    sent = len(values) if sent is None else sent
    if values and isinstance(values[0], Mapping):
        if sent != 1:
            raise OptionError(f"Prompt pinning takes its script_args either as one object of values by name or as "
                              f"{len(NAMES)} values in order; got an object and {sent - 1} more value(s)")
        return parse(PinOptions, dict(values[0]))
    if sent not in (len(NAMES), *LEGACY_COUNTS):
        raise OptionError(f"Prompt pinning takes {len(NAMES)} script_args in this order: {', '.join(NAMES)}; got "
                          f"{sent} (or send one object of values by name, e.g. [{{\"generations\": 20}}])")
    return parse(PinOptions, dict(zip(NAMES, values[:sent])))


def positional(**values) -> list:
    """The defaults in `script_args` order with some values given by name, e.g. positional(generations=20)."""
    unknown = set(values) - set(NAMES)
    if unknown:
        raise OptionError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return [values.get(spec.name, control_default(spec)) for spec in SCRIPT_CONTROLS]


def control_default(spec):
    """An option's default as its WebUI control holds it: no file for targets, text for the text boxes."""
    default = defaults(PinOptions)[spec.name]
    if spec.control == "files":
        return None
    if spec.control == "text":
        return ", ".join(default) if isinstance(default, tuple) else ("" if default is None else str(default))
    return default
