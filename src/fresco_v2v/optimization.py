"""FRESCO-aware feature optimization (paper §3.3, eq. 4): Adam on the decoder blocks' input features.

The features enter ``unet.up_blocks[i]`` as its ``hidden_states`` keyword; a forward pre-hook (installed by
:func:`decoder_hooks`, always removed on exit) hands them to a callback that may return a replacement.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from .config import OptimizationConfig
from .correspondence import ScaleCorrespondence
from .losses import adaptive_instance_normalization, spatial_loss_fn, temporal_loss_fn

logger = logging.getLogger(__name__)

#: Callback of a decoder hook: (block index, hidden_states [B, C, h, w]) -> replacement or None to keep it.
DecoderCallback = Callable[[int, torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def decoder_hooks(unet, blocks: tuple[int, ...], callback: DecoderCallback) -> Iterator[None]:
    """Forward pre-hooks on ``unet.up_blocks[i]`` for i in ``blocks``, removed when the ``with`` block ends."""
    handles = []

    def make(i: int):
        def hook(module, args, kwargs):
            hs = kwargs.get("hidden_states", args[0] if args else None)
            new = callback(i, hs)
            if new is None:
                return None
            if "hidden_states" in kwargs:
                return args, {**kwargs, "hidden_states": new}
            return (new, *args[1:]), kwargs

        return hook

    try:
        for i in blocks:
            handles.append(unet.up_blocks[i].register_forward_pre_hook(make(i), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _adam(x: torch.Tensor, lr: float) -> torch.optim.Adam:
    """Adam on x, fused where the device has the kernel (one pass over the features a step instead of eight; the
    same update up to round-off), else the plain loop."""
    try:
        return torch.optim.Adam([x], lr=lr, fused=True)
    except RuntimeError:  # "fused=True requires ... Tensors of supported devices"
        return torch.optim.Adam([x], lr=lr)


@dataclass
class OptimizationTrace:
    """Loss values of one optimization: per block, the loss before the first and after the last Adam step."""

    block: int
    step_index: int
    loss_start: float
    loss_end: float
    seconds: float = 0.0


def optimize_features(
    f: torch.Tensor,
    num_frames: int,
    config: OptimizationConfig,
    scale_corr: ScaleCorrespondence | None,
    f_ref: torch.Tensor | None,
) -> tuple[torch.Tensor, float, float]:
    """Eq. 4: f^ = argmin L_temp(f) + λ_spat L_spat(f), by Adam for K iterations, starting from f.

    f: [G*N, C, h, w] decoder features (G groups of the N frames, e.g. CFG halves; each group is one video);
    scale_corr: the correspondence at this resolution (for eq. 5); f_ref: reference features (eq. 6), [G*N, C, h, w]
    (one per group) or [N, C, h, w] (reused for every group).
    Runs in float32 with gradients enabled explicitly (the sampling loop runs under no_grad). Returns the new
    features (AdaIN to the original's statistics when ``config.adain``) and the loss before and after.
    """
    use_temp = config.temporal and scale_corr is not None and num_frames > 1
    use_spat = config.spatial and f_ref is not None and config.lambda_spat > 0
    if not (use_temp or use_spat):
        return f, 0.0, 0.0
    # inference_mode(False): callers may wrap the pipeline in inference_mode, where enable_grad alone cannot help;
    # every tensor autograd saves is therefore made inside this block.
    with torch.inference_mode(False), torch.enable_grad():
        groups = f.shape[0] // num_frames
        original = f.detach().clone()
        # a copy even when already float32; channels-last, so eq. 6's tokens [N, L, C] are a view of it
        x = original.to(torch.float32, memory_format=torch.channels_last, copy=True).requires_grad_(True)
        spatial = None
        if use_spat:
            ref = f_ref.detach().to(torch.float32, copy=True)
            if ref.shape[0] != f.shape[0]:  # one record for all groups: repeat it
                if ref.shape[0] != num_frames:
                    raise ValueError(f"f_ref of {ref.shape[0]} items for {f.shape[0]} features of {num_frames} frames")
                ref = ref.repeat(groups, 1, 1, 1)
            spatial = spatial_loss_fn(ref, config.spatial_norm)
        temporal = None
        if use_temp:  # pairs (i, i+1) inside each group only: the groups are separate copies of the video
            on = lambda t: t.to(x.device)  # noqa: E731
            both = config.bidirectional_temporal
            temporal = temporal_loss_fn(
                groups,
                on(scale_corr.flow_bwd),
                on(scale_corr.visible_mask()),
                on(scale_corr.flow_fwd) if both else None,
                on(~scale_corr.occ_fwd) if both else None,
            )

        def loss_fn(x: torch.Tensor) -> torch.Tensor:
            loss = temporal(x) if temporal is not None else x.new_zeros(())
            if spatial is not None:
                loss = loss + config.lambda_spat * spatial(x)
            return loss

        opt = _adam(x, config.learning_rate)
        first = last = 0.0
        for it in range(config.iterations):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(x)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            first = value if it == 0 else first
            last = value  # the loss of the last iteration, before its step (no extra evaluation)
        out = x.detach()
        if config.adain:
            out = adaptive_instance_normalization(out, original.to(torch.float32))
        return out.to(f.dtype), first, last


@dataclass
class FeatureOptimizer:
    """The decoder-hook callback of the pipeline: optimizes the block inputs at the steps the schedule selects."""

    config: OptimizationConfig
    num_frames: int
    correspondence: object | None  # Correspondence (kept loose to avoid an import cycle in type checkers)
    reference_features: dict[int, torch.Tensor]  # block index -> f^r [G*N or N, C, h, w]
    active: bool = False
    step_index: int = 0
    trace: list[OptimizationTrace] = field(default_factory=list)

    def __call__(self, block: int, hidden_states: torch.Tensor) -> torch.Tensor | None:
        if not self.active:
            return None
        t0 = time.perf_counter()
        tokens = hidden_states.shape[-2] * hidden_states.shape[-1]
        scale_corr = self.correspondence.for_tokens(tokens) if self.correspondence is not None else None
        new, start, end = optimize_features(
            hidden_states, self.num_frames, self.config, scale_corr, self.reference_features.get(block)
        )
        self.trace.append(OptimizationTrace(block, self.step_index, start, end, time.perf_counter() - t0))
        return new
