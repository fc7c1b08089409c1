"""The "Prompt pinning" script's controls: one table for the UI, the API's `script_args` order and decoding.

A1111 hands `run(p, *args)` the controls' values positionally, in the order `ui()` returned them; an API client
sends the same values as `script_args`, raw (no gradio preprocessing). `CONTROLS` is that order. `decode`
turns the values into checked settings, so a bad value becomes one clear `SettingsError` before any rendering.
Pure Python: no WebUI import, so the decoding is tested without A1111.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..genome import GRANULARITIES
from ..hyperbatch import WEIGHT_KINDS, HyperbatchWeights, forks_fit, is_hyperbatch_sampler
from ..objective import LOSS_MODES
from ..search import WEIGHT_SCHEMES, SearchOptions

AUTO = -1  # "use the formula" for numeric CMA-ES options, as A1111 uses -1 for a random seed


class SettingsError(ValueError):
    """A control value the run cannot use; the message names the control."""


@dataclass(frozen=True)
class Control:
    key: str
    label: str          # shown in the UI; also the key of the tooltip in javascript/prompt_pinning.js
    kind: str           # "files", "dropdown", "number", "slider", "checkbox", "text"
    default: object
    group: str = ""     # accordion title; "" = always visible
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    integer: bool = False


GROUP_SEARCH = "CMA-ES"
GROUP_LIMIT = "Size limiter"
GROUP_HYPERBATCH = "Hyperbatch"

CONTROLS: tuple[Control, ...] = (
    Control("targets", "Target images", "files", None),
    Control("loss_mode", "Pinning loss", "dropdown", "pairwise", choices=LOSS_MODES),
    Control("granularity", "Gene per", "dropdown", "word", choices=GRANULARITIES),
    Control("generations", "Generations (-1: automatic)", "number", AUTO, integer=True),
    Control("cma_seed", "CMA seed (-1: image seed)", "number", AUTO, integer=True),
    Control("sigma", "Initial sigma", "slider", 0.5, minimum=0.01, maximum=3.0, step=0.01),
    Control("init_radius", "Initial centroid radius", "slider", 0.0, minimum=0.0, maximum=2.0, step=0.01),
    Control("log", "Log CMA-ES to the console", "checkbox", True),
    Control("lambda_", "Lambda: children per generation (-1: 4 + 3 ln N)", "number", AUTO, GROUP_SEARCH,
            integer=True),
    Control("mu", "Mu: parents (-1: lambda / 2)", "number", AUTO, GROUP_SEARCH, integer=True),
    Control("weights", "Recombination weights", "dropdown", "superlinear", GROUP_SEARCH, choices=WEIGHT_SCHEMES),
    Control("cs", "cs (-1: DEAP formula)", "number", AUTO, GROUP_SEARCH),
    Control("damps", "damps (-1: DEAP formula)", "number", AUTO, GROUP_SEARCH),
    Control("ccum", "ccum (-1: DEAP formula)", "number", AUTO, GROUP_SEARCH),
    Control("ccov1", "ccov1 (-1: DEAP formula)", "number", AUTO, GROUP_SEARCH),
    Control("ccovmu", "ccovmu (-1: DEAP formula)", "number", AUTO, GROUP_SEARCH),
    Control("cmatrix", "Initial covariance matrix (JSON rows; blank: identity)", "text", "", GROUP_SEARCH),
    Control("size_limit", "Size limit (0: off)", "number", 0.0, GROUP_LIMIT, minimum=0),
    Control("size_limit_error", "Size limit error (-1: limit / 100)", "number", AUTO, GROUP_LIMIT),
    Control("size_limit_weight", "Size limit weight (-1: limit x 10)", "number", AUTO, GROUP_LIMIT),
    Control("hyperbatch_weights", "Weight the loss by the Hyperbatch tree", "checkbox", True, GROUP_HYPERBATCH),
    Control("hyperbatch_weight_type", "Hyperbatch weight type", "dropdown", "Geometric", GROUP_HYPERBATCH,
            choices=WEIGHT_KINDS),
    Control("hyperbatch_weight_scale", "Hyperbatch weight scale", "slider", 1.0, GROUP_HYPERBATCH,
            minimum=0.0, maximum=4.0, step=0.05),
    Control("hyperbatch_force", "Hyperbatch weights with any sampler", "checkbox", False, GROUP_HYPERBATCH),
    Control("fork_strength", "Hyperbatch fork strength", "slider", 1.0, GROUP_HYPERBATCH,
            minimum=0.0, maximum=2.0, step=0.05),
)

KEYS = tuple(control.key for control in CONTROLS)


@dataclass
class PinSettings:
    """Everything the script's controls decide, checked."""

    targets: object                       # raw target values: decoded by lib_pinning.webui.targets
    loss_mode: str
    granularity: str
    search: SearchOptions
    cma_seed_from_image: bool             # CMA seed -1: the run's image seed is the CMA seed
    hyperbatch_weights: bool
    hyperbatch_weight_type: str
    hyperbatch_weight_scale: float
    hyperbatch_force: bool
    fork_strength: float
    raw: dict = field(default_factory=dict)  # the decoded values by key, for run.json

    def search_for(self, image_seed: int) -> SearchOptions:
        """The search options of a run whose first image seed is `image_seed` (CMA seed -1 takes it)."""
        return replace(self.search, cma_seed=int(image_seed)) if self.cma_seed_from_image else self.search

    def weighting(self, sampler: str, steps: int, batch_size: int) -> HyperbatchWeights | None:
        """The Hyperbatch weighting of the loss: each sampling call of `batch_size` rows is its own trees."""
        if not self.hyperbatch_weights:
            return None
        weights = HyperbatchWeights(self.hyperbatch_weight_type, self.hyperbatch_weight_scale, steps,
                                    self.hyperbatch_force, tree_size=batch_size)
        return weights if weights.applies_to(sampler) else None

    def notices(self, sampler: str, steps: int, batch_size: int, target_count: int) -> list[str]:
        """What the user should know before the run, though nothing stops it."""
        notices = []
        if is_hyperbatch_sampler(sampler) and not forks_fit(batch_size, steps):
            notices.append(f"{steps} steps are too few to fork a batch of {batch_size} (steps must exceed "
                           f"log2 of the batch size): {sampler} samples the whole batch at every step")
        if target_count and self.loss_mode == "consistency":
            notices.append("the loss is batch consistency: the target images are not used")
        return notices


