"""Blending of the candidates and what follows it (step 4).

The histogram-preserving blend, detail restoration, the candidate-range clamp and gradient-domain (screened
Poisson) fusion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .filters import box_mean, fine_detail, image_gradients, window_max


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
