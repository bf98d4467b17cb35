"""A style reference image through IP-Adapter (issue 23 part 1), on the tiny stack with a random tiny IP-Adapter in
the real layout: the style steers the keyframes, FRESCO's self-attention processors and IP-Adapter's cross-attention
processors act together in one call and leave nothing behind, real-layout files load as written, and the config,
the CLI and the web form carry it."""

import json
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from fresco_v2v.attention import FrescoAttnProcessor
from fresco_v2v.cli import main
from fresco_v2v.config import RunConfig, style_image_for_frame
from fresco_v2v.errors import Cancelled, ConfigError, InputError, ModelNotFound
from fresco_v2v.flow import DISFlow
from fresco_v2v.ip_adapter import (
    cross_attention_layers,
    flatten_weights,
    ip_adapter_installed,
    load_adapter,
    tiny_weights,
)
from fresco_v2v.models import load_pipeline
from fresco_v2v.pipeline import FrescoPipeline
from fresco_v2v.runner import pipeline_signature
from fresco_v2v.testing import make_tiny_pipeline, moving_square_clip, write_test_video


def image(kind: str) -> np.ndarray:
    """Two style images CLIP must tell apart: red with a bright band, blue with a dark checker."""
    img = np.zeros((48, 40, 3), np.uint8)
    if kind == "red":
        img[..., 0] = 220
        img[10:20] = 250
    else:
        img[..., 2] = 200
        img[::8, ::8] = 0
    return img


