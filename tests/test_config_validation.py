"""Config validation (issue 21 point 4): strict types at every level, errors named by their path in a config file and
worded for a YAML user, and nothing but a ConfigError for any mapping a config file can hold."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fresco_v2v.config import (
    AttentionConfig,
    FrescoConfig,
    OptimizationConfig,
    ReferenceConfig,
    RunConfig,
    StepWindow,
    propagation_config,
    to_dict,
)
from fresco_v2v.errors import ConfigError

BASE = {"input": "in.mp4", "prompt": "a painting"}
#: pydantic's own wording; none of it may reach a user.
PYDANTIC_WORDS = (
    "pydantic",
    "Input should",
    "validation error",
    "Field required",
    "Extra inputs",
    "Unexpected keyword",
)


def yaml_error(text: str) -> ConfigError:
    """The ConfigError of a YAML config file's text (input and prompt given)."""
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(BASE | yaml.safe_load(text)).validate()
    assert not any(w in str(e.value) for w in PYDANTIC_WORDS), str(e.value)
    return e.value


def test_a_quoted_false_is_refused_with_its_full_path():
    """On main this was accepted as a truthy string and the feature stayed on."""
    e = yaml_error('fresco: {attention: {spatial_guided: "false"}}')
    assert str(e) == "fresco.attention.spatial_guided: expected a boolean, got the string 'false'"
    assert e.field == "fresco.attention.spatial_guided" and e.given == "false"


def test_a_quoted_number_is_a_config_error_not_a_type_error():
    e = yaml_error('fresco: {attention: {lambda_s: "5"}}')
    assert str(e) == "fresco.attention.lambda_s: expected a finite number > 0, got the string '5'"
    # an unquoted YAML integer is a fine number
    assert RunConfig.from_dict(BASE | {"fresco": {"attention": {"lambda_s": 5}}}).fresco.attention.lambda_s == 5.0


def test_a_boolean_is_not_a_count():
    """On main `max_frames: true` meant one frame."""
    e = yaml_error("max_frames: true")
    assert str(e) == "max_frames: expected an integer >= 1, or null (every frame), got true (a boolean)"
    assert yaml_error("steps: 20.0").field == "steps"  # nor is a float
    assert yaml_error('steps: "20"').field == "steps"  # nor a string
    assert yaml_error("fresco: {optimization: {iterations: false}}").field == "fresco.optimization.iterations"
    assert RunConfig.from_dict(BASE | {"max_frames": None}).max_frames is None


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_numbers_are_finite(value):
    e = yaml_error(f"guidance_scale: {value}")
    assert e.field == "guidance_scale" and "(not a finite number)" in str(e)
    assert yaml_error(f"propagation_options: {{error_scale: {value}}}").field == "propagation_options.error_scale"
    assert yaml_error(f"controlnet_scale: [1.0, {value}]").field == "controlnet_scale.1"


def test_unknown_names_say_what_was_meant():
    e = yaml_error("guidance_scle: 5")
    assert e.field == "config" and "did you mean 'guidance_scale'" in str(e) and e.given == ["guidance_scle"]
    e = yaml_error("fresco: {attention: {lamda_s: 5, cross_frames: false}}")
    assert e.field == "fresco.attention" and "'cross_frame', 'lambda_s'" in str(e)
    e = yaml_error("fresco: {atention: {}}")
    assert e.field == "fresco" and "did you mean 'attention'" in str(e)
    e = yaml_error("propagation_options: {colour_lokup: true}")
    assert e.field == "propagation_options" and "did you mean 'colour_lookup'" in str(e)
    assert yaml_error("on: 1").given == [True]  # YAML 1.1 reads the key `on` as true
    assert yaml_error("fresco: {attention: {spatial_window: {begin: 0}}}").field == "fresco.attention.spatial_window"


