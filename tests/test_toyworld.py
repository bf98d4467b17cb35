"""The toy world: known-answer filters, the one-file checkpoint, loading by --model, and the factor-4 VAE path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fresco_v2v import toyworld as tw
from fresco_v2v.config import FrescoConfig
from fresco_v2v.correspondence import build_correspondence
from fresco_v2v.errors import ConfigError, ModelNotFound
from fresco_v2v.flow import DISFlow
from fresco_v2v.models import builtin_model, load_pipeline, model_note
from fresco_v2v.testing import make_tiny_pipeline, shifted_texture_clip, textured_image


@pytest.fixture(scope="module")
def random_toy_checkpoint(tmp_path_factory):
    """A toy checkpoint of untrained weights (the real one is trained by benchmarks/toyworld/train.py)."""
    unet, vae, text_encoder, _ = tw.build_toy_models(seed=3)
    vae.register_to_config(scaling_factor=0.5)
    path = tmp_path_factory.mktemp("toy") / "toy.safetensors"
    tw.save_toy_checkpoint(path, unet, vae, text_encoder, {"note": "untrained"})
    return path, unet, vae, text_encoder


def test_ground_truth_is_deterministic_and_photo_is_identity():
    frames = np.stack([textured_image(64, 64, seed=s) for s in range(2)])
    a, b = tw.ground_truth(frames), tw.ground_truth(frames)
    assert a.shape == frames.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, frames)  # a painting is not the photo
    np.testing.assert_array_equal(tw.ground_truth(frames, tw.PHOTO), frames)
    assert not np.array_equal(tw.ground_truth(frames, tw.PENCIL), a)


def test_checkpoint_round_trip(random_toy_checkpoint):
    path, unet, vae, text_encoder = random_toy_checkpoint
    assert tw.read_toy_record(path) == {"note": "untrained"}
    pipe = load_pipeline(f"toy:{path}", ["toy"], device="cpu")
    assert pipe.vae.config.scaling_factor == 0.5
    assert pipe.vae_scale_factor == 4 and pipe.decoder_factors == (32, 16, 8, 4)
    for original, loaded in ((unet, pipe.unet), (vae, pipe.vae), (text_encoder, pipe.text_encoder)):
        ref = original.state_dict()
        for k, v in loaded.state_dict().items():
            torch.testing.assert_close(v, ref[k].half().float(), rtol=0, atol=0)  # stored as float16
    # the untrained ControlNet adds nothing: its output convolutions are zero
    assert all(float(p.detach().abs().sum()) == 0 for p in pipe.controlnet.controlnet_down_blocks.parameters())


def test_checkpoint_with_a_trained_controlnet_round_trips(tmp_path):
    """A checkpoint with a (trained) canny ControlNet: it is loaded strictly, for each of several ControlNets."""
    unet, vae, text_encoder, _ = tw.build_toy_models(seed=4)
    controlnet = tw.make_toy_controlnet(unet)
    with torch.no_grad():  # as after training: output convolutions no longer zero
        for p in controlnet.controlnet_down_blocks.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    path = tw.save_toy_checkpoint(tmp_path / "cn.safetensors", unet, vae, text_encoder, {}, controlnet=controlnet)
    ref = controlnet.state_dict()
    for n in (1, 2):
        pipe = tw.load_toy_pipeline(f"toy:{path}", num_controlnets=n)
        nets = pipe.controlnet.nets if n > 1 else [pipe.controlnet]
        assert len(nets) == n and not nets[0].training
        for net in nets:
            for k, v in net.state_dict().items():
                torch.testing.assert_close(v, ref[k].half().float(), rtol=0, atol=0)
        if n == 2:
            assert nets[0] is not nets[1]  # copies: hooks on one do not reach the other
    # a ControlNet of another UNet does not load silently
    other = tw.make_toy_controlnet(tw.build_toy_models(seed=4)[0])
    bad = tw.save_toy_checkpoint(tmp_path / "bad.safetensors", unet, vae, text_encoder, {}, controlnet=other)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(bad), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors.pop(next(k for k in tensors if k.startswith("controlnet.")))
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(ModelNotFound, match="controlnet weights do not match"):
        tw.load_toy_pipeline(f"toy:{bad}")


def test_toy_spec_errors(tmp_path):
    with pytest.raises(ModelNotFound, match="train.py"):
        load_pipeline(f"toy:{tmp_path / 'missing.safetensors'}", ["toy"])
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(other))
    with pytest.raises(ModelNotFound, match="not a fresco-v2v toy checkpoint"):
        load_pipeline(f"toy:{other}", ["toy"])
    assert builtin_model("toy") and builtin_model("toy:x") and builtin_model("tiny") and not builtin_model("toyota")
    assert "toy-world" in model_note("toy") and "noise-like" in model_note("tiny") and model_note("a/b") == ""


def test_full_fresco_runs_on_a_factor_4_vae(random_toy_checkpoint):
    """Every FRESCO part at the toy world's scales (VAE factor 4: tokens at 1/32 .. 1/4 of the frame)."""
    path = random_toy_checkpoint[0]
    pipe = load_pipeline(f"toy:{path}", ["toy"], device="cpu")
    frames = shifted_texture_clip(3, 128, 128, (2, 1))
    cfg = FrescoConfig()
    cfg = cfg.__class__(cfg.attention, cfg.optimization.__class__(iterations=2))
    out = pipe(
        frames,
        tw.PAINTING,
        num_inference_steps=4,
        strength=0.5,
        guidance_scale=2.0,
        fresco=cfg,
        generator=torch.Generator().manual_seed(0),
        flow_estimator=DISFlow(),
    )
    assert len(out.frames) == 3 and out.frames[0].shape == (128, 128, 3)
    assert out.latents.shape == (3, 4, 32, 32)
    assert out.trace.optimization  # the optimizer ran at the factor-4 scales


def test_correspondence_at_the_wrong_factors_is_refused():
    pipe = make_tiny_pipeline()
    assert pipe.decoder_factors == (64, 32, 16, 8)
    frames = shifted_texture_clip(3, 128, 128, (2, 1))
    corr = build_correspondence(frames, factors=(32, 16, 8, 4))
    with pytest.raises(ConfigError, match="correspondence"):
        pipe(frames, "a photo", num_inference_steps=2, strength=0.5, correspondence=corr)


@pytest.mark.skipif(not tw.BUNDLED_CHECKPOINT.is_file(), reason="no bundled toy checkpoint")
def test_bundled_toy_model_loads_and_is_deterministic():
    """The committed checkpoint loads through --model toy and repaints a frame, the same way for the same seed.

    Its quality figures are measured by benchmarks/toyworld_eval.py, not asserted here (see its README).
    """
    frames = textured_image(128, 128, seed=5)[None]
    pipe = load_pipeline("toy", ["toy"], device="cpu")
    a = tw.translate_per_frame(pipe, frames, steps=6)
    b = tw.translate_per_frame(pipe, frames, steps=6)
    np.testing.assert_array_equal(a, b)
    assert tw.psnr(a, frames) < 30  # it changed the frame
