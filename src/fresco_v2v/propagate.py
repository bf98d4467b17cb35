"""Propagation: render every non-keyframe from the translated keyframes (paper §3.5), in PyTorch, no C++ build.

The paper (following Rerender-A-Video, which runs Ebsynth) translates only keyframes and fills each frame between
two keys from both of them, guided by the source video, then blends the two results. Ours, per frame t between
keys L and R:

1. **Candidates from each key** (``flow_candidate``): the stylized key warped along the source video's optical
   flow t -> key, twice per key: the direct flow (one DIS estimate between t and the key) and the chained flow
   (consecutive-frame flows composed), because each fails where the other holds (large motion vs. drift).
2. **Guided patch synthesis where no flow holds** (``fresco_v2v.patchmatch``): where every flow candidate's
   guide error is high (occlusion, disocclusion, flow failure), PatchMatch over the source frames, coarse to
   fine, with voting, copies stylized patches whose source patch matches frame t.
3. **Guide correction** (``residual_coefficients``): each candidate carries the key's source pixels it came from;
   the difference to frame t's own pixels (lighting, sub-pixel misalignment, small deformations) is mapped into
   the style by the key's local linear colour model (the guided filter's 3x3 regression of stylized on source,
   He et al. 2013), a first-order correction of the copied style. Our addition; it can be switched off.
3b. **Local colour lookup** (``lookup_candidate``, ``apply_colour_lookup``): where the style is a function of colour
   that a linear model cannot follow (posterization thresholds, flat-colour styles), frame t's own colour says what
   changed: near the flow's match in each key, the stylized pixel whose source colour is closest to frame t's
   (guided synthesis with 1x1 patches in a small window). It replaces the blend as far as it is trusted: its colour
   distance plus how well the key's own colours predict its style there (a leave-one-out test on the key,
   ``lookup_self_error``). By default only for keys where that test beats the local linear model clearly
   (``colour_model_error``; ``colour_lookup="auto"``). Our addition.
4. **Blending** (``histogram_preserving_blend``): weights = temporal distance x exp(-(guide error / scale)^2) per
   pixel; the linear mix is then re-contrasted so its local variance equals the weighted variance of the inputs
   (histogram-preserving blending, Heitz & Neyret 2018, in a local form that leaves aligned inputs unchanged); the
   finest band's energy that resampling removed is given back where the candidates agree (``restore_detail``), and
   the result is optionally fused in the gradient domain (``screened_poisson``) to remove remaining ghost edges.

Frames before the first key or after the last one use one key (one-sided); keys are returned unchanged.
Everything runs on the device passed in (CPU, CUDA or MPS); optical flow (OpenCV DIS) runs on the CPU. The frames
between two keys are independent given the keys, so on the CPU several are synthesized at once, in threads
(``PropagationConfig.workers``); each frame's random search has its own seed, so the result is the same for any
number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import Cancelled, ConfigError
from .flow import FlowEstimator, compose_flows, get_flow_estimator, sampling_grid
from .patchmatch import SourcePyramid, build_source_pyramid, guided_synthesis

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PropagationConfig:
    """Options of :func:`propagate`. Values are in [0, 1] colour units unless said otherwise."""

    #: Optical flow backend (``fresco_v2v.flow.FLOW_BACKENDS``); "dis" = OpenCV DIS medium, the foundation's default.
    #: "dis-fine" (full resolution) is an option for slow, detailed motion, measured (31 frames, keys every 10):
    #: +0.5 / +0.6 dB on music / car-turn cv2.stylization, but the fast boxer clip loses 0.2 / 0.5 dB on posterize /
    #: edge-preserving + LUT, flicker rises above the ground truth's on posterize + hue shift (dog 1.55 vs 1.41,
    #: boxer 2.91 vs 2.59) and it costs ~0.1 s more per frame (with the earlier detail defaults).
    flow: str = "dis"
    #: Also warp along consecutive-frame flows composed t -> key (measured with keys every 10 frames, 21 frames of
    #: dog.mp4, stylization: 28.45 dB with it, 28.06 dB without; costs two more DIS estimates per frame).
    chained_flow: bool = True
    #: grid_sample mode for warping the stylized key: "bicubic" keeps sharpness (measured on car-turn.mp4,
    #: stylization: gradient energy 0.91 of the truth with bicubic, 0.76 with bilinear), "bilinear" never overshoots.
    warp_mode: str = "bicubic"
    #: Anti-ringing: clamp the bicubic warp to the range of the four pixels bilinear interpolation would mix, so hard
    #: edges do not overshoot (only bicubic overshoots: with the other modes there is nothing to clamp). Off:
    #: measured with the current defaults (music / car-turn, 31 frames) it gains 0.11 dB on music posterize and
    #: 0.05-0.06 dB on cv2.stylization but takes that sharpness from 0.962 to 0.949 (music) and 0.951 to 0.937
    #: (car-turn); with the earlier detail defaults: +0.04-0.16 dB on posterize, sharpness 0.945 -> 0.924 and
    #: 0.934 -> 0.908.
    anti_ringing: bool = False
    #: Guide error = mean |frame t - warped key source| over a (2r+1)^2 box; r = 2 (5x5, Ebsynth's patch size).
    error_radius: int = 2
    #: Blend weight falls as exp(-(error / error_scale)^2); 0.04 (10/255), a documented choice (0.02 measured worse
    #: on car-turn.mp4 by 0.2-0.4 dB).
    error_scale: float = 0.04
    #: Guide correction (module docstring, step 3); our addition. Measured (21 frames, car-turn / dog): +2.3 / +2.9 dB
    #: on the edge-preserving + LUT filter, +0.6 dB on posterize + hue shift, -0.1 dB on cv2.stylization.
    residual_transfer: bool = True
    #: Window radius and regularizer of the local colour regression: the guided filter's usual r = 4, eps = 1e-3.
    residual_radius: int = 4
    residual_eps: float = 1e-3
    #: Coefficients clamped to [-g, g] so noise in flat keys cannot amplify the guide difference. 1.0, measured
    #: (all four clips, 31 frames, keys every 10): vs 2.0 it gains 0.01-0.05 dB on cv2.stylization (whose inked
    #: edges give the steepest local fits) and changes edge_lut and posterize by at most +0.02 dB.
    residual_max_gain: float = 1.0
    #: Local colour lookup (module docstring, step 3b; our addition): True, False or "auto". "auto" (the default)
    #: turns it on for a key whose own colours predict its style (``lookup_self_error``) at least
    #: ``lookup_auto_ratio`` times better, on the key's mean, than the local linear colour model does
    #: (``colour_model_error``): posterized and flat-colour styles, which only a lookup follows across thresholds.
    #: Measured (benchmarks/propagation.log vs propagation_before_lookup_auto.log, all four clips, 31 frames, keys
    #: every 10): on for posterize + hue shift, +0.44 to +0.87 dB (music 26.58 dB, the two-key blend 26.38, without
    #: it 26.10), sharpness 0.98-1.09 of the truth, ~0.1-0.15 s more per frame on a 2-core CPU; off for
    #: cv2.stylization and edge-preserving + LUT (identical output), where an earlier form of the lookup, forced on,
    #: cost up to 0.8 dB (boxer edge + LUT) and flicker (dog edge + LUT above the truth's). A style from a diffusion
    #: model is not a function of the source colour: it stays off there, for the cost of the test (a fraction of a
    #: second per key).
    colour_lookup: bool | str = "auto"
    #: The "auto" threshold: 4, a measured choice (benchmarks/colour_lookup_gate.py, the propagation benchmark's 16
    #: keys per filter: posterize + hue shift 4.8-14.9, cv2.stylization 1.6-2.9, edge-preserving + LUT 1.8-2.4).
    lookup_auto_ratio: float = 4.0
    #: Search radius in pixels around the flow's match (a disc: 13 pixels at 2; ``local_colour_lookup``).
    lookup_radius: int = 2
    #: Colour distance added per pixel of offset from the flow's match, so that among equally good colour matches
    #: (flat regions) the flow's own match wins and textures are not jittered.
    lookup_offset_penalty: float = 0.005
    #: Weight of the key-wide mean self error added to the local one (``lookup_self_error``): a small local error
    #: is luck more often than not in a key whose style mostly does not follow colour. 4, measured with an earlier
    #: form of the lookup (a histogram-preserving mix, 5x5 window) forced on everywhere (music / dog / car-turn,
    #: 31 frames): vs 2, dog cv2.stylization keeps sharpness 0.961 (0.953 with 2) and car-turn 0.950 (0.948), music
    #: posterize 27.07 vs 27.14 dB.
    lookup_prior: float = 4.0
    #: Guided patch synthesis where every flow candidate's guide error exceeds ``synthesis_threshold``.
    patch_synthesis: bool = True
    #: 0.08 (20/255), a documented choice: four times ``error_scale``, where the flow candidates' weights are ~0.
    synthesis_threshold: float = 0.08
    #: Patch side 5 (Ebsynth's default) and a coarse-to-fine pyramid down to a short side of 32-63 px.
    patch_size: int = 5
    #: PatchMatch iterations per pyramid level; Barnes et al. report convergence in 4-5, 3 suffice with a flow seed.
    patch_iterations: int = 3
    #: Iterations at the full-resolution level, where ~3/4 of the work is (the upsampled coarse match is already
    #: close there). 1, a measured choice: one synthesis of a 5% mask at 512x512 takes 0.14 s instead of 0.20 s
    #: (3 iterations), and boxer (31 frames, keys every 10) loses 0.00 / 0.02 / 0.04 dB on the three filters.
    patch_iterations_finest: int = 1
    pyramid_min_side: int = 32
    #: Histogram-preserving (contrast-keeping) blend: local window radius and the largest gain it may apply
    #: (measured on car-turn.mp4, stylization: sharpness 0.93 with it, 0.90 without, for -0.07 dB).
    contrast_preserving: bool = True
    contrast_radius: int = 7
    #: 1/sqrt(1/2) = 1.41 is the gain for two equally weighted independent inputs; 1.5 leaves room for three.
    max_contrast_gain: float = 1.5
    #: Interpolation compensation: the stylized key is pre-sharpened by ``key_sharpen`` * (its finest band taken
    #: twice, response ~sin^4(w/2), peaking at the Nyquist frequency where sub-pixel warps attenuate most). Off:
    #: measured on car-turn.mp4, 0.5 costs 0.3-0.8 dB (sharper edges at slightly wrong places).
    key_sharpen: float = 0.0
    #: Detail restoration: give back the finest band's local energy that resampling took from the candidates
    #: (relative to the keys' energy at the same place), where the candidates agree; window radius, largest gain.
    detail_restore: bool = True
    detail_radius: int = 3
    #: 2.0, a documented choice: a half-pixel shift halves the finest band's energy (tested), gain sqrt(2) undoes it.
    max_detail_gain: float = 2.0
    #: Detail is restored with weight exp(-spread / detail_agreement^2), spread = local weighted variance of the
    #: candidates around the blend: where they disagree on where edges are, sharpening would sharpen the wrong edge.
    #: 0.1 with ``detail_range_radius`` 1, a measured choice (benchmarks/propagation.log, all four clips, 31 frames,
    #: keys every 10; the earlier 0.04 without the range clamp in benchmarks/propagation_before_range_clamp.log):
    #: cv2.stylization's sharpness rises from 0.934-0.986 to 0.951-0.985 of the truth for -0.02 to +0.02 dB,
    #: edge-preserving + LUT gains 0.01-0.06 dB, posterize + hue shift loses 0.01-0.09 dB, flicker rises by at most
    #: 0.06 and stays below the ground truth's.
    detail_agreement: float = 0.1
    #: After detail restoration each pixel is clamped into the range the (non-lookup) candidates span within this
    #: radius (``clamp_to_candidate_range``); None turns it off. 1, measured (music / car-turn, cv2.stylization, with
    #: ``detail_agreement`` 0.1): 26.91 / 27.92 dB with it, 26.87 / 27.89 dB without (sharpness 0.962 / 0.951 vs
    #: 0.967 / 0.957); radius 0 gains another 0.04 dB but car-turn's sharpness falls to 0.943.
    detail_range_radius: int | None = 1
    #: Gradient-domain fusion, an option. Off: measured (music / car-turn, 31 frames, cv2.stylization, with the
    #: earlier detail_agreement 0.04 and no range clamp) it costs
    #: 0.30 / 0.33 dB at poisson_weight 0.1 and 0.18 / 0.20 dB at 0.5, and even lowers the sharpness ratio (0.946 ->
    #: 0.939, 0.934 -> 0.916): the dominant candidate's gradients are those of a resampled warp, while the blend has
    #: had its detail restored.
    poisson: bool = False
    #: Screening weight of the Poisson fusion: how strongly the colours stay at the blended ones.
    poisson_weight: float = 0.1
    #: Seed of the PatchMatch random search. Each frame draws from its own torch.Generator on the compute device,
    #: seeded by (seed, frame index), so the output does not depend on ``workers`` or on the order frames finish.
    seed: int = 0
    #: Frames synthesized at once, in threads (torch releases the GIL inside its kernels). None = on the CPU, as many
    #: as torch's intra-op threads (each frame then runs its kernels on one thread: the same thread count, better
    #: filled, since many of the per-frame kernels are too small to split); elsewhere 1 (a GPU queues the kernels
    #: anyway). Measured (benchmarks/propagation.py --clips boxer-punching-towards-camera --filters stylization
    #: edge_lut --methods ours --max-frames 31 --set workers=N, 2 CPU threads, runs alternated 1, 2, 1, 2): flows and
    #: synthesis 0.85-0.95 s per frame with 2 workers vs 1.02-1.33 s with 1, the same output; 0.79-0.87 s once two
    #: key segments are in flight (see ``propagate``). While it runs, torch's intra-op thread count is set to
    #: threads // workers and restored afterwards (other threads of the program using torch meanwhile see it).
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


# ----------------------------------------------------------------------------------------------- small pure maths


def _box_sum_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Sum over [i - r, i + r] clipped to the array along ``dim``, by a cumulative sum (cost independent of r)."""
    n = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [radius + 1, radius]
    c = F.pad(x, pad).cumsum(dim)
    return c.narrow(dim, 2 * radius + 1, n) - c.narrow(dim, 0, n)


