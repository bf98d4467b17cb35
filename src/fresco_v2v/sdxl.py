"""SDXL for FRESCO: :class:`FrescoXLPipeline`, the FRESCO pipeline with what SDXL changes, and nothing else.

What SDXL changes (Podell et al. 2023, "SDXL", §2.1-2.2; diffusers' ``StableDiffusionXLPipeline`` loads the same
components):

* two text encoders, CLIP ViT-L (``text_encoder``) and OpenCLIP ViT-bigG (``text_encoder_2``): the cross-attention
  states are both encoders' penultimate hidden states side by side ([B, 77, 768 + 1280]); the second encoder's
  pooled, projected output is a further condition ([B, 1280]);
* "micro-conditioning" on the image size and crop (§2.2): six numbers per item, original (H, W), crop corner (top,
  left), target (H, W), embedded like the timestep; here the frames are neither resized nor cropped by the model's
  view, so original = target = the frame size and the crop corner is (0, 0);
* both reach the UNet (and an SDXL ControlNet) as ``added_cond_kwargs`` per batch item
  (:class:`~fresco_v2v.conditioning.TextConditioning`), for every frame and both halves of the guidance batch;
* the decoder attends at 1/32 and 1/16 only (up_blocks 0 and 1): FRESCO's guided layers, optimized blocks and
  correspondence scales follow from the UNet (:mod:`fresco_v2v.decoder_layout`), not from this module.

The sampling loop, FRESCO's attention and optimization, anchors and checks are the base pipeline's.
"""

from __future__ import annotations

import logging

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.loaders import StableDiffusionXLLoraLoaderMixin
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from diffusers.schedulers import DDPMScheduler
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .conditioning import TextConditioning
from .config import SDXL_CONTROLNET_TYPES, SDXL_FP16_VAE  # noqa: F401  (re-exported)
from .pipeline import FrescoPipeline

logger = logging.getLogger(__name__)


def is_sdxl_unet(unet) -> bool:
    """Whether a UNet takes SDXL's added conditions (``addition_embed_type: text_time``)."""
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def micro_conditioning(size: tuple[int, int], batch: int, dtype: torch.dtype, device) -> torch.Tensor:
    """SDXL's size and crop conditioning (SDXL §2.2) for frames of ``size`` (H, W): [batch, 6] rows of
    (original H, original W, crop top, crop left, target H, target W) = (H, W, 0, 0, H, W)."""
    h, w = size
    row = torch.tensor([h, w, 0, 0, h, w], dtype=dtype, device=device)
    return row.expand(batch, 6).clone()


def penultimate_states(hidden_states: tuple[torch.Tensor, ...], clip_skip: int) -> torch.Tensor:
    """The text states SDXL conditions on: ``hidden_states[-(clip_skip + 1)]``, without the final layer norm.

    ``clip_skip`` counts as A1111 does for SDXL: 1 (default) is SDXL's own penultimate layer, 2 the one before.
    hidden_states: the encoder's L + 1 outputs (the embeddings, then each layer), each [B, 77, C].
    """
    return hidden_states[-(clip_skip + 1)]


def zero_blank(states: torch.Tensor, pooled: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the conditioning of blank prompts (SDXL's ``force_zeros_for_empty_prompt``: its unconditional
    embedding is zeros, not the empty text's). states [B, 77, C], pooled [B, P]; returns both."""
    keep = torch.tensor([bool(p.strip()) for p in prompts], device=states.device)
    return states * keep[:, None, None].to(states.dtype), pooled * keep[:, None].to(pooled.dtype)


class FrescoXLPipeline(StableDiffusionXLLoraLoaderMixin, FrescoPipeline):
    """:class:`~fresco_v2v.pipeline.FrescoPipeline` for SDXL-family models: two text encoders and SDXL's added
    conditions per frame; SDXL ControlNets. Loads as the base does (``from_pretrained`` of an SDXL repo or folder,
    ``from_single_file`` with :mod:`fresco_v2v.checkpoints`' shipped SDXL configs)."""

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"
    _optional_components = ["controlnet"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel | list[ControlNetModel] | tuple[ControlNetModel] | MultiControlNetModel | None,
        scheduler: DDPMScheduler,
        force_zeros_for_empty_prompt: bool = True,
    ):
        super().__init__(vae, text_encoder, tokenizer, unet, controlnet, scheduler)
        self.register_modules(text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
        # SDXL base's own model_index.json sets it (its unconditional embedding is zeros)
        self.register_to_config(force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)

    def _encode_one(self, tokenizer, encoder, prompts: list[str], clip_skip: int):
        """(states [B, 77, C], the encoder's output) of one text encoder."""
        ids = tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(encoder.device)
        out = encoder(ids, output_hidden_states=True)
        return penultimate_states(out.hidden_states, clip_skip), out

    def encode_prompts(self, prompts: list[str], clip_skip: int, size: tuple[int, int]) -> TextConditioning:
        """SDXL's conditioning of one item per prompt for frames of ``size`` (H, W): states [B, 77, C1 + C2] of both
        encoders, the second's pooled projection [B, P] and the micro-conditioning [B, 6] (module docstring)."""
        states_1, _ = self._encode_one(self.tokenizer, self.text_encoder, prompts, clip_skip)
        states_2, out_2 = self._encode_one(self.tokenizer_2, self.text_encoder_2, prompts, clip_skip)
        states = torch.cat([states_1, states_2.to(states_1.device)], dim=-1).to(self.unet.dtype)
        pooled = out_2.text_embeds.to(states.device, self.unet.dtype)
        if self.config.force_zeros_for_empty_prompt:
            states, pooled = zero_blank(states, pooled, prompts)
        time_ids = micro_conditioning(size, len(prompts), self.unet.dtype, states.device)
        return TextConditioning(states, {"text_embeds": pooled, "time_ids": time_ids})
