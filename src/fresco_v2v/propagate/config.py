"""``PropagationConfig``: the options of :func:`fresco_v2v.propagate.propagate` and their checks.

The measurements behind the defaults marked "our measurement" are in ``benchmarks/propagation.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import ConfigError


@dataclass(frozen=True)
class PropagationConfig:
    """Options of :func:`propagate`. Values are in [0, 1] colour units unless said otherwise.

    Steps 1-4 are those of the package docstring. With ``workers`` > 1 on the CPU, torch's intra-op thread count is
    set to threads // workers while :func:`propagate` runs and restored afterwards (other threads of the program
    using torch meanwhile see it).
    """

    #: Optical flow backend (``fresco_v2v.flow.FLOW_BACKENDS``); "dis" = OpenCV DIS medium, the foundation's default.
    flow: str = "dis"
    #: Also warp along consecutive-frame flows composed t -> key (step 1): our measurement, benchmarks/propagation.md.
    chained_flow: bool = True
    #: Key warp mode; bicubic keeps sharpness (bilinear never overshoots): our measurement, benchmarks/propagation.md.
    warp_mode: str = "bicubic"
    #: Clamp bicubic warps to the 2x2 pixels bilinear mixes; off: our measurement, benchmarks/propagation.md.
    anti_ringing: bool = False
    #: Guide error = mean |frame t - warped key source| over a (2r+1)^2 box; r = 2 (5x5, Ebsynth's patch size).
    error_radius: int = 2
    #: Blend weight exp(-(error / error_scale)^2); 0.04 (10/255): our measurement, benchmarks/propagation.md.
    error_scale: float = 0.04
    #: Guide correction (step 3), our addition; on: our measurement, benchmarks/propagation.md.
    residual_transfer: bool = True
    #: Window radius of the local colour regression: the guided filter's usual r = 4 (He et al. 2013).
    residual_radius: int = 4
    #: Regularizer of the local colour regression: the guided filter's usual eps = 1e-3 (He et al. 2013).
    residual_eps: float = 1e-3
    #: Clamp of the colour model's coefficients (noise in flat keys); 1.0: our measurement, benchmarks/propagation.md.
    residual_max_gain: float = 1.0
    #: Colour lookup (step 3b, our addition): True, False or "auto"; "auto": our measurement, benchmarks/propagation.md.
    colour_lookup: bool | str = "auto"
    #: "auto" threshold on colour_model_error / lookup_self_error; 4: our measurement, benchmarks/propagation.md.
    lookup_auto_ratio: float = 4.0
    #: Search radius in pixels around the flow's match (a disc: 13 pixels at 2; ``local_colour_lookup``); our choice.
    lookup_radius: int = 2
    #: Colour distance per pixel of offset from the flow's match, so flat regions keep it (no jitter); our choice.
    lookup_offset_penalty: float = 0.005
    #: Weight of the key's mean self error added to the local one; 4: our measurement, benchmarks/propagation.md.
    lookup_prior: float = 4.0
    #: Guided patch synthesis (step 2; Ebsynth's job in the paper's pipeline, §3.5) where no flow candidate holds.
    patch_synthesis: bool = True
    #: 0.08 (20/255), a documented choice: four times ``error_scale``, where the flow candidates' weights are ~0.
    synthesis_threshold: float = 0.08
    #: Patch side 5, Ebsynth's default.
    patch_size: int = 5
    #: PatchMatch iterations per pyramid level; Barnes et al. report convergence in 4-5, 3 suffice with a flow seed.
    patch_iterations: int = 3
    #: Iterations at full resolution (~3/4 of the work); 1: our measurement, benchmarks/propagation.md.
    patch_iterations_finest: int = 1
    #: The coarse-to-fine patch pyramid goes down to a short side of 32-63 px; our choice.
    pyramid_min_side: int = 32
    #: Histogram-preserving blend (step 4, Heitz & Neyret 2018); on: our measurement, benchmarks/propagation.md.
    contrast_preserving: bool = True
    #: Local window radius (15x15) of the histogram-preserving blend; our choice.
    contrast_radius: int = 7
    #: 1/sqrt(1/2) = 1.41 is the gain for two equally weighted independent inputs; 1.5 leaves room for three.
    max_contrast_gain: float = 1.5
    #: Pre-sharpen the stylized key by its finest band taken twice; off: our measurement, benchmarks/propagation.md.
    key_sharpen: float = 0.0
    #: Give back the finest band's energy that resampling took, where the candidates agree (``restore_detail``).
    detail_restore: bool = True
    #: Window radius (7x7) of the detail energies (``detail_energy``) and of the candidates' spread; our choice.
    detail_radius: int = 3
    #: 2.0, a documented choice: a half-pixel shift halves the finest band's energy (tested), gain sqrt(2) undoes it.
    max_detail_gain: float = 2.0
    #: Detail weight exp(-spread / detail_agreement^2); 0.1: our measurement, benchmarks/propagation.md.
    detail_agreement: float = 0.1
    #: Clamp to the candidates' range within this radius (None: off); 1: our measurement, benchmarks/propagation.md.
    detail_range_radius: int | None = 1
    #: Gradient-domain fusion (``poisson_fuse``); off: our measurement, benchmarks/propagation.md.
    poisson: bool = False
    #: Screening weight of the Poisson fusion: how strongly the colours stay at the blended ones; our choice.
    poisson_weight: float = 0.1
    #: PatchMatch seed; each frame's generator is seeded by (seed, frame index), so ``workers`` changes nothing.
    seed: int = 0
    #: Frames at once, in threads; None: torch's threads on the CPU, else 1: our measurement, benchmarks/propagation.md.
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.warp_mode not in ("bilinear", "bicubic", "nearest"):
            raise ConfigError("warp_mode", "'bilinear', 'bicubic' or 'nearest'", self.warp_mode)
        if not isinstance(self.lookup_radius, int) or isinstance(self.lookup_radius, bool) or self.lookup_radius < 1:
            raise ConfigError("lookup_radius", "an integer >= 1", self.lookup_radius)
        for name in ("error_radius", "residual_radius", "contrast_radius", "detail_radius"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(name, "an integer >= 0", v)
        for name in (
            "error_scale",
            "residual_eps",
            "residual_max_gain",
            "synthesis_threshold",
            "poisson_weight",
            "detail_agreement",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ConfigError(name, "a number > 0", v)
        for name in ("key_sharpen", "lookup_offset_penalty", "lookup_prior", "lookup_auto_ratio"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < float("inf"):
                raise ConfigError(name, "a finite number >= 0", v)
        for name in ("max_contrast_gain", "max_detail_gain"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 1:
                raise ConfigError(name, "a number >= 1", v)
        if not isinstance(self.patch_size, int) or self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ConfigError("patch_size", "an odd integer >= 1", self.patch_size)
        for name in ("patch_iterations", "patch_iterations_finest"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(name, "an integer >= 1", v)
        if not isinstance(self.pyramid_min_side, int) or self.pyramid_min_side < 4:
            raise ConfigError("pyramid_min_side", "an integer >= 4", self.pyramid_min_side)
        for name in (
            "chained_flow",
            "anti_ringing",
            "residual_transfer",
            "patch_synthesis",
            "contrast_preserving",
            "detail_restore",
            "poisson",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, "True or False", getattr(self, name))
        if self.colour_lookup not in (True, False, "auto") or not isinstance(self.colour_lookup, (bool, str)):
            raise ConfigError("colour_lookup", "True, False or 'auto'", self.colour_lookup)
        if not isinstance(self.flow, str):
            raise ConfigError("flow", "a flow backend name", self.flow)
        if self.detail_range_radius is not None and (
            not isinstance(self.detail_range_radius, int)
            or isinstance(self.detail_range_radius, bool)
            or self.detail_range_radius < 0
        ):
            raise ConfigError("detail_range_radius", "None (no clamp) or an integer >= 0", self.detail_range_radius)
        if self.workers is not None and (
            not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1
        ):
            raise ConfigError("workers", "None (automatic) or an integer >= 1", self.workers)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
