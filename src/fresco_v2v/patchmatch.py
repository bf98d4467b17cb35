"""Guided patch synthesis: PatchMatch nearest-neighbour fields over appearance guides, coarse to fine, with voting.

Propagation (paper §3.5, after Rerender-A-Video's use of Ebsynth) fills the regions that optical flow cannot
explain (occlusion, disocclusion, flow failure) by copying patches of a stylized keyframe whose *source* patch
looks like the target frame's source patch (guided synthesis, Jamriška et al., SIGGRAPH 2019).

The nearest-neighbour field (NNF) is found by PatchMatch (Barnes et al., SIGGRAPH 2009) in a parallel form: every
active pixel proposes candidates at once (propagation from its four neighbours, then random search with a shrinking
radius), and the better candidate wins; this is the GPU formulation of PatchMatch (no sequential scan order), so it
is written as tensor gathers. Coarse to fine: the NNF found on a half-size pyramid level, doubled, seeds the next.
Voting: each output pixel is the mean of the values that the overlapping patches of its neighbours point to.

All tensors are float32 on one device; an NNF is a long tensor [H*W, 2] of absolute (y, x) positions in the
source image, row-major over the target's pixels. Only pixels in an *active* set are searched (the rest keep the
seed, normally the flow), so the cost follows the area where flow failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def patch_offsets(patch: int, device: torch.device) -> torch.Tensor:
    """[P*P, 2] long (dy, dx) offsets of an odd ``patch`` x ``patch`` window around its centre, row-major."""
    r = patch // 2
    d = torch.arange(-r, r + 1, device=device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([dy.reshape(-1), dx.reshape(-1)], dim=1)


def flat_index(yx: torch.Tensor, width: int) -> torch.Tensor:
    """[M, 2] (y, x) -> [M] row-major index."""
    return yx[:, 0] * width + yx[:, 1]


def clamp_yx(yx: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clamp [M, 2] (y, x) positions into an image of ``height`` x ``width``."""
    return torch.stack([yx[:, 0].clamp(0, height - 1), yx[:, 1].clamp(0, width - 1)], dim=1)


def all_patches(image: torch.Tensor, patch: int) -> torch.Tensor:
    """[C, H, W] -> [H*W, C*P*P]: every pixel's patch (border pixels repeated), channel-major then offsets.

    One row per pixel, so gathering the patches of matched positions reads contiguous memory.
    """
    r = patch // 2
    padded = F.pad(image[None], (r, r, r, r), mode="replicate")
    return F.unfold(padded, patch)[0].T.contiguous()


def gather_patches(image: torch.Tensor, yx: torch.Tensor, patch: int) -> torch.Tensor:
    """The patches of [C, H, W] around the [M, 2] positions ``yx``, as [M, C*P*P] (the layout of ``all_patches``)."""
    c, h, w = image.shape
    flat = image.reshape(c, -1)
    offs = patch_offsets(patch, image.device)  # [P*P, 2]
    pos = yx[:, None, :] + offs[None]  # [M, P*P, 2]
    idx = pos[..., 0].clamp(0, h - 1) * w + pos[..., 1].clamp(0, w - 1)  # [M, P*P]
    return flat[:, idx].permute(1, 0, 2).reshape(yx.shape[0], -1)


def patch_distance(target_patches: torch.Tensor, source_patches: torch.Tensor, nnf: torch.Tensor, source_width: int):
    """Sum of squared differences between target patches and the source patches the NNF points to.

    target_patches: [M, C*P*P] (the active pixels' patches); source_patches: [Hs*Ws, C*P*P] (``all_patches``);
    nnf: [M, 2] long (y, x) in the source. Returns [M].
    """
    src = source_patches.index_select(0, flat_index(nnf, source_width))  # [M, C*P*P]
    return (target_patches - src).square().sum(1)


def _improve(best_nnf, best_dist, cand, target_patches, source_patches, ws):
    """Keep, per active pixel, whichever of the current match and the candidate has the lower patch distance."""
    d = patch_distance(target_patches, source_patches, cand, ws)
    better = d < best_dist
    return torch.where(better[:, None], cand, best_nnf), torch.where(better, d, best_dist)


