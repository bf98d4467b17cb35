"""Image filters of the propagation, on [..., H, W] tensors on any device.

Box sums and window maxima, the finest band and its energy, image gradients, channel by channel sampling, guide
errors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of [..., H, W]: gx[..., :, j] = x[j+1] - x[j] (0 in the last column), gy likewise."""
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return gx, gy


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
