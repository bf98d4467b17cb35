"""GMFlow's flow from features (§3.3-3.4): global correlation and softmax matching, flow propagation by
self-attention, and convex upsampling x8 (RAFT's, Teed & Deng 2020).

Flows here are [B, 2, h, w] (dx, dy) in pixels of the grid they live on, PyTorch's layout; the package's public
flows are [H, W, 2].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_grid(b: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[B, 2, h, w]: channel 0 the x coordinate, channel 1 the y coordinate of each position."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=device),
        torch.arange(w, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack((xs, ys))[None].expand(b, -1, -1, -1)


def global_matching(feature0: torch.Tensor, feature1: torch.Tensor, bidirectional: bool = False) -> torch.Tensor:
    """Flow as the expected position under softmax(f0 · f1ᵀ / √C) over every position of the other frame (eq. 2-3).

    feature0, feature1: [B, C, h, w]. Returns [B, 2, h, w] (frame 0 -> 1), or [2B, 2, h, w] (0 -> 1, then 1 -> 0
    from the transposed correlation) when ``bidirectional``.
    """
    b, c, h, w = feature0.shape
    corr = feature0.flatten(2).transpose(1, 2) @ feature1.flatten(2) / math.sqrt(c)  # [B, L, L]
    if bidirectional:
        corr = torch.cat([corr, corr.transpose(1, 2)])
    grid = coordinate_grid(corr.shape[0], h, w, feature0.device, feature0.dtype)
    target = torch.softmax(corr, dim=-1) @ grid.flatten(2).transpose(1, 2)  # [B', L, 2]
    return target.transpose(1, 2).reshape(-1, 2, h, w) - grid


class FlowPropagation(nn.Module):
    """Flow propagated by self-attention over frame 0's features (§3.4): where matching is unreliable (occlusion,
    out of frame), a position takes the flow of positions that look like it.

    As in the public model, the key projection is applied to the *projected* query features (k_proj(q_proj(f)));
    the checkpoint was trained that way, so the layout is kept.
    """

    def __init__(self, channels: int = 128):
        super().__init__()
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)

    def forward(self, feature: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """feature: [B, C, h, w]; flow: [B, 2, h, w] -> [B, 2, h, w]."""
        b, c, h, w = feature.shape
        query = self.q_proj(feature.flatten(2).transpose(1, 2))  # [B, L, C]
        key = self.k_proj(query)
        attn = torch.softmax(query @ key.transpose(1, 2) / math.sqrt(c), dim=-1)  # [B, L, L]
        return (attn @ flow.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, 2, h, w)


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Each fine pixel is a convex combination of the 3x3 coarse flows around its coarse cell, scaled by ``factor``.

    flow: [B, 2, h, w]; mask: [B, 9 * factor², h, w] logits (softmax over the 9 neighbours, ordered as
    ``F.unfold``'s 3x3 window: row-major, zero beyond the border). Returns [B, 2, factor*h, factor*w].
    """
    b, _, h, w = flow.shape
    weights = torch.softmax(mask.view(b, 1, 9, factor, factor, h, w), dim=2)
    neighbours = F.unfold(factor * flow, 3, padding=1).view(b, 2, 9, 1, 1, h, w)
    fine = (weights * neighbours).sum(dim=2)  # [B, 2, factor, factor, h, w]
    return fine.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, factor * h, factor * w)