def patchmatch(
    target: torch.Tensor,
    source: torch.Tensor,
    source_patches: torch.Tensor,
    seed_nnf: torch.Tensor,
    active: torch.Tensor,
    patch: int,
    iterations: int,
    search_radius: int,
    generator: torch.Generator,
    extra_candidates: tuple[torch.Tensor, ...] = (),
) -> torch.Tensor:
    """Improve the NNF from ``target`` [C, H, W] to ``source`` [C, Hs, Ws] at the ``active`` pixels.

    source_patches: ``all_patches(source, patch)``; seed_nnf: [H*W, 2] long absolute source positions (kept as they
    are outside ``active``); active: [M] long flat target indices. Each iteration: propagation (the match of the
    left/upper/right/lower neighbour, shifted by one pixel, Barnes et al. §3.2), then random search around the
    current match at radii ``search_radius``, ``search_radius/2``, ..., 1 (uniform in the square, seeded by
    ``generator``). ``extra_candidates`` ([M, 2] each, at the active pixels, e.g. the upsampled coarse NNF) are
    tried once first.
    Returns the NNF [H*W, 2].
    """
    c, h, w = target.shape
    _, hs, ws = source.shape
    nnf = seed_nnf.clone()
    if active.numel() == 0:
        return nnf
    ay, ax = active // w, active % w
    tgt = gather_patches(target, torch.stack([ay, ax], dim=1), patch)  # [M, C*P*P]
    best = nnf[active]
    dist = patch_distance(tgt, source_patches, best, ws)
    for extra in extra_candidates:
        best, dist = _improve(best, dist, clamp_yx(extra, hs, ws), tgt, source_patches, ws)
    for _ in range(iterations):
        for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            nnf[active] = best
            ny, nx = (ay - dy).clamp(0, h - 1), (ax - dx).clamp(0, w - 1)
            shift = torch.stack([ay - ny, ax - nx], dim=1)  # (dy, dx), or 0 at the border
            cand = nnf[ny * w + nx] + shift
            best, dist = _improve(best, dist, clamp_yx(cand, hs, ws), tgt, source_patches, ws)
        radius = search_radius
        while radius >= 1:
            jitter = torch.randint(-radius, radius + 1, best.shape, generator=generator, device=generator.device)
            cand = clamp_yx(best + jitter.to(best.device), hs, ws)
            best, dist = _improve(best, dist, cand, tgt, source_patches, ws)
            radius //= 2
    nnf[active] = best
    return nnf


def vote(values: torch.Tensor, nnf: torch.Tensor, shape: tuple[int, int], active: torch.Tensor, patch: int):
    """Voting: out(x) = mean over offsets d of values(nnf(x - d) + d), for the ``active`` target pixels.

    values: [C, Hs, Ws] (anything laid out like the source: the stylized key, its guide); nnf: [H*W, 2] long;
    shape: (H, W) of the target; active: [M] flat target indices. Returns [C, M]. Each patch that covers x votes
    for the value its match puts at x (Wexler et al., CVPR 2004, uniform weights).
    """
    h, w = shape
    c, hs, ws = values.shape
    flat = values.reshape(c, -1)
    ay, ax = active // w, active % w
    out = torch.zeros(c, active.numel(), device=values.device, dtype=values.dtype)
    offs = patch_offsets(patch, values.device)
    for dy, dx in offs.tolist():
        # the patch centred at q = x - d covers x at its offset d; clamping q at the border keeps a valid patch
        qy, qx = (ay - dy).clamp(0, h - 1), (ax - dx).clamp(0, w - 1)
        src = nnf[qy * w + qx] + torch.stack([ay - qy, ax - qx], dim=1)
        out += flat.index_select(1, flat_index(clamp_yx(src, hs, ws), ws))
    return out / offs.shape[0]


