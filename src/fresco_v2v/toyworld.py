"""The toy world: a small latent diffusion stack trained here, whose right answer for every frame is known.

No Stable Diffusion weights can be downloaded where fresco-v2v is developed, and random tiny models produce noise,
so nothing could show that a translated video is *better* with FRESCO. The toy world fixes that: the "styles" are
fixed, deterministic OpenCV filters, so the ground-truth translation of every frame of a real clip is known:

- "a photo": the frame itself;
- "a painting": ``cv2.stylization`` (edge-preserving smoothing with inked edges);
- "a pencil drawing": the colour output of ``cv2.pencilSketch``.

The models are the classes of real SD1.5 (``UNet2DConditionModel`` with SD1.5's block types, so FRESCO's layers
``up_blocks.2/.3`` exist; ``AutoencoderKL``; ``CLIPTextModel``; a canny ``ControlNetModel``), at a size that trains
on a 2-core CPU within two hours (``benchmarks/toyworld/train.py``). The checkpoint is one ``.safetensors`` file
holding every component's weights and, in its metadata, their configs; :func:`load_toy_pipeline` rebuilds a
:class:`~fresco_v2v.pipeline.FrescoPipeline` from it, fully offline. ``--model toy`` uses the checkpoint shipped
with the package; ``--model toy:PATH`` another one.

Why it lives in the package and not only under ``benchmarks/``: ``fresco demo`` uses it (it translates something
visible, unlike the random tiny model), and an installed package has no ``benchmarks/`` folder.

Sizes (documented choices): 128x128 frames; a VAE with latent factor 4 (factor 8 leaves 16x16 latents at 128 px,
too lossy to show a painting's inked edges), 4 latent channels like SD; the UNet at 32x32 latents with four
resolution levels like SD1.5's. The ControlNet is made from the UNet and trained on canny edges of the source
photo (as the pipeline computes them): SDEdit's noised latent keeps the structure only to about 8-12 px
(benchmarks/toyworld/README.md), and the edges give it back. Checkpoints made before it have no ControlNet
weights; then the ControlNet is made from the UNet with zero output convolutions and adds nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import ModelNotFound
from .stacks import SD15_DOWN_BLOCKS, SD15_UP_BLOCKS, register_stack, tiny_clip_config

logger = logging.getLogger(__name__)

#: Frame size of the toy world (square, a multiple of 64 as the pipeline needs).
TOY_SIZE = 128
#: The captions the toy model was trained on.
PHOTO, PAINTING, PENCIL = "a photo", "a painting", "a pencil drawing"
TOY_WORDS = ("a", "photo", "painting", "pencil", "drawing")
#: Clips of ../shared/data/videos used for training: the first TRAIN_FRACTION of their frames.
TRAIN_CLIPS = ("dog", "music")
TRAIN_FRACTION = 0.8
#: Clips never seen in training (the evaluation's held-out clips), plus the last 20% of the training clips.
HELD_OUT_CLIPS = ("boxer-punching-towards-camera", "car-turn")
#: The checkpoint shipped with the package (``--model toy``).
BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "data" / "toyworld.safetensors"


def painting(frame: np.ndarray) -> np.ndarray:
    """The ground-truth "a painting" of a uint8 RGB frame: ``cv2.stylization`` with OpenCV's default parameters."""
    return cv2.stylization(np.ascontiguousarray(frame), sigma_s=60, sigma_r=0.45)


def pencil_drawing(frame: np.ndarray) -> np.ndarray:
    """The ground-truth "a pencil drawing": the colour output of ``cv2.pencilSketch``."""
    return cv2.pencilSketch(np.ascontiguousarray(frame), sigma_s=60, sigma_r=0.07, shade_factor=0.05)[1]


STYLE_FILTERS = {PAINTING: painting, PENCIL: pencil_drawing}


def ground_truth(frames: np.ndarray, caption: str = PAINTING) -> np.ndarray:
    """[T, H, W, 3] uint8: every frame passed through the caption's filter (the photo caption is the identity)."""
    if caption == PHOTO:
        return np.asarray(frames).copy()
    return np.stack([STYLE_FILTERS[caption](f) for f in frames])


