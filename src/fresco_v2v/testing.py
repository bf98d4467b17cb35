"""Synthetic material for tests, the demo and benchmarks: textures with known motion and small video files.

Everything here is generated from a seed, offline, in well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """[H, W, 3] uint8 colour texture with detail at several scales, so optical flow has something to lock on."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((4, 0.25), (16, 0.35), (64, 0.4)):
        small = rng.random((max(1, height // cell) + 2, max(1, width // cell) + 2, 3), dtype=np.float32)
        img += (
            weight
            * cv2.resize(small, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)[
                cell : cell + height, cell : cell + width
            ]
        )
    img = (img - img.min()) / (img.max() - img.min() + 1e-6)
    return (img * 255).round().astype(np.uint8)


def shifted_texture_clip(num_frames: int, height: int, width: int, shift: tuple[int, int], seed: int = 0) -> np.ndarray:
    """[T, H, W, 3] uint8: a texture moving by the integer ``shift`` = (dx, dy) pixels per frame.

    Frame t is a window of a larger texture, so frame t+1 at x equals frame t at x - shift: the true flow from
    frame t+1 to frame t is ``-shift`` everywhere except a band of |shift| pixels that enters at the border.
    """
    dx, dy = shift
    pad_x, pad_y = abs(dx) * (num_frames - 1), abs(dy) * (num_frames - 1)
    big = textured_image(height + pad_y, width + pad_x, seed)
    x0 = pad_x if dx > 0 else 0
    y0 = pad_y if dy > 0 else 0
    out = [big[y0 - dy * t : y0 - dy * t + height, x0 - dx * t : x0 - dx * t + width] for t in range(num_frames)]
    return np.ascontiguousarray(np.stack(out))


def moving_square_clip(
    num_frames: int,
    height: int,
    width: int,
    square: int,
    start: tuple[int, int],
    velocity: tuple[int, int],
    seed: int = 0,
) -> np.ndarray:
    """[T, H, W, 3] uint8: a textured square at ``start`` + t * ``velocity`` (x, y) over a static textured scene."""
    background = textured_image(height, width, seed)
    patch = 255 - textured_image(square, square, seed + 1)  # inverted, so it differs from the background
    frames = []
    for t in range(num_frames):
        f = background.copy()
        x, y = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        f[y : y + square, x : x + square] = patch
        frames.append(f)
    return np.stack(frames)


def write_test_video(
    path: str | Path,
    frames: np.ndarray,
    fps: Fraction | int = Fraction(30000, 1001),
    *,
    audio_codec: str | None = "aac",
    audio_seconds: float | None = None,
    video_codec: str = "libx264",
    sample_rate: int = 44100,
    display_rotation: int = 0,
    timestamps: Sequence[float] | None = None,
    video_start: float = 0.0,
    amplitude: float = 0.2,
) -> Path:
    """Encode ``frames`` to ``path`` (mp4, mkv, ... by suffix) with an optional sine tone, for I/O tests.

    ``display_rotation``: degrees counter-clockwise written to the container's display matrix (as phones do).
    ``timestamps``: each frame's time in seconds, for a variable-rate video (time base 1/90000, as in MPEG-TS);
    ``fps`` is then only the stream's nominal rate. ``video_start``: when the first frame is shown (s); the audio
    starts at 0 and is silent until then, so the tone begins with frame 0.
    """
    path = Path(path)
    rate = Fraction(fps)
    tb = Fraction(1, 90000) if timestamps is not None else 1 / rate
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream(video_codec, rate=rate)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = tb
        if display_rotation:
            vs.set_display_rotation(display_rotation)
        if video_codec == "libx264":
            vs.options = {"crf": "12", "preset": "ultrafast"}
        astream = out.add_stream(audio_codec, rate=sample_rate) if audio_codec else None
        if astream is not None:
            astream.layout = "stereo"
        start = round(video_start / tb)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = start + (round(timestamps[i] / tb) if timestamps is not None else i)
            vf.time_base = tb
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        if astream is not None:
            end = timestamps[-1] + float(1 / rate) if timestamps is not None else float(len(frames) / rate)
            seconds = audio_seconds if audio_seconds is not None else video_start + end
            n = int(seconds * sample_rate)
            t = np.arange(n) / sample_rate
            tone = np.where(t >= video_start, amplitude * np.sin(2 * math.pi * 440 * t), 0.0)
            fmt = astream.codec_context.format
            scale, dtype = {"s16": (32767, np.int16), "s32": (2147483647, np.int32)}.get(
                fmt.name.rstrip("p"), (1.0, np.float32)
            )
            chunk = 1024
            for s in range(0, n, chunk):
                block = (np.stack([tone[s : s + chunk]] * 2) * scale).astype(dtype)  # [2, n], planar
                block = block if fmt.is_planar else block.T.reshape(1, -1)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format=fmt.name, layout="stereo")
                af.sample_rate, af.pts = sample_rate, s
                out.mux(astream.encode(af))
            out.mux(astream.encode(None))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Tiny model stack: the real diffusers/transformers classes at toy size with random weights, built offline.
# Its output is noise-like by design: it checks plumbing, shapes, determinism and speed, never image quality.

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
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

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
    vae = AutoencoderKL(
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
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return assemble_pipeline(unet, vae, text_encoder, tokenizer, num_controlnets, (8, 8, 8, 8))


def assemble_pipeline(
    unet, vae, text_encoder, tokenizer, num_controlnets: int = 1, conditioning_channels: tuple[int, ...] = (8, 8, 8, 8)
):
    """A FrescoPipeline in eval mode around the given models, with ControlNets made from the UNet.

    ``ControlNetModel.from_unet`` zero-initialises the ControlNet's output convolutions, so these ControlNets add
    nothing until trained. ``conditioning_channels``: one entry more than the stride-2 convolutions of the condition
    encoder, which must match the VAE's latent factor (4 entries: factor 8).
    """
    from diffusers import ControlNetModel

    from .pipeline import FrescoPipeline

    controlnets = [
        ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=conditioning_channels)
        for _ in range(num_controlnets)
    ]
    for m in (unet, vae, text_encoder, *controlnets):
        m.eval()
    return FrescoPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        controlnet=controlnets[0] if num_controlnets == 1 else controlnets,
        scheduler=sd15_scheduler(),
    )


def make_sd15_architecture_pipeline(seed: int = 0):
    """The full-size SD1.5 + ControlNet architecture (same layer sizes, same compute) with random weights.

    For speed and memory benchmarks only: about 1.4 B parameters (5.7 GB in float32), built offline in tens of
    seconds; its output is noise. UNet/VAE/CLIP sizes are SD1.5's (UNet channels 320-640-1280-1280, two layers a
    block, 8 heads, cross-attention 768; VAE 128-256-512-512; CLIP ViT-L/14 text encoder, 12 layers of 768).
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .pipeline import FrescoPipeline

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    tokenizer = make_tiny_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    controlnet = ControlNetModel.from_unet(unet)
    scheduler = sd15_scheduler()
    for m in (unet, vae, text_encoder, controlnet):
        m.eval()
    return FrescoPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet, scheduler=scheduler
    )
