"""`FrescoPipeline`: translate one batch of keyframes coherently with FRESCO (paper §3), on any SD1.5-family stack.

Built from diffusers components (UNet2DConditionModel, AutoencoderKL, CLIP text encoder and tokenizer, one or
several ControlNetModels, a DDPM scheduler). Loading is diffusers' own: ``FrescoPipeline.from_pretrained`` (hub id
or folder), ``from_single_file`` (.safetensors/.ckpt), ``load_lora_weights``, ``enable_freeu``; see
:mod:`fresco_v2v.models` for the guarded entry points with clear errors.

The sampling loop is ours (SDEdit start, shared noise, per-step constraints, anchors); FRESCO reaches into the UNet
only through attention processors and decoder-block pre-hooks, both removed when the call ends. An IP-Adapter
(:mod:`fresco_v2v.ip_adapter`, ``pipe.ip_adapter``) is installed on the cross-attention layers for a call that gives
style embeddings, before FRESCO's self-attention processors, and removed with them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, DiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import (
    FromSingleFileMixin,
    IPAdapterMixin,
    StableDiffusionLoraLoaderMixin,
    TextualInversionLoaderMixin,
)
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from diffusers.pipelines.pipeline_utils import StableDiffusionMixin
from diffusers.schedulers import DDPMScheduler
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from .attention import FrescoAttentionContext, fresco_attention
from .conditioning import TextConditioning, as_conditioning
from .config import FrescoConfig, ReferenceConfig
from .control import canny_condition
from .correspondence import Correspondence, build_correspondence
from .decoder_layout import decoder_blocks, default_guided_prefixes, default_optimized_blocks
from .errors import Cancelled, ConfigError
from .flow import FlowEstimator, sequence_flows
from .ip_adapter import DEFAULT_SCALE, check_style_embeds, guidance_image_embeds, ip_adapter_installed
from .optimization import FeatureOptimizer, decoder_hooks
from .pipeline_results import (  # noqa: F401  (re-exported: callers import them from here)
    AnchorLatents,
    FrescoOutput,
    FrescoTrace,
    _Stopwatch,
    step_constraints,
)
from .sampling import add_noise, ddpm_step, sdedit_timesteps
from .sampling import background_smoothing as background_smoothing_step

logger = logging.getLogger(__name__)

#: The timestep of the reference pass (§3.3: "a single-step DDPM forward process adds negligible noise").
REFERENCE_TIMESTEP = 1


class FrescoPipeline(
    DiffusionPipeline,
    StableDiffusionMixin,
    TextualInversionLoaderMixin,
    StableDiffusionLoraLoaderMixin,
    FromSingleFileMixin,
    IPAdapterMixin,
):
    """Zero-shot video translation of a batch of frames with FRESCO-guided attention and feature optimization."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    #: No ControlNet (None) is the authors' ``use_controlnet: False`` (``--controlnet none``).
    _optional_components = ["controlnet"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel | list[ControlNetModel] | tuple[ControlNetModel] | MultiControlNetModel | None,
        scheduler: DDPMScheduler,
    ):
        super().__init__()
        if isinstance(controlnet, (list, tuple)):
            controlnet = MultiControlNetModel(controlnet) if controlnet else None
        if not isinstance(scheduler, DDPMScheduler):
            # FRESCO samples with DDPM (§3.1); hub SD1.5 repos ship PNDM, whose config DDPM reads as is.
            scheduler = DDPMScheduler.from_config(scheduler.config)
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            controlnet=controlnet,
            scheduler=scheduler,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        #: An :class:`~fresco_v2v.ip_adapter.IPAdapter` (``load_pipeline(..., ip_adapter=...)``), installed only
        #: during a call that gives ``style_embeds``; None: none.
        self.ip_adapter = None

    @property
    def decoder_factors(self) -> tuple[int, ...]:
        """Pixel-to-token factor of each decoder block's input, coarsest first: (64, 32, 16, 8) for SD1.5, (32, 16,
        8) for SDXL, read from the UNet's blocks (:func:`~fresco_v2v.decoder_layout.decoder_blocks`).

        The correspondence is built at these factors (one per decoder scale); a VAE with another latent factor (the
        toy world's 4) shifts them all.
        """
        return tuple(b.factor for b in decoder_blocks(self.unet, self.vae_scale_factor))

    def fresco_layout(self, cfg: FrescoConfig) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """The guided attention-layer prefixes and optimized decoder blocks of ``cfg`` on this UNet: the config's,
        or where it leaves them None, the model's own (:mod:`fresco_v2v.decoder_layout`)."""
        layers = cfg.attention.layers or default_guided_prefixes(self.unet)
        blocks = cfg.optimization.blocks or default_optimized_blocks(self.unet)
        if any(b >= len(self.unet.up_blocks) for b in blocks):
            raise ConfigError(
                "fresco.optimization.blocks", f"decoder block indices in 0..{len(self.unet.up_blocks) - 1}", blocks
            )
        return tuple(layers), tuple(blocks)

    # -- helpers ---------------------------------------------------------------------------------------------------

    @property
    def num_controlnets(self) -> int:
        if self.controlnet is None:
            return 0
        return len(self.controlnet.nets) if isinstance(self.controlnet, MultiControlNetModel) else 1

    def encode_text(self, prompts: list[str], clip_skip: int = 1) -> torch.Tensor:
        """[len(prompts), 77, C] CLIP text embeddings (truncated to the tokenizer's length, as SD does).

        ``clip_skip`` counts as A1111's "Clip skip": 1 is the last layer (SD1.5's own), 2 the penultimate one (what
        many anime checkpoints are trained with; diffusers' ``clip_skip=1``), each through CLIP's final layer norm.
        """
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.text_encoder.device)
        if clip_skip == 1:
            return self.text_encoder(ids)[0].to(self.unet.dtype)
        # hidden_states[-1] is the last layer's output before the final layer norm that [0] has
        hidden = self.text_encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
        model = getattr(self.text_encoder, "text_model", self.text_encoder)  # transformers 5 flattened CLIPTextModel
        return model.final_layer_norm(hidden).to(self.unet.dtype)

    def encode_prompts(self, prompts: list[str], clip_skip: int, size: tuple[int, int]) -> TextConditioning:
        """The conditioning of one batch item per prompt, for frames of ``size`` (H, W): here the text states alone
        (SD1.x); :class:`~fresco_v2v.sdxl.FrescoXLPipeline` adds SDXL's pooled embeddings and time ids."""
        return TextConditioning(self.encode_text(prompts, clip_skip))

    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """[N, H, W, 3] uint8 -> [N, 4, H/8, W/8] latents x_0 = E(I) (§3.1), one frame at a time to bound memory."""
        out = []
        for f in frames:
            img = torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].to(self.vae.device, self.vae.dtype)
            out.append(self.vae.encode(img / 127.5 - 1.0).latent_dist.mean * self.vae.config.scaling_factor)
        return torch.cat(out)

    def decode_latents(self, latents: torch.Tensor) -> list[np.ndarray]:
        """[N, 4, h, w] -> N uint8 RGB frames I' = D(x'_0), one at a time."""
        frames = []
        for z in latents:
            img = self.vae.decode(z[None].to(self.vae.dtype) / self.vae.config.scaling_factor).sample[0]
            frames.append(((img.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy())
        return frames

    def _controlnet_residuals(self, latent_in, t, emb, conds, scales):
        if self.controlnet is None:  # no ControlNet: the UNet alone
            return None, None
        multi = isinstance(self.controlnet, MultiControlNetModel)
        return self.controlnet(
            latent_in,
            t,
            **as_conditioning(emb).model_kwargs(),
            controlnet_cond=conds if multi else conds[0],
            conditioning_scale=scales if multi else scales[0],
            return_dict=False,
        )

    def predict_noise(self, latents, t, emb, conds, scales, guidance_scale, image_embeds=None):
        """ε_θ(x_t, t, c, e) with classifier-free guidance: batch [uncond frames; cond frames] when guiding.

        ``emb``: a :class:`~fresco_v2v.conditioning.TextConditioning` (or, for SD1.x, the bare text states).
        ``image_embeds``: the IP-Adapter's [[G*N, 1, D]] (:func:`~fresco_v2v.ip_adapter.guidance_image_embeds`), for
        the UNet only (the ControlNets see the text, as in diffusers' ControlNet pipelines).
        """
        cfg = guidance_scale > 1.0
        latent_in = torch.cat([latents, latents]) if cfg else latents  # [G*N, 4, h, w]
        down, mid = self._controlnet_residuals(latent_in, t, emb, conds, scales)
        eps = self.unet(
            latent_in,
            t,
            **as_conditioning(emb).model_kwargs(image_embeds),  # states [G*N, T, C]
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]
        if not cfg:
            return eps
        eps_u, eps_c = eps.chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    def check_inputs(
        self,
        frames,
        prompt,
        negative_prompt,
        num_inference_steps,
        strength,
        controlnet_conditioning_scale,
        clip_skip,
        background_smoothing,
        foreground_masks,
        anchors,
    ) -> tuple[np.ndarray, list[str], list[str], list[float], list[int]]:
        """Validate the call's arguments before any model runs; a wrong one is a ConfigError naming it.

        Returns the frames as one uint8 array [N, H, W, 3], one prompt and one negative prompt per frame, one
        ControlNet scale per ControlNet, and the timesteps SDEdit runs.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ConfigError("frames", "N uint8 RGB arrays [H, W, 3]", f"{frames.dtype} {frames.shape}")
        n, h, w, _ = frames.shape
        multiple = max(64, self.decoder_factors[0])
        if h % multiple or w % multiple:
            raise ConfigError(
                "frames", f"sides that are multiples of {multiple} (see fresco_v2v.video.plan_fit)", f"{w}x{h}"
            )
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        negatives = [negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(prompts) != n or len(negatives) != n:
            raise ConfigError("prompt", f"one string or {n} strings (one per frame)", len(prompts))
        if not (0.0 < strength <= 1.0):
            raise ConfigError("strength", "a number in (0, 1]", strength)
        if not (isinstance(num_inference_steps, int) and num_inference_steps >= 1):
            raise ConfigError("num_inference_steps", "an integer >= 1", num_inference_steps)
        scales = controlnet_conditioning_scale
        scales = [float(scales)] * self.num_controlnets if not isinstance(scales, (list, tuple)) else list(scales)
        if len(scales) != self.num_controlnets:
            raise ConfigError("controlnet_conditioning_scale", f"{self.num_controlnets} values", scales)
        layers = self.text_encoder.config.num_hidden_layers
        if not (isinstance(clip_skip, int) and 1 <= clip_skip <= layers):
            raise ConfigError("clip_skip", f"an integer in 1..{layers} (1: the text encoder's last layer)", clip_skip)
        if not (0.0 <= background_smoothing <= 1.0):
            raise ConfigError("background_smoothing", "a weight in [0, 1] (0: off)", background_smoothing)
        if background_smoothing > 0 and (foreground_masks is None or np.shape(foreground_masks) != (n, h, w)):
            raise ConfigError(
                "foreground_masks",
                f"{n} masks of {w}x{h} when background_smoothing > 0",
                None if foreground_masks is None else np.shape(foreground_masks),
            )
        if anchors is not None and n < 3:
            raise ConfigError("frames", "at least 3 frames when anchors are given (2 anchors + 1 new)", n)
        timesteps = [int(t) for t in sdedit_timesteps(self.scheduler, num_inference_steps, strength)]
        if not timesteps:
            raise ConfigError("strength", f"a value with steps * strength >= 1 ({num_inference_steps} steps)", strength)
        if anchors is not None and anchors.timesteps != timesteps:
            raise ConfigError("anchors", f"latents recorded on the timesteps {timesteps}", anchors.timesteps)
        return frames, prompts, negatives, scales, timesteps

    def prepare_correspondence(
        self,
        frames: np.ndarray,
        cfg: FrescoConfig,
        correspondence: Correspondence | None,
        flow_estimator: FlowEstimator | None,
        background_smoothing: float,
    ) -> Correspondence | None:
        """The batch's correspondence at this model's decoder factors: the given one, checked against the config's
        token occlusion rules, or built from flows straight between the frames; None when nothing needs it."""
        needs_corr = (
            cfg.attention.cross_frame
            or cfg.attention.temporal_guided
            or (cfg.optimization.enabled and cfg.optimization.temporal)
            or background_smoothing > 0
        )
        if correspondence is None and needs_corr and len(frames) > 1:
            if flow_estimator is None:
                raise ConfigError(
                    "correspondence",
                    "a Correspondence of these frames (build_correspondence with keyframe_flows) or a "
                    "flow_estimator, since cross-frame/temporal attention, L_temp or background smoothing is on",
                    None,
                )
            correspondence = build_correspondence(
                frames,
                sequence_flows(frames, flow_estimator),
                factors=self.decoder_factors,
                attention_occlusion=cfg.attention.token_occlusion,
                loss_occlusion=cfg.optimization.token_occlusion,
            )
        if correspondence is not None and correspondence.token_occlusion != cfg.token_occlusion:
            raise ConfigError(
                "correspondence",
                f"one built with the token occlusion rules of the FRESCO config {cfg.token_occlusion} "
                "(attention, optimization)",
                correspondence.token_occlusion,
            )
        if correspondence is not None and not set(self.decoder_factors) <= set(correspondence.scales):
            raise ConfigError(
                "correspondence",
                f"scales at this model's decoder factors {self.decoder_factors}",
                tuple(correspondence.scales),
            )
        return correspondence

    def record_reference(self, x_ref, emb, conds, conds_c, scales, cfg: FrescoConfig, context, image_embeds=None):
        """Run :meth:`reference_pass` with the recorders on: Q^r, K^r into ``context.reference_qk`` (for eq. 7) and
        the decoder blocks' inputs f^r (for eq. 6), returned by block index. Nothing runs when neither is needed.
        The layers and blocks are :meth:`fresco_layout`'s."""
        reference_features: dict[int, torch.Tensor] = {}
        need_f = cfg.optimization.enabled and cfg.optimization.spatial
        if not (cfg.attention.spatial_guided or need_f):
            return reference_features

        def record_features(block: int, hs: torch.Tensor):
            reference_features[block] = hs.detach().clone()

        layers, blocks = self.fresco_layout(cfg)
        context.recording = True
        try:
            with (
                fresco_attention(self.unet, context, layers),
                decoder_hooks(self.unet, blocks if need_f else (), record_features),
            ):
                self.reference_pass(x_ref, emb, conds, conds_c, scales, cfg.reference, image_embeds)
        finally:
            context.recording = False
        return reference_features

    def reference_pass(self, x_ref, emb, conds, conds_c, scales, config: ReferenceConfig, image_embeds=None) -> None:
        """One UNet call at t = 1 over the noised input latents x_ref [N, 4, h, w], for the hooks to record (§3.3).

        ``emb`` is [negative; positive] under classifier-free guidance, else the positive prompts: with
        ``config.guidance_batch`` and two halves the pass runs on [x_ref; x_ref] like a denoising step, so each half
        records its own Q^r, K^r and f^r (the authors' code); otherwise on x_ref with the positive half only.
        ``config.controlnet`` adds the ControlNet residuals (the authors run the UNet alone). ``image_embeds``
        (IP-Adapter, [[G*N, 1, D]] like ``emb``) are taken the same way as ``emb``.
        """
        n = x_ref.shape[0]
        emb = as_conditioning(emb)
        both = config.guidance_batch and emb.batch == 2 * n
        latent_in = torch.cat([x_ref, x_ref]) if both else x_ref
        emb_in = emb if both else emb.last(n)
        image_in = None if image_embeds is None else [e if both else e[-n:] for e in image_embeds]
        down = mid = None
        if config.controlnet:
            conds_in = conds if both else conds_c
            down, mid = self._controlnet_residuals(latent_in, REFERENCE_TIMESTEP, emb_in, conds_in, scales)
        self.unet(
            latent_in,
            REFERENCE_TIMESTEP,
            **emb_in.model_kwargs(image_in),
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )

    # -- the call --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        frames: list[np.ndarray] | np.ndarray,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        num_inference_steps: int = 20,
        strength: float = 0.75,
        guidance_scale: float = 7.5,
        controlnet_conditioning_scale: float | list[float] = 1.0,
        generator: torch.Generator | None = None,
        fresco: FrescoConfig | None = None,
        correspondence: Correspondence | None = None,
        flow_estimator: FlowEstimator | None = None,
        control_images: list[torch.Tensor] | None = None,
        anchors: AnchorLatents | None = None,
        foreground_masks: np.ndarray | None = None,
        background_smoothing: float = 0.0,
        shared_step_noise: bool = False,
        clip_skip: int = 1,
        style_embeds: torch.Tensor | None = None,
        ip_adapter_scale: float = DEFAULT_SCALE,
        show_progress: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> FrescoOutput:
        """Translate N frames (uint8 RGB [H, W, 3], H and W multiples of 64) with one prompt or one per frame.

        ``correspondence``: the batch's :class:`~fresco_v2v.correspondence.Correspondence` at :attr:`decoder_factors`,
        built from the keyframe flows (:func:`~fresco_v2v.flow.keyframe_flows`, through the video's frames between
        the keys) with the token occlusion rules of ``fresco``; ``translate_video`` passes it. Without one, pass
        ``flow_estimator`` to have the flows estimated straight between the given frames (right for neighbouring
        frames only); with neither, a FRESCO part that needs the correspondence is an error, never a silent guess.

        ``anchors``: the previous batch's :class:`AnchorLatents`; frames 0 and 1 of this batch must then be that
        batch's first and last frame, and their latents are replaced by the recorded ones at every step (§3.5).
        ``control_images``: one [N, 3, H, W] tensor in [0, 1] per ControlNet (default: canny of the frames).
        ``background_smoothing`` α > 0 with ``foreground_masks`` ([N, H, W], nonzero = foreground): after every step
        the background latents are pulled toward the previous frame's along the flow (paper §4, off by default).
        ``shared_step_noise``: draw the per-step noise z_t of eq. 2 once for all frames (the initial noise is always
        one draw for the batch). Default off, as the authors' code draws z_t per frame; the paper says neither.
        ``clip_skip``: the text encoder layer the prompt embeddings come from, as A1111 counts (1: the last).
        ``style_embeds``: [N, D], each frame's style image embedding (``pipe.ip_adapter.encode``): the pipeline's
        IP-Adapter acts at ``ip_adapter_scale`` during this call only (its processors on the cross-attention
        layers, FRESCO's on self-attention); None: no IP-Adapter, even when one is loaded.
        ``should_stop``: asked before every denoising step; when it returns True the call raises
        :class:`~fresco_v2v.errors.Cancelled` (a user's Stop: a step takes seconds, a batch minutes).
        """
        trace = FrescoTrace()
        watch = _Stopwatch(trace.seconds)
        device = self._execution_device
        cfg = (fresco or FrescoConfig()).validate()

        # 1. Check inputs
        frames, prompts, negatives, scales, timesteps = self.check_inputs(
            frames,
            prompt,
            negative_prompt,
            num_inference_steps,
            strength,
            controlnet_conditioning_scale,
            clip_skip,
            background_smoothing,
            foreground_masks,
            anchors,
        )
        n, size = frames.shape[0], frames.shape[1:3]
        check_style_embeds(self.ip_adapter, style_embeds, n)
        trace.timesteps = timesteps
        layers, blocks = self.fresco_layout(cfg)
        alphas = self.scheduler.alphas_cumprod
        t_train = self.scheduler.config.num_train_timesteps
        pred_type = self.scheduler.config.prediction_type

        # 2. Encode prompts: [uncond; cond] under classifier-free guidance
        with watch("text"):
            do_cfg = guidance_scale > 1.0
            emb_c = self.encode_prompts(prompts, clip_skip, size)
            emb = self.encode_prompts(negatives, clip_skip, size).then(emb_c) if do_cfg else emb_c

        # 3. ControlNet conditions
        with watch("control"):
            if control_images is None:
                control_images = [canny_condition(frames)] * self.num_controlnets
            if len(control_images) != self.num_controlnets:
                raise ConfigError("control_images", f"{self.num_controlnets} tensors", len(control_images))
            conds_c = [c.to(device, self.controlnet.dtype) for c in control_images]
            conds = [torch.cat([c, c]) for c in conds_c] if do_cfg else conds_c

        # 4. Correspondence (flows, occlusion, unique region, trajectories) at every decoder scale
        with watch("correspondence"):
            corr = self.prepare_correspondence(frames, cfg, correspondence, flow_estimator, background_smoothing)
            corr = corr.to(device) if corr is not None else None

        # 5. Encode frames, SDEdit start with one noise draw shared by all frames (eq. 1)
        with watch("encode"):
            x0 = self.encode_frames(frames)
            shape = (1, *x0.shape[1:])
            noise = torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")
            latents = add_noise(x0, noise.to(device), timesteps[0], alphas)
            if anchors is not None:
                latents[0], latents[1] = anchors.first[0][0].to(latents), anchors.last[0][0].to(latents)
            record = AnchorLatents(timesteps, [latents[:1].cpu().clone()], [latents[-1:].cpu().clone()])

        context = FrescoAttentionContext(cfg.attention, n, corr)
        a_cfg, o_cfg = cfg.attention, cfg.optimization
        smooth = None
        if background_smoothing > 0 and corr is not None:
            lat = corr[self.vae_scale_factor]  # the latent grid's correspondence
            fg = torch.from_numpy(np.asarray(foreground_masks) > 0)[:, None].float()
            background = F.max_pool2d(fg, self.vae_scale_factor)[:, 0] == 0  # a token touching foreground is foreground
            smooth = (background.to(device), lat.flow_bwd.to(device), lat.visible_mask().to(device))
        # Steps 6-7 with the IP-Adapter on the cross-attention layers when style embeddings are given: installed
        # before FRESCO's self-attention processors, removed after them. image_embeds: [[G*N, 1, D]].
        adapter = self.ip_adapter if style_embeds is not None else None
        image_embeds = (
            None if adapter is None else guidance_image_embeds(style_embeds.to(device, self.unet.dtype), do_cfg)
        )
        with ip_adapter_installed(self, adapter, ip_adapter_scale):
            # 6. Reference pass (§3.3, §3.4): one step over the input frames, recording Q^r, K^r and f^r by name
            with watch("reference"):
                x_ref = add_noise(x0, noise.to(device), REFERENCE_TIMESTEP, alphas)
                emb_ref = emb if do_cfg else emb_c
                reference_features = self.record_reference(
                    x_ref, emb_ref, conds, conds_c, scales, cfg, context, image_embeds
                )

            # 7. Denoising loop with FRESCO-guided attention and feature optimization
            optimizer = FeatureOptimizer(o_cfg, n, corr, reference_features)
            hooks_on = o_cfg.enabled
            with (
                watch("denoise"),
                fresco_attention(self.unet, context, layers),
                decoder_hooks(self.unet, blocks if hooks_on else (), optimizer),
            ):
                steps = tqdm(timesteps, desc="denoising", disable=not show_progress, leave=False)
                try:  # closed on every exit (a Stop, an error): the next message starts on its own line
                    for i, t in enumerate(steps):
                        num = len(timesteps)
                        if should_stop is not None and should_stop():
                            raise Cancelled(f"stopped before denoising step {i + 1} of {num}")
                        context.step = step_constraints(a_cfg, n, i, num, t, t_train)
                        optimizer.active = hooks_on and o_cfg.window.active(i, num, t, t_train)
                        optimizer.step_index = i
                        eps = self.predict_noise(latents, t, emb, conds, scales, guidance_scale, image_embeds)
                        t_prev = timesteps[i + 1] if i + 1 < num else -1
                        z_shape = shape if shared_step_noise else (n, *shape[1:])  # one draw per frame, or one for all
                        z = torch.randn(z_shape, generator=generator, device=generator.device if generator else "cpu")
                        latents, _ = ddpm_step(latents, eps, t, t_prev, alphas, z.to(device), pred_type)
                        if anchors is not None:  # before smoothing, so frame 2 is pulled toward the anchor it meets
                            latents[0], latents[1] = (
                                anchors.first[i + 1][0].to(latents),
                                anchors.last[i + 1][0].to(latents),
                            )
                        if smooth is not None:
                            start = 2 if anchors is not None else 1
                            latents = background_smoothing_step(latents, *smooth, background_smoothing, start)
                        record.first.append(latents[:1].cpu().clone())
                        record.last.append(latents[-1:].cpu().clone())
                finally:
                    steps.close()
        trace.optimization = optimizer.trace

        # 8. Decode
        with watch("decode"):
            out_frames = self.decode_latents(latents)
        logger.info("batch of %d frames: %s", n, {k: round(v, 2) for k, v in trace.seconds.items()})
        return FrescoOutput(out_frames, record, trace, latents)
