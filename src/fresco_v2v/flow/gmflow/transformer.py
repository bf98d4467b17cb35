"""GMFlow's feature enhancement (§3.2): six blocks of self- and cross-attention between the two frames' features,
in 2x2 windows shifted by half a window every other block (Swin-style), single-head.

Shapes: features [B, L, C] with L = h*w tokens of C channels, or [B, C, h, w]; K = number of windows per side.
Layer names match the public checkpoint (``transformer.layers.{i}.self_attn.*`` / ``.cross_attn_ffn.*``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Score added to pairs of tokens that the shift brought together from different regions (the Swin mask value).
MASKED_SCORE = -100.0


def split_windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """[B, h, w, C] -> [B*K*K, h/K, w/K, C], windows row-major within each batch item."""
    b, h, w, c = x.shape
    return x.view(b, k, h // k, k, w // k, c).permute(0, 1, 3, 2, 4, 5).reshape(b * k * k, h // k, w // k, c)


def merge_windows(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`split_windows`: [B*K*K, h/K, w/K, C] -> [B, h, w, C]."""
    bk, hk, wk, c = x.shape
    b = bk // (k * k)
    return x.view(b, k, k, hk, wk, c).permute(0, 1, 3, 2, 4, 5).reshape(b, k * hk, k * wk, c)


def shifted_window_mask(h: int, w: int, k: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[K*K, L_w, L_w] additive mask for attention in windows after rolling the map by half a window.

    After the roll, the last window row/column holds tokens from up to three regions of the unrolled map (the wrap);
    tokens of different regions must not attend to each other: 0 within a region, ``MASKED_SCORE`` across.
    """
    wh, ww = h // k, w // k
    region = torch.zeros(h, w, device=device)
    bounds_h = (0, h - wh, h - wh // 2, h)
    bounds_w = (0, w - ww, w - ww // 2, w)
    label = 0
    for i in range(3):
        for j in range(3):
            region[bounds_h[i] : bounds_h[i + 1], bounds_w[j] : bounds_w[j + 1]] = label
            label += 1
    windows = split_windows(region[None, :, :, None], k).reshape(k * k, wh * ww)  # [K*K, L_w]
    same = windows[:, None, :] == windows[:, :, None]
    return torch.where(same, 0.0, MASKED_SCORE).to(dtype)


def sine_position(b: int, h: int, w: int, channels: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[B, C, h, w] 2-D sine position code (DETR's, normalized to 2π): C/2 channels for y, then C/2 for x.

    Computed in float32 (as the original) and returned in ``dtype``."""
    half = channels // 2
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + 1e-6) * 2 * math.pi  # [h]
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + 1e-6) * 2 * math.pi  # [w]
    dim = torch.arange(half, dtype=torch.float32, device=device)
    freq = 10000.0 ** (2 * torch.div(dim, 2, rounding_mode="floor") / half)  # [half]

    def code(pos: torch.Tensor) -> torch.Tensor:  # [n] -> [n, half]: sin on even channels, cos on odd, interleaved
        p = pos[:, None] / freq
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    cy = code(y)[:, None, :].expand(h, w, half)
    cx = code(x)[None, :, :].expand(h, w, half)
    return torch.cat((cy, cx), dim=2).permute(2, 0, 1)[None].expand(b, -1, -1, -1).to(dtype)


