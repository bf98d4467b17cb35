"""FRESCO-guided attention (paper §3.4): eq. 7, 8 and 9 as pure functions, and the diffusers processor applying them.

Shapes: a batch of B = G * N items, G groups (2 under classifier-free guidance: unconditional, conditional) of the N
frames of a batch; L tokens a frame, ``heads`` heads of size d. Tensors q, k, v are [B, heads, L, d].

The processor is installed through ``unet.set_attn_processor`` by :func:`fresco_attention` and removed again when
the ``with`` block ends. Its state is an explicit :class:`FrescoAttentionContext` that the pipeline updates each
step; reference queries/keys are keyed by layer name.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .config import AttentionConfig
from .correspondence import Correspondence, ScaleCorrespondence
from .decoder_layout import default_guided_prefixes

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------------
# Pure functions


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    max_elements: int = 2**26,
) -> torch.Tensor:
    """softmax(q kᵀ * scale) v, splitting the queries so one score block holds at most ``max_elements`` elements.

    q: [..., Lq, d], k/v: [..., Lk, d]. Rows of the softmax are independent, so chunking queries is exact.
    """
    batch = math.prod(q.shape[:-2])
    rows = max(1, max_elements // max(1, batch * k.shape[-2]))
    if rows >= q.shape[-2]:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return torch.cat(
        [
            F.scaled_dot_product_attention(q[..., s : s + rows, :], k, v, scale=scale)
            for s in range(0, q.shape[-2], rows)
        ],
        dim=-2,
    )


def spatial_guided_attention(
    q: torch.Tensor, q_ref: torch.Tensor, k_ref: torch.Tensor, lambda_s: float, max_elements: int = 2**26
) -> torch.Tensor:
    """Eq. 7: Q' = softmax(Q^r K^rᵀ / (λ_s √d)) Q, aggregating queries by the input frame's self-similarity.

    q, q_ref, k_ref: [B, heads, L, d] (q_ref, k_ref from the reference pass over the input frames). Returns Q'.
    """
    d = q.shape[-1]
    return chunked_attention(q_ref, k_ref, q, scale=1.0 / (lambda_s * math.sqrt(d)), max_elements=max_elements)


def efficient_cross_frame_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    unique_index: torch.Tensor,
    num_frames: int,
    max_elements: int = 2**26,
) -> torch.Tensor:
    """Eq. 8: V' = softmax(Q' K[p_u]ᵀ / √d) V[p_u]: every frame attends to the unique region of the whole batch.

    q, k, v: [G*N, heads, L, d]; unique_index: [U] into the N*L tokens of a group, frame-major. Returns [G*N, heads,
    L, d]. Keys and values are gathered once per group; queries are chunked to the memory budget.
    """
    b, h, l, d = q.shape
    g = b // num_frames

    def group(x: torch.Tensor) -> torch.Tensor:  # [G*N, h, L, d] -> [G, h, N*L, d]
        return x.view(g, num_frames, h, l, d).permute(0, 2, 1, 3, 4).reshape(g, h, num_frames * l, d)

    k_u = group(k).index_select(2, unique_index)  # [G, h, U, d]
    v_u = group(v).index_select(2, unique_index)
    out = chunked_attention(group(q), k_u, v_u, max_elements=max_elements)  # [G, h, N*L, d]
    return out.view(g, h, num_frames, l, d).permute(0, 2, 1, 3, 4).reshape(b, h, l, d)


def temporal_guided_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale_corr: ScaleCorrespondence,
    lambda_t: float,
) -> torch.Tensor:
    """Eq. 9: H[p_f] = softmax(Q[p_f] K[p_f]ᵀ / (λ_t √d)) V'[p_f], attention among the tokens on one flow trajectory.

    q, k: the layer's own queries and keys, v: V' of eq. 8, all [G*N, heads, L, d]. Tokens are gathered into
    trajectory order [G, heads, L, N, d] (one permutation a frame), attend along N within their unbroken segment,
    and are scattered back. Returns [G*N, heads, L, d].
    """
    b, h, l, d = q.shape
    n = scale_corr.num_frames
    g = b // n
    gather = scale_corr.trajectory_gather_index()  # [L*N]
    scatter = scale_corr.trajectory_scatter_index()  # [N*L]

    def to_traj(x: torch.Tensor) -> torch.Tensor:  # [G*N, h, L, d] -> [G, h, L, N, d]
        flat = x.view(g, n, h, l, d).permute(0, 2, 1, 3, 4).reshape(g, h, n * l, d)
        return flat.index_select(2, gather).view(g, h, l, n, d)

    attn_mask = scale_corr.trajectory_attention_mask()  # [L, N, N] bool, or None when no link is broken
    out = F.scaled_dot_product_attention(
        to_traj(q), to_traj(k), to_traj(v), attn_mask=attn_mask, scale=1.0 / (lambda_t * math.sqrt(d))
    )  # [G, h, L, N, d]
    out = out.reshape(g, h, l * n, d).index_select(2, scatter)  # frame-major [G, h, N*L, d]
    return out.view(g, h, n, l, d).permute(0, 2, 1, 3, 4).reshape(b, h, l, d)


# ------------------------------------------------------------------------------------------------------------------
# State and processor


@dataclass
class StepConstraints:
    """Which parts of FRESCO-guided attention are active at the current denoising step."""

    spatial_guided: bool = False
    cross_frame: bool = False
    temporal_guided: bool = False


@dataclass
class FrescoAttentionContext:
    """Explicit state shared by the pipeline and its FRESCO processors (one context per batch)."""

    config: AttentionConfig
    num_frames: int
    correspondence: Correspondence | None = None
    #: Q^r, K^r of each guided layer from the reference pass, keyed by processor name; [G*N, heads, L, d] each (one
    #: per CFG half, ``ReferenceConfig.guidance_batch``) or [N, heads, L, d] (reused for every group).
    reference_qk: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    step: StepConstraints = field(default_factory=StepConstraints)
    #: When True, processors record Q and K into ``reference_qk`` and attend normally.
    recording: bool = False


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, l, c = x.shape
    return x.view(b, l, heads, c // heads).transpose(1, 2)  # [B, heads, L, d]


class FrescoAttnProcessor:
    """Self-attention processor applying eq. 7-9 as the context says; with all three off it is standard attention."""

    def __init__(self, name: str, context: FrescoAttentionContext):
        self.name = name
        self.context = context

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        ctx = self.context
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b4, c4, h4, w4 = hidden_states.shape
            hidden_states = hidden_states.view(b4, c4, h4 * w4).transpose(1, 2)
        batch, length, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context_states = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context_states = attn.norm_encoder_hidden_states(context_states)

        q = _split_heads(attn.to_q(hidden_states), attn.heads)
        k = _split_heads(attn.to_k(context_states), attn.heads)
        v = _split_heads(attn.to_v(context_states), attn.heads)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)

        step = ctx.step
        guided = encoder_hidden_states is None and attention_mask is None and not ctx.recording
        if ctx.recording:
            ctx.reference_qk[self.name] = (q.detach(), k.detach())
        if guided and (step.spatial_guided or step.cross_frame or step.temporal_guided):
            out = self._fresco(q, k, v, step)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)

        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * out.shape[-1]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b4, c4, h4, w4)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _fresco(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, step: StepConstraints) -> torch.Tensor:
        ctx, cfg = self.context, self.context.config
        n = ctx.num_frames
        if q.shape[0] % n:
            raise ValueError(f"{self.name}: batch {q.shape[0]} is not a multiple of the {n} frames of the context")
        groups = q.shape[0] // n
        q_guided = q
        if step.spatial_guided:
            if self.name not in ctx.reference_qk:
                raise KeyError(f"{self.name}: spatial-guided attention needs the reference pass's Q and K")
            q_ref, k_ref = ctx.reference_qk[self.name]  # [G*N or N, heads, L, d]: per CFG half, or one for all
            if q_ref.shape[0] != q.shape[0]:
                if q_ref.shape[0] != n:
                    raise ValueError(f"{self.name}: Q^r of {q_ref.shape[0]} items for a batch of {q.shape[0]}")
                q_ref, k_ref = q_ref.repeat(groups, 1, 1, 1), k_ref.repeat(groups, 1, 1, 1)
            q_ref, k_ref = q_ref.to(q.dtype), k_ref.to(q.dtype)
            q_guided = spatial_guided_attention(q, q_ref, k_ref, cfg.lambda_s, cfg.max_attention_elements)
        scale_corr = None
        if step.cross_frame or step.temporal_guided:
            if ctx.correspondence is None:
                raise ValueError(f"{self.name}: cross-frame and temporal-guided attention need a correspondence")
            scale_corr = ctx.correspondence.for_tokens(q.shape[2])
        if step.cross_frame:
            v_prime = efficient_cross_frame_attention(
                q_guided, k, v, scale_corr.unique_index, n, cfg.max_attention_elements
            )
        else:
            v_prime = chunked_attention(q_guided, k, v, max_elements=cfg.max_attention_elements)
        if step.temporal_guided:
            return temporal_guided_attention(q, k, v_prime, scale_corr, cfg.lambda_t)
        return v_prime


def guided_layer_names(unet, prefixes: tuple[str, ...] | None) -> list[str]:
    """Names of the self-attention processors (``...attn1.processor``) under the given prefixes; None: the model's
    default decoder levels (:func:`~fresco_v2v.decoder_layout.default_guided_prefixes`)."""
    prefixes = default_guided_prefixes(unet) if prefixes is None else tuple(prefixes)
    names = [n for n in unet.attn_processors if n.endswith("attn1.processor") and n.startswith(prefixes)]
    if not names:
        raise ValueError(
            f"no self-attention layer under {prefixes}; the UNet has {sorted(unet.attn_processors)[:6]}..."
        )
    return names


@contextlib.contextmanager
def fresco_attention(
    unet, context: FrescoAttentionContext, prefixes: tuple[str, ...] | None = None
) -> Iterator[list[str]]:
    """Install FRESCO processors on the guided self-attention layers; restore the original processors on exit."""
    original = dict(unet.attn_processors)
    names = guided_layer_names(unet, prefixes or context.config.layers)
    procs = dict(original)
    for n in names:
        procs[n] = FrescoAttnProcessor(n, context)
    unet.set_attn_processor(procs)  # diffusers pops from the dict it is given: always pass a fresh one
    try:
        yield names
    finally:
        unet.set_attn_processor(dict(original))