def _window_count(n: int, radius: int, device, dtype) -> torch.Tensor:
    i = torch.arange(n, device=device)
    return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).to(dtype)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window clipped to the image: [..., H, W] -> [..., H, W]."""
    if radius == 0:
        return x
    h, w = x.shape[-2:]
    s = _box_sum_1d(_box_sum_1d(x, radius, -1), radius, -2)
    count = _window_count(h, radius, x.device, x.dtype)[:, None] * _window_count(w, radius, x.device, x.dtype)
    return s / count


def residual_coefficients(source: torch.Tensor, stylized: torch.Tensor, radius: int, eps: float, max_gain: float):
    """Local linear colour model stylized ~ A^T source + b in each (2r+1)^2 window (guided filter, colour form).

    source, stylized: [3, H, W] in [0, 1]. Returns A as [3, 3, H, W], A[i, j] = d stylized_j / d source_i, solved
    per pixel from (Sigma_II + eps I) A = Sigma_IS and clamped to [-max_gain, max_gain].
    """
    c, h, w = source.shape
    mu_i, mu_s = box_mean(source, radius), box_mean(stylized, radius)
    cov_ii = box_mean(source[:, None] * source[None], radius) - mu_i[:, None] * mu_i[None]  # [3, 3, H, W]
    cov_is = box_mean(source[:, None] * stylized[None], radius) - mu_i[:, None] * mu_s[None]  # [3, 3, H, W]
    eye = torch.eye(c, device=source.device, dtype=source.dtype)
    lhs = cov_ii.permute(2, 3, 0, 1) + eps * eye  # [H, W, 3, 3]
    a = torch.linalg.solve(lhs, cov_is.permute(2, 3, 0, 1))  # [H, W, 3, 3]
    return a.permute(2, 3, 0, 1).clamp(-max_gain, max_gain).contiguous()


def apply_residual(stylized: torch.Tensor, coeffs: torch.Tensor, guide_diff: torch.Tensor) -> torch.Tensor:
    """stylized_j + sum_i A[i, j] diff_i: [3, H, W], [3, 3, H, W], [3, H, W] -> [3, H, W] (fused multiply-adds)."""
    out = stylized
    for i in range(coeffs.shape[0]):
        out = torch.addcmul(out, coeffs[i], guide_diff[i : i + 1])
    return out


def colour_levels(image: torch.Tensor) -> torch.Tensor:
    """[C, H, W] in [0, 1] -> 8-bit levels round(255 x) as int16 (the frames are uint8, so this is exact for them)."""
    return (image * 255).round_().to(torch.int16)


def local_colour_lookup(
    target: torch.Tensor,
    guide: torch.Tensor,
    carried: torch.Tensor,
    radius: int,
    offset_penalty: float,
    exclude_centre: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel x, ``carried`` at the pixel of ``guide`` within distance r of x whose colour is closest to target(x).

    target, guide: [3, H, W] 8-bit levels (``colour_levels``); carried: [C, H, W] any values. Cost of offset o, in
    integer units of 1/8 level: 8 sum_c |target(x) - guide(x + o)| + round(8 * 3 * 255 * offset_penalty * |o|) (|o|
    the Euclidean length in pixels: the penalty is per channel-mean colour unit in [0, 1], as the distance), the
    window clamped to the image (border pixels repeat); ties go to the smaller offset. ``exclude_centre`` leaves
    o = 0 out (a leave-one-out test of the guide against itself).
    Returns (carried at the chosen pixel [C, H, W], the chosen mean_c |target - guide| / 255 [H, W]).
    The window is a disc, the offsets o with |o| <= r (13 at r = 2; the 5x5 square's 25 cost ~0.1 s more per frame
    on boxer at 512x512 and gained 0.13-0.25 dB on posterize + hue shift, 31 frames, keys every 10).
    One pass per offset over the whole image (vectorized over pixels; the loop is over the offsets). The costs
    are integers, so cost and offset index are packed into one int32, cost * 2^b + index, and one elementwise
    minimum per offset keeps both, ties going to the lower index (offsets are scanned by length). The chosen pixel is
    read from replicate-padded copies, so no index needs clamping. Measured at 512x512 on one thread, 25 offsets:
    ~35 ms so, ~105 ms as float compares with a separate index update and clamped indices.
    """
    _, h, w = target.shape
    r = radius
    hp, wp = h + 2 * r, w + 2 * r
    padded = F.pad(torch.cat([guide.float(), carried.float()])[None], (r, r, r, r), mode="replicate")[0]
    padded_guide = padded[:3].to(torch.int16)
    offsets = sorted(
        (
            (dy, dx)
            for dy in range(-r, r + 1)
            for dx in range(-r, r + 1)
            if dy * dy + dx * dx <= r * r and not (exclude_centre and dy == dx == 0)
        ),
        key=lambda o: o[0] ** 2 + o[1] ** 2,
    )
    slots = 1 << max(len(offsets) - 1, 1).bit_length()  # index bits: 2^b > the largest index
    penalties = [round(8 * 3 * 255 * offset_penalty * (dy * dy + dx * dx) ** 0.5) for dy, dx in offsets]
    largest = (8 * 3 * 255 + max(penalties) + 1) * slots
    key_dtype = torch.int32 if largest < torch.iinfo(torch.int32).max else torch.int64  # int64: huge penalties only
    dev = target.device
    best = torch.full((h, w), torch.iinfo(key_dtype).max, device=dev, dtype=key_dtype)
    diff = torch.empty((3, h, w), device=dev, dtype=torch.int16)
    cost = torch.empty((h, w), device=dev, dtype=torch.int16)
    packed = torch.empty((h, w), device=dev, dtype=key_dtype)
    for k, ((dy, dx), penalty) in enumerate(zip(offsets, penalties)):
        torch.sub(target, padded_guide[:, r + dy : r + dy + h, r + dx : r + dx + w], out=diff)
        diff.abs_()
        torch.add(diff[0], diff[1], out=cost)
        cost += diff[2]
        packed.copy_(cost)
        packed.mul_(8 * slots).add_(penalty * slots + k)
        torch.minimum(best, packed, out=best)
    choice = (best % slots).long()
    step = torch.tensor([dy * wp + dx for dy, dx in offsets], device=dev)
    pen = torch.tensor(penalties, device=dev, dtype=key_dtype)
    centre = ((torch.arange(h, device=dev)[:, None] + r) * wp + torch.arange(w, device=dev)[None, :] + r).flatten()
    picked = padded[3:].reshape(-1, hp * wp).index_select(1, centre + step.index_select(0, choice.flatten()))
    picked = picked.reshape(-1, h, w)
    dist = ((best // slots - pen[choice]).float() / (8 * 3 * 255)).reshape(h, w)
    return picked, dist


def lookup_self_error(source: torch.Tensor, stylized: torch.Tensor, cfg: PropagationConfig) -> torch.Tensor:
    """How well a key's own colours predict its style nearby: [3, H, W] x 2 -> [H, W] (leave-one-out, local part).

    Each key pixel is stylized by ``local_colour_lookup`` from its neighbours (itself excluded); the error is the
    box mean (``error_radius``) of the channel-mean |stylized - that prediction|. Near 0 where the style is a local
    function of colour (colour grades, posterization), large where it depends on more (strokes, texture).
    """
    levels = colour_levels(source)
    pred, _ = local_colour_lookup(
        levels, levels, stylized, cfg.lookup_radius, cfg.lookup_offset_penalty, exclude_centre=True
    )
    return box_mean((pred - stylized).abs().mean(0), cfg.error_radius)


def colour_model_error(source: torch.Tensor, stylized: torch.Tensor, coeffs: torch.Tensor, cfg: PropagationConfig):
    """How well the key's local linear colour model predicts its style: [3, H, W] x 2, [3, 3, H, W] -> [H, W].

    The guided filter's output (He et al. 2013): coefficients A (``residual_coefficients``) and offsets
    b = mean(S) - A^T mean(I) averaged over the windows that cover a pixel, prediction mean(A)^T I + mean(b); the
    error is the box mean (``error_radius``) of the channel-mean |stylized - prediction|. Small for smooth colour
    grades, large across posterization thresholds and inked strokes. Compared with ``lookup_self_error`` it tells
    which of the two predictors a key's style follows (``colour_lookup="auto"``).
    """
    r = cfg.residual_radius
    offset = box_mean(stylized, r) - (coeffs * box_mean(source, r)[:, None]).sum(0)  # [3, H, W]
    pred = (box_mean(coeffs, r) * source[:, None]).sum(0) + box_mean(offset, r)
    return box_mean((pred - stylized).abs().mean(0), cfg.error_radius)


def apply_colour_lookup(
    blend: torch.Tensor, styles: torch.Tensor, errors: torch.Tensor, temporal: torch.Tensor, cfg: PropagationConfig
) -> torch.Tensor:
    """Replace the blend by the colour lookup where it is trusted (module docstring, step 3b).

    blend: [3, H, W]; styles: [S, 3, H, W] one lookup per key side; errors: [S, H, W] (``lookup_candidate``);
    temporal: [S] temporal weights. Per pixel the side with the larger weight temporal * exp(-(e / error_scale)^2)
    wins outright: averaging two lookups that picked different levels blurs the band edges they are there for
    (measured, dog posterize: sharpness 0.86 averaged, 0.99 winner-take-all). The winner's trust
    t = exp(-(e / error_scale)^2) is ramped, u = clamp((t - 0.25) / 0.5, 0, 1), and out = blend + u (lookup - blend):
    the lookup replaces the blend where t >= 0.75 and is ignored where t <= 0.25. A measured choice (31 frames, keys
    every 10, with a 5x5 search window), against mixing by t itself: dog posterize sharpness 0.982 vs 0.951 of the
    truth, music posterize 26.83 vs 27.14 dB (a histogram-preserving mix by t: 0.962 and 27.07 dB, ~65 ms more per
    frame on one thread).
    """
    weight = temporal[:, None, None] * torch.exp(-(errors / cfg.error_scale).square())  # [S, H, W]
    if styles.shape[0] == 1:
        win = torch.zeros_like(errors, dtype=torch.long)  # [1, H, W]
    elif styles.shape[0] == 2:  # argmax of two; torch's CPU argmax over dim 0 took ~50 ms at 512x512
        win = (weight[1:] > weight[:1]).long()
    else:
        win = weight.argmax(0, keepdim=True)
    picked = styles.gather(0, win[:, None].expand(1, 3, -1, -1))[0]  # [3, H, W]
    trust = torch.exp(-(errors.gather(0, win)[0] / cfg.error_scale).square())  # [H, W]
    ramp = ((trust - 0.25) / 0.5).clamp_(0.0, 1.0)
    return torch.lerp(blend, picked, ramp)


def sample_channels(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``F.grid_sample`` of [C, H, W] at grid [1, Ho, Wo, 2] (border, align_corners) -> [C, Ho, Wo], channel by channel.

    The same numbers as one call on [1, C, H, W] (tested), but each channel is sampled as its own batch item: torch's
    CPU kernel slows down more than linearly with the channel count (measured at 512x512 on one thread, bilinear:
    13 channels 93 ms in one call, 30 ms as 13 single-channel items; 8 channels nearest: 14 vs 10 ms).
    """
    c, h, w = image.shape
    out = F.grid_sample(
        image.reshape(c, 1, h, w), grid.expand(c, -1, -1, -1), mode=mode, padding_mode="border", align_corners=True
    )
    return out[:, 0]


def neighbour_range(image: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of the 2x2 pixels around each sampling position: [C, H, W], grid [1, Ho, Wo, 2] -> 2 x [C, Ho, Wo].

    grid as ``F.grid_sample`` with align_corners=True (x, y in [-1, 1]; border clamping). The 2x2 minimum / maximum
    maps are read with nearest sampling half a pixel up-left, i.e. at floor(position): the four pixels bilinear
    interpolation mixes there. Clamping a bicubic sample to this range removes its overshoot (anti-ringing).
    """
    c, h, w = image.shape
    padded = F.pad(image[None], (0, 1, 0, 1), mode="replicate")  # [1, C, H+1, W+1]
    hi = F.max_pool2d(padded, 2, stride=1)
    lo = -F.max_pool2d(-padded, 2, stride=1)
    half = torch.tensor([1.0 / max(w - 1, 1), 1.0 / max(h - 1, 1)], device=grid.device, dtype=grid.dtype)
    g = grid - half  # half a pixel in [-1, 1] units
    both = sample_channels(torch.cat([lo, hi], 1)[0], g, mode="nearest")
    return both[:c], both[c:]


def guide_error(target: torch.Tensor, carried: torch.Tensor, radius: int, valid: torch.Tensor | None = None):
    """Per-pixel error of a candidate: box mean of the channel-mean |target - carried guide|, [3,H,W] -> [H, W].

    ``valid`` [H, W] bool: pixels where the candidate exists; elsewhere the per-pixel error is 1 (the largest
    possible) before the box mean, so the error also rises next to where a candidate stops existing.
    """
    e = (target - carried).abs().mean(0)
    if valid is not None:
        e = torch.where(valid, e, torch.ones_like(e))
    return box_mean(e, radius)


def histogram_preserving_blend(images: torch.Tensor, weights: torch.Tensor, radius: int, max_gain: float):
    """Blend K candidates keeping their local contrast (histogram-preserving blending, local form).

    images: [K, C, H, W]; weights: [K, H, W] >= 0 (normalized here). The linear mix m = sum_k w_k x_k loses
    variance where the inputs disagree (for independent inputs Var m = sum w_k^2 Var x_k, Heitz & Neyret 2018).
    In each (2r+1)^2 window we rescale m around its local mean so its variance becomes sum_k w_k Var_loc(x_k):
    out = mu(m) + g (m - mu(m)), g = sqrt(target / Var_loc(m)) clamped to [1, max_gain]. Aligned (equal) inputs
    give g = 1 (unchanged); independent equal-variance inputs give Heitz & Neyret's 1 / sqrt(sum w_k^2).
    The variances are those of the channel mean (luma), and one gain applies to all channels, so hue is kept.
    """
    w = weights / weights.sum(0, keepdim=True).clamp_min(1e-12)
    mix = (w[:, None] * images).sum(0)  # [C, H, W]
    if max_gain <= 1:
        return mix
    luma = images.mean(1)  # [K, H, W]
    mu_k = box_mean(luma, radius)
    var_k = (box_mean(luma.square(), radius) - mu_k.square()).clamp_min(0)
    target = (w * var_k).sum(0)  # [H, W]
    mix_luma = mix.mean(0)
    mu_m = box_mean(mix_luma, radius)
    var_m = (box_mean(mix_luma.square(), radius) - mu_m.square()).clamp_min(0)
    gain = torch.sqrt((target + 1e-8) / (var_m + 1e-8)).clamp(1.0, max_gain)
    mu_c = box_mean(mix, radius)
    return mu_c + gain * (mix - mu_c)


def fine_detail(x: torch.Tensor) -> torch.Tensor:
    """The finest frequency band of [..., H, W]: x minus its 3x3 binomial blur ([1, 2, 1] / 4 both ways, edges kept)."""
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, *shape[-2:]), (1, 1, 1, 1), mode="replicate")
    y = (y[..., :-2] + 2 * y[..., 1:-1] + y[..., 2:]) / 4
    y = (y[..., :-2, :] + 2 * y[..., 1:-1, :] + y[..., 2:, :]) / 4
    return x - y.reshape(shape)


def detail_energy(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Local energy of the finest band: box mean of the channel-mean squared ``fine_detail``, [C, H, W] -> [H, W]."""
    return box_mean(fine_detail(image).square().mean(0), radius)


def detail_energy_batch(images: torch.Tensor, radius: int) -> torch.Tensor:
    """``detail_energy`` of each of [K, C, H, W] -> [K, H, W] (a tiny floor keeps ratios finite)."""
    return box_mean(fine_detail(images).square().mean(1), radius) + 1e-8


def restore_detail(image: torch.Tensor, target_energy: torch.Tensor, radius: int, max_gain: float) -> torch.Tensor:
    """Amplify the finest band of ``image`` [C, H, W] so its local energy reaches ``target_energy`` [H, W].

    The histogram-preserving idea applied to one frequency band: resampling (sub-pixel warps) and blending attenuate
    the finest band, and the keys tell how much of it belongs at each place. With b = fine_detail(image) and
    c = fine_detail(b), out = image + d b has band b + d c, whose local energy E + 2 d B + d^2 C (E, B, C: box means
    of b.b, b.c, c.c) equals the target at d = (-B + sqrt(B^2 + C (target - E))) / C. The gain 1 + d is clamped to
    [1, max_gain]: detail is only given back, never removed, and noise is not blown up without bound.
    """
    b = fine_detail(image)
    c = fine_detail(b)
    e = box_mean(b.square().mean(0), radius)
    bc = box_mean((b * c).mean(0), radius)
    cc = box_mean(c.square().mean(0), radius)
    d = (torch.sqrt((bc.square() + cc * (target_energy - e)).clamp_min(0)) - bc) / cc.clamp_min(1e-12)
    return image + d.clamp(0.0, max_gain - 1.0) * b


def clamp_to_candidate_range(image: torch.Tensor, candidates: torch.Tensor, radius: int) -> torch.Tensor:
    """Clamp ``image`` [C, H, W] per channel into [min, max] of ``candidates`` [K, C, H, W] over each (2r+1)^2 window.

    Detail restoration steepens edges; where the candidates disagree about where an edge lies (band edges of a
    posterization, inked lines between two keys), steepening can overshoot past every value any candidate has
    nearby, an error no candidate supports. Values any candidate holds within ``radius`` pixels stay allowed, so an
    edge may still be sharpened up to its neighbours' levels. Border windows are clipped to the image.
    """
    hi = window_max(candidates.amax(0), radius)
    lo = -window_max(-candidates.amin(0), radius)
    return torch.minimum(torch.maximum(image, lo), hi)


def window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over the (2r+1)^2 window clipped to the image: [..., H, W] -> [..., H, W].

    Separable, as running maxima of shifted slices: at 512x512x3 with r = 1 a few ms on one thread, where
    ``F.max_pool2d`` took ~20 ms.
    """
    out = x
    for dim in (-1, -2):
        src, out = out, out.clone()
        n = src.shape[dim]
        for s in range(1, min(radius, n - 1) + 1):
            # out[i] = max(out[i], src[i + s]) and out[i + s] = max(out[i + s], src[i])
            torch.maximum(out.narrow(dim, 0, n - s), src.narrow(dim, s, n - s), out=out.narrow(dim, 0, n - s))
            torch.maximum(out.narrow(dim, s, n - s), src.narrow(dim, 0, n - s), out=out.narrow(dim, s, n - s))
    return out


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of [..., H, W]: gx[..., :, j] = x[j+1] - x[j] (0 in the last column), gy likewise."""
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return gx, gy


def screened_poisson(base: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor, weight: float) -> torch.Tensor:
    """argmin_u |D u - g|^2 + weight |u - base|^2 over [..., H, W], Neumann boundary (gradient-domain fusion).

    D = forward differences inside the image (``image_gradients``). Normal equations (weight + D^T D) u =
    weight * base + D^T g, solved exactly by FFT on the mirrored (2H x 2W) image: D^T D is the Neumann Laplacian,
    diagonal in the cosine basis with eigenvalues (2 - 2 cos(pi k / H)) + (2 - 2 cos(pi l / W)).
    """
    h, w = base.shape[-2:]
    div = torch.zeros_like(base)  # D^T g: g(j-1) - g(j)
    div[..., :, 1:] += gx[..., :, :-1]
    div -= gx
    div[..., 1:, :] += gy[..., :-1, :]
    div -= gy
    rhs = weight * base + div
    ext = torch.cat([rhs, rhs.flip(-1)], dim=-1)
    ext = torch.cat([ext, ext.flip(-2)], dim=-2)  # [..., 2H, 2W], half-sample symmetric = Neumann
    spec = torch.fft.rfft2(ext)
    ky = torch.arange(2 * h, device=base.device, dtype=base.dtype)
    kx = torch.arange(w + 1, device=base.device, dtype=base.dtype)
    lap = (2 - 2 * torch.cos(torch.pi * ky / h))[:, None] + (2 - 2 * torch.cos(torch.pi * kx / w))[None, :]
    u = torch.fft.irfft2(spec / (weight + lap), s=(2 * h, 2 * w))
    return u[..., :h, :w]


def poisson_fuse(blend: torch.Tensor, images: torch.Tensor, weights: torch.Tensor, weight: float) -> torch.Tensor:
    """Gradient-domain fusion: the gradients of the locally dominant candidate, the colours of ``blend``.

    Averaging two slightly different copies of an edge makes a double (ghost) edge; taking each edge's gradient
    from the single most trusted candidate and re-integrating against the blend's colours removes it.
    blend: [C, H, W]; images: [K, C, H, W]; weights: [K, H, W].
    """
    pick = weights.argmax(0)  # [H, W]
    one_hot = F.one_hot(pick, images.shape[0]).permute(2, 0, 1).to(images.dtype)  # [K, H, W]
    gx, gy = image_gradients(images)
    gx = (one_hot[:, None] * gx).sum(0)
    gy = (one_hot[:, None] * gy).sum(0)
    return screened_poisson(blend, gx, gy, weight)


# ----------------------------------------------------------------------------------------------- flows


@dataclass
class FrameFlows:
    """Candidate flows from one non-key frame to its left and right keys ([H, W, 2] float32, t -> key)."""

    to_left: list[torch.Tensor] = field(default_factory=list)
    to_right: list[torch.Tensor] = field(default_factory=list)


def key_segments(num_frames: int, key_indices: Sequence[int]) -> list[tuple[int | None, int | None, list[int]]]:
    """(left key or None, right key or None, the non-key frames between) for every stretch without keys."""
    keys = list(key_indices)
    out = []
    bounds = [None, *keys, None]
    for left, right in zip(bounds, bounds[1:]):
        lo = 0 if left is None else left + 1
        hi = num_frames if right is None else right
        if hi > lo:
            out.append((left, right, list(range(lo, hi))))
    return out


def estimate_propagation_flows(
    frames: np.ndarray,
    key_indices: Sequence[int],
    config: PropagationConfig | None = None,
    estimator: FlowEstimator | None = None,
) -> dict[int, FrameFlows]:
    """Flows from every non-key frame to its keys: direct (one estimate) and, if configured, chained.

    frames: [N, H, W, 3] uint8. Chained flow t -> L = flow(t -> t-1) composed with flow(t-1 -> L), built outward
    from the key, so one consecutive flow per frame and side. Returns {t: FrameFlows} (CPU tensors); pass it to
    :func:`propagate` to reuse flows across several stylizations of the same video.
    """
    cfg = config or PropagationConfig()
    frames = _check_frames(frames)
    keys = _check_keys(key_indices, len(frames))
    est = estimator or get_flow_estimator(cfg.flow)
    out: dict[int, FrameFlows] = {}

    def flow(a: int, b: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(est(frames[a], frames[b])))

    for left, right, between in key_segments(len(frames), keys):
        for t in between:
            out[t] = FrameFlows()
        for key, order, attr in ((left, between, "to_left"), (right, between[::-1], "to_right")):
            if key is None:
                continue
            chained = None
            for t in order:
                direct = flow(t, key)
                getattr(out[t], attr).append(direct)
                if not cfg.chained_flow:
                    continue
                step = 1 if t > key else -1
                if abs(t - key) == 1:
                    chained = direct
                else:
                    chained = compose_flows(flow(t, t - step)[None], chained[None])[0]
                    getattr(out[t], attr).append(chained)
    return out


# ----------------------------------------------------------------------------------------------- one frame


@dataclass
class _Key:
    """A keyframe on the compute device: its source frame, its stylization and its colour model."""

    source: torch.Tensor  # [3, H, W] in [0, 1]
    stylized: torch.Tensor  # [3, H, W]
    coeffs: torch.Tensor | None  # [3, 3, H, W] or None without guide correction
    pyramid: SourcePyramid | None  # the source frame's patch pyramid, or None without patch synthesis
    detail: torch.Tensor  # [1, H, W] local energy of the stylized key's finest band (``detail_energy``)
    self_error: torch.Tensor | None = None  # [1, H, W] ``lookup_self_error``, or None: no colour lookup from this key


def _to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1).float() / 255.0


def flow_candidate(target: torch.Tensor, key: _Key, flow: torch.Tensor, cfg: PropagationConfig):
    """One candidate from one key along one flow: (stylized [3, H, W], guide error [H, W], detail energy [H, W]).

    The stylized key, its source frame and its colour model are warped together (backward warp, the convention of
    ``fresco_v2v.flow.warp``); pixels whose flow leaves the frame get error 1 (they must come from elsewhere).
    """
    h, w = target.shape[-2:]
    grid = sampling_grid(flow.to(target.device, target.dtype)[None])
    style = F.grid_sample(key.stylized[None], grid, mode=cfg.warp_mode, padding_mode="border", align_corners=True)[0]
    if cfg.anti_ringing and cfg.warp_mode == "bicubic":
        style = torch.clamp(style, *neighbour_range(key.stylized, grid))
    along = [key.source, key.detail] + ([key.coeffs.reshape(9, h, w)] if key.coeffs is not None else [])
    carried = sample_channels(torch.cat(along), grid)
    valid = (grid[0].abs() <= 1.0).all(-1)  # x + flow(x) inside the frame
    err = guide_error(target, carried[:3], cfg.error_radius, valid)
    if key.coeffs is not None:
        style = apply_residual(style, carried[4:].reshape(3, 3, h, w), target - carried[:3])
    return style, err, carried[3]


def lookup_candidate(target_levels: torch.Tensor, key: _Key, flow: torch.Tensor, cfg: PropagationConfig):
    """The colour lookup from one key for frame t (``colour_levels`` of it): (stylized [3, H, W], error [H, W]).

    The key is warped along ``flow`` with nearest sampling (exact key pixels, no interpolation blur); then each pixel
    takes the stylized value of the warped pixel nearby whose source colour is closest to frame t's
    (``local_colour_lookup``). Error = box mean of that colour distance + the picked pixel's ``lookup_self_error``
    + ``lookup_prior`` x the key's mean of it.
    """
    grid = sampling_grid(flow.to(key.source.device, key.source.dtype)[None])
    both = torch.cat([key.source, key.stylized, key.self_error])
    warped = sample_channels(both, grid, mode="nearest")
    picked, dist = local_colour_lookup(  # picked: [4, H, W] stylized, self error
        target_levels, colour_levels(warped[:3]), warped[3:], cfg.lookup_radius, cfg.lookup_offset_penalty
    )
    valid = (grid[0].abs() <= 1.0).all(-1)
    err = box_mean(torch.where(valid, dist, torch.ones_like(dist)), cfg.error_radius)
    return picked[:3], err + picked[3] + cfg.lookup_prior * key.self_error.mean()


def patch_candidate(
    target: torch.Tensor, key: _Key, seed_flow: torch.Tensor, mask: torch.Tensor, cfg: PropagationConfig, gen
):
    """Guided patch synthesis from one key at the ``mask``ed pixels: (stylized [3, H, W], error, detail [H, W]).

    Outside the mask the error is 1 (no candidate there).
    """
    h, w = target.shape[-2:]
    parts = [key.stylized, key.source, key.detail] + ([key.coeffs.reshape(9, h, w)] if key.coeffs is not None else [])
    values, idx = guided_synthesis(
        target, key.pyramid, torch.cat(parts), seed_flow, mask, cfg.patch_iterations, gen, cfg.patch_iterations_finest
    )
    full = torch.zeros(values.shape[0], h * w, device=target.device, dtype=target.dtype)
    full[:, idx] = values
    full = full.reshape(-1, h, w)
    style, carried = full[:3], full[3:6]
    err = guide_error(target, carried, cfg.error_radius, mask)
    if key.coeffs is not None:
        style = apply_residual(style, full[7:].reshape(3, 3, h, w), (target - carried) * mask)
    return style, err, full[6]


def synthesize_frame(
    target: torch.Tensor,
    sides: list[tuple[_Key, list[torch.Tensor], float]],
    cfg: PropagationConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """Frame t from its keys: sides = [(key, flows t -> key, temporal weight)], target [3, H, W] -> [3, H, W]."""
    styles, errors, details, tw = [], [], [], []
    best_flow = []
    for key, flows, weight in sides:
        side_err, side_flow = None, None
        for f in flows:
            s, e, d = flow_candidate(target, key, f, cfg)
            styles.append(s)
            errors.append(e)
            details.append(d)
            tw.append(weight)
            if side_err is None:
                side_err, side_flow = e, f.to(target.device)
            else:
                better = e < side_err
                side_flow = torch.where(better[..., None], f.to(target.device), side_flow)
                side_err = torch.minimum(e, side_err)
        best_flow.append(side_flow)
    if cfg.patch_synthesis:
        failed = torch.stack(errors).amin(0) > cfg.synthesis_threshold
        frac = failed.float().mean().item()
        if frac > 0:
            logger.debug("patch synthesis on %.1f%% of the frame", 100 * frac)
            for (key, _, weight), seed in zip(sides, best_flow):
                s, e, d = patch_candidate(target, key, seed, failed, cfg, gen)
                styles.append(s)
                errors.append(e)
                details.append(d)
                tw.append(weight)
    images = torch.stack(styles)  # [K, 3, H, W]
    err = torch.stack(errors)  # [K, H, W]
    tw_t = torch.tensor(tw, device=target.device, dtype=target.dtype)[:, None, None]
    weights = tw_t * (torch.exp(-(err / cfg.error_scale).square()) + 1e-6) * (err < 1)
    weights = weights + 1e-12 * tw_t  # every pixel keeps at least its temporal weights
    if cfg.contrast_preserving:
        out = histogram_preserving_blend(images, weights, cfg.contrast_radius, cfg.max_contrast_gain)
    else:
        out = histogram_preserving_blend(images, weights, 0, 1.0)
    if cfg.detail_restore:
        # Give back what resampling took from each candidate (target = warped key energy vs. candidate energy),
        # not what disagreeing candidates cancel in the mix: amplifying that would sharpen ghost edges.
        wn = weights / weights.sum(0, keepdim=True)
        lost = (wn * torch.stack(details)).sum(0) / (wn * detail_energy_batch(images, cfg.detail_radius)).sum(0)
        # Only where the candidates agree on where edges are: sharpening an uncertain edge costs more than it gives.
        spread = box_mean((wn[:, None] * (images - out).square()).sum(0).mean(0), cfg.detail_radius)
        certain = torch.exp(-spread / cfg.detail_agreement**2)
        target_energy = lost.clamp_min(1).pow(certain) * detail_energy(out, cfg.detail_radius)
        out = restore_detail(out, target_energy, cfg.detail_radius, cfg.max_detail_gain)
        if cfg.detail_range_radius is not None:
            out = clamp_to_candidate_range(out, images, cfg.detail_range_radius)
    if cfg.poisson:
        out = poisson_fuse(out, images, weights, cfg.poisson_weight)
    # The lookup comes last: where it is trusted it replaces the whole flow / patch estimate (step 3b), and its pixels
    # are copied, not resampled, so detail restoration has nothing to give back to them.
    lookup_sides = [(key, f, w) for (key, _, w), f in zip(sides, best_flow) if key.self_error is not None]
    if lookup_sides:
        levels = colour_levels(target)
        found = [lookup_candidate(levels, key, flow, cfg) for key, flow, _ in lookup_sides]
        temporal = torch.tensor([w for _, _, w in lookup_sides], device=target.device, dtype=target.dtype)
        out = apply_colour_lookup(
            out, torch.stack([f[0] for f in found]), torch.stack([f[1] for f in found]), temporal, cfg
        )
    return out.clamp(0, 1)


# ----------------------------------------------------------------------------------------------- entry point


def _check_frames(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
        raise ConfigError("frames", "[N >= 1, H, W, 3] uint8 RGB", f"{arr.dtype} {arr.shape}")
    return arr


def _check_keys(key_indices: Sequence[int], n: int) -> list[int]:
    keys = [int(k) for k in key_indices]
    if not keys or any(k < 0 or k >= n for k in keys) or any(b <= a for a, b in zip(keys, keys[1:])):
        raise ConfigError("key_indices", f"strictly ascending frame indices in [0, {n - 1}], at least one", keys)
    return keys


def propagate(
    frames: np.ndarray | Sequence[np.ndarray],
    key_indices: Sequence[int],
    stylized_keys: Sequence[np.ndarray],
    config: PropagationConfig | None = None,
    *,
    device: str | torch.device | None = None,
    flows: dict[int, FrameFlows] | None = None,
    estimator: FlowEstimator | None = None,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> list[np.ndarray]:
    """Every frame of the video stylized from the stylized keyframes (paper §3.5).

    frames: the source video, [N, H, W, 3] uint8 RGB (any H, W); key_indices: ascending frame indices of the keys;
    stylized_keys: one [H, W, 3] uint8 RGB image per key. device: where the synthesis runs (default CPU);
    flows: from :func:`estimate_propagation_flows`, to reuse them (computed per segment otherwise).
    should_stop: asked before each frame and each key segment; when it returns True, the frames not started are
    dropped and :class:`~fresco_v2v.errors.Cancelled` is raised (a user's Stop).
    Returns N uint8 RGB frames; the keys are returned unchanged.
    """
    cfg = config or PropagationConfig()
    if not isinstance(cfg, PropagationConfig):
        raise ConfigError("config", "a PropagationConfig", type(cfg).__name__)
    frames = _check_frames(frames)
    n, h, w, _ = frames.shape
    keys = _check_keys(key_indices, n)
    if len(stylized_keys) != len(keys):
        raise ConfigError("stylized_keys", f"{len(keys)} images (one per key)", len(stylized_keys))
    for i, s in enumerate(stylized_keys):
        s = np.asarray(s)
        if s.shape != (h, w, 3) or s.dtype != np.uint8:
            raise ConfigError(f"stylized_keys[{i}]", f"a [{h}, {w}, 3] uint8 RGB image", f"{s.dtype} {s.shape}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    est = estimator or get_flow_estimator(cfg.flow)

    out: list[np.ndarray | None] = [None] * n
    for k, s in zip(keys, stylized_keys):
        out[k] = np.array(s, copy=True)
    cache: dict[int, _Key] = {}

    def key_state(k: int) -> _Key:
        if k not in cache:
            src = _to_tensor(frames[k], dev)
            sty = _to_tensor(np.asarray(stylized_keys[keys.index(k)]), dev)
            coeffs = None
            if cfg.residual_transfer:
                coeffs = residual_coefficients(src, sty, cfg.residual_radius, cfg.residual_eps, cfg.residual_max_gain)
            pyramid = None
            if cfg.patch_synthesis:
                pyramid = build_source_pyramid(src, cfg.patch_size, cfg.pyramid_min_side)
            if len(cache) >= 2:  # segments go left to right: only the current two keys are needed again
                cache.pop(min(cache))
            detail = detail_energy(sty, cfg.detail_radius)[None]
            self_error = key_lookup_error(k, src, sty, coeffs)  # of the key as given, like its colour model
            if cfg.key_sharpen > 0:
                sty = sty + cfg.key_sharpen * fine_detail(fine_detail(sty))
            cache[k] = _Key(src, sty, coeffs, pyramid, detail, self_error)
        return cache[k]

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise Cancelled(f"propagation stopped (of {n - len(keys)} frames to render)")

    def key_lookup_error(k: int, src: torch.Tensor, sty: torch.Tensor, coeffs) -> torch.Tensor | None:
        """The key's ``lookup_self_error`` [1, H, W] if the colour lookup is used from it, else None."""
        if cfg.colour_lookup is False:
            return None
        self_error = lookup_self_error(src, sty, cfg)
        if cfg.colour_lookup == "auto":
            if coeffs is None:
                coeffs = residual_coefficients(src, sty, cfg.residual_radius, cfg.residual_eps, cfg.residual_max_gain)
            ratio = (colour_model_error(src, sty, coeffs, cfg).mean() / self_error.mean().clamp_min(1e-6)).item()
            use = ratio >= cfg.lookup_auto_ratio
            logger.info(
                "key %d: colour lookup %s (its colours predict its style %.1fx better than a linear colour model; "
                "threshold %.1f)", k, "on" if use else "off", ratio, cfg.lookup_auto_ratio
            )  # fmt: skip
            if not use:
                return None
        return self_error[None]

    def render(t: int, sides) -> np.ndarray:
        check_stop()
        gen = torch.Generator(device=dev).manual_seed(frame_seed(cfg.seed, t))
        with torch.no_grad():
            res = synthesize_frame(_to_tensor(frames[t], dev), sides, cfg, gen)
        return (res * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    workers = cfg.workers if cfg.workers is not None else (torch.get_num_threads() if dev.type == "cpu" else 1)
    segments = key_segments(n, keys)
    bar = tqdm(total=sum(len(b) for _, _, b in segments), desc="propagating", unit="frame", disable=not progress)
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="propagate") if workers > 1 else None
    if pool is not None and dev.type == "cpu":
        torch.set_num_threads(max(1, threads // workers))  # the same total: `workers` frames at a time
    in_flight: list[dict] = []  # per segment: {future: frame index}

    def collect(futures: dict) -> None:
        for fut in as_completed(futures):
            out[futures[fut]] = fut.result()
            bar.update(1)

    try:
        for left, right, between in segments:
            check_stop()
            logger.info("propagating frames %d-%d from keys %s, %s", between[0], between[-1], left, right)
            seg_flows = flows
            if seg_flows is None or any(t not in seg_flows for t in between):
                sub = [k for k in (left, right) if k is not None]
                lo, hi = min(between + sub), max(between + sub)
                local = estimate_propagation_flows(frames[lo : hi + 1], [k - lo for k in sub], cfg, est)
                seg_flows = {t + lo: v for t, v in local.items()}
            jobs = {}
            with torch.no_grad():  # the keys' states are built here, before any thread reads them
                for t in between:
                    ff = seg_flows[t]
                    if left is not None and right is not None:
                        wl = (right - t) / (right - left)
                        sides = [(key_state(left), ff.to_left, wl), (key_state(right), ff.to_right, 1.0 - wl)]
                    elif left is not None:
                        sides = [(key_state(left), ff.to_left, 1.0)]
                    else:
                        sides = [(key_state(right), ff.to_right, 1.0)]
                    jobs[t] = sides
            if pool is None:
                for t, sides in jobs.items():
                    out[t] = render(t, sides)
                    bar.update(1)
            else:
                in_flight.append({pool.submit(render, t, sides): t for t, sides in jobs.items()})
                # Two segments in flight: the workers go on with this one while the next one's key state and flows
                # are prepared here, and no worker idles at a segment's end. More would hold more key states
                # (~100 MB each at 512x512).
                while len(in_flight) > 1:
                    collect(in_flight.pop(0))
        while in_flight:
            collect(in_flight.pop(0))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
            torch.set_num_threads(threads)
        bar.close()
    return out  # type: ignore[return-value]


def frame_seed(seed: int, t: int) -> int:
    """The PatchMatch seed of frame t: distinct per (seed, t) for any realistic frame count (< 1,000,003 frames)."""
    return seed * 1_000_003 + t
