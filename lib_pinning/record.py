"""run.json: the typed record of a pinning run, what the engine writes and every reader reads.

The engine fills a `RunRecord` and rewrites run.json atomically after every generation; the report, its rebuild,
the command line's summary and the WebUI read the same fields; nothing is inferred back (the target count, the
best individual's folder and the pairs each loss compares are written down). `read_record` checks a file field
by field: a damaged or hand-edited run.json is one `RecordError` naming the field, never a traceback.

A run ends in exactly one status with a typed cause (`CAUSES`): done (the generation budget is spent),
interrupted (Ctrl-C, SIGTERM, the WebUI's Interrupt or Skip) or failed (a fault of the run, of its report or of
run.json itself), with a one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

RUN_FILE = "run.json"
FORMAT = "sd-prompt-pinning run"
VERSION = 2
# What a run folder holds at its top level (lib_pinning.report writes the files; runfile tells a run folder by them)
BASELINE_FOLDER = "baseline"
BEST_FOLDER = "best"
TARGETS_FOLDER = "targets"
INDEX_FILE = "index.html"
RUN_PLOTS = ("cma_plot.png", "history.png", "looseness.png", "front.png", "weight_map.png", "tags.png")
GENERATION_FOLDER = re.compile(r"\d{8}")

WORKERS_API = "A1111 HTTP API"  # render.extra["api"] of a run rendered by WebUI workers (pin --webui)
RUNNING, DONE, INTERRUPTED, FAILED = "running", "done", "interrupted", "failed"
CAUSES = {  # cause -> the status it ends a run with
    "generations": DONE,      # the evaluation budget (generations x lambda) is spent
    "stagnation": DONE,       # the best loss stopped improving (patience)
    "flat": DONE,             # the losses of a generation stopped differing (patience)
    "target": DONE,           # the best loss reached the loss asked for
    "pinned": DONE,           # the best loss fell to the stop share of the unperturbed prompt's loss
    "interrupt": INTERRUPTED,  # Ctrl-C, or the WebUI's Interrupt or Skip
    "signal": INTERRUPTED,     # SIGTERM
    "fault": FAILED,           # an error during the run (out of memory, a NaN, the renderer)
    "report": FAILED,          # some report files could not be written; the search's results are intact
    "record": FAILED,          # run.json itself could not be written (a full disk)
}


def individual_folder(generation: int, individual_id: str) -> str:
    """Where an individual's files go, relative to the run folder."""
    return f"{generation:08d}/{individual_id}"


class RecordError(InputError):
    """A run.json that cannot be read; the message names the file and the field."""


@dataclass
class Ending:
    cause: str
    message: str = ""


@dataclass
class CmaState:
    """The search distribution after a generation: centroid, step size, axis ratio, axes' scales, spreads."""

    centroid: list[float]
    sigma: float
    axis_ratio: float
    scales: list[float]
    stds: list[float]


@dataclass
class Individual:
    id: str
    folder: str                 # its files, relative to the run folder
    weights: list[float]        # one gene value per gene: weight = |base weight + gene|
    loss: float
    prompt: str
    negative_prompt: str
    image_losses: list[float]   # per seed
    pair_losses: list[float]    # per pair of `objective.pairs`
    seconds_render: float
    seconds_loss: float
    place: int | None = None    # a chooser run: its place in the generation's choice (favourites all 0), or None
    chosen: bool = False        # a chooser run: counted as chosen (lib_pinning.chooser.Choice.chosen)
    parents: list[str] = field(default_factory=list)  # a chooser run: the ids whose recombination it was drawn around


@dataclass
class Generation:
    index: int
    evaluations: int
    best_loss: float
    mean_loss: float
    sigma: float
    cma: CmaState
    individuals: list[Individual]
    seconds: float = 0.0        # wall time, bookkeeping included


@dataclass
class Baseline:
    """The unperturbed prompt (every gene 0), scored by the same objective and seeds."""

    loss: float
    prompt: str                 # what was rendered: the genome's own writing of your prompt
    negative_prompt: str
    image_losses: list[float]
    pair_losses: list[float]
    folder: str = BASELINE_FOLDER


