"""Every user option, defined once: its type, default, range or choices, label, help, group, flag and control.

Two typed option sets: `PinOptions`, the pinning run's options (the WebUI script's controls, in the order of the
API's `script_args`, and `pin` flags of the command line), and `EmbeddedOptions`, what the command line renders
with on the embedded model (the WebUI takes those from its own txt2img controls). Each field carries a `Spec`.
From the specs come the argparse flags (`add_flags`), the WebUI's controls and tooltips
(`lib_pinning.webui.ui`), the positional and named `script_args` (`lib_pinning.webui.script_args`), the
validation of every value (`parse`, one message format naming the option and the bad value), the formula
defaults (-1, resolved by `resolve`) and the README's option tables (`markdown_table`, checked by a test).

Dataclasses, not pydantic: the same code validates under A1111 (pydantic 1), Forge (pydantic 2) and the command
line, the specs carry what the UI needs (label, group, control, flag) where pydantic 1 and 2 keep such extras
differently, and the messages are in the user's terms (a control's label, a flag) in every place.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .genome import GRANULARITIES
from .losses import LOSS_MODES, TREE_WEIGHTS
from .samplers import SAMPLERS, SCHEDULES
from .tags import split_tags

AUTO = -1  # "use the formula" (or "inherit"), as A1111 uses -1 for a random seed
MAX_SEED = 2**32 - 1  # A1111's seeds are 32-bit
GROUP_SEARCH = "CMA-ES"
GROUP_LIMIT = "Size limiter"
GROUP_HYPERBATCH = "Hyperbatch"
GROUP_WORDS = "Words"
GROUP_STOP = "Stopping"
GROUP_RENDER = "Rendering"
GROUP_WORKERS = "Workers"
GROUP_SERVE = "Server"
GROUP_OBJECTIVE = "Objective"
GROUP_EVOLUTION = "Prompt evolution"
EVOLVE = ("weights", "tags")  # what a prompt evolution run evolves: CMA-ES on word weights, or the tags' GA

WEIGHT_SCHEMES = ("superlinear", "linear", "equal")  # DEAP's names for the recombination weights
DEVICES = ("cpu", "cuda")
FORK_STRENGTH_DEFAULT = 1.0  # the WebUI setting's default, and what "inherit" means off the WebUI


class OptionError(InputError):
    """An option value the run cannot use; the message names the option and the value."""


@dataclass(frozen=True)
class Context:
    """What the formula defaults depend on besides the options: the genome and the render."""

    genes: int
    image_seed: int = 0
    fork_strength: float = FORK_STRENGTH_DEFAULT  # what "inherit" gives (the WebUI's setting, or its default)


@dataclass(frozen=True)
class Auto:
    """-1 means `text`; `formula(values so far, context)` gives the value, or None when the library decides."""

    text: str
    formula: Callable[[dict, Context], Any] | None = None


@dataclass(frozen=True)
class Spec:
    """How one option is typed, checked, shown and spelled. `name` is the field's name (the API's key)."""

    kind: str                      # int, float, bool, choice, text, words, matrix, targets, urls
    label: str                     # the WebUI control's label; also how messages name the option
    help: str                      # the tooltip, the --help text and the README's meaning
    group: str = ""                # WebUI accordion, README grouping; "" = always visible
    control: str = ""              # WebUI control: files, dropdown, number, slider, checkbox, text; "" = none
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None     # an exclusive lower bound
    choices: tuple = ()
    auto: Auto | None = None
    step: float | None = None      # slider step
    flag: str | None = None        # the command line's flag; None: --name-with-dashes; "" = not on the CLI
    infotext: str | None = None    # the key in A1111's infotext
    metavar: str | None = None     # the flag's value in --help
    name: str = ""
    default: Any = None            # the field's default (set by `option`)

    @property
    def cli_flag(self) -> str:
        if self.flag is not None:
            return self.flag
        return "--" + self.name.rstrip("_").replace("_", "-")

    @property
    def title(self) -> str:
        """How a message names the option: its label and its key (the API's name)."""
        return f"{self.label} ({self.name})"


def option(default, kind: str, label: str, help: str, **spec) -> Any:
    if kind == "float" and isinstance(default, int):
        default = float(default)  # -1 of a float option is -1.0, whether given or defaulted
    return field(default=default, metadata={"spec": Spec(kind, label, help, default=default, **spec)})


def _generations(values: dict, context: Context) -> int:
    return max(16, 16 * math.floor(math.log(context.genes)))


def _lambda(values: dict, context: Context) -> int:
    return int(4 + 3 * math.log(context.genes))


@dataclass(frozen=True)
class PinOptions:
    """The options of a pinning run. Field order is the WebUI's control order and the API's `script_args`."""

    targets: tuple = option(
        (), "targets", "Target images",
        "target images; none: the prompt's own first batch is the target. API: a list of base64 strings or "
        "data:image/…;base64,… URLs; command line: --target FILE, repeated", control="files", flag="--target")
    loss_mode: str = option(
        "pairwise", "choice", "Pinning loss",
        "pairwise: mean + std of the FLIP error of every pair of targets and images (the original's loss); target: "
        "mean FLIP error of each image against each target; consistency: the images of a batch agree with each "
        "other (targets unused)", control="dropdown", choices=tuple(LOSS_MODES), flag="--loss")
    granularity: str = option(
        "word", "choice", "Gene per",
        "word: one weight per word of the prompt and negative prompt; tag: one weight per comma-separated chunk "
        "(fewer genes)", control="dropdown", choices=GRANULARITIES)
    generations: int = option(
        AUTO, "int", "Generations (-1: automatic)", "CMA-ES generations", control="number", minimum=1,
        maximum=10_000, auto=Auto("16·floor(ln N), at least 16, for N genes", _generations))
    cma_seed: int = option(
        AUTO, "int", "CMA seed (-1: image seed)",
        "seed of the CMA-ES sampling; the same seeds and inputs give the same run", control="number", minimum=0,
        maximum=MAX_SEED, auto=Auto("the image seed", lambda values, context: context.image_seed))
    sigma: float = option(
        1.0, "float", "Initial sigma",
        "initial standard deviation of the weights CMA-ES tries around its start: your prompt, or the first "
        "look's best (the original's 0.05; see \"Defaults\")", control="slider", minimum=0.01, maximum=3.0, step=0.01)
    init_radius: float = option(
        0.0, "float", "Initial centroid radius",
        "the search starts at a point drawn uniformly within ±radius of your prompt; 0: at your prompt (the "
        "original's 0.25)", control="slider", minimum=0.0, maximum=2.0, step=0.01)
    log: bool = option(
        True, "bool", "Log CMA-ES to the console", "print the CMA-ES logbook, one line per generation",
        control="checkbox", flag="--quiet")
    lambda_: int = option(
        AUTO, "int", "Lambda: children per generation (-1: 4 + 3 ln N)",
        "individuals per generation, each rendered as one batch", group=GROUP_SEARCH, control="number", minimum=2,
        maximum=1000, auto=Auto("int(4 + 3·ln N)", _lambda))
    mu: int = option(
        AUTO, "int", "Mu: parents (-1: lambda / 2)", "individuals kept to build the next generation; at most λ",
        group=GROUP_SEARCH, control="number", minimum=1, maximum=1000,
        auto=Auto("int(λ/2)", lambda values, context: values["lambda_"] // 2))
    weights: str = option(
        "superlinear", "choice", "Recombination weights", "how the μ parents are weighted when recombined",
        group=GROUP_SEARCH, control="dropdown", choices=WEIGHT_SCHEMES)
    cs: float = option(
        AUTO, "float", "cs (-1: DEAP formula)", "CMA-ES step-size cumulation", group=GROUP_SEARCH,
        control="number", above=0.0, maximum=1.0, auto=Auto("DEAP's formula"))
    damps: float = option(
        AUTO, "float", "damps (-1: DEAP formula)", "CMA-ES step-size damping", group=GROUP_SEARCH,
        control="number", above=0.0, maximum=100.0, auto=Auto("DEAP's formula"))
    ccum: float = option(
        AUTO, "float", "ccum (-1: DEAP formula)", "CMA-ES covariance cumulation", group=GROUP_SEARCH,
        control="number", above=0.0, maximum=1.0, auto=Auto("DEAP's formula"))
    ccov1: float = option(
        AUTO, "float", "ccov1 (-1: DEAP formula)", "CMA-ES rank-one learning rate; with ccovmu at most 1",
        group=GROUP_SEARCH, control="number", above=0.0, maximum=1.0, auto=Auto("DEAP's formula"))
    ccovmu: float = option(
        AUTO, "float", "ccovmu (-1: DEAP formula)", "CMA-ES rank-μ learning rate; with ccov1 at most 1",
        group=GROUP_SEARCH, control="number", above=0.0, maximum=1.0, auto=Auto("DEAP's formula"))
    cmatrix: tuple | None = option(
        None, "matrix", "Initial covariance matrix (JSON rows; blank: identity)",
        "initial covariance: N rows of N numbers in JSON, e.g. [[1,0],[0,1]], symmetric positive definite; blank: "
        "identity; on the command line also a .json file", group=GROUP_SEARCH, control="text")
    size_limit: float = option(
        0.0, "float", "Size limit (0: off)",
        "> 0: multi-objective CMA-ES that keeps the genes within this L2 distance of your prompt",
        group=GROUP_LIMIT, control="number", minimum=0.0, maximum=100.0)
    size_limit_error: float = option(
        AUTO, "float", "Size limit error (-1: limit / 100)",
        "how far past the limit a proposal may go before it is penalised", group=GROUP_LIMIT, control="number",
        minimum=0.0, maximum=100.0, auto=Auto("limit/100", lambda values, context: values["size_limit"] / 100))
    size_limit_weight: float = option(
        AUTO, "float", "Size limit weight (-1: limit x 10)", "penalty per squared distance past the limit",
        group=GROUP_LIMIT, control="number", minimum=0.0, maximum=10_000.0,
        auto=Auto("limit·10", lambda values, context: values["size_limit"] * 10))
    hyperbatch_weights: bool = option(
        True, "bool", "Weight the loss by the Hyperbatch tree",
        "with a Hyperbatch sampler, score the images level by level of the fork tree", group=GROUP_HYPERBATCH,
        control="checkbox", flag="--no-hyperbatch-weights")
    hyperbatch_weight_type: str = option(
        "Geometric", "choice", "Hyperbatch weight type",
        "how tree level K (1: the root) weighs its loss X: Geometric X^(scale/K), Exponential X·(0.5+scale)^K, "
        "Polynomial (1+X)^(scale·K)", group=GROUP_HYPERBATCH, control="dropdown", choices=tuple(TREE_WEIGHTS))
    hyperbatch_weight_scale: float = option(
        1.0, "float", "Hyperbatch weight scale", "the scale in the Hyperbatch weight formulas",
        group=GROUP_HYPERBATCH, control="slider", minimum=0.0, maximum=4.0, step=0.05)
    hyperbatch_force: bool = option(
        False, "bool", "Hyperbatch weights with any sampler",
        "weight by the tree the schedule would build even with a plain sampler (the original's \"force "
        "allowed\")", group=GROUP_HYPERBATCH, control="checkbox")
    fork_strength: float = option(
        AUTO, "float", "Hyperbatch fork strength (-1: the setting)",
        "noise a Hyperbatch fork gives each child (0: copies of the parent, 1: one ancestral step's noise)", group=GROUP_HYPERBATCH, control="number", minimum=0.0, maximum=2.0, step=0.05,
        infotext="Hyperbatch fork strength",
        auto=Auto("the WebUI's \"Hyperbatch fork strength\" setting, or the strength a pasted infotext sets; "
                  "on the command line 1", lambda values, context: context.fork_strength))
    keep: tuple = option(
        (), "words", "Keep fixed (comma-separated)",
        "words (or runs of words) that keep the weight you wrote, wherever they occur in either prompt; "
        "command line: --keep WORD, repeated", group=GROUP_WORDS, control="text")
    punctuation: bool = option(
        False, "bool", "Punctuation as genes",
        "also evolve words made only of punctuation and symbols (, . ! - …); off: they stay as written",
        group=GROUP_WORDS, control="checkbox")
    first_look: int = option(
        32, "int", "First look: points spread over the box (0: off)",
        "the first generation is this many points (at most half the evaluation budget) of a Latin hypercube spread "
        "over the box around your prompt (each weight's range cut into as many slices, each tried once), and CMA-ES "
        "starts at the best of them; 0: CMA-ES's own first generation around your prompt",
        group=GROUP_SEARCH, control="number", minimum=0, maximum=1000)
    box: float = option(
        2.0, "float", "Box: ±gene of the first look and restarts",
        "how far from your prompt the first look and the restarts reach, in weight: with 1, a word of weight 1 "
        "is tried from 0 to 2", group=GROUP_SEARCH, control="slider", minimum=0.05, maximum=3.0, step=0.05)
    patience: int = option(
        4, "int", "Patience: stop after generations without improvement (0: never)",
        "stop (or restart) when the best loss has not improved by more than the tolerance for this many "
        "generations, or that many generations in a row were flat (every loss within the tolerance)",
        group=GROUP_STOP, control="number", minimum=0, maximum=10_000)
    tolerance: float = option(
        0.001, "float", "Tolerance: the least improvement that counts",
        "a loss this close to the best counts as no improvement (FLIP errors: 0.001 is the same picture)",
        group=GROUP_STOP, control="number", minimum=0.0, maximum=1.0)
    target_loss: float = option(
        0.0, "float", "Stop at loss (0: off)", "stop as soon as the best loss is at most this", group=GROUP_STOP, control="number",
        minimum=0.0, maximum=10.0)
    restarts: int = option(
        3, "int", "Restarts when stuck",
        "a stall (see Patience) restarts CMA-ES this many times before the run stops: each restart doubles the "
        "children per generation and starts from a random point of the box (IPOP-CMA-ES)", group=GROUP_STOP,
        control="number",
        minimum=0, maximum=20)
    resume: str = option(
        "", "text", "Resume run (folder or number)",
        "continue an interrupted, failed or finished run: its folder, or its number in the outputs' prompt_pins "
        "folder; it goes on with its own options and targets (a larger Generations raises its budget), and the "
        "txt2img settings must be the run's; command line: --resume DIR", control="text", flag="--resume",
        metavar="DIR")
    masks: tuple = option(
        (), "targets", "Target masks",
        "one mask per target image, in the targets' order: white counts, black is ignored, grey weighs in between "
        "(the ꟻLIP error map is weighted by it); without one, a target's own transparency is its mask. API: base64 "
        "strings like the targets; command line: --mask FILE, repeated", group=GROUP_OBJECTIVE, control="files",
        flag="--mask")
    flip_weight: float = option(
        1.0, "float", "ꟻLIP weight", "weight of the ꟻLIP error (pixels: colour and layout) in each pair's loss",
        group=GROUP_OBJECTIVE, control="number", minimum=0.0, maximum=100.0)
    semantic_weight: float = option(
        0.0, "float", "Semantic weight",
        "weight of the semantic distance (1 − cosine of the images' CLIP embeddings: what they show, not where) "
        "in each pair's loss; in the WebUI it uses the CLIP model of Interrogate CLIP", group=GROUP_OBJECTIVE,
        control="number", minimum=0.0, maximum=100.0)
    tags: tuple = option(
        (), "words", "Target tags (comma-separated)",
        "what the images should show, e.g. red hair, smiling, night: each image adds tag weight × (1 − its mean "
        "CLIP score over the tags); alone (no target images) or with them; command line: --tag TAG, repeated",
        group=GROUP_OBJECTIVE, control="text", flag="--tag")
    tag_weight: float = option(
        1.0, "float", "Tag weight", "weight of the tag loss", group=GROUP_OBJECTIVE, control="number", minimum=0.0,
        maximum=100.0)
    stop_share: float = option(  # after tag_weight: positional script_args of earlier versions keep their places
        0.1, "float", "Stop when pinned: share of your prompt's loss (0: off)",
        "stop as soon as the best loss is at most this share of your unperturbed prompt's loss (0.1: a tenth, the "
        "images all but the target's); 0: off", group=GROUP_STOP, control="number", minimum=0.0, maximum=1.0)
    evolve: str = option(
        "weights", "choice", "Evolve",
        "prompt evolution runs only: weights: CMA-ES evolves one weight per word; tags: a genetic algorithm (DEAP's "
        "selection, uniform crossover and mutation) switches the prompt's comma-separated tags and the tag pool's "
        "on and off and moves their weights (σ: the spread of a weight's mutation)", group=GROUP_EVOLUTION,
        choices=EVOLVE, flag="")
    tag_pool: tuple = option(
        (), "tags", "Tag pool (comma-separated)",
        "Evolve tags: extra tags the genetic algorithm may switch on, besides the prompt's own (a text is split into "
        "tags as the prompt is: commas inside brackets and escaped ones do not split)", group=GROUP_EVOLUTION,
        flag="")
    mutation_rate: float = option(
        AUTO, "float", "Mutation rate (-1: 1 / tags)",
        "Evolve tags: the chance that a child switches each tag on or off, and that it moves each present tag's "
        "weight", group=GROUP_EVOLUTION, above=0.0, maximum=1.0, flag="",
        auto=Auto("1/N, for N tags", lambda values, context: 1 / context.genes))


def _steps(default: int) -> Any:
    return option(default, "int", "Steps", "sampling steps per image", group=GROUP_RENDER, minimum=1, maximum=150)


def _cfg_scale(default: float) -> Any:
    return option(default, "float", "CFG scale", "classifier-free guidance scale", group=GROUP_RENDER, minimum=1.0,
                  maximum=30.0)


def _prototypes() -> Any:
    return option(16, "int", "Prototypes", "embedded model: number of prototype images", group=GROUP_RENDER,
                  minimum=1, maximum=256)


def _model_seed() -> Any:
    return option(0, "int", "Model seed", "embedded model: seed of its prototypes and word embeddings",
                  group=GROUP_RENDER, minimum=0, maximum=MAX_SEED)


def _device() -> Any:
    return option("cpu", "choice", "Device", "where to render and score", group=GROUP_RENDER, choices=DEVICES)


@dataclass(frozen=True)
class _Rendering:
    """What the command line renders with, whatever renders it."""

    prompt: str = option("", "text", "Prompt", "the positive prompt (A1111 syntax)", group=GROUP_RENDER)
    negative_prompt: str = option("", "text", "Negative prompt", "the negative prompt (A1111 syntax)",
                                  group=GROUP_RENDER, flag="--negative")
    seed: int = option(0, "int", "Seed", "first image seed: image i uses seed + i; also the CMA seed unless --cma-seed "
                       "is given", group=GROUP_RENDER, minimum=0, maximum=MAX_SEED)
    batch: int = option(8, "int", "Batch size", "images per individual; at least 2 (the loss compares them)",
                        group=GROUP_RENDER, minimum=2, maximum=64)


@dataclass(frozen=True)
class EmbeddedOptions(_Rendering):
    """What the command line renders with on the embedded model (the WebUI uses its own txt2img settings)."""

    steps: int = _steps(10)
    sampler: str = option("DPM++ 2M", "choice", "Sampler", "the k-diffusion sampler; the Hyperbatch ones fork the "
                          "batch (see \"Hyperbatch samplers\")", group=GROUP_RENDER, choices=tuple(SAMPLERS))
    schedule: str = option("Karras", "choice", "Schedule type", "the noise schedule", group=GROUP_RENDER,
                           choices=SCHEDULES)
    cfg_scale: float = _cfg_scale(3.0)
    prototypes: int = _prototypes()
    size: int = option(64, "int", "Image size", "embedded model: width and height of its images",
                       group=GROUP_RENDER, minimum=8, maximum=1024)
    model_seed: int = _model_seed()
    device: str = _device()


@dataclass(frozen=True)
class WorkerOptions(_Rendering):
    """What the command line renders with on running WebUIs (`pin --webui URL`), named as A1111's API names it."""

    webui: tuple = option(
        (), "urls", "WebUI", "a running A1111 or Forge started with --api (or `python -m lib_pinning serve`): its "
        "address; repeated, the individuals of each generation are spread over them", group=GROUP_WORKERS,
        metavar="URL")
    api_auth: str = option(
        "", "text", "API credentials", "user:password, as the workers' --api-auth has it (never written to the run "
        "folder)", group=GROUP_WORKERS, metavar="USER:PASSWORD")
    steps: int = _steps(20)
    sampler: str = option("DPM++ 2M", "text", "Sampler", "a sampler every worker lists (/sdapi/v1/samplers); the "
                          "Hyperbatch ones where the extension is installed", group=GROUP_RENDER, metavar="NAME")
    scheduler: str = option("Automatic", "text", "Schedule type", "a schedule type the workers list",
                            group=GROUP_RENDER, metavar="NAME")
    cfg_scale: float = _cfg_scale(7.0)
    width: int = option(512, "int", "Width", "image width in pixels", group=GROUP_RENDER, minimum=8, maximum=4096)
    height: int = option(512, "int", "Height", "image height in pixels", group=GROUP_RENDER, minimum=8,
                         maximum=4096)
    init_image: str = option(
        "", "text", "Init image", "an image file: every batch is img2img from it (A1111's /sdapi/v1/img2img, resized "
        "to the size); blank: txt2img", group=GROUP_RENDER, metavar="FILE")
    denoising_strength: float = option(
        0.75, "float", "Denoising strength", "img2img: how much of the init image is renewed (0: none, 1: all)",
        group=GROUP_RENDER, minimum=0.0, maximum=1.0)
    checkpoint: str = option(
        "", "text", "Checkpoint", "a checkpoint the workers have (title, name or hash); it stays loaded on them; "
        "blank: the one each has loaded", group=GROUP_RENDER, metavar="NAME")
    vae: str = option("", "text", "VAE", "a VAE the workers have (sd_vae); blank: each worker's setting",
                      group=GROUP_RENDER, metavar="NAME")
    timeout: float = option(
        600.0, "float", "Timeout", "seconds a worker may take for one batch before its individual goes to another",
        group=GROUP_WORKERS, above=0.0, maximum=86_400.0)
    retries: int = option(
        2, "int", "Retries", "times a worker that cannot be reached is tried again (a second apart) before the run "
        "goes on without it", group=GROUP_WORKERS, minimum=0, maximum=10)
    worker_tolerance: float = option(
        0.0, "float", "Worker tolerance", "the largest difference of a pixel (0-255) allowed between the workers' "
        "renders of your prompt; above it the run is refused", group=GROUP_WORKERS, minimum=0.0, maximum=255.0)


@dataclass(frozen=True)
class ServeOptions:
    """`python -m lib_pinning serve`: the embedded model behind the part of A1111's HTTP API that workers use."""

    host: str = option("127.0.0.1", "text", "Host", "the address to listen on (0.0.0.0: every interface)",
                       group=GROUP_SERVE, metavar="ADDRESS")
    port: int = option(7860, "int", "Port", "the port to listen on", group=GROUP_SERVE, minimum=1, maximum=65535)
    prototypes: int = _prototypes()
    model_seed: int = _model_seed()
    device: str = _device()
    checkpoints: int = option(
        1, "int", "Checkpoints", "how many checkpoints it offers: embedded models of model seed, model seed + 1, ... "
        "(the first is loaded)", group=GROUP_SERVE, minimum=1, maximum=16)
    render_seconds: float = option(
        0.0, "float", "Render seconds", "each batch takes at least this long (to try fan-out as if on a GPU); also "
        "its setting \"embedded_render_seconds\"", group=GROUP_SERVE, minimum=0.0, maximum=3600.0)
    api_auth: str = option("", "text", "API credentials", "user:password that clients must give (A1111's --api-auth)",
                           group=GROUP_SERVE, metavar="USER:PASSWORD")
    evolution_dir: str = option(
        "runs/evolution", "text", "Prompt evolution runs",
        "the folder of the prompt evolution runs started through /prompt-pinning/v1/evolutions (one numbered run "
        "folder each)", group=GROUP_SERVE, metavar="DIR")


OptionSet = typing.TypeVar("OptionSet", PinOptions, EmbeddedOptions, WorkerOptions, ServeOptions)


def specs(cls) -> tuple[Spec, ...]:
    """The specs of an option set, in field order, each knowing its field's name."""
    return tuple(dataclasses.replace(f.metadata["spec"], name=f.name) for f in dataclasses.fields(cls))


def spec_of(cls, name: str) -> Spec:
    return next(spec for spec in specs(cls) if spec.name == name)


def defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


SCRIPT_CONTROLS: tuple[Spec, ...] = tuple(spec for spec in specs(PinOptions) if spec.control)


# --- checking values --------------------------------------------------------------------------------------


def parse(cls: type[OptionSet], values: Mapping[str, Any]) -> OptionSet:
    """An option set from values by name (the rest default); every value is checked, unknown names refused."""
    known = {spec.name: spec for spec in specs(cls)}
    unknown = [name for name in values if name not in known]
    if unknown:
        raise OptionError(f"unknown option{'s' if len(unknown) > 1 else ''}: {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(known)})")
    return cls(**{name: check(known[name], value) for name, value in values.items()})


def check(spec: Spec, value) -> Any:
    """`value` as the option's type, or an OptionError naming the option and the value."""
    return _CHECKS[spec.kind](spec, value)


def _fail(spec: Spec, requirement: str, value) -> OptionError:
    shown = repr(value)
    return OptionError(f"{spec.title}: {requirement}, got {shown if len(shown) <= 80 else shown[:77] + '...'}")


def _number(spec: Spec, value, integer: bool):
    needed = "a whole number is needed" if integer else "a number is needed"
    if isinstance(value, bool) or value is None:
        raise _fail(spec, needed, value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _fail(spec, needed, value) from None
    elif isinstance(value, (int, float)):
        number = value
    else:
        raise _fail(spec, needed, value)
    if not math.isfinite(number):
        raise _fail(spec, "must be a finite number", value)
    if integer:
        if number != int(number):
            raise _fail(spec, "must be a whole number", value)
        number = int(number)
    else:
        number = float(number)
    if spec.auto is not None and number == AUTO:
        return number
    low, high = spec.minimum, spec.maximum
    if (low is not None and number < low) or (spec.above is not None and number <= spec.above) or \
            (high is not None and number > high):
        raise _fail(spec, f"must be {range_text(spec)}", value)
    return number


def range_text(spec: Spec) -> str:
    """"between 0.01 and 3", "more than 0 and at most 1", "at least 2"; with -1 when it means the formula."""
    low = (f"more than {_plain(spec.above)}" if spec.above is not None
           else f"at least {_plain(spec.minimum)}" if spec.minimum is not None else "")
    if spec.maximum is None:
        text = low or "any number"
    elif spec.minimum is not None and spec.above is None:
        text = f"between {_plain(spec.minimum)} and {_plain(spec.maximum)}"
    else:
        text = f"{low} and at most {_plain(spec.maximum)}" if low else f"at most {_plain(spec.maximum)}"
    return text + (" (or -1)" if spec.auto is not None else "")


def _plain(number: float | None) -> str:
    return format(number, ",").replace(",", "") if isinstance(number, int) else f"{number:g}"


def _boolean(spec: Spec, value):
    if not isinstance(value, bool):
        raise _fail(spec, "must be true or false", value)
    return value


def _choice(spec: Spec, value):
    if value not in spec.choices:
        raise _fail(spec, f"must be one of {', '.join(spec.choices)}", value)
    return value


def _text(spec: Spec, value):
    if not isinstance(value, str):
        raise _fail(spec, "must be text", value)
    return _utf8(spec, value)


def _utf8(spec: Spec, value: str) -> str:
    """Text that run.json can hold: no lone surrogate (Python's stand-in for a byte that is not UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise OptionError(f"{spec.title}: character {error.start + 1} is a byte that is not UTF-8") from None
    return value


def _words(spec: Spec, value):
    """A list of entries, or one text of comma-separated entries (the WebUI's text box)."""
    if value is None:
        return ()
    entries = value.split(",") if isinstance(value, str) else value
    if not isinstance(entries, (list, tuple)) or not all(isinstance(entry, str) for entry in entries):
        raise _fail(spec, "must be a list of words or a comma-separated text", value)
    return tuple(dict.fromkeys(_utf8(spec, entry.strip()) for entry in entries if entry.strip()))


def _tags(spec: Spec, value):
    """A list of tags, or one text split into tags as a prompt is (lib_pinning.tags.split_tags)."""
    if value is None:
        return ()
    entries = split_tags(value) if isinstance(value, str) else value
    if not isinstance(entries, (list, tuple)) or not all(isinstance(entry, str) for entry in entries):
        raise _fail(spec, "must be a list of tags or a comma-separated text", value)
    return tuple(dict.fromkeys(_utf8(spec, entry.strip()) for entry in entries if entry.strip()))


def _matrix(spec: Spec, value):
    """JSON text (or an already parsed list) of rows of finite numbers; blank: None (the identity)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    rows = value
    if isinstance(value, str):
        try:
            rows = json.loads(value)
        except ValueError as error:
            raise _fail(spec, f"must be a JSON list of rows, e.g. [[1, 0], [0, 1]] ({error})", value) from None
    if not isinstance(rows, (list, tuple)) or not rows or not all(isinstance(row, (list, tuple)) for row in rows):
        raise _fail(spec, "must be a list of rows of numbers, e.g. [[1, 0], [0, 1]]", value)
    checked = []
    for row in rows:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= 1e6
                   for v in row):
            raise _fail(spec, "must hold only finite numbers of magnitude at most 1e6", value)
        checked.append(tuple(float(v) for v in row))
    return tuple(checked)


def _urls(spec: Spec, value):
    """Addresses of running WebUIs: http(s)://host[:port][/path], without a trailing slash."""
    from urllib.parse import urlsplit

    items = value if isinstance(value, (list, tuple)) else [value] if value else []
    checked = []
    for item in items:
        if not isinstance(item, str):
            raise _fail(spec, "must be addresses like http://127.0.0.1:7860", value)
        text = item.strip().rstrip("/")
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or \
                parts.fragment:
            raise _fail(spec, "must be an address like http://127.0.0.1:7860", item)
        checked.append(_utf8(spec, text))
    return tuple(dict.fromkeys(checked))


def _targets(spec: Spec, value):
    """Raw target values (paths, uploads, base64 strings): decoded and checked by the caller, which knows them."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(item for item in items if item is not None and not (isinstance(item, str) and not item.strip()))


_CHECKS: dict[str, Callable[[Spec, Any], Any]] = {
    "int": lambda spec, value: _number(spec, value, integer=True),
    "float": lambda spec, value: _number(spec, value, integer=False),
    "bool": _boolean, "choice": _choice, "text": _text, "words": _words, "tags": _tags, "matrix": _matrix, "targets": _targets,
    "urls": _urls,
}


# --- formula defaults -------------------------------------------------------------------------------------


def resolve(options: PinOptions, context: Context) -> PinOptions:
    """A copy with every -1 replaced by its formula's value (those left to DEAP stay -1), checked together."""
    if context.genes < 1:
        raise OptionError("there is nothing to search: the genome has no genes")
    values = _values(options)  # not asdict: it would deep-copy raw targets (an upload's open file)
    for spec in specs(PinOptions):
        if spec.auto is not None and spec.auto.formula is not None and values[spec.name] == AUTO:
            values[spec.name] = spec.auto.formula(values, context)
    resolved = dataclasses.replace(options, **values)
    mu = spec_of(PinOptions, "mu")
    if resolved.mu > resolved.lambda_:
        raise OptionError(f"{mu.title}: must be at most λ ({resolved.lambda_}), got {resolved.mu}")
    if resolved.mu < 1:  # int(λ/2) is at least 1 for λ >= 2
        raise _fail(mu, "must be at least 1", resolved.mu)
    if resolved.cmatrix is not None:
        _check_covariance(resolved.cmatrix, context.genes)
    return resolved


def _check_covariance(matrix: tuple, genes: int) -> None:
    import numpy as np

    spec = spec_of(PinOptions, "cmatrix")
    shape = (len(matrix), *{len(row) for row in matrix})
    if shape != (genes, genes):
        raise OptionError(f"{spec.title}: must be {genes}x{genes} (one row and column per gene), got "
                          f"{'x'.join(map(str, shape)) if len(shape) == 2 else 'rows of different lengths'}")
    array = np.asarray(matrix, dtype=float)
    if not np.allclose(array, array.T) or np.linalg.eigvalsh(array).min() <= 0:
        raise OptionError(f"{spec.title}: must be symmetric positive definite")


def _values(options) -> dict:
    return {field.name: getattr(options, field.name) for field in dataclasses.fields(options)}


def to_record(options) -> dict:
    """The options as JSON values (tuples as lists), for run.json."""
    return json.loads(json.dumps(_values(options), default=str))


# --- the command line -------------------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, cls, skip: Iterable[str] = ()) -> None:
    """One flag per option of `cls` (grouped as in the WebUI); values stay text, checked by `parse`.

    Only flags given on the command line reach the namespace (argparse.SUPPRESS), so defaults come from the
    schema alone.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in specs(cls):
        if spec.name in skip or spec.flag == "":
            continue
        title = spec.group or ("Pinning" if cls is PinOptions else GROUP_RENDER)
        group = groups.setdefault(title, parser.add_argument_group(title))
        common = {"dest": spec.name, "default": argparse.SUPPRESS, "help": cli_help(spec)}
        if spec.kind == "bool":
            group.add_argument(spec.cli_flag, action="store_false" if spec_default(spec) else "store_true", **common)
        elif spec.kind in LIST_KINDS:
            group.add_argument(spec.cli_flag, action="append", metavar=spec.metavar or LIST_KINDS[spec.kind],
                               **common)
        else:
            metavar = spec.metavar or ("{" + ",".join(spec.choices) + "}" if spec.choices else spec.kind.upper())
            group.add_argument(spec.cli_flag, metavar=metavar, **common)


LIST_KINDS = {"targets": "FILE", "words": "WORD", "urls": "URL"}  # repeated flags, and what each value is


def spec_default(spec: Spec):
    return spec.default


def tooltip(spec: Spec) -> str:
    """The WebUI control's tooltip: the help, what -1 means and the range, as sentences."""
    sentences = [spec.help]
    if spec.auto is not None:
        sentences.append(f"-1: {spec.auto.text}")
    if spec.kind in ("int", "float"):
        sentences.append(range_text(spec))
    return " ".join(sentence[0].upper() + sentence[1:] + "." for sentence in sentences)


def flag_meaning(spec: Spec) -> str:
    """What the flag does: a flag that switches a default-on option off says so."""
    return f"turns off: {spec.help}" if spec.kind == "bool" and spec_default(spec) else spec.help


def cli_help(spec: Spec) -> str:
    return f"{flag_meaning(spec)} [{cli_default(spec)}]".replace("%", "%%")


def cli_default(spec: Spec) -> str:
    default = spec_default(spec)
    if spec.auto is not None and default == AUTO:
        return spec.auto.text
    if spec.kind == "bool":
        return "on" if default else "off"
    if default in ((), None, ""):
        return "none"
    return str(default)


# --- the README's tables ----------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(kind: str) -> str:
    """The README's option tables: "script_args" (the WebUI's controls), "cli" (the `pin` command's flags),
    "cli-webui" (its rendering flags with --webui), "cli-serve" (the `serve` command's flags) or "evolution" (the
    options only prompt evolution runs take)."""
    if kind == "script_args":
        lines = ["| # | key | label in the UI | default | meaning |", "|---|---|---|---|---|"]
        for index, spec in enumerate(SCRIPT_CONTROLS):
            label = spec.label + (f" ({spec.group})" if spec.group else "")
            default = json.dumps(spec_default(spec), ensure_ascii=False)
            meaning = spec.help + (f"; -1: {spec.auto.text}" if spec.auto else "") + \
                (f"; {range_text(spec)}" if spec.kind in ("int", "float") else "")
            lines.append(f"| {index} | `{spec.name}` | {_cell(label)} | `{default}` | {_cell(meaning)} |")
        return "\n".join(lines)
    if kind == "evolution":
        lines = ["| key | label in the tab | default | meaning |", "|---|---|---|---|"]
        for spec in specs(PinOptions):
            if spec.group == GROUP_EVOLUTION:
                meaning = spec.help + (f"; -1: {spec.auto.text}" if spec.auto else "") + \
                    (f"; {range_text(spec)}" if spec.kind in ("int", "float") else "") + \
                    (f"; one of {', '.join(spec.choices)}" if spec.choices else "")
                default = json.dumps(spec_default(spec), ensure_ascii=False)
                lines.append(f"| `{spec.name}` | {_cell(spec.label)} | `{default}` | {_cell(meaning)} |")
        return "\n".join(lines)
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    for cls in {"cli-webui": (WorkerOptions,), "cli-serve": (ServeOptions,)}.get(kind, (EmbeddedOptions, PinOptions)):
        for spec in specs(cls):
            if spec.flag == "":
                continue
            flag = spec.cli_flag + (f" {spec.metavar or LIST_KINDS.get(spec.kind)}"
                                    if spec.metavar or spec.kind in LIST_KINDS else "")
            meaning = flag_meaning(spec) + (f"; {range_text(spec)}" if spec.kind in ("int", "float") else "") + \
                (f"; one of {', '.join(spec.choices)}" if spec.choices else "")
            lines.append(f"| `{flag}` | {_cell(cli_default(spec))} | {_cell(meaning)} |")
    return "\n".join(lines)


README_SECTIONS = {kind: f"<!-- {kind} -->" for kind in ("script_args", "cli", "cli-webui", "cli-serve", "evolution")}


def readme_with_tables(text: str) -> str:
    """`text` (the README) with each marked table replaced by the one the schema gives."""
    for kind, start in README_SECTIONS.items():
        end = start.replace("<!-- ", "<!-- /")
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = f"{before}{start}\n\n{markdown_table(kind)}\n\n{end}{after}"
    return text


if __name__ == "__main__":  # python -m lib_pinning.options README.md: rewrite the README's option tables
    import sys
    from pathlib import Path

    for name in sys.argv[1:]:
        path = Path(name)
        path.write_text(readme_with_tables(path.read_text(encoding="utf-8")), encoding="utf-8")
