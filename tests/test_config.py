"""RunConfig validation: every wrong value is named with its field, before any model runs."""

from __future__ import annotations

import pytest

from fresco_v2v.config import ReferenceConfig, RunConfig
from fresco_v2v.errors import ConfigError


def cfg(**kw) -> RunConfig:
    return RunConfig(**({"input": "in.mp4", "prompt": "a painting"} | kw))


def test_defaults_are_valid():
    assert cfg().validate() is not None


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"strength": "0.5"}, "strength"),  # a quoted YAML number
        ({"steps": 20.0}, "steps"),
        ({"propagation": "false"}, "propagation"),  # a quoted YAML boolean is a non-empty, truthy string
        ({"colorize": 1}, "colorize"),
        ({"controlnet_scale": ("1.0",)}, "controlnet_scale.0"),  # a list item is named by its index
        ({"controlnet_scale": (1.0, -0.5)}, "controlnet_scale.1"),
        ({"controlnet": ("canny:",)}, "controlnet.0"),  # weights named by an empty id
        ({"controlnet": ("canny: ",)}, "controlnet.0"),
        ({"lora": "style.safetensors"}, "lora"),  # a bare string, not a list
        ({"seed": None}, "seed"),
        ({"prompt": 3}, "prompt"),
        ({"keyframe_prompts": {5: 7}}, "keyframe_prompts.5"),
        ({"foreground_masks": 3}, "foreground_masks"),
        ({"propagation_options": ["colour_lookup"]}, "propagation_options"),
        ({"propagation_options": {"colour_lokup": True}}, "propagation_options"),
        ({"propagation_options": {"colour_lookup": "yes"}}, "propagation_options.colour_lookup"),
        ({"propagation_options": {"flow": "raft"}}, "propagation_options.flow"),  # now, not after the translation
        ({"flow": "gmflow:"}, "flow"),
        ({"freeu": "true"}, "freeu"),
        ({"freeu": (1.2, 1.4, 0.9)}, "freeu"),
        ({"freeu": (1.2, 1.4, 0.9, float("nan"))}, "freeu"),
        ({"freeu": (1.2, 1.4, True, 0.2)}, "freeu"),
        ({"fresco": {"attention": {"token_occlusion": "max"}}}, "fresco.attention.token_occlusion"),
        ({"fresco": {"reference": {"controlnet": "no"}}}, "fresco.reference.controlnet"),
        ({"clip_skip": 0}, "clip_skip"),
        ({"controlnet": ("none", "canny")}, "controlnet"),
        ({"controlnet": ("none",), "controlnet_scale": (1.0, 0.5)}, "controlnet_scale"),
        ({"clip_skip": 2.0}, "clip_skip"),
    ],
)
def test_wrong_values_name_their_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        cfg(**kwargs).validate()
    assert e.value.field == field


def test_yaml_data_is_converted_then_checked():
    ok = RunConfig.from_dict({"input": "a.mp4", "prompt": "x", "controlnet_scale": 0.8, "lora": ["a.safetensors:0.7"]})
    assert ok.validate().controlnet_scale == (0.8,) and ok.lora == ("a.safetensors:0.7",)
    with pytest.raises(ConfigError, match="propagation: expected a boolean, got the string 'no'"):
        RunConfig.from_dict({"input": "a.mp4", "prompt": "x", "propagation": "no"}).validate()
    assert cfg(controlnet=("canny:my/controlnet",)).validate()
    freeu = RunConfig.from_dict({"input": "a.mp4", "prompt": "x", "freeu": [1.2, 1.5, 1, 1]}).validate()
    assert freeu.freeu == (1.2, 1.5, 1, 1) and RunConfig.from_dict(freeu.to_dict()).freeu == freeu.freeu


def test_freeu_flag(tmp_path):
    from fresco_v2v.cli import build_parser, run_config_from_args

    def parsed(*flags):
        return run_config_from_args(build_parser().parse_args(["translate", "in.mp4", "--prompt", "x", *flags])).freeu

    assert parsed() is False and parsed("--freeu") is True and parsed("--freeu", "1.2,1.5,1,1") == (1.2, 1.5, 1.0, 1.0)
    with pytest.raises(SystemExit):
        parsed("--freeu", "1.2,x")


def test_propagation_options_reach_a_propagation_config_and_survive_run_json():
    from fresco_v2v.propagate import PropagationConfig

    assert cfg().validate().propagation_config() == PropagationConfig()
    c = cfg(propagation_options={"colour_lookup": True, "flow": "dis-fine"}).validate()
    assert c.propagation_config() == PropagationConfig(colour_lookup=True, flow="dis-fine")
    assert RunConfig.from_dict(c.to_dict()).propagation_options == {"colour_lookup": True, "flow": "dis-fine"}
    with pytest.raises(ConfigError, match="did you mean 'colour_lookup'"):
        cfg(propagation_options={"colour_lokup": True}).validate()


def test_reference_section_from_a_config_file():
    data = {"input": "a.mp4", "prompt": "x", "fresco": {"reference": {"controlnet": True, "guidance_batch": False}}}
    c = RunConfig.from_dict(data).validate()
    assert c.fresco.reference == ReferenceConfig(controlnet=True, guidance_batch=False)
    assert RunConfig.from_dict(c.to_dict()).fresco.reference == c.fresco.reference
    assert RunConfig.from_dict({"input": "a.mp4", "prompt": "x"}).fresco.reference == ReferenceConfig()
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"input": "a.mp4", "prompt": "x", "fresco": {"reference": {"control_net": True}}})
    assert e.value.field == "fresco.reference" and "controlnet" in str(e.value)