@dataclass
class Best:
    """The pinned prompt: the best individual (see lib_pinning.engine), or the baseline when nothing beat it."""

    loss: float
    prompt: str
    negative_prompt: str
    weights: list[float]
    generation: int             # -1: the baseline
    id: str | None              # None: the baseline
    folder: str                 # the folder of its images, relative to the run folder


@dataclass
class GenomeRecord:
    words: list[str]            # one label per gene of the positive prompt
    negative_words: list[str]   # ... and of the negative prompt
    base_weights: list[float]   # per gene: its words' A1111 weight as written
    frozen: list[str]           # parts passed through unchanged (syntax, kept words), once each


@dataclass
class RenderRecord:
    """How every individual was rendered (the same for all of them, apart from the prompt)."""

    seeds: list[int]
    sampler: str
    schedule: str | None
    steps: int
    cfg_scale: float
    width: int
    height: int
    model: str | None
    extra: dict = field(default_factory=dict)  # what else the renderer reports (batch count, device, ...)


@dataclass
class ObjectiveRecord:
    mode: str
    target_count: int           # pair indices below it are targets
    target_source: str          # "given" or "baseline" (the unperturbed prompt's first batch) or "none"
    pairs: list[list[int]]      # what each pair loss compares: indices into targets ∪ batch
    tree: dict | None           # the Hyperbatch tree weighting, or None
    target_hashes: list[str] = field(default_factory=list)  # SHA-256 of each target as scored (a resume checks)
    embedder: str = ""          # what scored the semantic distance and the tags ("": neither is used)


@dataclass
class RunRecord:
    prompt: str                 # the prompt pinned (in the WebUI: with its styles applied)
    negative_prompt: str
    options: dict               # the options as given (lib_pinning.options.PinOptions)
    resolved: dict              # the same with every formula default filled in
    cma_constants: dict         # DEAP's constants in use
    render: RenderRecord
    objective: ObjectiveRecord
    genome: GenomeRecord
    notices: list[str] = field(default_factory=list)
    baseline: Baseline | None = None
    best: Best | None = None
    generations: list[Generation] = field(default_factory=list)
    status: str = RUNNING
    ending: Ending | None = None
    state: dict | None = None   # the search's and the engine's whole state after the last save: what a resume needs
    format: str = FORMAT
    version: int = VERSION

    def end(self, cause: str, message: str = "") -> None:
        self.status = CAUSES[cause]
        self.ending = Ending(cause, message)

    @property
    def evaluations(self) -> int:
        return sum(generation.evaluations for generation in self.generations)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, allow_nan=False, ensure_ascii=False)


# --- reading ----------------------------------------------------------------------------------------------

_PLAIN_FOLDER = re.compile(r"[\w.-]+(?:/[\w.-]+)*")


def read_record(run_dir: str | Path) -> RunRecord:
    """The record of the run in `run_dir`, checked field by field, or a RecordError naming what is wrong."""
    path = Path(run_dir) / RUN_FILE
    if path.is_dir():
        raise RecordError(f"{path} is a folder, not a run record")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path} does not exist: {str(run_dir)!r} is not a run folder") from None
    except UnicodeDecodeError:
        raise RecordError(f"{path} is not text (not UTF-8): it is not a run record") from None
    except OSError as error:
        raise RecordError(f"{path} cannot be read: {error.strerror or error}") from None
    return parse_record(text, str(path))


def parse_record(text: str, where: str = RUN_FILE) -> RunRecord:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(f"{where} is not complete JSON ({error.msg} at line {error.lineno}, column "
                          f"{error.colno})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected a JSON object, got {_kind(data)}")
    if data.get("format") != FORMAT:
        raise RecordError(f"{where}: format: expected {FORMAT!r}, got {data.get('format')!r} (not a run record "
                          "of this version of sd-prompt-pinning)")
    if data.get("version") != VERSION:
        raise RecordError(f"{where}: version: this sd-prompt-pinning reads version {VERSION}, got "
                          f"{data.get('version')!r}")
    try:
        record = _parse(RunRecord, data, "")
        _check_consistency(record)
    except _FieldError as error:
        raise RecordError(f"{where}: {error.path}: {error.problem}") from None
    return record


