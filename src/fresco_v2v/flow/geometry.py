"""Flow fields as geometry: backward warping, composition and the occlusion test (paper §3.2's w_i^j and M_i^j).

Convention everywhere in fresco-v2v: a flow is a float32 [..., H, W, 2] field of (dx, dy) pixel offsets with
``src(x) ~ dst(x + flow(x))``; the occlusion mask of that pair marks the pixels of ``src`` with no match in ``dst``.
Warping is backward: ``warp(dst, flow)(x) = dst(x + flow(x))`` lands on src's grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Forward-backward check |f(x) + b(x + f(x))| > alpha (|f(x)| + |b(x + f(x))|) + beta, the values of the
#: authors' code (GMFlow's check); the |b| term is taken at the same warped point as the sum.
FB_ALPHA = 0.01
FB_BETA = 0.5
#: Photometric check of the authors' code: occluded when the mean |RGB difference| after warping exceeds 0.25*255.
PHOTO_THRESHOLD = 0.25 * 255


def sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 2] pixel flow -> grid_sample grid in [-1, 1] (align_corners=True) pointing at x + flow(x)."""
    h, w = flow.shape[1:3]
    sx, sy = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
    grid = flow * torch.tensor([sx, sy], device=flow.device, dtype=flow.dtype)
    grid[..., 0] += torch.arange(w, device=flow.device, dtype=flow.dtype) * sx - 1.0  # broadcast, no meshgrid
    grid[..., 1] += (torch.arange(h, device=flow.device, dtype=flow.dtype) * sy - 1.0)[:, None]
    return grid


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Backward warp: out[b, :, y, x] = image[b, :, y + flow_y, x + flow_x] (bilinear, border-clamped).

    image: [B, C, H, W] float; flow: [B, H, W, 2] in pixels of this grid (dx, dy). Returns [B, C, H, W].
    Paper eq. 5's w_i^{i+1}(f_i) is ``warp(f_i, flow from frame i+1 to frame i)``.
    """
    return F.grid_sample(
        image, sampling_grid(flow.to(image.dtype)), mode=mode, padding_mode="border", align_corners=True
    )


def sample_flow(field: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 2] ``field`` read at x + flow(x) (bilinear, border-clamped): field(x + flow(x)), [B, H, W, 2]."""
    return warp(field.permute(0, 3, 1, 2), flow).permute(0, 2, 3, 1)


def compose_flows(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Flow a -> c from ``first`` a -> b and ``second`` b -> c: w_a^c(x) = w_a^b(x) + w_b^c(x + w_a^b(x)).

    first, second: [B, H, W, 2]. The chain rule of §3.2's w_i^j across frames; exact for any motion as long as the
    point is visible in b (elsewhere ``second`` is read where it means nothing, which the occlusion test catches).
    """
    return first + sample_flow(second, first)


def out_of_frame(flow: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 2] flow -> [B, H, W] bool: x + flow(x) falls outside the frame (no match can exist there)."""
    _, h, w, _ = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device), torch.arange(w, device=flow.device), indexing="ij")
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    return (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)


def forward_backward_error(flow_fwd: torch.Tensor, flow_bwd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(|f + b(x+f)|, |f| + |b(x+f)|), each [B, H, W]: the round-trip mismatch and the motion it is relative to."""
    b_at = sample_flow(flow_bwd, flow_fwd)  # [B, H, W, 2] = b(x + f(x))
    trip = flow_fwd + b_at
    return torch.hypot(trip[..., 0], trip[..., 1]), length(flow_fwd) + length(b_at)


def length(flow: torch.Tensor) -> torch.Tensor:
    """[..., 2] -> [...]: |flow| (``hypot``: several times faster than ``vector_norm`` on permuted CPU tensors)."""
    return torch.hypot(flow[..., 0], flow[..., 1])


def occlusion_from_flows(
    flow_fwd: torch.Tensor,
    flow_bwd: torch.Tensor,
    src: torch.Tensor | None = None,
    dst: torch.Tensor | None = None,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
    photo_threshold: float | None = PHOTO_THRESHOLD,
) -> torch.Tensor:
    """Pixels of src with no match in dst (the complement of M in eq. 5), as [B, H, W] bool.

    flow_fwd: [B, H, W, 2] src->dst; flow_bwd: [B, H, W, 2] dst->src; src, dst: [B, 3, H, W] float in 0..255.
    A pixel is occluded when (1) the forward-backward check fails, |f + b(x+f)| > alpha(|f| + |b(x+f)|) + beta,
    (2) x + f(x) leaves the frame, or (3) with src/dst given and ``photo_threshold`` set, the mean absolute RGB
    difference between src and the warped dst exceeds ``photo_threshold``.
    """
    mismatch, scale = forward_backward_error(flow_fwd, flow_bwd)
    occ = (mismatch > alpha * scale + beta) | out_of_frame(flow_fwd)
    if src is not None and dst is not None and photo_threshold is not None:
        occ |= (src - warp(dst, flow_fwd)).abs().mean(dim=1) > photo_threshold
    return occ