@pytest.mark.parametrize(
    "text,field",
    [
        ("propagation_options: {error_scale: '0.04'}", "propagation_options.error_scale"),
        ("propagation_options: {workers: true}", "propagation_options.workers"),
        ("propagation_options: {colour_lookup: 1}", "propagation_options.colour_lookup"),
        ("propagation_options: {patch_synthesis: 'false'}", "propagation_options.patch_synthesis"),
        ("propagation_options: {detail_range_radius: 1.0}", "propagation_options.detail_range_radius"),
        ("propagation_options: {seed: -1}", "propagation_options.seed"),
        ("propagation_options: [colour_lookup]", "propagation_options"),
        ("propagation_options: {1: true}", "propagation_options"),
    ],
)
def test_propagation_options_are_strict(text, field):
    assert yaml_error(text).field == field


def test_nested_values_are_named_by_their_path():
    assert str(yaml_error("fresco: {optimization: {window: {start: 0.5, end: 0.2}}}")) == (
        "fresco.optimization.window: expected 0 <= start <= end <= 1, got the mapping {'start': 0.5, 'end': 0.2}"
    )
    assert yaml_error("fresco: {optimization: {blocks: [0, 4]}}").field == "fresco.optimization.blocks.1"
    assert yaml_error("fresco: {attention: {spatial_window: {axis: time}}}").field == (
        "fresco.attention.spatial_window.axis"
    )
    assert yaml_error("fresco: {reference: 3}").field == "fresco.reference"
    assert yaml_error("keyframe_prompts: {'2.5s': 3}").field == "keyframe_prompts.2.5s"
    # made in Python, a section names its fields the same way, and so does dataclasses.replace
    with pytest.raises(ConfigError, match=r"^fresco\.attention\.lambda_t: expected a finite number > 0, got 0$"):
        FrescoConfig(AttentionConfig(lambda_t=0))
    with pytest.raises(ConfigError, match=r"^fresco\.reference\.controlnet: expected a boolean, got 1$"):
        dataclasses.replace(ReferenceConfig(), controlnet=1)
    with pytest.raises(ConfigError, match="^steps: "):
        dataclasses.replace(RunConfig(**BASE), steps=0)


def test_keyframe_prompt_keys_that_would_fail_later_are_refused_now():
    for key in ("infs", "-1s", "²", "-3", True):
        with pytest.raises(ConfigError, match="keyframe_prompts: expected frame indices"):
            RunConfig.from_dict(BASE | {"keyframe_prompts": {key: "snow"}})
    c = RunConfig.from_dict(BASE | {"keyframe_prompts": {"12": "snow", "2.5s": "rain", 3: "sun"}})
    assert c.keyframe_prompts == {12: "snow", "2.5s": "rain", 3: "sun"}


def test_plain_data_keeps_its_shape_through_run_json():
    """run.json stores to_dict() and a resumed run compares it: a config goes there and back unchanged."""
    c = RunConfig.from_dict(
        BASE
        | {
            "lora": "style.safetensors:0.7",
            "controlnet": ["canny", "depth"],
            "controlnet_scale": [1, 0.5],
            "keyframe_prompts": {"12": "snow"},
            "freeu": [1.2, 1.5, 1, 1],
            "fresco": {"attention": {"layers": ["up_blocks.3"]}, "optimization": {"window": {"end": 0.5}}},
            "propagation_options": {"colour_lookup": True},
        }
    ).validate()
    d = c.to_dict()
    assert d["lora"] == ["style.safetensors:0.7"] and d["controlnet_scale"] == [1.0, 0.5]
    assert d["freeu"] == [1.2, 1.5, 1.0, 1.0] and d["keyframe_prompts"] == {"12": "snow"}
    assert d["fresco"]["optimization"]["window"] == {"start": 0.0, "end": 0.5, "axis": "steps"}
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == c
    assert set(d) == {f.name for f in dataclasses.fields(RunConfig)}


