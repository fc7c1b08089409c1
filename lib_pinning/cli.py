"""`python -m lib_pinning demo|pin|report|serve`: pinning jobs on the embedded model or on running WebUIs, their
reports, and the embedded model served as a WebUI worker.

The flags come from the options schema (lib_pinning.options); `pin --webui URL` renders on WebUIs, with A1111's
rendering flags (WorkerOptions) in place of the embedded model's (EmbeddedOptions). Exit codes follow how the run
ended, not which exception was raised: 0 done; 2 bad input, found before anything was written; 1 a fault after the run
started (run.json says "failed" and why); 130 interrupted by Ctrl-C, 143 by SIGTERM. Diagnostics go to stderr,
the summary to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from . import options as schema
from .errors import InputError
from .record import RunRecord

EXIT_CODES = {"done": 0, "failed": 1}
BAD_INPUT = 2
INTERRUPTED = {"interrupt": 130, "signal": 143}  # 128 + the signal's number, as a shell reports it


def build_parser(webui: bool = False) -> argparse.ArgumentParser:
    """The parser; `webui`: `pin` takes the rendering flags of WebUI workers (the command line has --webui)."""
    parser = argparse.ArgumentParser(prog="python -m lib_pinning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser("demo", help="pin the embedded model to one of its own prototypes")
    demo_parser.add_argument("--out", required=True, help="run folder to write")
    demo_parser.add_argument("--generations", default="-1", help="number of generations [the formula]")
    demo_parser.add_argument("--seed", help="image seed and CMA seed [the demo's, 16]")
    demo_parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")

    pin_parser = commands.add_parser(
        "pin", help="pin a prompt on the embedded model, or on running WebUIs (--webui URL)",
        epilog=None if webui else "With --webui URL the rendering flags are A1111's (--scheduler, --width, "
        "--height, --checkpoint, ...): see `pin --webui URL --help`.")
    pin_parser.add_argument("--out", help="the run folder; a folder holding an earlier run alone is replaced, any "
                            "other non-empty folder refused")
    schema.add_flags(pin_parser, schema.WorkerOptions if webui else schema.EmbeddedOptions)
    schema.add_flags(pin_parser, schema.PinOptions)

    serve_parser = commands.add_parser("serve", help="serve the embedded model as a WebUI worker (A1111's API)")
    schema.add_flags(serve_parser, schema.ServeOptions)

    report_parser = commands.add_parser("report", help="rebuild a run folder's report from run.json and its images")
    report_parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder (holds run.json)")
    return parser


def summary(record: RunRecord, run_dir: Path | None) -> str:
    ending = record.ending
    lines = [f"status: {record.status}" + (f" ({ending.cause}: {ending.message})" if ending else "")]
    if record.baseline is not None:
        lines.append(f"baseline loss: {record.baseline.loss:.4f}")
    if record.best is not None:
        best = record.best
        found = "the prompt as written" if best.generation < 0 else f"generation {best.generation}"
        lines.append(f"best loss: {best.loss:.4f} ({found})")
        lines.append(f"pinned prompt: {best.prompt}")
        if best.negative_prompt:
            lines.append(f"pinned negative prompt: {best.negative_prompt}")
    if run_dir is not None:
        lines.append(f"run folder: {run_dir}")
    return "\n".join(lines)


def report(run_dir: str | Path) -> int:
    """Rebuild every derived file of a run folder, e.g. after a crash; exit status as for the CLI."""
    from .report import rebuild_report

    try:
        without_images = rebuild_report(run_dir)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    except OSError as error:
        print(f"error: could not write the report: {error}", file=sys.stderr)
        return 1
    if without_images:
        print(f"notice: {len(without_images)} individuals have no saved images, so no GIF or thumbnails: "
              f"{', '.join(without_images)}", file=sys.stderr)
    print(f"report: {Path(run_dir) / 'index.html'}")
    return 0


def _given(args: argparse.Namespace) -> dict:
    """The option flags given, by name (a .json --cmatrix read from its file)."""
    given = {name: value for name, value in vars(args).items() if name not in ("command", "out")}
    if isinstance(given.get("cmatrix"), str) and given["cmatrix"].strip().endswith(".json"):
        path = Path(given["cmatrix"].strip())
        try:
            given["cmatrix"] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise schema.OptionError(f"{schema.spec_of(schema.PinOptions, 'cmatrix').title}: cannot read "
                                     f"{str(path)!r}: {error}") from None
    return given


def _pin_values(args: argparse.Namespace, webui: bool):
    """(PinOptions, the rendering options: EmbeddedOptions, or WorkerOptions with --webui)."""
    given, cls = _given(args), schema.WorkerOptions if webui else schema.EmbeddedOptions
    rendering = {name for name in given if name in {spec.name for spec in schema.specs(cls)}}
    return (schema.parse(schema.PinOptions, {name: value for name, value in given.items() if name not in rendering}),
            schema.parse(cls, {name: given[name] for name in rendering}))


@contextmanager
def _console_logging():
    """The `lib_pinning` logger's lines on stderr, kept clear of the progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    logger = logging.getLogger("lib_pinning")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with logging_redirect_tqdm(loggers=[logger]):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    webui = any(arg == "--webui" or arg.startswith("--webui=") for arg in argv)
    parser = build_parser(webui)
    args = parser.parse_args(argv)
    if args.command == "report":
        return report(args.run_dir)
    if args.command == "serve":
        return serve(args)
    resuming = getattr(args, "resume", None)
    if args.command == "pin":
        if not resuming and (args.out is None or not getattr(args, "prompt", None)):
            parser.error("the following arguments are required: --out and --prompt (or --resume DIR)")
        if resuming and args.out not in (None, resuming):
            parser.error("--resume DIR continues the run in DIR: give no other --out")
    with _console_logging():
        try:
            result = _run(args, resuming, webui)
        except InputError as error:
            print(f"error: {error}", file=sys.stderr)
            return BAD_INPUT
        except KeyboardInterrupt:  # before the run started: nothing was written
            print("error: interrupted before the run started", file=sys.stderr)
            return INTERRUPTED["interrupt"]
    if result.status == "failed":
        print(f"error: the run failed: {result.record.ending.message}", file=sys.stderr)
    print(summary(result.record, result.run_dir))
    if result.status == "interrupted":
        return INTERRUPTED.get(result.record.ending.cause, INTERRUPTED["interrupt"])
    return EXIT_CODES[result.status]