def defaults() -> list:
    """The values `ui()` starts with, in `script_args` order."""
    return [control.default for control in CONTROLS]


def default_of(key: str):
    return CONTROLS[KEYS.index(key)].default


def script_args(**values) -> list:
    """The defaults in `script_args` order with some values given by key, e.g. script_args(generations=20)."""
    args = defaults()
    for key, value in values.items():
        args[KEYS.index(key)] = value
    return args


def _number(control: Control, value) -> float:
    if isinstance(value, bool) or value is None or value == "":
        raise SettingsError(f"{control.label}: a number is needed, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{control.label}: a number is needed, got {value!r}") from None
    if not math.isfinite(number):
        raise SettingsError(f"{control.label}: must be a finite number, got {value!r}")
    if control.integer:
        if number != int(number):
            raise SettingsError(f"{control.label}: must be a whole number, got {value!r}")
        return int(number)
    return number


def _value(control: Control, value):
    if control.kind in ("number", "slider"):
        number = _number(control, value)
        low, high = control.minimum, control.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise SettingsError(f"{control.label}: must be {bounds}, got {value!r}")
        return number
    if control.kind == "dropdown":
        if value not in control.choices:
            raise SettingsError(f"{control.label}: must be one of {', '.join(control.choices)}; got {value!r}")
        return value
    if control.kind == "checkbox":
        if not isinstance(value, bool):
            raise SettingsError(f"{control.label}: must be true or false, got {value!r}")
        return value
    if control.kind == "text":
        if value is None:
            return ""
        if not isinstance(value, str):
            raise SettingsError(f"{control.label}: must be text, got {value!r}")
        return value.strip()
    return value  # files: decoded later, with the render size known


def _auto(value: float):
    """-1 means "the formula" (None); other negative values are refused by the search's own checks."""
    return None if value == AUTO else value


def _matrix(text: str, label: str) -> list[list[float]] | None:
    if not text:
        return None
    try:
        rows = json.loads(text)
        return [[float(v) for v in row] for row in rows]
    except (ValueError, TypeError) as error:
        raise SettingsError(f"{label}: a JSON list of rows is needed, e.g. [[1, 0], [0, 1]] ({error})") from None


def decode(values: Sequence) -> PinSettings:
    """Check the script's argument values (in `CONTROLS` order) and turn them into settings."""
    values = list(values)
    if len(values) != len(CONTROLS):
        raise SettingsError(f"Prompt pinning takes {len(CONTROLS)} script arguments in this order: "
                            f"{', '.join(KEYS)}; got {len(values)}")
    raw = {control.key: _value(control, value) for control, value in zip(CONTROLS, values)}
    by_key = {control.key: control for control in CONTROLS}
    generations = _auto(raw["generations"])
    if generations is not None and generations < 1:
        raise SettingsError(f"{by_key['generations'].label}: must be at least 1 (or -1), got {generations}")
    search = SearchOptions(
        cma_seed=max(raw["cma_seed"], 0), generations=generations, sigma=raw["sigma"],
        init_radius=raw["init_radius"], lambda_=_auto(raw["lambda_"]), mu=_auto(raw["mu"]),
        cmatrix=_matrix(raw["cmatrix"], by_key["cmatrix"].label), weights=raw["weights"],
        cs=_auto(raw["cs"]), damps=_auto(raw["damps"]), ccum=_auto(raw["ccum"]), ccov1=_auto(raw["ccov1"]),
        ccovmu=_auto(raw["ccovmu"]), size_limit=raw["size_limit"],
        size_limit_error=_auto(raw["size_limit_error"]), size_limit_weight=_auto(raw["size_limit_weight"]),
        log=raw["log"])
    if raw["cma_seed"] < AUTO:
        raise SettingsError(f"{by_key['cma_seed'].label}: must be -1 or more, got {raw['cma_seed']}")
    recorded = {key: value for key, value in raw.items() if key != "targets"}
    return PinSettings(
        targets=raw["targets"], loss_mode=raw["loss_mode"], granularity=raw["granularity"], search=search,
        cma_seed_from_image=raw["cma_seed"] == AUTO, hyperbatch_weights=raw["hyperbatch_weights"],
        hyperbatch_weight_type=raw["hyperbatch_weight_type"],
        hyperbatch_weight_scale=raw["hyperbatch_weight_scale"], hyperbatch_force=raw["hyperbatch_force"],
        fork_strength=raw["fork_strength"], raw=recorded)