def write_image(path, kind):
    cv2.imwrite(str(path), cv2.cvtColor(image(kind), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def pipe():
    p = make_tiny_pipeline(seed=0)
    p.ip_adapter = load_adapter("tiny", p.unet)
    return p


def frames():
    return moving_square_clip(3, 64, 64, 16, (8, 8), (4, 0))


def call(pipe, style_embeds, **kw):
    return pipe(
        frames(),
        "a painting",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        flow_estimator=DISFlow(),
        style_embeds=style_embeds,
        **kw,
    )


@pytest.fixture(scope="module")
def runs(pipe):
    """The calls the first tests read: red (with hooks recording what each attention layer runs), blue, red again,
    red at scale 0, and none; the UNet's processors and state before them."""
    unet = pipe.unet
    before = dict(unet.attn_processors), {k: v.clone() for k, v in unet.state_dict().items()}
    embeds = pipe.ip_adapter.encode([image("red"), image("blue")])  # [2, D]
    seen = {"attn1": [], "attn2": []}
    block = unet.up_blocks[3].attentions[0].transformer_blocks[0]  # a FRESCO-guided layer (up_blocks.3)

    def recorder(which):
        def hook(module, args, kwargs):
            context = kwargs.get("encoder_hidden_states")
            seen[which].append((module.processor, context))

        return hook

    handles = [block.attn1.register_forward_pre_hook(recorder("attn1"), with_kwargs=True)]
    handles.append(block.attn2.register_forward_pre_hook(recorder("attn2"), with_kwargs=True))
    try:
        red = call(pipe, embeds[[0, 0, 0]])
    finally:
        for h in handles:
            h.remove()
    return {
        "before": before,
        "embeds": embeds,
        "seen": seen,
        "red": red.frames,
        "blue": call(pipe, embeds[[1, 1, 1]]).frames,
        "red again": call(pipe, embeds[[0, 0, 0]]).frames,
        "scale 0": call(pipe, embeds[[0, 0, 0]], ip_adapter_scale=0.0).frames,
        "none": call(pipe, None).frames,
    }


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_two_style_images_give_different_keyframes_and_one_the_same(runs):
    assert not (runs["embeds"][0] - runs["embeds"][1]).abs().max() < 1e-3  # CLIP tells the images apart
    assert all(not np.array_equal(x, y) for x, y in zip(runs["red"], runs["blue"]))  # every keyframe changes
    assert same(runs["red"], runs["red again"])
    assert not same(runs["red"], runs["none"])
    # at scale 0 diffusers' processor adds nothing: installing and removing it leaves the plain result exactly
    assert same(runs["scale 0"], runs["none"])


def test_fresco_on_self_attention_and_ip_adapter_on_cross_attention_during_the_call(runs):
    seen = runs["seen"]
    assert seen["attn1"] and seen["attn2"]  # the reference pass and both denoising steps ran through them
    assert all(isinstance(proc, FrescoAttnProcessor) and ctx is None for proc, ctx in seen["attn1"])
    for proc, ctx in seen["attn2"]:
        assert isinstance(proc, IPAdapterAttnProcessor2_0) and proc.scale == [0.5]
        text, (image_tokens,) = ctx  # the UNet hands IP-Adapter's processor (text, [image tokens])
        assert text.shape == (6, 77, 32) and image_tokens.shape == (6, 1, 4, 32)  # [G*N, 1 image, 4 tokens, C]
        # the unconditional half comes from a zero image embedding: its tokens are the same for every frame
        assert torch.equal(image_tokens[0], image_tokens[2]) and not torch.equal(image_tokens[0], image_tokens[3])


def test_the_unet_is_as_before_after_a_call_and_after_a_stop(pipe, runs):
    procs, state = runs["before"]
    unet = pipe.unet

    def unchanged():
        assert all(unet.attn_processors[k] is v for k, v in procs.items())  # the very objects
        after = unet.state_dict()
        assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
        assert unet.encoder_hid_proj is None and "encoder_hid_proj" not in unet._modules
        assert unet.config.encoder_hid_dim_type is None
        assert not any(isinstance(p, IPAdapterAttnProcessor2_0) for p in unet.attn_processors.values())

    unchanged()
    never = make_tiny_pipeline(seed=0).unet.state_dict()  # a pipeline that never had an IP-Adapter
    assert set(never) == set(state) and all(torch.equal(never[k], state[k]) for k in state)
    with pytest.raises(Cancelled):
        call(pipe, runs["embeds"][[0, 0, 0]], should_stop=lambda: True)  # after the reference pass, before step 1
    unchanged()


def test_style_embeddings_need_an_ip_adapter_and_one_per_frame(pipe, runs):
    with pytest.raises(ConfigError, match=r"style_embeds: expected \[3, 16\]"):
        call(pipe, runs["embeds"])
    plain = make_tiny_pipeline(seed=0)
    with pytest.raises(ConfigError, match="style_embeds: expected a pipeline with an IP-Adapter"):
        call(plain, runs["embeds"][[0, 0, 0]])


# -- loading ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ip_files(pipe, tmp_path_factory):
    """The tiny IP-Adapter written as a user has h94/IP-Adapter on disk: models/ip-adapter_sd15.safetensors (the
    flattened keys of the real layout) beside models/image_encoder/ (save_pretrained)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("ip") / "IP-Adapter"
    (root / "models").mkdir(parents=True)
    weights = {k: v.contiguous() for k, v in flatten_weights(pipe.ip_adapter.weights).items()}
    assert {"image_proj.proj.weight", "image_proj.norm.bias", "ip_adapter.1.to_k_ip.weight"} <= set(weights)
    save_file(weights, root / "models" / "ip-adapter_sd15.safetensors")
    pipe.ip_adapter.image_encoder.save_pretrained(root / "models" / "image_encoder")
    return root


def test_real_layout_file_and_folders_load_as_written(pipe, ip_files):
    tiny = pipe.ip_adapter
    red = tiny.encode([image("red")])
    for source in (ip_files / "models" / "ip-adapter_sd15.safetensors", ip_files / "models", ip_files):
        loaded = load_adapter(str(source), pipe.unet)
        assert {p: set(s) for p, s in loaded.weights.items()} == {p: set(s) for p, s in tiny.weights.items()}
        assert all(torch.equal(loaded.weights[p][k], v) for p, s in tiny.weights.items() for k, v in s.items())
        assert torch.equal(loaded.encode([image("red")]), red)
    # an explicit image encoder folder; the scale travels with the config, not the loaded weights
    other = load_adapter(str(ip_files / "models" / "ip-adapter_sd15.safetensors"), pipe.unet, image_encoder=str(
        ip_files / "models" / "image_encoder"
    ))  # fmt: skip
    assert torch.equal(other.encode([image("red")]), red)


def test_diffusers_installs_the_files_tensors_on_the_cross_attention_layers(ip_files):
    file = ip_files / "models" / "ip-adapter_sd15.safetensors"
    p = load_pipeline("tiny", ["tiny"], device="cpu", ip_adapter=str(file))
    layers = p.ip_adapter.weights["ip_adapter"]
    with ip_adapter_installed(p, p.ip_adapter, 0.7):
        for k, attn in cross_attention_layers(p.unet):
            proc = attn.processor
            assert isinstance(proc, IPAdapterAttnProcessor2_0) and proc.scale == [0.7]
            assert torch.equal(proc.to_k_ip[0].weight, layers[f"{k}.to_k_ip.weight"])
            assert torch.equal(proc.to_v_ip[0].weight, layers[f"{k}.to_v_ip.weight"])
        (projection,) = p.unet.encoder_hid_proj.image_projection_layers
        assert torch.equal(projection.image_embeds.weight, p.ip_adapter.weights["image_proj"]["proj.weight"])
        assert p.unet.config.encoder_hid_dim_type == "ip_image_proj"
    assert p.unet.encoder_hid_proj is None and p.unet.config.encoder_hid_dim_type is None


def test_a_hub_id_loads_from_the_cache_offline(pipe, ip_files, tmp_path, monkeypatch):
    """h94's layout in a hub cache: the repo's models/ip-adapter_sd15.safetensors and models/image_encoder."""
    import shutil

    import huggingface_hub.constants

    commit = "0" * 40
    repo = tmp_path / "models--someone--IP-Adapter"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(ip_files, repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    for source in ("someone/IP-Adapter", "someone/IP-Adapter/models/ip-adapter_sd15.safetensors"):
        loaded = load_adapter(source, pipe.unet)
        assert torch.equal(
            loaded.weights["image_proj"]["proj.weight"], pipe.ip_adapter.weights["image_proj"]["proj.weight"]
        )
        assert torch.equal(loaded.encode([image("blue")]), pipe.ip_adapter.encode([image("blue")]))
    with pytest.raises(ModelNotFound, match="someone/Other.*only the local cache was searched"):
        load_adapter("someone/Other", pipe.unet)


def test_files_that_do_not_fit_are_refused_before_anything_is_installed(pipe, ip_files, tmp_path):
    from safetensors.torch import save_file

    from fresco_v2v.ip_adapter import tiny_image_encoder

    def write(weights, name):
        (tmp_path / name).mkdir()
        save_file({k: v.contiguous() for k, v in flatten_weights(weights).items()}, tmp_path / name / "w.safetensors")
        tiny_image_encoder().save_pretrained(tmp_path / name / "image_encoder")
        return str(tmp_path / name / "w.safetensors")

    good = tiny_weights(pipe.unet, 16)
    wide = {**good, "image_proj": {**good["image_proj"], "proj.weight": torch.zeros(4 * 2048, 16)}}
    with pytest.raises(ConfigError, match=r"ip_adapter: expected an image projection \[128, 16\].*\[8192, 16\]"):
        load_adapter(write(wide, "wide"), pipe.unet)  # an SDXL-width adapter
    plus = {**good, "image_proj": {"latents": torch.zeros(1, 16, 32), "proj_in.weight": torch.zeros(32, 16)}}
    with pytest.raises(ConfigError, match="Plus, Full-Face and FaceID variants are not supported"):
        load_adapter(write(plus, "plus"), pipe.unet)
    fewer = {**good, "ip_adapter": {k: v for k, v in good["ip_adapter"].items() if not k.startswith("19.")}}
    with pytest.raises(ConfigError, match=r"10 cross-attention layers.*9 layers, first mismatch '19.to_k_ip.weight'"):
        load_adapter(write(fewer, "fewer"), pipe.unet)
    alone = tmp_path / "alone.safetensors"  # the weights without an image_encoder/ beside them
    alone.write_bytes((ip_files / "models" / "ip-adapter_sd15.safetensors").read_bytes())
    with pytest.raises(ModelNotFound, match=r"no image encoder beside it .*--ip-adapter-image-encoder"):
        load_adapter(str(alone), pipe.unet)
    with pytest.raises(ConfigError, match="ip_adapter: expected a .safetensors file; pickle"):
        load_adapter(str(tmp_path / "ip-adapter.bin"), pipe.unet)  # checked before it is even looked for
    with pytest.raises(ModelNotFound, match="no such file or folder"):
        load_adapter(str(tmp_path / "missing.safetensors"), pipe.unet)


# -- config, runner, CLI ----------------------------------------------------------------------------------------------

BASE = {"input": "in.mp4", "prompt": "a painting"}


def test_config_fields_and_their_errors():
    cfg = RunConfig.from_dict(BASE | {"ip_adapter": "h94/IP-Adapter:0.7", "style_image": "a.png"})
    assert (cfg.ip_adapter_source, cfg.ip_adapter_scale) == ("h94/IP-Adapter", 0.7)
    cfg = RunConfig.from_dict(BASE | {"ip_adapter": "C:\\models\\ip.safetensors", "style_images": {"0": "a.png"}})
    assert (cfg.ip_adapter_source, cfg.ip_adapter_scale) == ("C:\\models\\ip.safetensors", 0.5)  # the default
    assert cfg.style_images == {0: "a.png"} and cfg.to_dict()["style_images"] == {"0": "a.png"}
    cases = [
        ({"style_image": "a.png"}, r"ip_adapter: expected an IP-Adapter .* for the style image a.png, got null"),
        ({"style_images": {0: "a.png"}}, "ip_adapter: expected an IP-Adapter"),
        ({"ip_adapter": "tiny"}, r"style_image: expected a style image .* for the IP-Adapter tiny, got null"),
        (
            {"ip_adapter": "tiny:-1", "style_image": "a.png"},
            r"ip_adapter: expected ID\|PATH\[:SCALE\] with a scale >= 0",
        ),
        ({"ip_adapter": "tiny", "style_images": {"x": "a.png"}}, r"style_images: expected frame indices .*'x'"),
        ({"ip_adapter": "tiny", "style_images": {0: 3}}, r"style_images.0: expected an image file path"),
        ({"ip_adapter": "tiny", "style_images": ["a.png"]}, "style_images: expected a mapping of frame index or time"),
        ({"ip_adapter_image_encoder": "h94/IP-Adapter"}, "ip_adapter: expected an IP-Adapter for the image encoder"),
        ({"ip_adapter": " ", "style_image": "a.png"}, "ip_adapter: expected ID"),
    ]
    for extra, words in cases:
        with pytest.raises(ConfigError, match=words):
            RunConfig.from_dict(BASE | extra)


def test_each_keyframe_takes_its_style_image_like_its_prompt():
    cfg = RunConfig.from_dict(BASE | {"ip_adapter": "tiny", "style_images": {4: "b.png", "0.2s": "a.png"}})
    # 10 fps: '0.2s' is frame 2; before it, the first entry's image
    assert [style_image_for_frame(cfg, k, 10.0) for k in (0, 1, 2, 3, 4, 9)] == ["a.png"] * 4 + ["b.png"] * 2
    cfg = RunConfig.from_dict(BASE | {"ip_adapter": "tiny", "style_image": "s.png", "style_images": {"0.2s": "a.png"}})
    assert [style_image_for_frame(cfg, k, 10.0) for k in (0, 1, 2)] == ["s.png", "s.png", "a.png"]
    # a variable-rate clip: the frame shown nearest the time
    assert style_image_for_frame(cfg, 1, 10.0, frame_seconds=[0.0, 0.19, 0.5]) == "a.png"


def test_the_ip_adapter_is_part_of_the_model_signature_but_not_its_scale(tmp_path):
    f = tmp_path / "ip.safetensors"
    f.write_bytes(b"x")
    base = BASE | {"model": "tiny", "style_image": "a.png"}
    sig = {t: pipeline_signature(RunConfig.from_dict(base | {"ip_adapter": t})) for t in ("tiny", "tiny:0.9", str(f))}
    assert sig["tiny"] == sig["tiny:0.9"] and sig["tiny"] != sig[str(f)]
    assert sig["tiny"] != pipeline_signature(RunConfig.from_dict(BASE | {"model": "tiny"}))
    encoder = RunConfig.from_dict(base | {"ip_adapter": "tiny", "ip_adapter_image_encoder": "o/enc"})
    assert pipeline_signature(encoder) != sig["tiny"]
    before = sig[str(f)]
    f.write_bytes(b"xy")  # rewritten at the same path: loaded again
    assert pipeline_signature(RunConfig.from_dict(base | {"ip_adapter": str(f)})) != before


FAST = ["--model", "tiny", "--steps", "2", "--strength", "1.0", "--resolution", "64", "--s-min", "2", "--s-max", "3"]
FAST += ["--batch-size", "3", "--quiet"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    write_image(d / "red.png", "red")
    write_image(d / "blue.jpg", "blue")
    return write_test_video(d / "in.mp4", moving_square_clip(5, 64, 80, 20, (8, 20), (3, 1)), Fraction(10))


def keyframes(out) -> dict[int, np.ndarray]:
    return {int(p.stem): cv2.imread(str(p)) for p in sorted((out / "keyframes").glob("*.png"))}


def test_cli_and_config_file_end_to_end_offline(clip, tmp_path, monkeypatch):
    red, blue = clip.parent / "red.png", clip.parent / "blue.jpg"
    args = ["translate", str(clip), "--prompt", "a painting", *FAST, "--ip-adapter", "tiny"]
    assert main([*args, "--style-image", str(red), "-o", str(tmp_path / "red")]) == 0
    report = json.loads((tmp_path / "red" / "run.json").read_text())
    assert report["config"]["ip_adapter"] == "tiny" and report["config"]["style_image"] == str(red)
    a = keyframes(tmp_path / "red")
    assert len(a) >= 3 and (tmp_path / "red" / "video.mp4").is_file()

    # a config file with a style image per keyframe: red, then blue from 0.2 s (frame 2) on
    conf = tmp_path / "run.yaml"
    conf.write_text(f"ip_adapter: tiny:0.8\nstyle_images: {{0: {red}, 0.2s: {blue}}}\n")
    seen = []
    real = FrescoPipeline.__call__

    def spy(self, frames, *a, **k):
        seen.append((self.ip_adapter, k["style_embeds"], k["ip_adapter_scale"]))
        return real(self, frames, *a, **k)

    monkeypatch.setattr(FrescoPipeline, "__call__", spy)
    argv = ["translate", str(clip), "--prompt", "a painting", *FAST, "--config", str(conf), "-o", str(tmp_path / "two")]
    assert main(argv) == 0
    b = keyframes(tmp_path / "two")
    assert set(a) == set(b) and not all(np.array_equal(a[k], b[k]) for k in a)
    adapter, embeds, scale = seen[0]
    keys = json.loads((tmp_path / "two" / "run.json").read_text())["batches"][0]
    want = adapter.encode([image("red") if k < 2 else cv2.cvtColor(cv2.imread(str(blue)), cv2.COLOR_BGR2RGB)
                           for k in keys])  # fmt: skip
    assert scale == 0.8 and torch.allclose(embeds, want)

    # a missing style image: one message naming it, before the video is read (exit 2)
    assert main([*args, "--style-image", str(tmp_path / "nope.png"), "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    assert main([*args[:-2], "--style-image", str(red), "-o", str(tmp_path / "y")]) == 2  # no IP-Adapter


def test_missing_or_unreadable_style_image_is_an_input_error(tmp_path):
    from fresco_v2v.ip_adapter import check_style_files

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    cfg = RunConfig.from_dict(BASE | {"ip_adapter": "tiny", "style_images": {"2s": str(bad)}})
    with pytest.raises(InputError, match=r"notes.png: not a readable image \(style_images\['2s'\]"):
        check_style_files(cfg)
    with pytest.raises(InputError, match=r"nope.png: no such style image file \(style_image\)"):
        check_style_files(RunConfig.from_dict(BASE | {"ip_adapter": "tiny", "style_image": str(tmp_path / "nope.png")}))


def test_an_ip_adapter_file_given_as_a_lora_says_what_it_is(ip_files):
    from fresco_v2v.checkpoints import LORA, check_checkpoint

    with pytest.raises(ConfigError, match="lora: .*this looks like an IP-Adapter .*pass it as --ip-adapter"):
        check_checkpoint(ip_files / "models" / "ip-adapter_sd15.safetensors", LORA, "lora")
