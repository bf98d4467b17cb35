"""Write the configuration files that let single-file SD1.5 checkpoints load offline (package data).

    python tools/write_model_configs.py OPEN_CLIP_WHEEL     # everything
    python tools/write_model_configs.py --sdxl              # sdxl/ alone (it needs no tokenizer files)

Writes ``src/fresco_v2v/model_configs/sd15/`` (a diffusers pipeline folder without weights: model_index.json, the
scheduler, UNet, VAE and text-encoder configs, the CLIP tokenizer) and ``sd15-controlnet/config.json``. The layer
sizes are SD1.5's (CompVis' v1-inference.yaml: UNet 320-640-1280-1280, 2 layers a block, 8 heads, context 768; VAE
128-256-512-512, scale 0.18215; CLIP ViT-L/14's text tower) and the ControlNet's are lllyasviel's SD1.5 ControlNets'
(condition encoder 16-32-96-256). The CLIP vocabulary is the BPE merge list OpenAI released with CLIP (MIT
licence); it is read from open_clip's wheel (``bpe_simple_vocab_16e6.txt.gz``), the one offline copy we have.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import diffusers
from diffusers import AutoencoderKL, ControlNetModel, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTokenizer

OUT = Path(__file__).resolve().parents[1] / "src" / "fresco_v2v" / "model_configs"
#: CLIP's tokenizer uses the first 49152 - 256 - 2 merges (its vocabulary of 49408 = 2 x 256 bytes + merges + 2).
CLIP_MERGES = 49152 - 256 - 2


def clip_byte_alphabet() -> list[str]:
    """CLIP's (and GPT-2's) printable stand-ins for the 256 byte values, in vocabulary order: the printable bytes
    as themselves first, then the others, in byte order, as the characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def write_tokenizer(wheel: Path, folder: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        lines = gzip.decompress(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8").split("\n")
    merges = lines[1 : 1 + CLIP_MERGES]  # line 0 is a header
    alphabet = clip_byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408 and len(set(tokens)) == len(tokens)
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        tok = CLIPTokenizer(str(vocab), str(merges_file), model_max_length=77, pad_token="<|endoftext|>")
        tok.save_pretrained(folder)
    # the ids every SD1.5 checkpoint was trained with
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407], tok("a photo of a cat")


def main(wheel: Path) -> None:
    sd15 = OUT / "sd15"
    unet = _on_meta(UNet2DConditionModel, sample_size=64, cross_attention_dim=768)
    unet.save_config(sd15 / "unet")
    _on_meta(
        AutoencoderKL,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    ).save_config(sd15 / "vae")
    CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        projection_dim=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    ).save_pretrained(sd15 / "text_encoder")
    PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    ).save_config(sd15 / "scheduler")
    write_tokenizer(wheel, sd15 / "tokenizer")
    index = {
        "_class_name": "FrescoPipeline",
        "_diffusers_version": diffusers.__version__,
        "controlnet": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (sd15 / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    # lllyasviel's SD1.5 ControlNets: the UNet's encoder with a 16-32-96-256 condition encoder
    shared = {k: unet.config[k] for k in _SHARED_WITH_UNET}
    _on_meta(ControlNetModel, **shared, conditioning_channels=3).save_config(OUT / "sd15-controlnet")
    print("wrote", *sorted(str(p.relative_to(OUT)) for p in OUT.rglob("*") if p.is_file()), sep="\n  ")


_SHARED_WITH_UNET = (
    "in_channels",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "attention_head_dim",
    "use_linear_projection",
    "upcast_attention",
)


def _on_meta(cls, **config):
    """A model of ``cls`` with ``config`` on the meta device (no weights are made): for its full config."""
    import torch

    with torch.device("meta"):
        return cls(**config)


def write_sdxl() -> None:
    """``sdxl/``: SDXL 1.0 base's layer sizes (Stability AI's sd_xl_base.yaml and the SDXL paper, Podell et al. 2023:
    UNet 320-640-1280 with 1, 2, 10 transformer layers, head width 64, context 2048, size/crop conditioning of
    6 x 256 plus the pooled 1280; VAE 128-256-512-512, scale 0.13025; CLIP ViT-L/14's and OpenCLIP ViT-bigG/14's
    text towers). No tokenizer files: both are CLIP's BPE (``sd15/tokenizer``), the second padding with "!", and
    the loader passes them (``fresco_v2v.models``)."""
    from diffusers import EulerDiscreteScheduler

    sdxl = OUT / "sdxl"
    _on_meta(
        UNet2DConditionModel,
        sample_size=128,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        block_out_channels=[320, 640, 1280],
        layers_per_block=2,
        transformer_layers_per_block=[1, 2, 10],
        attention_head_dim=[5, 10, 20],
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ).save_config(sdxl / "unet")
    _on_meta(
        AutoencoderKL,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=4,
        sample_size=1024,
        scaling_factor=0.13025,
        force_upcast=True,
    ).save_config(sdxl / "vae")
    clip = {"vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    CLIPTextConfig(
        hidden_size=768,
        intermediate_size=3072,
        projection_dim=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        hidden_act="quick_gelu",
        **clip,
    ).save_pretrained(sdxl / "text_encoder")
    CLIPTextConfig(
        hidden_size=1280,
        intermediate_size=5120,
        projection_dim=1280,
        num_hidden_layers=32,
        num_attention_heads=20,
        hidden_act="gelu",
        **clip,
    ).save_pretrained(sdxl / "text_encoder_2")
    EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    ).save_config(sdxl / "scheduler")
    index = {
        "_class_name": "FrescoXLPipeline",
        "_diffusers_version": diffusers.__version__,
        "controlnet": [None, None],
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (sdxl / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--sdxl"]:  # needs no wheel: SDXL ships no tokenizer files of its own
        write_sdxl()
    else:
        main(Path(sys.argv[1]))
        write_sdxl()
