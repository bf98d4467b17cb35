"""The original single-file (LDM / CompVis, lllyasviel ControlNet) key layout, written from diffusers models.

Ours, from the layouts as published (CompVis' ``ldm/modules/diffusionmodules/openaimodel.py`` and ``model.py``,
ControlNet's ``cldm/cldm.py``; for SDXL Stability AI's ``sgm`` layout with open_clip's text transformer): the
inverse of the conversion diffusers' ``from_single_file`` does, kept separate from it so that a test of loading can
fail. For SD1.5's layout: 4 levels, 2 layers a level, 3 up-block layers; SDXL's: any layers a level, attention in
the up blocks named by ``up_attention``.
"""

from __future__ import annotations

import re

import torch

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_name(name: str, layers: int = 2, up_attention: tuple[int, ...] = (1, 2, 3)) -> str:
    """A diffusers UNet (or ControlNet encoder) tensor name -> its LDM name (without the model prefix).

    ``up_attention``: the up blocks with attention (their upsampler comes third in its output block)."""
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL's size/crop and pooled-text embedding
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for old, new in fixed.items():
        if name.startswith(old):
            return new + name[len(old) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = f"input_blocks.{(layers + 1) * i + j + 1}"
        return f"{block}.0.{_resnet_rest(rest)}" if kind == "resnets" else f"{block}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name):
        return f"input_blocks.{(layers + 1) * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", name):
        return f"middle_block.{2 * int(m[1])}.{_resnet_rest(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", name):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = f"output_blocks.{(layers + 1) * i + j}"
        return f"{block}.0.{_resnet_rest(rest)}" if kind == "resnets" else f"{block}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", name):
        i = int(m[1])
        return f"output_blocks.{(layers + 1) * i + layers}.{2 if i in up_attention else 1}.conv.{m[2]}"
    raise KeyError(name)


def _resnet_rest(rest: str) -> str:
    part, _, leaf = rest.rpartition(".")
    return f"{_RESNET[part]}.{leaf}"


def _vae_name(name: str, levels: int = 4) -> tuple[str, bool]:
    """A diffusers AutoencoderKL name -> (LDM name, whether the tensor is a 1x1 conv there)."""
    name = name.replace("conv_norm_out.", "norm_out.")
    if m := re.match(
        r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", name
    ):
        part, direction, i, kind, j, rest = m.groups()
        level = int(i) if direction == "down" else levels - 1 - int(i)
        if kind == "resnets":
            return f"{part}.{direction}.{level}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}", False
        return f"{part}.{direction}.{level}.{'downsample' if direction == 'down' else 'upsample'}.{rest}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", name):
        rest = m[3].replace("conv_shortcut", "nin_shortcut")
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{rest}", False
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", name):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}", m[3] == "weight" and m[2] != "group_norm"
    return name, False


def ldm_checkpoint(unet: dict, vae: dict, text_encoder: dict) -> tuple[dict, dict]:
    """State dicts of the three SD1.5 components -> (the single-file dict, LDM name -> diffusers component name).

    The map says where each LDM tensor came from: ``"unet/down_blocks.0..."`` etc.
    """
    out, origin = {}, {}
    for name, t in unet.items():
        key = "model.diffusion_model." + _unet_name(name)
        out[key], origin[key] = t, "unet/" + name
    for name, t in vae.items():
        ldm, conv = _vae_name(name)
        key = "first_stage_model." + ldm
        out[key], origin[key] = (t[:, :, None, None] if conv else t), "vae/" + name
    for name, t in text_encoder.items():
        # the original files keep transformers 4's "text_model." level, which transformers 5 state dicts lack
        key = "cond_stage_model.transformer." + (name if name.startswith("text_model.") else "text_model." + name)
        out[key], origin[key] = t, "text_encoder/" + name
    # SD1.x files also carry CLIP's position ids (a buffer transformers no longer saves)
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return out, origin


