"""SDXL: the layout FRESCO reads from the UNet, SDXL's conditioning per frame, its ControlNets, loading, the CLI.

The guarantees every stack shares (determinism, no trace on the UNet, anchors, all-off attention) are parametrized
over tiny and tiny-xl in test_pipeline.py and test_attention.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fresco_v2v import checkpoints, models
from fresco_v2v.config import AttentionConfig, FrescoConfig, OptimizationConfig
from fresco_v2v.errors import ConfigError
from fresco_v2v.flow import DISFlow
from fresco_v2v.models import load_pipeline
from fresco_v2v.sdxl import FrescoXLPipeline, micro_conditioning, zero_blank
from fresco_v2v.testing import (
    make_tiny_pipeline,
    make_tiny_xl_pipeline,
    moving_square_clip,
    wake_controlnets,
    write_test_video,
)


@pytest.fixture(scope="module")
def xl():
    return make_tiny_xl_pipeline(seed=0)


@pytest.fixture(scope="module")
def clip():
    return moving_square_clip(6, 64, 64, 20, (10, 16), (4, 2))


def run(pipe, frames, seed=0, **kw):
    kw.setdefault("num_inference_steps", 4)
    kw.setdefault("flow_estimator", DISFlow())
    return pipe(frames, kw.pop("prompt", "a painting of a dog"), generator=torch.Generator().manual_seed(seed), **kw)


def test_layout_is_read_from_the_unet(xl):
    """SDXL: 3 decoder blocks at 1/32, 1/16, 1/8, attention in blocks 0-1; SD1.5's stays (64, 32, 16, 8), 2-3."""
    assert isinstance(xl, FrescoXLPipeline) and xl.decoder_factors == (32, 16, 8)
    assert xl.fresco_layout(FrescoConfig()) == (("up_blocks.0", "up_blocks.1"), (0, 1, 2))
    sd = make_tiny_pipeline(seed=0)
    assert sd.decoder_factors == (64, 32, 16, 8)
    assert sd.fresco_layout(FrescoConfig()) == (("up_blocks.2", "up_blocks.3"), (0, 1, 2, 3))
    chosen = FrescoConfig(AttentionConfig(layers=("up_blocks.1",)), OptimizationConfig(blocks=(2,)))
    assert xl.fresco_layout(chosen) == (("up_blocks.1",), (2,))


def test_a_block_the_unet_lacks_is_refused_before_any_model_runs(xl, clip):
    with pytest.raises(ConfigError) as err:
        run(xl, clip[:3], fresco=FrescoConfig(optimization=OptimizationConfig(blocks=(0, 3))))
    assert err.value.field == "fresco.optimization.blocks" and "0..2" in str(err.value)


def test_optimization_acts_at_each_sdxl_scale_and_changes_the_latents(xl, clip):
    on = run(xl, clip[:4])
    off = run(xl, clip[:4], fresco=FrescoConfig(optimization=OptimizationConfig(enabled=False)))
    assert {t.block for t in on.trace.optimization} == {0, 1, 2} and not off.trace.optimization
    assert all(t.loss_end < t.loss_start for t in on.trace.optimization)
    change = (on.latents - off.latents).abs().mean() / off.latents.abs().mean()
    assert change > 1e-3


def test_conditioning_reaches_the_unet_per_frame_and_half(xl, clip):
    """Every UNet call (reference pass and steps) gets SDXL's added conditions for each of its 2N items: the
    frame size as time ids, the pooled embedding (zeros for the blank negative prompt), 80-wide states."""
    calls = []

    def on_unet(module, args, kwargs):
        calls.append((args[0].shape[0], kwargs["encoder_hidden_states"].clone(), kwargs["added_cond_kwargs"]))

    handle = xl.unet.register_forward_pre_hook(on_unet, with_kwargs=True)
    try:
        out = run(xl, clip[:3], negative_prompt="", guidance_scale=7.5)
    finally:
        handle.remove()
    assert len(calls) == len(out.trace.timesteps) + 1
    for batch, states, added in calls:
        assert batch == 6 and states.shape == (6, 77, 80)
        assert torch.equal(added["time_ids"], torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 6))
        assert added["text_embeds"].shape == (6, 32)
        assert not added["text_embeds"][:3].any() and not states[:3].any()  # the blank negative: zeros
        assert added["text_embeds"][3:].abs().sum() > 0


