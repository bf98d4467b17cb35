"""Single checkpoint files: offline loading in the real LDM layout, family detection, LoRA formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fresco_v2v import checkpoints, models
from fresco_v2v.errors import ConfigError
from fresco_v2v.models import LoraSpec, load_pipeline

TESTS = Path(__file__).resolve().parent

# The real-layout round trip runs in a fresh interpreter: the hub client reads HF_HOME and HF_HUB_OFFLINE when it
# is imported, and the child also refuses every socket connection, so a fetch would fail instead of being cached.
_ROUND_TRIP = r"""
import json, socket, sys
from pathlib import Path

def no_network(*args, **kwargs):
    raise OSError("the test forbids network access")

socket.socket.connect = no_network
socket.create_connection = no_network
sys.path.insert(0, sys.argv[1])
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from fresco_v2v import checkpoints
from fresco_v2v.cli import build_parser, run_config_from_args
from fresco_v2v.runner import load_run_pipeline
from fresco_v2v.testing import moving_square_clip, write_test_video
from ldm_layout import ldm_checkpoint, ldm_controlnet, random_state_dict

work = Path(sys.argv[2])
sd15, cn_folder = checkpoints.config_folder("sd15"), checkpoints.config_folder("sd15-controlnet")
with torch.device("meta"):  # SD1.5's full-size architecture, from the shipped configs
    models = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sd15 / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(sd15 / "vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(sd15 / "text_encoder")),
        "controlnet": ControlNetModel.from_config(ControlNetModel.load_config(cn_folder)),
    }
sizes = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
weights = {k: random_state_dict(m, torch.float16, seed=i) for i, (k, m) in enumerate(models.items())}
ldm, _ = ldm_checkpoint(weights["unet"], weights["vae"], weights["text_encoder"])
save_file(ldm, work / "civitai_model.safetensors")
cn, _ = ldm_controlnet(weights["controlnet"], prefix="")  # ControlNet 1.1's .pth: a pickled plain state dict
torch.save(cn, work / "control_v11p_sd15_canny.pth")
ldm_keys = len(ldm)
del ldm, cn
write_test_video(work / "in.mp4", moving_square_clip(2, 64, 64, 16, (8, 8), (2, 1)))
args = build_parser().parse_args([
    "translate", str(work / "in.mp4"), "--prompt", "a cat", "--output", str(work / "out"),
    "--model", str(work / "civitai_model.safetensors"),
    "--controlnet", "canny:" + str(work / "control_v11p_sd15_canny.pth"), "--allow-pickle", "--dtype", "float16",
    "--device", "cpu",
])
pipe = load_run_pipeline(run_config_from_args(args))
report = {"sizes": sizes, "ldm_keys": ldm_keys}
for name, loaded in (("unet", pipe.unet), ("vae", pipe.vae), ("text_encoder", pipe.text_encoder),
                     ("controlnet", pipe.controlnet)):
    got, want = loaded.state_dict(), weights[name]
    report[name] = {
        "missing": sorted(set(want) - set(got))[:5],
        "extra": sorted(set(got) - set(want))[:5],
        "different": [k for k in want if k in got and not torch.equal(got[k], want[k].reshape(got[k].shape))][:5],
        "compared": sum(k in got for k in want),
    }