# ----------------------------------------------------------------------------------------------------------------
# Model configs: SD1.5's classes and block types at toy size.

UNET_CONFIG = dict(
    sample_size=TOY_SIZE // 4,
    in_channels=4,
    out_channels=4,
    down_block_types=SD15_DOWN_BLOCKS,
    up_block_types=SD15_UP_BLOCKS,
    block_out_channels=(32, 64, 128, 128),
    layers_per_block=1,
    cross_attention_dim=64,
    attention_head_dim=8,
    norm_num_groups=16,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    latent_channels=4,
    norm_num_groups=16,
    layers_per_block=1,
    sample_size=TOY_SIZE,
)


def make_toy_tokenizer():
    from .stacks import make_tiny_tokenizer

    return make_tiny_tokenizer(words=TOY_WORDS)


def build_toy_models(seed: int = 0):
    """(unet, vae, text_encoder, tokenizer) with fresh weights from ``seed`` (the start of training)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = make_toy_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(tiny_clip_config(tokenizer, width=64))
    return unet, vae, text_encoder, tokenizer


#: The ControlNet condition encoder's channels: two stride-2 convolutions, the VAE's latent factor 4.
CONTROLNET_CONDITIONING_CHANNELS = (16, 32, 64)


def make_toy_controlnet(unet):
    """A ControlNet made from the toy UNet (zero-initialised outputs: it adds nothing until trained)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_CONDITIONING_CHANNELS)


def assemble_pipeline(unet, vae, text_encoder, tokenizer, num_controlnets: int = 1, controlnet=None):
    """A FrescoPipeline around trained toy components.

    ``controlnet``: the trained canny ControlNet, used for every one of ``num_controlnets`` (the toy world trained
    only canny: another type's condition through it is a documented stand-in). None: untrained (zero-output)
    ControlNets made from the UNet.
    """
    import copy

    from .stacks import assemble_pipeline as assemble

    pipe = assemble(unet, vae, text_encoder, tokenizer, num_controlnets, CONTROLNET_CONDITIONING_CHANNELS)
    if controlnet is not None and num_controlnets:
        controlnet.eval()
        nets = [controlnet] + [copy.deepcopy(controlnet) for _ in range(num_controlnets - 1)]
        pipe.register_modules(controlnet=nets[0] if num_controlnets == 1 else type(pipe.controlnet)(nets))
    return pipe


# ----------------------------------------------------------------------------------------------------------------
# One-file checkpoint: every component's state dict under its name, configs and the training record in metadata.