def ldm_controlnet(controlnet: dict, prefix: str = "control_model.") -> tuple[dict, dict]:
    """A diffusers ControlNetModel state dict -> lllyasviel's layout (and the origin map): ``control_model.*`` as in
    the 1.0 files and many .safetensors conversions, or no prefix (``prefix=""``) as in ControlNet 1.1's .pth."""
    out, origin = {}, {}
    for name, t in controlnet.items():
        if m := re.match(r"controlnet_cond_embedding\.(conv_in|blocks\.(\d+)|conv_out)\.(.*)", name):
            index = 0 if m[1] == "conv_in" else 14 if m[1] == "conv_out" else 2 * (int(m[2]) + 1)
            ldm = f"input_hint_block.{index}.{m[3]}"
        elif m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", name):
            ldm = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.match(r"controlnet_mid_block\.(.*)", name):
            ldm = f"middle_block_out.0.{m[1]}"
        else:
            ldm = _unet_name(name)
        out[prefix + ldm], origin[prefix + ldm] = t, name
    return out, origin


def random_state_dict(model: torch.nn.Module, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors (normal, scaled 0.02) of ``model``'s state-dict shapes; the model may live on the meta device."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (torch.randn(v.shape, generator=gen) * 0.02).to(dtype)
        if v.is_floating_point()
        else torch.zeros_like(v, device="cpu")
        for k, v in model.state_dict().items()
    }


def _open_clip_text(state: dict, prefix: str) -> dict:
    """A transformers CLIPTextModelWithProjection state dict -> open_clip's text transformer (SDXL's second text
    encoder): fused q/k/v ``in_proj``, ``resblocks``, ``ln_*``, ``mlp.c_fc/c_proj``, and ``text_projection``
    [width, dim] (the transpose of transformers' linear weight)."""
    out = {}
    rename = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    layers = {}
    for name, t in state.items():
        name = name.removeprefix("text_model.")
        if name == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = t
        elif name == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = t
        elif name.startswith("final_layer_norm."):
            out[prefix + "ln_final." + name.rsplit(".", 1)[1]] = t
        elif name == "text_projection.weight":
            out[prefix + "text_projection"] = t.T.contiguous()
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", name):
            layers.setdefault((int(m[1]), m[3]), {})[m[2]] = t
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(.*)", name):
            out[f"{prefix}transformer.resblocks.{m[1]}.attn.out_proj.{m[2]}"] = t
        elif m := re.match(r"encoder\.layers\.(\d+)\.(layer_norm1|layer_norm2|mlp\.fc1|mlp\.fc2)\.(.*)", name):
            out[f"{prefix}transformer.resblocks.{m[1]}.{rename[m[2]]}.{m[3]}"] = t
        else:
            raise KeyError(name)
    for (i, kind), qkv in layers.items():
        out[f"{prefix}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]])
    return out


def ldm_sdxl_checkpoint(
    unet: dict, vae: dict, text_encoder: dict, text_encoder_2: dict, layers: int = 2, up_attention=(0, 1)
) -> dict:
    """State dicts of SDXL's four components -> one single file in Stability AI's layout: ``model.diffusion_model.*``,
    ``first_stage_model.*``, ``conditioner.embedders.0.transformer.text_model.*`` (CLIP ViT-L as transformers
    names it) and ``conditioner.embedders.1.model.*`` (open_clip's ViT-bigG text transformer)."""
    out = {"model.diffusion_model." + _unet_name(n, layers, up_attention): t for n, t in unet.items()}
    for name, t in vae.items():
        ldm, conv = _vae_name(name)
        out["first_stage_model." + ldm] = t[:, :, None, None] if conv else t
    for name, t in text_encoder.items():
        key = "conditioner.embedders.0.transformer." + (
            name if name.startswith("text_model.") else "text_model." + name
        )
        out[key] = t
    out["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    out.update(_open_clip_text(text_encoder_2, "conditioner.embedders.1.model."))
    return out