report["tokens"] = pipe.tokenizer("a photo of a cat").input_ids
report["hf_home_files"] = sorted(str(p) for p in Path(sys.argv[3]).rglob("*") if p.is_file())
print("REPORT" + json.dumps(report))
"""


def test_real_layout_single_file_loads_offline(tmp_path):
    """Point 2 of issue 19: SD1.5's full-size architecture (random fp16 weights, 2.1 GB) in the original LDM key
    layout, and an SD1.5 ControlNet in lllyasviel's (a 1.1-style .pth), load through the CLI's path with no
    network and an empty HF_HOME; every tensor lands where it came from. About 45 s and 7 GB of memory on the
    development machine."""
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HOME": str(tmp_path),
        "OMP_NUM_THREADS": "2",
    }
    done = subprocess.run(
        [sys.executable, "-c", _ROUND_TRIP, str(TESTS), str(tmp_path), str(hf_home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT") :])
    # SD1.5's published parameter counts: the shipped configs are SD1.5's
    assert report["sizes"] == {
        "unet": 859_520_964,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "controlnet": 361_279_120,
    }
    for name in ("unet", "vae", "text_encoder", "controlnet"):
        r = report[name]
        assert r["missing"] == r["extra"] == r["different"] == [], (name, r)
        assert r["compared"] > 100
    assert report["tokens"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert report["hf_home_files"] == []  # nothing fetched, nothing cached


def test_shipped_tokenizer_is_clips():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(checkpoints.config_folder("sd15") / "tokenizer")
    # ids every SD1.x checkpoint was trained with (CLIP's BPE: lower case, one token per common word)
    assert tok("A Photo of a CAT").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("masterpiece, best quality").input_ids == [49406, 12066, 267, 949, 3027, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77


def _write(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({k: torch.zeros(v, dtype=torch.float16) for k, v in shapes.items()}, path)
    return path


_U = "model.diffusion_model."
_CTX = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_VAE = {"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3), "first_stage_model.decoder.conv_out.weight": (3,)}


def _sd(in_channels: int = 4, context: int = 768, vae: bool = True) -> dict:
    return {_U + "input_blocks.0.0.weight": (320, in_channels, 3, 3), _U + _CTX: (320, context)} | (_VAE if vae else {})


FAMILIES = [
    (_sd(), "sd15", "Stable Diffusion 1.x"),
    (_sd(vae=False), "sd15", "without VAE weights"),
    (_sd(context=1024), "sd2", "Stable Diffusion 2.x"),
    (_sd(in_channels=9), "sd15-inpainting", "inpainting"),
    (_sd(in_channels=8), "sd15-instruct-pix2pix", "InstructPix2Pix"),
    (_sd() | {"conditioner.embedders.1.model.ln_final.weight": (1280,)}, "sdxl", "SDXL base"),
    ({"conditioner.embedders.0.model.ln_final.weight": (1280,)}, "sdxl-refiner", "SDXL refiner"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}, "lora", "a LoRA"),
    ({"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": (320, 4)}, "unsupported-lora", "LoHa"),
    ({"lora_unet_mid_block_attentions_0_proj_in.lokr_w1": (4, 4)}, "unsupported-lora", "LoKr"),
    ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)}, "sdxl-lora", "SDXL LoRA"),
    (
        {"control_model.input_hint_block.0.weight": (16, 3, 3, 3), "control_model." + _CTX: (320, 768)},
        "sd15-controlnet",
        "SD1.5 ControlNet",
    ),
    (
        {"control_model.input_hint_block.0.weight": (16, 3, 3, 3), "control_model.label_emb.0.0.weight": (1280, 2816)},
        "sdxl-controlnet",
        "SDXL ControlNet",
    ),
    ({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_out.weight": (3,)}, "vae", "a VAE"),
    ({"down_blocks.0.resnets.0.conv1.weight": (320, 320, 3, 3)}, "diffusers-component", "whole folder"),
    ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (6, 2)}, "sd3", "Stable Diffusion 3"),
    ({"emb_params": (2, 768)}, "embedding", "textual-inversion"),
    ({"something.else": (3,)}, "unknown", "no Stable Diffusion layout"),
]


@pytest.mark.parametrize("shapes,kind,words", FAMILIES, ids=[f[1] + str(i) for i, f in enumerate(FAMILIES)])
def test_identify_checkpoint_from_names_and_shapes(tmp_path, shapes, kind, words):
    found = checkpoints.identify_checkpoint(checkpoints.tensor_shapes(_write(tmp_path / "f.safetensors", shapes)))
    assert found.kind == kind and words in found.description


def test_pickle_checkpoint_shapes_after_the_gate(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {k: torch.zeros(v) for k, v in _sd(context=1024).items()}}, path)
    with pytest.raises(ConfigError, match="allow_pickle"):
        load_pipeline(str(path), [])
    with pytest.raises(ConfigError, match="Stable Diffusion 2.x"):
        load_pipeline(str(path), [], allow_pickle=True)


@pytest.fixture
def no_loading(monkeypatch):
    """Any diffusers load is a failure: the checks must come first."""
    from fresco_v2v.pipeline import FrescoPipeline
    from fresco_v2v.sdxl import FrescoXLPipeline

    def refuse(*args, **kwargs):
        raise AssertionError("loaded before the checks")

    monkeypatch.setattr(FrescoPipeline, "from_single_file", refuse)
    monkeypatch.setattr(FrescoXLPipeline, "from_single_file", refuse)
    monkeypatch.setattr(models, "load_controlnet", refuse)


@pytest.mark.parametrize(
    "shapes,words",
    [
        ({"conditioner.embedders.0.model.ln_final.weight": (1280,)}, "looks like an SDXL refiner"),
        (
            _sd(in_channels=9) | {"conditioner.embedders.1.model.ln_final.weight": (1280,)},
            "looks like an SDXL model whose UNet takes 9 input channels",
        ),
        (_sd(in_channels=9), "looks like an SD1.x inpainting model"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}, "looks like a LoRA"),
    ],
)
def test_other_families_fail_before_loading(tmp_path, no_loading, shapes, words):
    path = _write(tmp_path / "model.safetensors", shapes)
    with pytest.raises(ConfigError, match=words) as err:
        load_pipeline(str(path), ["x"])
    assert str(path) in str(err.value) and str(err.value).startswith("model:")


def test_checkpoint_without_vae_needs_one(tmp_path, no_loading):
    path = _write(tmp_path / "model.safetensors", _sd(vae=False))
    with pytest.raises(ConfigError, match=r"^vae: .*--vae.*has no VAE weights"):
        load_pipeline(str(path), ["x"])


def test_controlnet_of_another_family_is_refused(tmp_path):
    sdxl_cn = {"control_model.input_hint_block.0.weight": (16, 3, 3, 3), "control_model.label_emb.0.0.weight": (4, 4)}
    with pytest.raises(ConfigError, match="^controlnet: .*looks like an SDXL ControlNet"):
        models.load_controlnet(str(_write(tmp_path / "cn.safetensors", sdxl_cn)), torch.float32)
    with pytest.raises(ConfigError, match="^controlnet: .*looks like a Stable Diffusion 1.x model"):
        models.load_controlnet(str(_write(tmp_path / "sd.safetensors", _sd())), torch.float32)


# ---- LoRA formats (point 6) ----


def _kohya_lora(pipe, rank: int = 2, alpha: float = 1.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A kohya/A1111 SD1.5 LoRA for ``pipe``: 'lora_unet_<module path with _>.lora_down/.lora_up/.alpha' on the
    UNet's attention projections, 'lora_te_text_model_<path>' on the text encoder's attention and MLP (kohya's
    default targets; diffusers 0.42 cannot read a text-encoder part without out_proj)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    unet_ends = ("to_q", "to_k", "to_v", "to_out.0")
    te_ends = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    targets = [("lora_unet_", n, m) for n, m in pipe.unet.named_modules() if n.endswith(unet_ends)]
    targets += [("lora_te_text_model_", n, m) for n, m in pipe.text_encoder.named_modules() if n.endswith(te_ends)]
    for prefix, name, module in targets:
        key = prefix + name.replace(".", "_")
        out[key + ".lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen)
        out[key + ".lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen)
        out[key + ".alpha"] = torch.tensor(alpha)
    return out


def test_kohya_lora_file_loads_and_acts_as_written(tmp_path):
    base = load_pipeline("tiny", ["tiny"])
    lora = _kohya_lora(base, rank=2, alpha=1.0)
    path = tmp_path / "style_kohya.safetensors"
    save_file(lora, path)
    pipe = load_pipeline("tiny", ["tiny"], loras=[LoraSpec(str(path), 0.5)])
    # eq. of LoRA: W x + scale * (alpha / rank) * up (down x), on one UNet and one text-encoder projection
    for prefix, model, base_model, name in (
        ("lora_unet_", pipe.unet, base.unet, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"),
        ("lora_te_text_model_", pipe.text_encoder, base.text_encoder, "encoder.layers.1.self_attn.q_proj"),
    ):
        layer, plain = model.get_submodule(name), base_model.get_submodule(name)
        x = torch.randn(3, plain.in_features, generator=torch.Generator().manual_seed(1))
        key = prefix + name.replace(".", "_")
        want = plain(x) + 0.5 * (1.0 / 2) * x @ lora[key + ".lora_down.weight"].T @ lora[key + ".lora_up.weight"].T
        with torch.no_grad():
            torch.testing.assert_close(layer(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "shapes,words",
    [
        ({"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": (4, 4)}, "unsupported LoRA format: a LoHa"),
        ({"lora_unet_mid_block_attentions_0_proj_in.lokr_w1": (4, 4)}, "unsupported LoRA format: a LoKr"),
        (_sd(), "looks like a Stable Diffusion 1.x model"),
    ],
)
def test_unsupported_lora_files_are_named(tmp_path, shapes, words):
    path = _write(tmp_path / "odd_lora.safetensors", shapes)
    with pytest.raises(ConfigError, match=f"^lora: .*odd_lora.safetensors.*{words}"):
        load_pipeline("tiny", ["tiny"], loras=[LoraSpec(str(path))])


def test_single_file_vae_loads_offline(tmp_path, monkeypatch):
    """A VAE file in the layout of stabilityai's vae-ft-mse-840000-ema-pruned.safetensors (the authors' VAE; LDM
    names without a prefix) loads with no hub access, every tensor in place."""
    from diffusers import AutoencoderKL
    from ldm_layout import _vae_name, random_state_dict

    with torch.device("meta"):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(checkpoints.config_folder("sd15") / "vae"))
    weights = random_state_dict(vae, torch.float16, seed=5)
    ldm = {}
    for name, t in weights.items():
        key, conv = _vae_name(name)
        ldm[key] = t[:, :, None, None] if conv else t
    save_file(ldm, tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: pytest.fail("asked the hub"))
    loaded = models.load_vae(str(tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors"), torch.float16)
    got = loaded.state_dict()
    assert set(got) == set(weights)
    assert all(torch.equal(got[k], weights[k].reshape(got[k].shape)) for k in weights)
    assert loaded.config.scaling_factor == 0.18215