def test_both_encoders_penultimate_states_side_by_side(xl):
    """SDXL conditions on each encoder's penultimate layer (no final norm); clip_skip 2 takes the one before."""
    ids = xl.tokenizer(["a dog"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    ids_2 = xl.tokenizer_2(["a dog"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids_2[0, -1] == xl.tokenizer_2.convert_tokens_to_ids("!") != ids[0, -1]  # SDXL's second pads with "!"
    with torch.no_grad():
        one = xl.text_encoder(ids, output_hidden_states=True)
        two = xl.text_encoder_2(ids_2, output_hidden_states=True)
        cond = xl.encode_prompts(["a dog"], 1, (64, 128))
        skip2 = xl.encode_prompts(["a dog"], 2, (64, 128))
    torch.testing.assert_close(cond.states, torch.cat([one.hidden_states[-2], two.hidden_states[-2]], dim=-1))
    torch.testing.assert_close(skip2.states, torch.cat([one.hidden_states[-3], two.hidden_states[-3]], dim=-1))
    torch.testing.assert_close(cond.added["text_embeds"], two.text_embeds)
    assert cond.added["time_ids"].tolist() == [[64, 128, 0, 0, 64, 128]]


def test_micro_conditioning_and_blank_prompts():
    ids = micro_conditioning((512, 768), 3, torch.float32, "cpu")
    assert ids.shape == (3, 6) and ids[2].tolist() == [512, 768, 0, 0, 512, 768]
    states, pooled = torch.ones(3, 77, 4), torch.ones(3, 2)
    s, p = zero_blank(states, pooled, ["a cat", " ", "a dog"])
    assert s[1].abs().sum() == 0 and p[1].abs().sum() == 0 and s[[0, 2]].eq(1).all() and p[[0, 2]].eq(1).all()


def test_an_sdxl_controlnet_takes_the_added_conditions_and_its_condition_reaches_the_unet(clip):
    pipe = wake_controlnets(make_tiny_xl_pipeline(seed=0))
    seen = []
    handle = pipe.controlnet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(set(kw["added_cond_kwargs"])), with_kwargs=True
    )
    try:
        edges = run(pipe, clip[:3], num_inference_steps=2)
        blank = run(pipe, clip[:3], num_inference_steps=2, control_images=[torch.zeros(3, 3, 64, 64)])
    finally:
        handle.remove()
    assert seen and all(s == {"text_embeds", "time_ids"} for s in seen)
    assert (edges.latents - blank.latents).abs().mean() > 1e-3 * blank.latents.abs().mean()


def test_an_sd15_controlnet_is_refused_for_sdxl(tmp_path):
    """A ControlNet of the other family would fail deep in the UNet; it is refused with both widths named."""
    sd_net = make_tiny_pipeline(seed=0).controlnet
    sd_net.save_pretrained(tmp_path / "sd15_cn")
    pipe = make_tiny_xl_pipeline(seed=0, num_controlnets=0)
    pipe.register_modules(controlnet=sd_net)
    with pytest.raises(ConfigError, match="cross-attention width 80.*an SDXL ControlNet") as err:
        models._check_controlnet_fits(pipe, "tiny-xl")
    assert err.value.field == "controlnet"


def test_family_and_default_controlnets(tmp_path):
    assert models.model_family("tiny-xl") == checkpoints.SDXL and models.model_family("tiny") == checkpoints.SD15
    make_tiny_xl_pipeline(seed=0, num_controlnets=0).save_pretrained(tmp_path / "xl")
    assert json.loads((tmp_path / "xl" / "model_index.json").read_text())["_class_name"] == "FrescoXLPipeline"
    assert models.model_family(str(tmp_path / "xl")) == checkpoints.SDXL
    assert models.default_controlnet("canny", checkpoints.SDXL) == "diffusers/controlnet-canny-sdxl-1.0"
    assert models.default_controlnet("canny", checkpoints.SD15) == "lllyasviel/sd-controlnet-canny"
    with pytest.raises(ConfigError, match="hed:ID_OR_PATH"):
        models.default_controlnet("hed", checkpoints.SDXL)


def test_sdxl_folder_round_trip(tmp_path, xl, clip):
    """An SDXL diffusers folder loads as FrescoXLPipeline with every weight, and translates as the original."""
    xl.save_pretrained(tmp_path / "xl")
    pipe = load_pipeline(str(tmp_path / "xl"), [], device="cpu", dtype="float32")
    assert isinstance(pipe, FrescoXLPipeline) and pipe.controlnet is None
    bare = make_tiny_xl_pipeline(seed=0, num_controlnets=0)
    a, b = run(pipe, clip[:3], num_inference_steps=2), run(bare, clip[:3], num_inference_steps=2)
    assert torch.equal(a.latents, b.latents)


def test_single_sdxl_file_loads_offline_with_every_tensor(tmp_path, monkeypatch, xl, clip):
    """tiny-xl written in SDXL's single-file layout (both text encoders, UNet with label_emb, VAE) loads through
    load_pipeline's single-file path, configured from a config folder as the shipped sdxl/ one (the tiny sizes),
    and every tensor comes back where it came from."""
    from ldm_layout import ldm_sdxl_checkpoint

    folder = tmp_path / "configs"
    xl.save_pretrained(folder)
    for f in folder.rglob("*.safetensors"):
        f.unlink()  # configs only: the weights must come from the file
    real = checkpoints.config_folder
    monkeypatch.setattr(checkpoints, "config_folder", lambda kind: folder if kind in ("sd15", "sdxl") else real(kind))
    parts = {k: getattr(xl, k).state_dict() for k in ("unet", "vae", "text_encoder", "text_encoder_2")}
    path = tmp_path / "tiny_xl.safetensors"
    save_file({k: v.contiguous() for k, v in ldm_sdxl_checkpoint(*parts.values(), layers=1).items()}, path)
    assert checkpoints.check_checkpoint(path, checkpoints.BASE, "model").kind == checkpoints.SDXL
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = load_pipeline(str(path), [], device="cpu", dtype="float32")
    assert isinstance(pipe, FrescoXLPipeline)
    for name, want in parts.items():
        got = getattr(pipe, name).state_dict()
        assert set(want) <= set(got), (name, sorted(set(want) - set(got))[:3])
        different = [k for k in want if not torch.equal(got[k], want[k].reshape(got[k].shape))]
        assert not different, (name, different[:3])
    bare = make_tiny_xl_pipeline(seed=0, num_controlnets=0)
    assert np.array_equal(
        run(pipe, clip[:3], num_inference_steps=2).frames[0], run(bare, clip[:3], 0, num_inference_steps=2).frames[0]
    )


def test_shipped_sdxl_configs_are_sdxl_base():
    """The shipped configs build SDXL 1.0 base's architecture: 2.567 B UNet parameters (meta device, no memory)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig

    folder = checkpoints.config_folder(checkpoints.SDXL)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6) == 2567
    assert unet.add_embedding.linear_1.in_features == 2816 and unet.config.cross_attention_dim == 2048
    two = CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
    assert (two.hidden_size, two.num_hidden_layers, two.projection_dim) == (1280, 32, 1280)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "FrescoXLPipeline" and index["force_zeros_for_empty_prompt"] is True


def test_cli_translates_with_tiny_xl_end_to_end(tmp_path):
    from fresco_v2v.cli import main
    from fresco_v2v.video import read_video

    src = write_test_video(tmp_path / "in.mp4", moving_square_clip(8, 64, 80, 20, (8, 20), (3, 1)), 24)
    args = ["translate", str(src), "--prompt", "a painting", "-o", str(tmp_path / "out"), "--model", "tiny-xl"]
    fast = ["--steps", "2", "--strength", "1.0", "--resolution", "64", "--s-min", "2", "--s-max", "4"]
    assert main([*args, *fast, "--batch-size", "3", "--quiet"]) == 0
    assert read_video(tmp_path / "out" / "video.mp4", short_side=None).num_frames == 8
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert "tiny-xl" in report["note"] and len(list((tmp_path / "out" / "keyframes").glob("*.png"))) == len(
        report["keyframes"]
    )


def test_an_sdxl_kohya_lora_acts_on_both_text_encoders_and_the_unet(tmp_path, xl):
    """kohya's SDXL LoRA names (lora_unet_*, lora_te1_*, lora_te2_*) load through the SDXL LoRA loader."""
    from fresco_v2v.models import LoraSpec

    gen = torch.Generator().manual_seed(0)
    te_ends = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    targets = [("lora_unet_", n, m) for n, m in xl.unet.named_modules() if n.endswith(("to_q", "to_k", "to_v"))]
    targets += [("lora_te1_text_model_", n, m) for n, m in xl.text_encoder.named_modules() if n.endswith(te_ends)]
    targets += [("lora_te2_", n, m) for n, m in xl.text_encoder_2.named_modules() if n.endswith(te_ends)]
    lora = {}
    for prefix, name, module in targets:
        key = prefix + name.replace(".", "_")
        lora[key + ".lora_down.weight"] = torch.randn(2, module.in_features, generator=gen)
        lora[key + ".lora_up.weight"] = torch.randn(module.out_features, 2, generator=gen)
        lora[key + ".alpha"] = torch.tensor(1.0)
    save_file(lora, tmp_path / "xl_lora.safetensors")
    pipe = load_pipeline("tiny-xl", ["tiny-xl"], loras=[LoraSpec(str(tmp_path / "xl_lora.safetensors"), 0.5)])
    x = torch.randn(1, 4, 8, 8, generator=gen)
    with torch.no_grad():
        a, b = xl.encode_prompts(["a dog"], 1, (64, 64)), pipe.encode_prompts(["a dog"], 1, (64, 64))
        unet_change = (xl.unet(x, 500, **a.model_kwargs()).sample - pipe.unet(x, 500, **a.model_kwargs()).sample).abs()
    assert (a.states - b.states)[..., :32].abs().mean() > 1e-2  # the first encoder's part of the states
    assert (a.states - b.states)[..., 32:].abs().mean() > 1e-2  # the second's
    assert (a.added["text_embeds"] - b.added["text_embeds"]).abs().mean() > 1e-2 and unet_change.mean() > 1e-3
