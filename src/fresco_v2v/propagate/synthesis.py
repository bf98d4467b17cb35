"""The synthesis of one frame from its keys (steps 1-4): the keys' state, the candidates, their blend."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..flow import sampling_grid
from ..patchmatch import SourcePyramid, build_source_pyramid, guided_synthesis
from .blend import clamp_to_candidate_range, histogram_preserving_blend, poisson_fuse, restore_detail
from .colour import (
    apply_colour_lookup,
    apply_residual,
    colour_levels,
    colour_model_error,
    local_colour_lookup,
    lookup_self_error,
    residual_coefficients,
)
from .config import PropagationConfig
from .filters import (
    box_mean,
    detail_energy,
    detail_energy_batch,
    fine_detail,
    guide_error,
    neighbour_range,
    sample_channels,
)

logger = logging.getLogger(__package__)


@dataclass
class _Key:
    """A keyframe on the compute device: its source frame, its stylization and its colour model."""

    source: torch.Tensor  # [3, H, W] in [0, 1]
    stylized: torch.Tensor  # [3, H, W]
    coeffs: torch.Tensor | None  # [3, 3, H, W] or None without guide correction
    pyramid: SourcePyramid | None  # the source frame's patch pyramid, or None without patch synthesis
    detail: torch.Tensor  # [1, H, W] local energy of the stylized key's finest band (``detail_energy``)
    self_error: torch.Tensor | None = None  # [1, H, W] ``lookup_self_error``, or None: no colour lookup from this key


def prepare_key(index: int, source: torch.Tensor, stylized: torch.Tensor, cfg: PropagationConfig) -> _Key:
    """The state of key ``index`` (its frame number, for the log): source frame and stylized key [3, H, W] in [0, 1]."""
    coeffs = None
    if cfg.residual_transfer:
        coeffs = residual_coefficients(source, stylized, cfg.residual_radius, cfg.residual_eps, cfg.residual_max_gain)
    pyramid = None
    if cfg.patch_synthesis:
        pyramid = build_source_pyramid(source, cfg.patch_size, cfg.pyramid_min_side)
    detail = detail_energy(stylized, cfg.detail_radius)[None]
    self_error = key_lookup_error(index, source, stylized, coeffs, cfg)  # of the key as given, like its colour model
    if cfg.key_sharpen > 0:
        stylized = stylized + cfg.key_sharpen * fine_detail(fine_detail(stylized))
    return _Key(source, stylized, coeffs, pyramid, detail, self_error)


def key_lookup_error(
    index: int, source: torch.Tensor, stylized: torch.Tensor, coeffs: torch.Tensor | None, cfg: PropagationConfig
) -> torch.Tensor | None:
    """The key's ``lookup_self_error`` [1, H, W] if the colour lookup is used from it, else None.

    With ``colour_lookup="auto"`` it is used where the key's own colours predict its style at least
    ``lookup_auto_ratio`` times better, on the key's mean, than its local linear colour model (``colour_model_error``);
    the ratio is logged.
    """
    if cfg.colour_lookup is False:
        return None
    self_error = lookup_self_error(source, stylized, cfg)
    if cfg.colour_lookup == "auto":
        if coeffs is None:
            coeffs = residual_coefficients(
                source, stylized, cfg.residual_radius, cfg.residual_eps, cfg.residual_max_gain
            )
        ratio = (colour_model_error(source, stylized, coeffs, cfg).mean() / self_error.mean().clamp_min(1e-6)).item()
        use = ratio >= cfg.lookup_auto_ratio
        logger.info(
            "key %d: colour lookup %s (its colours predict its style %.1fx better than a linear colour model; "
            "threshold %.1f)", index, "on" if use else "off", ratio, cfg.lookup_auto_ratio
        )  # fmt: skip
        if not use:
            return None
    return self_error[None]


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
    found, tw, best_flow = [], [], []  # found: (stylized, error, detail) per candidate; tw: its temporal weight
    for key, flows, weight in sides:
        candidates, side_flow = flow_candidates(target, key, flows, cfg)
        found += candidates
        tw += [weight] * len(candidates)
        best_flow.append(side_flow)
    if cfg.patch_synthesis:
        failed = torch.stack([e for _, e, _ in found]).amin(0) > cfg.synthesis_threshold
        frac = failed.float().mean().item()
        if frac > 0:
            logger.debug("patch synthesis on %.1f%% of the frame", 100 * frac)
            for (key, _, weight), seed in zip(sides, best_flow):
                found.append(patch_candidate(target, key, seed, failed, cfg, gen))
                tw.append(weight)
    images = torch.stack([s for s, _, _ in found])  # [K, 3, H, W]
    err = torch.stack([e for _, e, _ in found])  # [K, H, W]
    tw_t = torch.tensor(tw, device=target.device, dtype=target.dtype)[:, None, None]
    weights = tw_t * (torch.exp(-(err / cfg.error_scale).square()) + 1e-6) * (err < 1)
    weights = weights + 1e-12 * tw_t  # every pixel keeps at least its temporal weights
    out = blend_candidates(images, weights, [d for _, _, d in found], cfg)
    # The lookup comes last: where it is trusted it replaces the whole flow / patch estimate (step 3b), and its pixels
    # are copied, not resampled, so detail restoration has nothing to give back to them.
    lookup_sides = [(key, f, w) for (key, _, w), f in zip(sides, best_flow) if key.self_error is not None]
    if lookup_sides:
        levels = colour_levels(target)
        looked_up = [lookup_candidate(levels, key, flow, cfg) for key, flow, _ in lookup_sides]
        temporal = torch.tensor([w for _, _, w in lookup_sides], device=target.device, dtype=target.dtype)
        out = apply_colour_lookup(
            out, torch.stack([f[0] for f in looked_up]), torch.stack([f[1] for f in looked_up]), temporal, cfg
        )
    return out.clamp(0, 1)


def flow_candidates(target: torch.Tensor, key: _Key, flows: list[torch.Tensor], cfg: PropagationConfig):
    """The candidates from one key along each of its flows: ([(stylized, error, detail)], the best flow [H, W, 2]).

    The best flow is, per pixel, the flow whose candidate has the least guide error there (the seed of the patch
    synthesis and of the colour lookup).
    """
    candidates, side_err, side_flow = [], None, None
    for f in flows:
        s, e, d = flow_candidate(target, key, f, cfg)
        candidates.append((s, e, d))
        if side_err is None:
            side_err, side_flow = e, f.to(target.device)
        else:
            better = e < side_err
            side_flow = torch.where(better[..., None], f.to(target.device), side_flow)
            side_err = torch.minimum(e, side_err)
    return candidates, side_flow


def blend_candidates(
    images: torch.Tensor, weights: torch.Tensor, details: list[torch.Tensor], cfg: PropagationConfig
) -> torch.Tensor:
    """Step 4: the candidates [K, 3, H, W] blended by ``weights`` [K, H, W] -> [3, H, W].

    details: each candidate's detail energy [H, W] (that of the warped key, ``flow_candidate``): what detail
    restoration gives back. Then the candidate-range clamp and, if configured, the Poisson fusion.
    """
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
    return out


def frame_seed(seed: int, t: int) -> int:
    """The PatchMatch seed of frame t: distinct per (seed, t) for any realistic frame count (< 1,000,003 frames)."""
    return seed * 1_000_003 + t
