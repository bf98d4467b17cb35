"""Single checkpoint files: what a file is, read from its tensor names and shapes, and the configs that load it offline.

A civitai-style ``.safetensors`` holds weights only. diffusers' ``from_single_file`` needs the model's configuration
(layer sizes, scheduler, CLIP tokenizer) beside them and fetches it from the hub unless given a local folder; we ship
SD1.5's and its ControlNets' as package data (``model_configs/``, written by ``tools/write_model_configs.py``), so
these files load with no network and no cache. A file of another family is refused before any loading, with a
message that says what it looks like.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .errors import ConfigError

logger = logging.getLogger(__name__)

#: The kinds fresco-v2v loads from one file, and the shipped config folder for each (under ``model_configs/``).
SD15 = "sd15"
SDXL = "sdxl"
SD15_CONTROLNET = "sd15-controlnet"
VAE = "vae"
SDXL_VAE = "sdxl-vae"  # a VAE file for an SDXL model: checked as VAE, configured from sdxl/vae
LORA = "lora"
SDXL_LORA = "sdxl-lora"
UNSUPPORTED_LORA = "unsupported-lora"
#: A base model: SD1.x or SDXL (the family is read from the file, :func:`identify_checkpoint`).
BASE = "base"
BASE_KINDS = (SD15, SDXL)
CONFIG_FOLDERS = {SD15: "sd15", SDXL: "sdxl", SD15_CONTROLNET: "sd15-controlnet", VAE: "sd15", SDXL_VAE: "sdxl"}

_UNET = "model.diffusion_model."
_CONTROL = "control_model."
#: The first cross-attention key projection of the LDM UNet / ControlNet: [320, context width].
_CONTEXT_KEY = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


@dataclass(frozen=True)
class CheckpointKind:
    """What a checkpoint file holds: ``kind`` (one of the constants above, or another family's name that we do not
    load) and ``description``, in words a user recognises, with the tensor that told."""

    kind: str
    description: str
    has_vae: bool = True


def config_folder(kind: str) -> Path:
    """The shipped diffusers config folder for ``kind`` (no weights)."""
    return Path(str(resources.files("fresco_v2v") / "model_configs" / CONFIG_FOLDERS[kind]))


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a checkpoint file, reading as little as possible.

    ``.safetensors``: the header only. Pickle files (after the caller's pickle gate): ``torch.load`` with
    ``weights_only`` (memory-mapped where the file allows), unwrapping a ``state_dict`` entry.
    """
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    return {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _lora_kind(names: list[str]) -> CheckpointKind | None:
    """A LoRA (which diffusers loads) or a LyCORIS format (which it does not), from tensor-name parts/endings."""

    def with_part(part: str) -> str | None:
        return next((n for n in names if part in n), None)

    for part, what in (
        ("hada_w1_a", "a LoHa file (LyCORIS)"),
        ("lokr_w1", "a LoKr file (LyCORIS)"),
        ("oft_blocks", "an OFT file (LyCORIS)"),
        ("oft_diag", "an OFT file (LyCORIS)"),
    ):
        if (n := with_part(part)) is not None:
            return CheckpointKind(UNSUPPORTED_LORA, f"an unsupported LoRA format: {what}, e.g. tensor '{n}'")
    for ending, what in ((".on_input", "an (IA)^3 file (LyCORIS)"), (".diff", "a full-difference file (LyCORIS)")):
        if (n := next((n for n in names if n.startswith("lora_") and n.endswith(ending)), None)) is not None:
            return CheckpointKind(UNSUPPORTED_LORA, f"an unsupported LoRA format: {what}, e.g. tensor '{n}'")
    if (n := next((n for n in names if n.startswith("lora_te2_") or "text_encoder_2." in n), None)) is not None:
        return CheckpointKind(SDXL_LORA, f"an SDXL LoRA (a second text encoder's tensors, e.g. '{n}')")
    for part in ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up", "lora_linear_layer"):
        if (n := with_part(part)) is not None:
            return CheckpointKind(LORA, f"a LoRA, e.g. tensor '{n}'")
    return None


def identify_checkpoint(shapes: dict[str, tuple[int, ...]]) -> CheckpointKind:
    """The family of a checkpoint from its tensor names and shapes (LDM single-file layouts as civitai and the
    original repos publish them, LoRA layouts, diffusers-layout component files)."""
    names = sorted(shapes)
    if (lora := _lora_kind(names)) is not None:
        return lora
    if any(n.startswith("image_proj.") for n in names) and any(n.startswith("ip_adapter.") for n in names):
        return CheckpointKind(
            "ip-adapter", "an IP-Adapter (tensors 'image_proj.*', 'ip_adapter.*'): pass it as --ip-adapter"
        )
    if any(n.startswith(("emb_params", "string_to_param", "clip_l", "clip_g")) for n in names) and len(names) <= 4:
        return CheckpointKind("embedding", "a textual-inversion embedding (tensor 'emb_params' / 'string_to_param')")
    if any(n.startswith("conditioner.embedders.1.") for n in names):
        return _sdxl_kind(shapes)
    if any(n.startswith("conditioner.embedders.0.model.") for n in names):
        return CheckpointKind("sdxl-refiner", "an SDXL refiner (tensors 'conditioner.embedders.0.model.*')")
    if any("joint_blocks." in n for n in names):
        return CheckpointKind("sd3", "a Stable Diffusion 3 model (tensors 'joint_blocks.*')")
    if any("double_blocks." in n for n in names):
        return CheckpointKind("flux", "a FLUX model (tensors 'double_blocks.*')")
    for prefix in (_CONTROL, ""):
        if prefix + "input_hint_block.0.weight" in shapes:
            return _controlnet_kind(shapes, prefix)
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        return CheckpointKind(
            "diffusers-controlnet", "a ControlNet in diffusers' layout: pass the folder with its config.json"
        )
    if _UNET + "input_blocks.0.0.weight" in shapes:
        return _unet_kind(shapes)
    if any(n.startswith(("down_blocks.", "up_blocks.", "mid_block.")) for n in names):
        return CheckpointKind(
            "diffusers-component",
            "one component of a diffusers folder (tensors 'down_blocks.*'): pass the whole folder",
        )
    vae_prefix = "first_stage_model." if any(n.startswith("first_stage_model.") for n in names) else ""
    if vae_prefix + "encoder.conv_in.weight" in shapes and vae_prefix + "decoder.conv_out.weight" in shapes:
        latent = shapes.get(vae_prefix + "quant_conv.weight", (8,))[0] // 2
        if latent != 4:
            return CheckpointKind(f"vae-{latent}ch", f"a VAE with {latent} latent channels (SD1.5's has 4)")
        return CheckpointKind(VAE, "a VAE (tensors 'encoder.*', 'decoder.*')")
    example = names[0] if names else "none"
    return CheckpointKind("unknown", f"no Stable Diffusion layout we know ({len(names)} tensors, e.g. '{example}')")


def _sdxl_kind(shapes: dict[str, tuple[int, ...]]) -> CheckpointKind:
    """An SDXL single file (two text encoders: 'conditioner.embedders.0.*' CLIP ViT-L, '.1.*' OpenCLIP ViT-bigG)."""
    in_channels = shapes.get(_UNET + "input_blocks.0.0.weight", (0, 4))[1]
    if in_channels != 4:
        return CheckpointKind(
            f"sdxl-in-{in_channels}",
            f"an SDXL model whose UNet takes {in_channels} input channels "
            "(an inpainting or edit model; SDXL base takes 4)",
        )
    has_vae = any(n.startswith("first_stage_model.") for n in shapes)
    vae = "" if has_vae else " without VAE weights"
    return CheckpointKind(
        SDXL, f"an SDXL base model{vae} (tensors 'conditioner.embedders.1.*', two text encoders)", has_vae
    )


def _unet_kind(shapes: dict[str, tuple[int, ...]]) -> CheckpointKind:
    in_channels = shapes[_UNET + "input_blocks.0.0.weight"][1]
    context = shapes.get(_UNET + _CONTEXT_KEY, (0, 0))[1]
    has_vae = any(n.startswith("first_stage_model.") for n in shapes)
    if context == 1024:
        return CheckpointKind("sd2", "a Stable Diffusion 2.x model (cross-attention width 1024, OpenCLIP text encoder)")
    if context != 768:
        return CheckpointKind(f"unet-context-{context}", f"a UNet with cross-attention width {context} (SD1.5: 768)")
    if in_channels == 9:
        return CheckpointKind("sd15-inpainting", "an SD1.x inpainting model (the UNet takes 9 input channels)")
    if in_channels == 8:
        return CheckpointKind("sd15-instruct-pix2pix", "an InstructPix2Pix model (the UNet takes 8 input channels)")
    if in_channels != 4:
        return CheckpointKind(f"unet-in-{in_channels}", f"a UNet with {in_channels} input channels (SD1.5: 4)")
    vae = "" if has_vae else " without VAE weights"
    return CheckpointKind(SD15, f"a Stable Diffusion 1.x model{vae}", has_vae)


def _controlnet_kind(shapes: dict[str, tuple[int, ...]], prefix: str) -> CheckpointKind:
    context = shapes.get(prefix + _CONTEXT_KEY, (0, 0))[1]
    if context == 768:
        return CheckpointKind(SD15_CONTROLNET, "an SD1.5 ControlNet")
    if context == 1024:
        return CheckpointKind("sd2-controlnet", "an SD2.x ControlNet (cross-attention width 1024)")
    if any(n.startswith(prefix + "label_emb.") for n in shapes):
        return CheckpointKind("sdxl-controlnet", "an SDXL ControlNet (tensors 'label_emb.*')")
    return CheckpointKind(f"controlnet-context-{context}", f"a ControlNet with cross-attention width {context}")


#: What each loader accepts, in words for the error message.
EXPECTED = {
    SD15: "a Stable Diffusion 1.x checkpoint (SD1.4/1.5 and their fine-tunes, e.g. civitai's)",
    BASE: "a Stable Diffusion 1.x or SDXL base checkpoint (SD1.5, SDXL 1.0 and their fine-tunes, e.g. civitai's)",
    SDXL_VAE: "an SDXL VAE (e.g. sdxl-vae-fp16-fix's diffusion_pytorch_model.safetensors) or an SDXL checkpoint with "
    "one",
    SDXL_LORA: "an SDXL LoRA (kohya 'lora_unet_*'/'lora_te1_*'/'lora_te2_*' files, diffusers or PEFT layouts)",
    SD15_CONTROLNET: "an SD1.5 ControlNet checkpoint (e.g. lllyasviel's control_v11p_sd15_*.pth / .safetensors)",
    VAE: "an SD1.x VAE (e.g. vae-ft-mse-840000-ema-pruned.safetensors) or an SD1.x checkpoint with one",
    LORA: "an SD1.5 LoRA (kohya/A1111 'lora_unet_*' files, diffusers or PEFT layouts)",
}


def check_checkpoint(path: Path, expected: str, field_name: str) -> CheckpointKind:
    """The kind of ``path``, or a ConfigError naming what it looks like when it is not ``expected``.

    Reads the tensor names only (pickle files must have passed the pickle gate before).
    """
    try:
        shapes = tensor_shapes(path)
    except Exception as e:  # a damaged or foreign file: safetensors and torch raise several types
        raise ConfigError(field_name, EXPECTED[expected], f"{path}: not a readable checkpoint ({e})") from e
    found = identify_checkpoint(shapes)
    fits = (
        found.kind == expected
        or (expected == BASE and found.kind in BASE_KINDS)
        or (expected == VAE and found.kind in (VAE, SD15) and found.has_vae)
        or (expected == SDXL_VAE and found.kind in (VAE, SDXL) and found.has_vae)
        or (expected == SDXL_LORA and found.kind == LORA)  # a UNet-only LoRA says no family
    )
    if not fits:
        raise ConfigError(field_name, EXPECTED[expected], f"{path}: this looks like {found.description}")
    logger.info("%s: %s", path, found.description)
    return found
