"""ControlNet conditions by type: each type its own condition images, and conditions reach the UNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_annotators import random_hed, tiny_dpt

from fresco_v2v.annotators import condition_images, depth_condition, hed_condition, load_condition_annotators
from fresco_v2v.control import canny_condition
from fresco_v2v.errors import ConfigError
from fresco_v2v.testing import make_tiny_pipeline, moving_square_clip, wake_controlnets


def _noise_for(pipe, cond: torch.Tensor) -> torch.Tensor:
    """ε_θ for two fixed latents at t = 500 with ``cond`` as every ControlNet's condition (no guidance)."""
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    emb = pipe.encode_text(["a cat", "a cat"])
    conds = [cond] * pipe.num_controlnets
    with torch.no_grad():
        return pipe.predict_noise(latents, torch.tensor(500), emb, conds, [1.0] * pipe.num_controlnets, 1.0)


@pytest.mark.parametrize("num_controlnets", [1, 2])
def test_conditions_reach_the_unet_through_a_woken_controlnet(num_controlnets):
    frames = moving_square_clip(2, 64, 64, 16, (8, 8), (3, 1))
    edges, blank = canny_condition(frames), torch.zeros(2, 3, 64, 64)
    asleep = make_tiny_pipeline(num_controlnets=num_controlnets)
    # from_unet zero-initialises the output convolutions: an untrained ControlNet cannot show a condition
    torch.testing.assert_close(_noise_for(asleep, edges), _noise_for(asleep, blank))
    awake = wake_controlnets(make_tiny_pipeline(num_controlnets=num_controlnets))
    change = (_noise_for(awake, edges) - _noise_for(awake, blank)).abs().mean()
    assert change > 0.02 * _noise_for(awake, blank).abs().mean()  # 11% measured


@pytest.fixture(scope="module")
def annotator_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotators")
    save_file(random_hed(seed=3).state_dict(), root / "ControlNetHED.safetensors")
    tiny_dpt(seed=4).save_pretrained(root / "dpt")
    return root


def test_each_type_gets_its_own_condition_images(annotator_files):
    frames = moving_square_clip(3, 48, 64, 16, (8, 8), (3, 1))
    types = ("canny", "depth:my/depth-controlnet", "hed", "canny:other")
    loaded = load_condition_annotators(
        types,
        depth_estimator=str(annotator_files / "dpt"),
        hed_annotator=str(annotator_files / "ControlNetHED.safetensors"),
    )
    assert set(loaded) == {"depth", "hed"}
    got = condition_images(types, frames, loaded, 100, 200)
    assert [c.shape for c in got] == [(3, 3, 48, 64)] * 4
    torch.testing.assert_close(got[0], canny_condition(frames, 100, 200))
    torch.testing.assert_close(got[1], depth_condition(frames, loaded["depth"]))
    torch.testing.assert_close(got[2], hed_condition(frames, loaded["hed"]))
    torch.testing.assert_close(got[3], got[0])
    assert not torch.equal(got[1], got[2]) and not torch.equal(got[0], got[2])


def test_canny_alone_loads_no_annotator():
    assert load_condition_annotators(("canny",), depth_estimator="absent/x", hed_annotator="absent/y") == {}
    frames = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(ConfigError, match="controlnet"):
        condition_images(("hed",), frames, {})  # a type whose annotator was not loaded


def test_translate_feeds_each_controlnet_its_type(annotator_files, tmp_path, monkeypatch):
    """The runner's path: `--controlnet canny --controlnet hed` on the tiny stack gives the pipeline the canny
    images for the first ControlNet and the HED images for the second."""
    from fresco_v2v.cli import build_parser, run_config_from_args
    from fresco_v2v.runner import translate_video
    from fresco_v2v.testing import write_test_video

    src = write_test_video(tmp_path / "in.mp4", moving_square_clip(3, 64, 64, 16, (8, 8), (3, 1)), 24)
    args = build_parser().parse_args(
        ["translate", str(src), "--prompt", "a painting", "-o", str(tmp_path / "run"), "--model", "tiny"]
        + ["--steps", "1", "--strength", "1.0", "--resolution", "64", "--s-min", "2", "--s-max", "2", "--quiet"]
        + ["--controlnet", "canny", "--controlnet", "hed"]
        + ["--hed-annotator", str(annotator_files / "ControlNetHED.safetensors")]
    )
    cfg = run_config_from_args(args)
    pipe = make_tiny_pipeline(num_controlnets=2)
    seen = []
    original = type(pipe).__call__

    def spy(self, frames, *a, control_images=None, **k):
        seen.append((np.array(frames), control_images))
        return original(self, frames, *a, control_images=control_images, **k)

    monkeypatch.setattr(type(pipe), "__call__", spy)
    translate_video(cfg, progress=False, pipeline=pipe)
    assert seen
    hed = load_condition_annotators(("hed",), depth_estimator="", hed_annotator=cfg.hed_annotator)["hed"]
    for frames, controls in seen:
        assert len(controls) == 2
        torch.testing.assert_close(controls[0], canny_condition(frames))
        torch.testing.assert_close(controls[1], hed_condition(frames, hed))
