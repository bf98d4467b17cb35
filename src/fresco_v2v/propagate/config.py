"""``PropagationConfig``: the options of :func:`fresco_v2v.propagate.propagate` and their checks.

The measurements behind the defaults marked "our measurement" are in ``benchmarks/propagation.md``.
"""

from __future__ import annotations

from dataclasses import fields

from ..validation import MAX_SEED, choice, config_class, flag, integer, number, text


@config_class()
class PropagationConfig:
    """Options of :func:`propagate`. Values are in [0, 1] colour units unless said otherwise.

    Steps 1-4 are those of the package docstring. With ``workers`` > 1 on the CPU, torch's intra-op thread count is
    set to threads // workers while :func:`propagate` runs and restored afterwards (other threads of the program
    using torch meanwhile see it).
    """

    #: Optical flow backend (``fresco_v2v.flow.FLOW_BACKENDS``); "dis" = OpenCV DIS medium, the foundation's default.
    flow: text("a flow backend name") = "dis"
    #: Also warp along consecutive-frame flows composed t -> key (step 1): our measurement, benchmarks/propagation.md.
    chained_flow: flag() = True
    #: Key warp mode; bicubic keeps sharpness (bilinear never overshoots): our measurement, benchmarks/propagation.md.
    warp_mode: choice("bilinear", "bicubic", "nearest") = "bicubic"
    #: Clamp bicubic warps to the 2x2 pixels bilinear mixes; on: our measurement on the held-out split,
    #: benchmarks/propagation.md ("Tuning and held-out split"; off before).
    anti_ringing: flag() = True
    #: Guide error = mean |frame t - warped key source| over a (2r+1)^2 box; r = 2 (5x5, Ebsynth's patch size).
    error_radius: integer(0) = 2
    #: Blend weight exp(-(error / error_scale)^2); 0.04 (10/255): our measurement, benchmarks/propagation.md.
    error_scale: number(gt=0) = 0.04
    #: Guide correction (step 3), our addition; on: our measurement, benchmarks/propagation.md.
    residual_transfer: flag() = True
    #: Window radius of the local colour regression: the guided filter's usual r = 4 (He et al. 2013).
    residual_radius: integer(0) = 4
    #: Regularizer of the local colour regression: the guided filter's usual eps = 1e-3 (He et al. 2013).
    residual_eps: number(gt=0) = 1e-3
    #: Clamp of the colour model's coefficients (noise in flat keys); 1.0: our measurement, benchmarks/propagation.md.
    residual_max_gain: number(gt=0) = 1.0
    #: Colour lookup (step 3b, our addition): True, False or "auto"; "auto": our measurement, benchmarks/propagation.md.
    colour_lookup: choice(True, False, "auto") = "auto"
    #: "auto" threshold on colour_model_error / lookup_self_error; 4: our measurement, benchmarks/propagation.md.
    lookup_auto_ratio: number(ge=0) = 4.0
    #: Search radius in pixels around the flow's match (a disc: 13 pixels at 2; ``local_colour_lookup``); our choice.
    lookup_radius: integer(1) = 2
    #: Colour distance per pixel of offset from the flow's match, so flat regions keep it (no jitter); our choice.
    lookup_offset_penalty: number(ge=0) = 0.005
    #: Weight of the key's mean self error added to the local one; 4: our measurement, benchmarks/propagation.md.
    lookup_prior: number(ge=0) = 4.0
    #: Guided patch synthesis (step 2; Ebsynth's job in the paper's pipeline, §3.5) where no flow candidate holds.
    patch_synthesis: flag() = True
    #: 0.08 (20/255), a documented choice: four times ``error_scale``, where the flow candidates' weights are ~0.
    synthesis_threshold: number(gt=0) = 0.08
    #: Patch side 5, Ebsynth's default.
    patch_size: integer(1, expected="an odd integer >= 1", ok=lambda v: v % 2 == 1) = 5
    #: PatchMatch iterations per pyramid level; Barnes et al. report convergence in 4-5, 3 suffice with a flow seed.
    patch_iterations: integer(1) = 3
    #: Iterations at full resolution (~3/4 of the work); 1: our measurement, benchmarks/propagation.md.
    patch_iterations_finest: integer(1) = 1
    #: The coarse-to-fine patch pyramid goes down to a short side of 32-63 px; our choice.
    pyramid_min_side: integer(4) = 32
    #: Histogram-preserving blend (step 4, Heitz & Neyret 2018); on: our measurement, benchmarks/propagation.md.
    contrast_preserving: flag() = True
    #: Local window radius (15x15) of the histogram-preserving blend; our choice.
    contrast_radius: integer(0) = 7
    #: 1/sqrt(1/2) = 1.41 is the gain for two equally weighted independent inputs; 1.5 leaves room for three.
    max_contrast_gain: number(ge=1) = 1.5
    #: Pre-sharpen the stylized key by its finest band taken twice; off: our measurement, benchmarks/propagation.md.
    key_sharpen: number(ge=0) = 0.0
    #: Give back the finest band's energy that resampling took, where the candidates agree (``restore_detail``).
    detail_restore: flag() = True
    #: Window radius (7x7) of the detail energies (``detail_energy``) and of the candidates' spread; our choice.
    detail_radius: integer(0) = 3
    #: 2.0, a documented choice: a half-pixel shift halves the finest band's energy (tested), gain sqrt(2) undoes it.
    max_detail_gain: number(ge=1) = 2.0
    #: Detail weight exp(-spread / detail_agreement^2); 0.1: our measurement, benchmarks/propagation.md.
    detail_agreement: number(gt=0) = 0.1
    #: Clamp to the candidates' range within this radius (None: off); 1: our measurement, benchmarks/propagation.md.
    detail_range_radius: integer(0, null="no clamp") = 1
    #: Gradient-domain fusion (``poisson_fuse``); off: our measurement, benchmarks/propagation.md.
    poisson: flag() = False
    #: Screening weight of the Poisson fusion: how strongly the colours stay at the blended ones; our choice.
    poisson_weight: number(gt=0) = 0.1
    #: PatchMatch seed; each frame's generator is seeded by (seed, frame index), so ``workers`` changes nothing.
    seed: integer(0, MAX_SEED) = 0
    #: Frames at once, in threads; None: torch's threads on the CPU, else 1: our measurement, benchmarks/propagation.md.
    workers: integer(1, null="automatic") = None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
