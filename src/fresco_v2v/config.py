"""Typed, validated configuration of the FRESCO diffusion core. Each default names its source.

Where the paper and the authors' code differ, both are exposed and the paper's value is the default unless noted.
Schedules are fractions of the trajectory, never step numbers (see :class:`StepWindow`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class StepWindow:
    """Which denoising steps a constraint is active on, as a half-open window [start, end) of a fraction.

    ``axis="steps"``: the fraction is i / n over the n steps actually run (after SDEdit's truncation), so
    ``StepWindow(0, 0.75)`` is the first 75% of the steps whatever n is. ``axis="noise"``: the fraction is
    1 - t / T of the diffusion time (T = the scheduler's training steps), so ``StepWindow(0, 0.65, "noise")`` is
    every step with t >= 0.35 T, whatever the strength and step count.
    """

    start: float = 0.0
    end: float = 1.0
    axis: str = "steps"

    def active(self, step_index: int, num_steps: int, timestep: int, num_train_timesteps: int) -> bool:
        u = step_index / num_steps if self.axis == "steps" else 1.0 - timestep / num_train_timesteps
        return self.start <= u < self.end

    def validate(self, name: str) -> None:
        if self.axis not in ("steps", "noise"):
            raise ConfigError(f"{name}.axis", "'steps' or 'noise'", self.axis)
        if not (0.0 <= self.start <= self.end <= 1.0):
            raise ConfigError(name, "0 <= start <= end <= 1", (self.start, self.end))


@dataclass(frozen=True)
class AttentionConfig:
    """FRESCO-guided attention (paper §3.4), on the decoder's self-attention layers."""

    #: Eq. 7 on/off.
    spatial_guided: bool = True
    #: Eq. 8 on/off (off: each frame attends to itself, standard self-attention).
    cross_frame: bool = True
    #: Eq. 9 on/off.
    temporal_guided: bool = True
    #: λ_s of eq. 7, paper §4.
    lambda_s: float = 5.0
    #: λ_t of eq. 9, paper §4.
    lambda_t: float = 5.0
    #: Self-attention layers guided: name prefixes in ``unet.attn_processors`` (paper §3.2 "decoder layers";
    #: the authors' code uses up_blocks 2 and 3, i.e. 1/16 and 1/8 of the frame).
    layers: tuple[str, ...] = ("up_blocks.2", "up_blocks.3")
    #: Spatial-guided attention on the first step only (the authors' practice).
    spatial_window: StepWindow = StepWindow(0.0, 0.05)
    #: Temporal-guided attention while t >= 350/1000 (the authors' practice).
    temporal_window: StepWindow = StepWindow(0.0, 0.65, "noise")
    #: Cross-frame attention on every step (paper §3.4).
    cross_frame_window: StepWindow = StepWindow(0.0, 1.0)
    #: Queries are chunked so that one attention score block holds at most this many elements (a memory budget:
    #: 2**26 float32 scores = 256 MiB); a documented choice.
    max_attention_elements: int = 2**26


@dataclass(frozen=True)
class OptimizationConfig:
    """FRESCO-aware feature optimization (paper §3.3)."""

    enabled: bool = True
    #: ``unet.up_blocks[i]`` whose input is optimized (paper §3.3: "each decoder layer"; the authors: all four).
    blocks: tuple[int, ...] = (0, 1, 2, 3)
    #: Adam iterations K, paper §4.
    iterations: int = 20
    #: Adam learning rate: paper §4 says 0.4 (default); the authors' code uses 0.2.
    learning_rate: float = 0.4
    #: λ_spat of eq. 6, paper §4.
    lambda_spat: float = 50.0
    #: L_temp (eq. 5) on/off.
    temporal: bool = True
    #: L_spat (eq. 6) on/off.
    spatial: bool = True
    #: Eq. 6 norm: "fro" (squared Frobenius, paper, default) or "l1" (authors' code).
    spatial_norm: str = "fro"
    #: Eq. 5 in both flow directions (authors' code) instead of i -> i+1 only (paper, default).
    bidirectional_temporal: bool = False
    #: Renormalize the optimized feature to the original's per-channel mean and std (authors' code; on).
    adain: bool = True
    #: Optimization on the first 75% of the steps (the authors' practice).
    window: StepWindow = StepWindow(0.0, 0.75)


@dataclass(frozen=True)
class FrescoConfig:
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)

    def validate(self) -> FrescoConfig:
        a, o = self.attention, self.optimization
        for name, value in (("attention.lambda_s", a.lambda_s), ("attention.lambda_t", a.lambda_t)):
            if not value > 0:
                raise ConfigError(name, "a positive number", value)
        if not a.layers or not all(
            isinstance(p, str) and p.startswith(("up_blocks.", "down_blocks.", "mid_block")) for p in a.layers
        ):
            raise ConfigError("attention.layers", "attention-processor name prefixes such as 'up_blocks.2'", a.layers)
        if not (isinstance(a.max_attention_elements, int) and a.max_attention_elements >= 1024):
            raise ConfigError("attention.max_attention_elements", "an integer >= 1024", a.max_attention_elements)
        for name in ("spatial_window", "temporal_window", "cross_frame_window"):
            getattr(a, name).validate(f"attention.{name}")
        if not (isinstance(o.iterations, int) and o.iterations >= 1):
            raise ConfigError("optimization.iterations", "an integer >= 1", o.iterations)
        if not o.learning_rate > 0:
            raise ConfigError("optimization.learning_rate", "a positive number", o.learning_rate)
        if not o.lambda_spat >= 0:
            raise ConfigError("optimization.lambda_spat", "a number >= 0", o.lambda_spat)
        if o.spatial_norm not in ("fro", "l1"):
            raise ConfigError("optimization.spatial_norm", "'fro' (paper) or 'l1' (authors' code)", o.spatial_norm)
        if not o.blocks or not all(isinstance(b, int) and 0 <= b <= 3 for b in o.blocks):
            raise ConfigError("optimization.blocks", "decoder block indices in 0..3", o.blocks)
        o.window.validate("optimization.window")
        return self


def to_dict(obj) -> dict:
    """A config as plain data (for run.json and YAML)."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
