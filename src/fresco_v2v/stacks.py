"""Named model stacks that ship with fresco-v2v and load offline, and the registry `--model NAME` looks them up in.

A stack registers itself with :func:`register_stack`: "tiny" here (the real diffusers/transformers classes at toy
size with random weights: its output is noise-like by design; it checks plumbing, shapes, determinism and speed,
never image quality) and "toy" in :mod:`fresco_v2v.toyworld` (the toy world's trained checkpoint).
:func:`fresco_v2v.models.load_pipeline` finds them with :func:`find_stack` (after importing the modules that
register).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stack:
    """A built-in model: ``build(model, num_controlnets, seed)`` returns a FrescoPipeline; ``note`` is what a user
    must know about its output; ``family`` its model family ("sd15", "sdxl"); ``seeded``: its weights are drawn
    from the seed (so a pipeline of another seed is another model)."""

    build: Callable[[str, int, int], object]
    note: str
    family: str = "sd15"
    seeded: bool = False


_STACKS: dict[str, Stack] = {}


def register_stack(
    name: str, build: Callable[[str, int, int], object], note: str, family: str = "sd15", seeded: bool = False
) -> None:
    """Make ``--model NAME`` (and ``NAME:PATH``, which ``build`` receives whole) load ``build``'s pipeline."""
    _STACKS[name] = Stack(build, note, family, seeded)


def find_stack(model: str) -> Stack | None:
    """The registered stack of ``model`` ("tiny", "toy", "toy:PATH"), or None for a hub id, folder or file."""
    name = model.split(":", 1)[0] if ":" in model and not model.startswith(("/", ".")) else model
    return _STACKS.get(name)


TINY_WORDS = ("a", "photo", "painting", "drawing", "of", "the", "dog", "cat", "car", "man", "in", "style", "fox")


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE (GPT-2, CLIP) uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


def make_tiny_tokenizer(max_length: int = 77, words: tuple[str, ...] = TINY_WORDS):
    """A CLIPTokenizer over a generated vocabulary: every byte symbol (+ end-of-word form) and a few whole words."""
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)})
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:  # merge left to right: "d o g</w>" -> "do g</w>" -> "dog</w>"
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


#: SD1.5's UNet block types: cross-attention in down_blocks 0-2 and up_blocks 1-3 (where FRESCO's layers are).
SD15_DOWN_BLOCKS = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD15_UP_BLOCKS = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def sd15_scheduler():
    """A DDPMScheduler with SD1.5's settings: scaled-linear betas 0.00085..0.012 over 1000 steps, epsilon."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def make_tiny_pipeline(seed: int = 0, num_controlnets: int = 1):
    """A :class:`~fresco_v2v.pipeline.FrescoPipeline` of tiny random models with SD1.5's block layout, offline.

    UNet: down blocks CrossAttn x3 + Down, up blocks Up + CrossAttn x3 (cross-attention in up_blocks 1-3, so the
    FRESCO layers up_blocks.2/.3 exist), 4 resolution levels like SD1.5; VAE with factor 8; CLIP text encoder of
    2 layers; ControlNet(s) made from the UNet. A few MB in all; seconds to run on CPU.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=SD15_DOWN_BLOCKS,
        up_block_types=SD15_UP_BLOCKS,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(tiny_clip_config(tokenizer))
    return assemble_pipeline(unet, vae, text_encoder, tokenizer, num_controlnets, (8, 8, 8, 8))


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
    )


def _controlnets_of(unet, num_controlnets: int, conditioning_channels: tuple[int, ...]) -> list:
    from diffusers import ControlNetModel

    return [
        ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=conditioning_channels)
        for _ in range(num_controlnets)
    ]


def assemble_pipeline(
    unet, vae, text_encoder, tokenizer, num_controlnets: int = 1, conditioning_channels: tuple[int, ...] = (8, 8, 8, 8)
):
    """A FrescoPipeline in eval mode around the given models, with ControlNets made from the UNet.

    ``ControlNetModel.from_unet`` zero-initialises the ControlNet's output convolutions, so these ControlNets add
    nothing until trained. ``conditioning_channels``: one entry more than the stride-2 convolutions of the condition
    encoder, which must match the VAE's latent factor (4 entries: factor 8).
    """
    from .pipeline import FrescoPipeline

    controlnets = _controlnets_of(unet, num_controlnets, conditioning_channels)
    for m in (unet, vae, text_encoder, *controlnets):
        m.eval()
    return FrescoPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        controlnet=controlnets[0] if num_controlnets == 1 else (controlnets or None),
        scheduler=sd15_scheduler(),
    )


register_stack(
    "tiny",
    lambda model, num_controlnets, seed: make_tiny_pipeline(seed, num_controlnets),
    "model 'tiny' has random weights: its output is noise-like by design (for testing)",
    seeded=True,
)


#: SDXL's UNet block types: cross-attention in down_blocks 1-2 and up_blocks 0-1 only (1/16 and 1/32 of the latent).
SDXL_DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
SDXL_UP_BLOCKS = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")


def tiny_clip_config(tokenizer, width: int = 32, **extra):
    """A two-layer CLIP text encoder's config of ``width`` over ``tokenizer`` (the tiny, tiny-xl and toy stacks)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def make_tiny_xl_pipeline(seed: int = 0, num_controlnets: int = 1):
    """A :class:`~fresco_v2v.sdxl.FrescoXLPipeline` of tiny random models with SDXL's layout, offline.

    The classes SDXL uses: a UNet with SDXL's 3 levels and block types (self-attention in up_blocks 0-1 only),
    ``addition_embed_type="text_time"``, per-level transformer depths (1, 1, 2) and linear projections; two text
    encoders (CLIPTextModel 32 wide and CLIPTextModelWithProjection 48 wide, as SDXL's differ (768, 1280), which
    single-file loading tells them apart by: cross-attention width 80, pooled 32);
    the second tokenizer pads with "!" as SDXL's does; VAE of factor 8; ControlNet(s) made from the UNet (SDXL
    ControlNets: they take the added conditions too). A few MB; seconds on CPU.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .sdxl import FrescoXLPipeline

    tokenizer = make_tiny_tokenizer()
    tokenizer_2 = make_tiny_tokenizer()
    tokenizer_2.pad_token = "!"
    time_dim, pooled_dim = 8, 32
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=SDXL_DOWN_BLOCKS,
        up_block_types=SDXL_UP_BLOCKS,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=32 + 48,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + pooled_dim,
        norm_num_groups=8,
    )
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(tiny_clip_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_config(tokenizer_2, 48, projection_dim=pooled_dim))
    controlnets = _controlnets_of(unet, num_controlnets, (8, 8, 8, 8))
    for m in (unet, vae, text_encoder, text_encoder_2, *controlnets):
        m.eval()
    return FrescoXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        controlnet=controlnets[0] if num_controlnets == 1 else (controlnets or None),
        scheduler=sd15_scheduler(),  # SDXL's betas are SD1.5's (scaled linear 0.00085 .. 0.012, 1000 steps)
    )


register_stack(
    "tiny-xl",
    lambda model, num_controlnets, seed: make_tiny_xl_pipeline(seed, num_controlnets),
    "model 'tiny-xl' has random weights (SDXL's layout at toy size): its output is noise-like by design (for testing)",
    family="sdxl",
    seeded=True,
)
