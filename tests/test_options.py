"""The options schema: one definition, from which the README's tables, the flags and every check come."""

import json
from pathlib import Path

import pytest

from lib_pinning import options as schema
from lib_pinning.cli import build_parser
from lib_pinning.options import (SCRIPT_CONTROLS, EmbeddedOptions, OptionError, PinOptions, ServeOptions,
                                 WorkerOptions, parse, specs)

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_tables_are_the_schemas():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert schema.readme_with_tables(readme) == readme, "run: python -m lib_pinning.options README.md"
    assert "| 26 | `punctuation` |" in readme and "| `--keep WORD` |" in readme


@pytest.mark.parametrize("rendering", [EmbeddedOptions, WorkerOptions, ServeOptions])
def test_every_option_has_a_label_a_help_and_a_flag_unique_to_it(rendering):
    every = [*specs(PinOptions), *specs(rendering)] if rendering is not ServeOptions else [*specs(ServeOptions)]
    for field in (lambda spec: spec.name, lambda spec: spec.label, lambda spec: spec.cli_flag):
        values = [field(spec) for spec in every if spec.flag != ""]  # flag "": not on the command line
        assert len(values) == len(set(values))
    assert [spec.name for spec in every if spec.flag == ""] == (
        ["evolve", "tag_pool", "mutation_rate"] if rendering is not ServeOptions else [])  # prompt evolution's
    assert all(len(spec.help) > 15 for spec in every)
    assert [spec.name for spec in SCRIPT_CONTROLS][:25] == [  # version 0.1's positional order, kept
        "targets", "loss_mode", "granularity", "generations", "cma_seed", "sigma", "init_radius", "log", "lambda_",
        "mu", "weights", "cs", "damps", "ccum", "ccov1", "ccovmu", "cmatrix", "size_limit", "size_limit_error",
        "size_limit_weight", "hyperbatch_weights", "hyperbatch_weight_type", "hyperbatch_weight_scale",
        "hyperbatch_force", "fork_strength"]


@pytest.mark.parametrize("webui", [False, True])
def test_every_flag_of_pin_and_serve_comes_from_the_schema(webui):
    commands = build_parser(webui)._subparsers._group_actions[0].choices
    flags = {action.option_strings[0] for action in commands["pin"]._actions if action.option_strings}
    rendering = WorkerOptions if webui else EmbeddedOptions
    assert flags == {"-h", "--out"} | {spec.cli_flag for spec in [*specs(PinOptions), *specs(rendering)]
                                       if spec.flag != ""}
    flags = {action.option_strings[0] for action in commands["serve"]._actions if action.option_strings}
    assert flags == {"-h"} | {spec.cli_flag for spec in specs(ServeOptions)}


@pytest.mark.parametrize("value", ["ftp://host", "http://", "127.0.0.1:7860", "http://host:port", "http://h/?q=1",
                                   ["http://ok", 5]])
def test_a_worker_address_that_is_not_one_is_refused(value):
    with pytest.raises(OptionError, match=r"WebUI \(webui\): must be"):
        parse(WorkerOptions, {"webui": value if isinstance(value, list) else [value]})
    assert parse(WorkerOptions, {"webui": ["http://a:7860/", "http://a:7860"]}).webui == ("http://a:7860",)


@pytest.mark.parametrize("name, value", [  # each of these emptied an earlier run's folder before its exit 2
    ("seed", -1), ("cma_seed", -2), ("seed", 2**64), ("sigma", 1e300), ("init_radius", 1e300),
    ("cfg_scale", 1e300), ("hyperbatch_weight_scale", 1e300), ("ccovmu", 5), ("ccov1", 5), ("batch", 10**6),
    ("size", 100_000), ("cmatrix", [[1e300]]), ("cmatrix", "[[Infinity]]"), ("fork_strength", float("nan")),
])
def test_values_that_overflow_or_make_no_sense_are_refused_by_the_schema(name, value):
    cls = PinOptions if name in PinOptions.__dataclass_fields__ else EmbeddedOptions
    with pytest.raises(OptionError, match=rf"\({name}\): "):
        parse(cls, {name: value})


def test_formula_defaults_resolve_in_order_and_explicit_values_stay():
    resolved = schema.resolve(parse(PinOptions, {"lambda_": 9, "size_limit": 2.0}), schema.Context(genes=20,
                                                                                                  image_seed=5))
    assert (resolved.lambda_, resolved.mu, resolved.generations, resolved.cma_seed) == (9, 4, 32, 5)
    assert (resolved.size_limit_error, resolved.size_limit_weight) == (0.02, 20.0)
    assert resolved.cs == -1  # left to DEAP's formula
    assert json.loads(json.dumps(schema.to_record(resolved)))["lambda_"] == 9


def test_a_float_option_given_as_minus_one_is_the_same_as_its_default():
    assert parse(PinOptions, {"cs": -1}) == PinOptions() == parse(PinOptions, {"cs": "-1"})