def identity_nnf(height: int, width: int, device: torch.device) -> torch.Tensor:
    """[H*W, 2] long: every pixel matched to the same position."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)


def flow_to_nnf(flow: torch.Tensor, source_hw: tuple[int, int]) -> torch.Tensor:
    """[H, W, 2] (dx, dy) pixel flow -> [H*W, 2] long NNF at the rounded positions x + flow(x), clamped."""
    h, w, _ = flow.shape
    base = identity_nnf(h, w, flow.device)
    moved = base + torch.round(flow.reshape(-1, 2).flip(1)).long()
    return clamp_yx(moved, *source_hw)


def _downsample(image: torch.Tensor) -> torch.Tensor:
    """[C, H, W] -> [C, ceil(H/2), ceil(W/2)] by area averaging (odd sizes allowed)."""
    h, w = image.shape[-2:]
    return F.interpolate(image[None], size=((h + 1) // 2, (w + 1) // 2), mode="area")[0]


def _upsample_nnf(nnf: torch.Tensor, coarse_hw, fine_width: int, active: torch.Tensor) -> torch.Tensor:
    """The coarse NNF [h*w, 2] read at the ``active`` fine pixels [M]: (y, x) takes 2 nnf(y//2, x//2) + (y%2, x%2)."""
    ay, ax = active // fine_width, active % fine_width
    parent = (ay // 2).clamp(max=coarse_hw[0] - 1) * coarse_hw[1] + (ax // 2).clamp(max=coarse_hw[1] - 1)
    return nnf[parent] * 2 + torch.stack([ay % 2, ax % 2], dim=1)


@dataclass
class SourcePyramid:
    """A source guide's pyramid, finest first, with every level's patches: built once per keyframe and reused."""

    guides: list[torch.Tensor]  # [C, h, w] per level
    patches: list[torch.Tensor]  # [h*w, C*P*P] per level
    patch: int


def pyramid_sizes(height: int, width: int, min_side: int) -> list[tuple[int, int]]:
    """(h, w) per level, finest first: halve (rounding up) while the short side stays >= ``min_side``."""
    sizes = [(height, width)]
    while min(sizes[-1]) >= 2 * min_side:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def build_source_pyramid(guide: torch.Tensor, patch: int, min_side: int) -> SourcePyramid:
    """Pyramid of the source guide [C, H, W] (area halving) and its patches per level."""
    guides = [guide]
    for _ in pyramid_sizes(*guide.shape[-2:], min_side)[1:]:
        guides.append(_downsample(guides[-1]))
    return SourcePyramid(guides, [all_patches(g, patch) for g in guides], patch)


def guided_synthesis(
    target_guide: torch.Tensor,
    source: SourcePyramid,
    source_values: torch.Tensor,
    seed_flow: torch.Tensor,
    mask: torch.Tensor,
    iterations: int = 3,
    generator: torch.Generator | None = None,
    finest_iterations: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesize ``source_values`` onto the target frame where ``mask`` is set, coarse to fine.

    target_guide: [C, H, W] (e.g. the target's source frame); source: the pyramid of the key's guide (same size);
    source_values: [V, H, W] (stylized key and anything else to carry along); seed_flow: [H, W, 2] target -> source
    flow, the initial NNF (kept outside the mask); mask: [H, W] bool, the pixels to synthesize (at coarser levels:
    any pixel whose footprint touches the mask). At the coarsest level the random search spans half the frame, at
    finer levels 4 px (the coarse NNF, doubled, already points near the answer). ``finest_iterations`` (default:
    ``iterations``) applies to the full-resolution level, which holds ~3/4 of the work: the upsampled coarse NNF
    is already nearly converged there, so fewer iterations cost little quality.
    Returns (values [V, M] at the masked pixels, their flat indices [M]).
    """
    device = target_guide.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    h, w = target_guide.shape[-2:]
    patch = source.patch
    active_full = torch.nonzero(mask.reshape(-1), as_tuple=False)[:, 0]
    if active_full.numel() == 0:
        return source_values.new_zeros(source_values.shape[0], 0), active_full
    targets, masks = [target_guide], [mask.float()[None]]
    for _ in source.guides[1:]:
        targets.append(_downsample(targets[-1]))
        masks.append(F.adaptive_max_pool2d(masks[-1][None], targets[-1].shape[-2:])[0])
    flow_chw = seed_flow.permute(2, 0, 1)[None]
    nnf, prev_hw = None, None
    for depth in range(len(targets) - 1, -1, -1):
        t, m = targets[depth], masks[depth]
        lh, lw = t.shape[-2:]
        scale = torch.tensor([lw / w, lh / h], device=device)
        if (lh, lw) == (h, w):
            lflow = seed_flow
        else:
            lflow = F.interpolate(flow_chw, size=(lh, lw), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        seed = flow_to_nnf(lflow * scale, (lh, lw))
        active = active_full if depth == 0 else torch.nonzero(m.reshape(-1) > 0, as_tuple=False)[:, 0]
        extra = () if nnf is None else (_upsample_nnf(nnf, prev_hw, lw, active),)
        radius = max(lh, lw) // 2 if nnf is None else 4
        its = iterations if depth > 0 or finest_iterations is None else finest_iterations
        nnf = patchmatch(
            t, source.guides[depth], source.patches[depth], seed, active, patch, its, radius, generator, extra
        )
        prev_hw = (lh, lw)
    return vote(source_values, nnf, (h, w), active_full, patch), active_full