class _FieldError(Exception):
    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _parse(kind, value, path: str):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (kind,) = [option for option in options if option is not type(None)]
        return _parse(kind, value, path)
    if kind is Any:
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _FieldError(path, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise _FieldError(path, f"expected a finite number, got {value}")
        return float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise _FieldError(path, f"expected true or false, got {_kind(value)}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _FieldError(path, f"expected a whole number, got {_kind(value)}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise _FieldError(path, f"expected text, got {_kind(value)}")
        return value
    if kind is dict or origin is dict:
        if not isinstance(value, dict):
            raise _FieldError(path, f"expected an object, got {_kind(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _FieldError(path, f"expected a list, got {_kind(value)}")
        (item,) = typing.get_args(kind)
        return [_parse(item, entry, f"{path}[{index}]") for index, entry in enumerate(value)]
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise _FieldError(path, f"expected an object, got {_kind(value)}")
        hints = typing.get_type_hints(kind)
        values = {}
        for entry in dataclasses.fields(kind):
            where = f"{path}.{entry.name}" if path else entry.name
            if entry.name in value:
                values[entry.name] = _parse(hints[entry.name], value[entry.name], where)
            elif entry.default is dataclasses.MISSING and entry.default_factory is dataclasses.MISSING:
                raise _FieldError(where, "missing")
        return kind(**values)
    raise TypeError(f"no reader for {kind!r}")  # a field type this module does not know: a bug here


def _check_consistency(record: RunRecord) -> None:
    """What the types cannot say: values in range, references that resolve, folders inside the run folder."""
    if record.status not in (RUNNING, *CAUSES.values()):
        raise _FieldError("status", f"expected one of running, done, interrupted, failed, got {record.status!r}")
    if record.ending is not None and record.ending.cause not in CAUSES:
        raise _FieldError("ending.cause", f"expected one of {', '.join(CAUSES)}, got {record.ending.cause!r}")
    genes = len(record.genome.base_weights)
    if len(record.genome.words) + len(record.genome.negative_words) != genes:
        raise _FieldError("genome", f"{genes} base weights for "
                                    f"{len(record.genome.words) + len(record.genome.negative_words)} words")
    if not record.render.seeds:
        raise _FieldError("render.seeds", "expected at least one seed")
    if record.objective.target_count < 0:
        raise _FieldError("objective.target_count", f"expected 0 or more, got {record.objective.target_count}")
    images = record.objective.target_count + len(record.render.seeds)
    for index, pair in enumerate(record.objective.pairs):
        if len(pair) != 2 or not all(0 <= i < images for i in pair):
            raise _FieldError(f"objective.pairs[{index}]", f"expected two image indices below {images}, got {pair}")
    ids = set()
    for g, generation in enumerate(record.generations):
        if not generation.individuals:
            raise _FieldError(f"generations[{g}].individuals", "expected at least one individual")
        for i, individual in enumerate(generation.individuals):
            where = f"generations[{g}].individuals[{i}]"
            _check_folder(individual.folder, f"{where}.folder")
            if len(individual.weights) != genes:
                raise _FieldError(f"{where}.weights", f"expected {genes} gene values, got {len(individual.weights)}")
            ids.add((generation.index, individual.id))
    if record.baseline is not None:
        _check_folder(record.baseline.folder, "baseline.folder")
        if record.best is None:
            raise _FieldError("best", "missing (null) although the unperturbed prompt was scored")
    if record.best is not None:
        _check_folder(record.best.folder, "best.folder")
        if len(record.best.weights) != genes:
            raise _FieldError("best.weights", f"expected {genes} gene values, got {len(record.best.weights)}")
        if record.best.id is not None and (record.best.generation, record.best.id) not in ids:
            raise _FieldError("best.id", f"no individual {record.best.id!r} in generation {record.best.generation}")


def _check_folder(folder: str, where: str) -> None:
    if not _PLAIN_FOLDER.fullmatch(folder) or any(part in (".", "..") for part in folder.split("/")):
        raise _FieldError(where, f"expected a folder inside the run folder, got {folder!r}")