def add_window_position(feature: torch.Tensor, k: int) -> torch.Tensor:
    """[B, C, h, w] + the sine code of each window's own coordinates (GMFlow adds position per attention window)."""
    b, c, h, w = feature.shape
    pos = sine_position(1, h // k, w // k, c, feature.device, feature.dtype)[0].permute(1, 2, 0)  # [h/K, w/K, C]
    windows = split_windows(feature.permute(0, 2, 3, 1), k) + pos
    return merge_windows(windows, k).permute(0, 3, 1, 2)


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √C) v; q, k, v: [B, L, C]."""
    return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int, w: int, splits: int, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention within each of K x K windows; with ``mask`` (:func:`shifted_window_mask`) on the map rolled by
    half a window first and rolled back after. q, k, v: [B, h*w, C] -> [B, h*w, C]."""
    b, _, c = q.shape
    shift = (-(h // splits // 2), -(w // splits // 2))

    def windows(x: torch.Tensor) -> torch.Tensor:
        x = x.view(b, h, w, c)
        if mask is not None:
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return split_windows(x, splits).reshape(b * splits * splits, -1, c)

    qw, kw, vw = windows(q), windows(k), windows(v)
    scores = qw @ kw.transpose(1, 2) / math.sqrt(c)  # [B*K*K, L_w, L_w]
    if mask is not None:
        scores = scores + mask.repeat(b, 1, 1)
    out = torch.softmax(scores, dim=-1) @ vw
    out = merge_windows(out.view(b * splits * splits, h // splits, w // splits, c), splits)
    if mask is not None:
        out = torch.roll(out, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    return out.reshape(b, h * w, c)


class TransformerLayer(nn.Module):
    """source + norm(FFN([source, norm(merge(attention(source -> target)))])); without FFN for self-attention."""

    def __init__(self, d_model: int = 128, ffn: bool = True, ffn_expansion: int = 4, shifted: bool = False):
        super().__init__()
        self.shifted = shifted
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.merge = nn.Linear(d_model, d_model, bias=False)
        self.norm1 = nn.LayerNorm(d_model)
        self.mlp = None
        if ffn:
            inner = 2 * d_model * ffn_expansion
            self.mlp = nn.Sequential(
                nn.Linear(2 * d_model, inner, bias=False), nn.GELU(), nn.Linear(inner, d_model, bias=False)
            )
            self.norm2 = nn.LayerNorm(d_model)

    def forward(self, source, target, h: int, w: int, splits: int, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self.q_proj(source), self.k_proj(target), self.v_proj(target)
        if splits > 1:
            message = window_attention(q, k, v, h, w, splits, mask if self.shifted else None)
        else:
            message = full_attention(q, k, v)
        message = self.norm1(self.merge(message))
        if self.mlp is not None:
            message = self.norm2(self.mlp(torch.cat([source, message], dim=-1)))
        return source + message


class TransformerBlock(nn.Module):
    """Self-attention, then cross-attention to the other frame with the feed-forward network."""

    def __init__(self, d_model: int = 128, ffn_expansion: int = 4, shifted: bool = False):
        super().__init__()
        self.self_attn = TransformerLayer(d_model, ffn=False, ffn_expansion=ffn_expansion, shifted=shifted)
        self.cross_attn_ffn = TransformerLayer(d_model, ffn=True, ffn_expansion=ffn_expansion, shifted=shifted)

    def forward(self, source, target, h, w, splits, mask):
        source = self.self_attn(source, source, h, w, splits, mask)
        return self.cross_attn_ffn(source, target, h, w, splits, mask)


class FeatureTransformer(nn.Module):
    """Both frames' features [B, C, h, w] enhanced jointly; every odd block attends in shifted windows."""

    def __init__(self, num_layers: int = 6, d_model: int = 128, ffn_expansion: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, ffn_expansion, shifted=i % 2 == 1) for i in range(num_layers)
        )

    def forward(self, feature0: torch.Tensor, feature1: torch.Tensor, splits: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = feature0.shape
        mask = shifted_window_mask(h, w, splits, feature0.device, feature0.dtype) if splits > 1 else None
        # frame 0 attends to frame 1 and frame 1 to frame 0 in one batch: [f0; f1] against [f1; f0]
        x = torch.cat([feature0, feature1]).flatten(2).transpose(1, 2)  # [2B, L, C]
        for layer in self.layers:
            other = torch.cat(x.chunk(2)[::-1])
            x = layer(x, other, h, w, splits, mask)
        out = x.transpose(1, 2).reshape(2 * b, c, h, w).contiguous()  # the layout the original hands on
        return out[:b], out[b:]