def _run(args: argparse.Namespace, resuming: str | None, webui: bool):
    from .embedded_run import DEMO_SEED, demo, pin_embedded, resume

    if args.command == "demo":
        seed = DEMO_SEED if args.seed is None else _demo_number(args, "seed")
        return demo(args.out, _demo_number(args, "generations"), seed, args.device)
    if webui:
        from .workers import run as workers
    if resuming:
        given = _given(args)
        if webui:
            return workers.resume(given.pop("resume"), webui=given.pop("webui"), **given)
        return resume(given.pop("resume"), **given)
    pinning, rendering = _pin_values(args, webui)
    if webui:
        return workers.pin_workers(pinning, rendering, out=args.out)
    return pin_embedded(pinning, rendering, out=args.out)


def serve(args: argparse.Namespace) -> int:
    """Serve the embedded model until Ctrl-C or SIGTERM."""
    from .serve import serve as run_server

    try:
        options = schema.parse(schema.ServeOptions, {k: v for k, v in vars(args).items() if k != "command"})
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    run_server(options)
    return 0


def _demo_number(args: argparse.Namespace, name: str) -> int:
    spec = schema.spec_of(schema.PinOptions if name == "generations" else schema.EmbeddedOptions, name)
    return schema.check(spec, getattr(args, name))