def test_a_config_file_error_reaches_the_command_line_in_our_words(tmp_path, capsys):
    from fresco_v2v.cli import main

    conf = tmp_path / "run.yaml"
    conf.write_text('fresco:\n  attention:\n    spatial_guided: "false"\n')
    assert main(["translate", "in.mp4", "--prompt", "x", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err == "fresco: error: fresco.attention.spatial_guided: expected a boolean, got the string 'false'\n"
    conf.write_text("fresco: [attention]\n")  # a flag that sets a FRESCO field needs the section to be a mapping
    assert main(["translate", "in.mp4", "--prompt", "x", "--config", str(conf), "--lambda-s", "3"]) == 2
    assert "fresco: expected a mapping of FRESCO sections, got the list ['attention']" in capsys.readouterr().err


def test_flag_help_and_defaults_come_from_the_config_classes():
    from fresco_v2v.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["translate"]
    helps = {a.dest: a.help for a in sub._actions}
    assert helps["steps"] == "denoising steps (default 20)"
    assert helps["controlnet"].endswith("(default canny)")
    assert helps["lambda_s"] == "λ_s of spatial-guided attention (eq. 7) (default 5.0)"
    assert helps["opt_iterations"] == "Adam iterations K (default 20)"
    assert "default" not in helps["max_frames"]  # None: no default to show
    from fresco_v2v.cli import _RUN_FLAGS

    assert all(helps[name] and not helps[name].startswith(" (") for name in _RUN_FLAGS)  # each field describes itself
    # parsing leaves out the flags not given, so the config file and the classes' defaults apply
    args = build_parser().parse_args(["translate", "in.mp4", "--prompt", "x"])
    assert "steps" not in vars(args) and "lambda_s" not in vars(args)


def test_step_windows_are_checked_by_the_section_that_holds_them():
    w = StepWindow(0.5, 0.2)  # a window alone has no place to name yet
    with pytest.raises(ConfigError, match=r"^fresco\.optimization\.window: "):
        OptimizationConfig(window=w)
    with pytest.raises(ConfigError, match="^axis: expected 'steps' or 'noise', got the string 'time'$"):
        StepWindow(axis="time")


# -- any mapping a YAML file can hold: a RunConfig or a ConfigError, never another exception ---------------------


def _propagation_defaults() -> dict:
    from fresco_v2v.propagate import PropagationConfig  # torch: only for the tests that need it

    return to_dict(PropagationConfig())


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["false", "true", "5", "0.5", "auto", "dis", "canny", "none", "up_blocks.2", "2.5s", "12"]),
)
keys = st.one_of(st.text(max_size=8), st.integers(-3, 30), st.booleans(), st.none())
yaml_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)


def _mostly(default, other, one_in: int = 5):
    """``default`` four times in five, else a draw of ``other``: a config with a few wrong values, not all wrong, so
    that the checks between fields and ``validate()`` run too."""
    return st.integers(0, one_in - 1).flatmap(lambda i: other if i == 0 else st.just(default))


def _mappings(defaults: dict, nested: dict | None = None):
    """Mappings of real names (a random subset, each value its default as plain data or a random YAML value, or
    ``nested[name]``), sometimes with an unknown name too."""
    nested = nested or {}
    values = {name: _mostly(v, nested.get(name, yaml_values)) for name, v in defaults.items()}
    unknown = st.just({}) | st.dictionaries(keys, yaml_values, max_size=1)
    return st.builds(lambda real, extra: real | extra, st.fixed_dictionaries({}, optional=values), unknown)


DEFAULTS = to_dict(RunConfig(**BASE))
sections = _mappings(
    DEFAULTS["fresco"],
    {name: _mappings(DEFAULTS["fresco"][name]) | yaml_values for name in ("attention", "optimization", "reference")},
)
run_data = st.builds(
    lambda base, data: base | data,  # mostly with the two required fields
    _mostly(BASE, st.just({})),
    _mappings(DEFAULTS, {"fresco": sections | yaml_values}),
)
propagation_data = st.deferred(lambda: _mappings(_propagation_defaults())) | yaml_values

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(run_data)
def test_any_mapping_is_a_run_config_or_a_config_error(data):
    try:
        cfg = RunConfig.from_dict(data).validate()
    except ConfigError as e:
        assert not any(w in str(e) for w in PYDANTIC_WORDS), str(e)
        return
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # what validates survives run.json


@FAST
@given(propagation_data)
def test_any_propagation_options_are_a_config_or_a_config_error(options):
    try:
        cfg = propagation_config(options)
    except ConfigError as e:
        assert e.field.startswith("propagation_options") and not any(w in str(e) for w in PYDANTIC_WORDS), str(e)
        return
    for name in cfg.field_names():
        value = getattr(cfg, name)
        assert not isinstance(value, float) or math.isfinite(value)
