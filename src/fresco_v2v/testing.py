"""Synthetic material and models for the tests and benchmarks (never imported by production code).

The clip generators live in :mod:`fresco_v2v.synthetic` and the tiny stack in :mod:`fresco_v2v.stacks`; they are
re-exported here, with the full-size SD1.5 architecture of the speed and memory benchmarks.
"""

from __future__ import annotations

import torch

from .stacks import (  # noqa: F401  (re-exported for tests and benchmarks)
    SD15_DOWN_BLOCKS,
    SD15_UP_BLOCKS,
    SDXL_DOWN_BLOCKS,
    SDXL_UP_BLOCKS,
    TINY_WORDS,
    assemble_pipeline,
    make_tiny_pipeline,
    make_tiny_tokenizer,
    make_tiny_xl_pipeline,
    sd15_scheduler,
)
from .synthetic import (  # noqa: F401
    moving_square_clip,
    shifted_texture_clip,
    textured_image,
    write_test_video,
)


def make_sd15_architecture_pipeline(seed: int = 0):
    """The full-size SD1.5 + ControlNet architecture (same layer sizes, same compute) with random weights.

    For speed and memory benchmarks only: about 1.4 B parameters (5.7 GB in float32), built offline in tens of
    seconds; its output is noise. Built from the SD1.5 configs shipped for single-file loading
    (:func:`fresco_v2v.checkpoints.config_folder`: UNet 320-640-1280-1280, two layers a block, 8 heads,
    cross-attention 768; VAE 128-256-512-512; CLIP ViT-L/14's text tower and tokenizer).
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .checkpoints import config_folder
    from .pipeline import FrescoPipeline

    sd15 = config_folder("sd15")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sd15 / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(sd15 / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(sd15 / "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(sd15 / "tokenizer")
    controlnet = ControlNetModel.from_unet(unet)
    scheduler = sd15_scheduler()
    for m in (unet, vae, text_encoder, controlnet):
        m.eval()
    return FrescoPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet, scheduler=scheduler
    )


def wake_controlnets(pipe, seed: int = 0, std: float = 0.5):
    """Give ``pipe``'s ControlNets random output convolutions (``from_unet`` zero-initialises them, so the
    conditions of an untrained ControlNet reach nothing): a test can then see conditions reach the UNet."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    nets = pipe.controlnet.nets if isinstance(pipe.controlnet, MultiControlNetModel) else [pipe.controlnet]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in nets:
            for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)
            # the condition encoder at He scale: torch's default init shrinks a sparse edge map ~1000x over its
            # 8 convolutions, which would hide the condition behind the latent
            for conv in net.controlnet_cond_embedding.modules():
                if isinstance(conv, torch.nn.Conv2d):
                    fan_in = conv.weight[0].numel()
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    return pipe


def make_sdxl_architecture_pipeline(
    seed: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, controlnet: bool = True
):
    """The full-size SDXL 1.0 base architecture (+ an SDXL ControlNet made from its UNet) with random weights.

    For speed and memory benchmarks only (``benchmarks/sdxl_gpu.py``): UNet 2.57 B parameters, text encoders
    0.12 B + 0.69 B, VAE 84 M, ControlNet 1.25 B; its output is noise. Built from the shipped SDXL configs
    (:func:`fresco_v2v.checkpoints.config_folder`), directly on ``device`` (random init there: seconds on a GPU),
    then cast to ``dtype``. The tokenizers are CLIP's (the second padding with "!").
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from .checkpoints import config_folder
    from .sdxl import FrescoXLPipeline

    xl, sd15 = config_folder("sdxl"), config_folder("sd15")
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(xl / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(xl / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(xl / "text_encoder"))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(xl / "text_encoder_2"))
        net = ControlNetModel.from_unet(unet) if controlnet else None
    models = [m for m in (unet, vae, text_encoder, text_encoder_2, net) if m is not None]
    for m in models:
        m.to(dtype).eval()
    return FrescoXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(sd15 / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(sd15 / "tokenizer", pad_token="!"),
        unet=unet,
        controlnet=net,
        scheduler=sd15_scheduler(),  # SDXL's betas are SD1.5's; FRESCO samples with DDPM
    )
