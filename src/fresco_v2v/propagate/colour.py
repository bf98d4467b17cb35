"""The key's colour models: the local linear one of guide correction (step 3) and the local colour lookup (step 3b)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import PropagationConfig
from .filters import box_mean


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