def _public_config(config) -> dict:
    """A diffusers config without its private keys: ``_use_default_values`` would make ``from_config`` reset the
    values it lists (e.g. a VAE scaling factor set after construction) to their defaults."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def save_toy_checkpoint(
    path: str | Path, unet, vae, text_encoder, record: dict, controlnet=None, dtype=torch.float16
) -> Path:
    """Write unet/vae/text_encoder (and a trained canny ``controlnet``) weights (``dtype``, half the bytes by
    default) to one .safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    models = [("unet", unet), ("vae", vae), ("text_encoder", text_encoder)]
    models += [("controlnet", controlnet)] if controlnet is not None else []
    tensors = {}
    for name, model in models:
        for k, v in model.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().to(dtype).contiguous()
    meta = {
        "format": "fresco-v2v toyworld 1",
        "unet_config": json.dumps(_public_config(unet.config)),
        "vae_config": json.dumps(_public_config(vae.config)),
        "text_encoder_config": json.dumps(text_encoder.config.to_dict()),
        "record": json.dumps(record),
    }
    if controlnet is not None:
        meta["controlnet_config"] = json.dumps(_public_config(controlnet.config))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_toy_record(path: str | Path) -> dict:
    """The training record stored in a toy checkpoint's metadata (data, steps, losses, seconds)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata().get("record", "{}"))


def resolve_toy_path(spec: str) -> Path:
    """'toy' -> the bundled checkpoint; 'toy:PATH' -> PATH. Raises ModelNotFound with what to do instead."""
    path = BUNDLED_CHECKPOINT if spec == "toy" else Path(spec.split(":", 1)[1])
    if not path.is_file():
        raise ModelNotFound(
            f"toy checkpoint not found: {path}. Train one with `python benchmarks/toyworld/train.py --out {path}` "
            "(about two hours on a 2-core CPU), or pass --model toy:PATH to an existing one."
        )
    return path


def load_toy_pipeline(spec: str = "toy", num_controlnets: int = 1):
    """A :class:`~fresco_v2v.pipeline.FrescoPipeline` from a toy checkpoint (float32, CPU; move it with ``.to``)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from safetensors import safe_open
    from transformers import CLIPTextConfig, CLIPTextModel

    path = resolve_toy_path(spec)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "fresco-v2v toyworld 1":
            raise ModelNotFound(f"{path} is not a fresco-v2v toy checkpoint (metadata format {meta.get('format')!r})")
        weights = {k: f.get_tensor(k).float() for k in f.keys()}
    tokenizer = make_toy_tokenizer()
    unet = UNet2DConditionModel.from_config(_public_config(json.loads(meta["unet_config"])))
    vae = AutoencoderKL.from_config(_public_config(json.loads(meta["vae_config"])))
    text_encoder = CLIPTextModel(CLIPTextConfig(**json.loads(meta["text_encoder_config"])))
    models = [("unet", unet), ("vae", vae), ("text_encoder", text_encoder)]
    controlnet = None
    if "controlnet_config" in meta:  # a trained canny ControlNet (checkpoints before it have none)
        controlnet = ControlNetModel.from_config(_public_config(json.loads(meta["controlnet_config"])))
        models.append(("controlnet", controlnet))
    for name, model in models:
        prefix = name + "."
        sd = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ModelNotFound(f"{path}: {name} weights do not match its config (missing {missing[:3]}...)")
    logger.info("toy model loaded from %s", path)
    return assemble_pipeline(unet, vae, text_encoder, tokenizer, num_controlnets, controlnet)


# ----------------------------------------------------------------------------------------------------------------
# Scores shared by the training script's final check and benchmarks/toyworld_eval.py.


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 image stacks (over all pixels at once)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


#: SDEdit settings of the toy world's evaluation and demo: strength 0.2 and guidance 2, chosen for the shipped
#: checkpoint on validation frames of the training clips (benchmarks/toyworld/tune.py, tune_latent_colour_low.log;
#: earlier checkpoints used 0.6), 20 steps (the run default's count).
TOY_STRENGTH = 0.2
TOY_STEPS = 20
TOY_GUIDANCE = 2.0


def per_frame_fresco_config():
    """Every FRESCO part off: plain SDEdit (with the untrained ControlNet) of each frame on its own."""
    from .config import AttentionConfig, FrescoConfig, OptimizationConfig

    return FrescoConfig(
        AttentionConfig(spatial_guided=False, cross_frame=False, temporal_guided=False),
        OptimizationConfig(enabled=False),
    )


def translate_per_frame(
    pipe,
    frames: np.ndarray,
    prompt: str = PAINTING,
    *,
    strength: float = TOY_STRENGTH,
    steps: int = TOY_STEPS,
    guidance_scale: float = TOY_GUIDANCE,
    seed: int = 0,
) -> np.ndarray:
    """[T, H, W, 3] uint8: each frame translated on its own, with its own noise (generator seed + frame index)."""
    cfg = per_frame_fresco_config()
    out = []
    for i, f in enumerate(frames):
        res = pipe(
            f[None],
            prompt,
            num_inference_steps=steps,
            strength=strength,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed + i),
            fresco=cfg,
        )
        out.append(res.frames[0])
    return np.stack(out)


register_stack(
    "toy",
    lambda model, num_controlnets, seed: load_toy_pipeline(model, num_controlnets=num_controlnets),
    "toy-world model: trained here on 128x128 frames for three captions ('a photo', 'a painting', "
    "'a pencil drawing'); a yardstick, not an artist",
)
