"""Typed, validated configuration of the FRESCO diffusion core (YAML section ``fresco:``). Each default names its
source.

Where the paper and the authors' code differ, both are exposed and the paper's value is the default unless noted.
Schedules are fractions of the trajectory, never step numbers (see :class:`StepWindow`). Construction validates
(``fresco_v2v.validation``): a wrong value raises a ConfigError named by its path in a config file, e.g.
``fresco.attention.lambda_s``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .validation import Invalid, choice, config_class, flag, integer, number, section, seq, text

#: Token occlusion rules (``fresco_v2v.correspondence``): a token is occluded when any pixel, more than half of its
#: area, or its centre sample is.
TOKEN_OCCLUSION_RULES = ("any", "area", "centre")


@config_class()
class StepWindow:
    """Which denoising steps a constraint is active on, as a half-open window [start, end) of a fraction.

    ``axis="steps"``: the fraction is i / n over the n steps actually run (after SDEdit's truncation), so
    ``StepWindow(0, 0.75)`` is the first 75% of the steps whatever n is. ``axis="noise"``: the fraction is
    1 - t / T of the diffusion time (T = the scheduler's training steps), so ``StepWindow(0, 0.65, "noise")`` is
    every step with t >= 0.35 T, whatever the strength and step count. The section holding a window checks
    0 <= start <= end <= 1, so that the error names the window.
    """

    start: number() = 0.0
    end: number() = 1.0
    axis: choice("steps", "noise") = "steps"

    def active(self, step_index: int, num_steps: int, timestep: int, num_train_timesteps: int) -> bool:
        u = step_index / num_steps if self.axis == "steps" else 1.0 - timestep / num_train_timesteps
        return self.start <= u < self.end


def check_windows(cfg, *names: str) -> None:
    """Each named StepWindow field of ``cfg`` within [0, 1] and not reversed."""
    for name in names:
        w = getattr(cfg, name)
        if not (0.0 <= w.start <= w.end <= 1.0):
            raise Invalid("0 <= start <= end <= 1", {"start": w.start, "end": w.end}, at=(name,))


def _layer_prefix(name: str) -> bool:
    return name.startswith(("up_blocks.", "down_blocks.", "mid_block"))


@config_class("fresco.attention")
class AttentionConfig:
    """FRESCO-guided attention (paper §3.4), on the decoder's self-attention layers."""

    #: Eq. 7 on/off.
    spatial_guided: flag() = True
    #: Eq. 8 on/off (off: each frame attends to itself, standard self-attention).
    cross_frame: flag() = True
    #: Eq. 9 on/off.
    temporal_guided: flag() = True
    #: λ_s of eq. 7, paper §4.
    lambda_s: number(gt=0) = Field(5.0, description="λ_s of spatial-guided attention (eq. 7)")
    #: λ_t of eq. 9, paper §4.
    lambda_t: number(gt=0) = Field(5.0, description="λ_t of temporal-guided attention (eq. 9)")
    #: Self-attention layers guided: name prefixes in ``unet.attn_processors`` (paper §3.2 "decoder layers").
    #: None (default): the model's own two finest decoder levels with self-attention
    #: (:func:`fresco_v2v.decoder_layout.default_guided_prefixes`): on SD1.5 up_blocks 2 and 3, i.e. 1/16 and 1/8 of
    #: the frame, as the authors' code; on SDXL, whose decoder attends at 1/32 and 1/16 only, up_blocks 0 and 1.
    layers: seq(
        text("an attention-processor name prefix such as 'up_blocks.2'", _layer_prefix),
        "attention-processor name prefixes such as 'up_blocks.2'",
        nonempty=True,
        null="the model's two finest decoder levels with self-attention",
    ) = None
    #: Spatial-guided attention on the first 5% of the steps: the first step at 20 steps (the authors' practice).
    spatial_window: StepWindow = StepWindow(0.0, 0.05)
    #: Temporal-guided attention while t >= 350/1000 (the authors' practice).
    temporal_window: StepWindow = StepWindow(0.0, 0.65, "noise")
    #: Cross-frame attention on every step (paper §3.4).
    cross_frame_window: StepWindow = StepWindow(0.0, 1.0)
    #: When a token counts as occluded for eq. 8's unique region and eq. 9's links: "area" (more than half of its
    #: pixels, as the authors' code thresholds the downsampled mask at 0.5, default), "centre" (the authors' exact
    #: bilinear downsampling), or "any" pixel (max-pool; empties the correspondence on real motion, README).
    token_occlusion: choice(*TOKEN_OCCLUSION_RULES) = "area"
    #: Queries are chunked so that one attention score block holds at most this many elements (a memory budget:
    #: 2**26 float32 scores = 256 MiB); a documented choice.
    max_attention_elements: integer(1024) = 2**26

    @model_validator(mode="after")
    def _windows(self) -> AttentionConfig:
        check_windows(self, "spatial_window", "temporal_window", "cross_frame_window")
        return self


@config_class("fresco.optimization")
class OptimizationConfig:
    """FRESCO-aware feature optimization (paper §3.3)."""

    enabled: flag() = True
    #: ``unet.up_blocks[i]`` whose input is optimized. None (default): every decoder block of the model (paper §3.3:
    #: "each decoder layer"; the authors: all four of SD1.5; SDXL has three). Indices beyond the model's blocks are
    #: refused when the pipeline runs.
    blocks: seq(
        integer(0, 3), "decoder block indices in 0..3", nonempty=True, null="every decoder block of the model"
    ) = None
    #: Adam iterations K, paper §4.
    iterations: integer(1) = Field(20, description="Adam iterations K")
    #: Adam learning rate: paper §4 says 0.4 (default); the authors' code uses 0.2.
    learning_rate: number(gt=0) = Field(0.4, description="Adam learning rate (paper §4; the authors' code: 0.2)")
    #: λ_spat of eq. 6, paper §4, on our scale: both losses are means (README, "How strongly L_spat pulls against
    #: L_temp"; under Adam only the balance of the terms matters).
    lambda_spat: number(ge=0) = Field(50.0, description="λ_spat of L_spat (eq. 6)")
    #: L_temp (eq. 5) on/off.
    temporal: flag() = True
    #: L_spat (eq. 6) on/off.
    spatial: flag() = True
    #: Eq. 6 norm: "l1" (the authors' code, default: their balance, measured better in the toy world, README) or
    #: "fro" (the paper's squared Frobenius norm).
    spatial_norm: choice("l1", "fro", expected="'l1' (authors' code) or 'fro' (paper)") = "l1"
    #: Eq. 5 in both directions on the same pairs, i -> i+1 and i+1 -> i (the authors' code, default; their wrap-around
    #: pair, the last frame with frame 0, is left out). False: the paper's one direction.
    bidirectional_temporal: flag() = True
    #: Renormalize the optimized feature to the original's per-channel mean and std (authors' code; on).
    adain: flag() = True
    #: Optimization while t >= 251 of T = 1000, the first 75% of the *full* schedule: the authors' code optimizes on
    #: ``timesteps[:15]`` of 20 (at strength 0.75 that is 10 of the 15 steps run, t = 701 ... 251). The paper gives
    #: no window. ``StepWindow(0, 0.75)`` (steps axis) is the first 75% of the steps run (12 at strength 0.75).
    window: StepWindow = StepWindow(0.0, 0.75, "noise")
    #: When a token counts as occluded for L_temp's mask M (eq. 5): "any" of its pixels (the authors max-pool the
    #: occlusion for their temporal loss, default), "area" or "centre" (see ``AttentionConfig.token_occlusion``).
    token_occlusion: choice(*TOKEN_OCCLUSION_RULES) = "any"

    @model_validator(mode="after")
    def _windows(self) -> OptimizationConfig:
        check_windows(self, "window")
        return self


@config_class("fresco.reference")
class ReferenceConfig:
    """The reference pass (paper §3.3, §3.4): one UNet step over the input frames at t = 1 that records Q^r, K^r
    (eq. 7) and f^r (eq. 6). The paper says only "the input frame"; both defaults follow the authors' code
    (``get_intraframe_paras`` in their ``src/diffusion_hacked.py``)."""

    #: ControlNet residuals in the reference pass. Off (default): the UNet alone, as the authors' code. On: the
    #: reference sees the same ControlNet condition as the denoising steps (fresco-v2v before this option).
    controlnet: flag() = False
    #: Under classifier-free guidance, run the pass on the batch [negative; positive] like a denoising step, so the
    #: unconditional half gets its own Q^r, K^r and f^r (default, the authors' code). Off: the positive prompt
    #: only, its records reused for both halves (fresco-v2v before this option; half the pass's batch).
    guidance_batch: flag() = True


@config_class("fresco")
class FrescoConfig:
    attention: section(AttentionConfig) = Field(default_factory=AttentionConfig)
    optimization: section(OptimizationConfig) = Field(default_factory=OptimizationConfig)
    reference: section(ReferenceConfig) = Field(default_factory=ReferenceConfig)

    @property
    def token_occlusion(self) -> tuple[str, str]:
        """(attention rule, loss rule): what ``build_correspondence`` takes as attention_/loss_occlusion."""
        return self.attention.token_occlusion, self.optimization.token_occlusion

    def validate(self) -> FrescoConfig:
        """Construction has validated everything; kept so that callers can say what they rely on."""
        return self
