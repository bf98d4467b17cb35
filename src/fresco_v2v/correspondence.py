"""The FRESCO correspondence of one batch of frames, at every feature scale of the UNet decoder (paper §3.2-3.4).

Built once per batch from the frames and their pixel flows, then read by the attention processor and the feature
optimizer. Each scale holds, on that scale's token grid:

* flows and occlusion between consecutive frames (for L_temp, eq. 5): flows are area-averaged and divided by the
  scale factor; occlusion by the loss rule (default "any": a token touching an occluded pixel is occluded, as the
  authors max-pool for their temporal loss);
* the unique-region index p_u of efficient cross-frame attention (eq. 8): every token of the first frame plus, for
  each later frame, the tokens not visible in its previous frame, by the attention rule (default "area": a token is
  occluded when more than half of its pixels are, as the authors threshold their downsampled mask at 0.5);
* flow trajectories p_f for temporal-guided attention (eq. 9), as one permutation of the tokens per frame, linked
  where the attention rule says a token is visible.

Token occlusion rules (:data:`TOKEN_OCCLUSION_RULES`): "any" (max-pool), "area" (mean over the token's pixels >
0.5) and "centre" (the authors' exact operation: ``F.interpolate(mode="bilinear")`` to the token grid, which for an
integer factor reads the mean of the token's central 2x2 pixels, > 0.5). Max-pooling for attention empties the
correspondence on real motion (a token is linked only when all of its 64-256 pixels are), which is why the rules
differ (README, "Correspondence").

Trajectories. There are exactly L = h*w trajectories; trajectory p passes through token ``perm[j, p]`` of frame j,
so ``perm[j]`` is a permutation and the batch can be gathered into an [L, N] "trajectory order" layout and back
with no token lost or doubled. Frame 0 starts trajectory p at token p. A token q of frame j+1 continues the
trajectory of the token m its backward flow rounds to in frame j, unless it is occluded there or leaves the frame.
When several tokens flow to the same m (a collision), the one whose mean colour is closest to m's (L1 over RGB;
ties: lowest index) continues it. Every other token takes one of the trajectories left unclaimed (both in
ascending order) with a *broken link*. A trajectory is thus cut into segments (``segment[j, p]`` counts the broken
links up to frame j) and tokens attend along it only within their segment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from .config import TOKEN_OCCLUSION_RULES
from .errors import ConfigError
from .flow import BidirectionalFlow, FlowEstimator, sequence_flows

logger = logging.getLogger(__name__)

#: Downsampling factors of the inputs of SD1.5's ``unet.up_blocks[0..3]`` (VAE 1/8, then 1/64, 1/32, 1/16, 1/8).
DECODER_FACTORS = (64, 32, 16, 8)
#: Factors of the decoder self-attention layers FRESCO guides by default (up_blocks.2 and .3, paper §3.4).
ATTENTION_FACTORS = (16, 8)


@dataclass
class ScaleCorrespondence:
    """Correspondence on one token grid of h x w tokens (L = h*w) for N frames."""

    factor: int  # pixels per token side
    size: tuple[int, int]  # (h, w) tokens
    flow_fwd: torch.Tensor  # [N-1, h, w, 2] float32, frame i -> i+1, in tokens
    flow_bwd: torch.Tensor  # [N-1, h, w, 2] float32, frame i+1 -> i, in tokens
    occ_fwd: torch.Tensor  # [N-1, h, w] bool, tokens of frame i not visible in frame i+1 (loss rule, eq. 5)
    occ_bwd: torch.Tensor  # [N-1, h, w] bool, tokens of frame i+1 not visible in frame i (loss rule, eq. 5)
    attn_occ_bwd: torch.Tensor  # [N-1, h, w] bool, as occ_bwd by the attention rule (eq. 8, 9)
    unique_index: torch.Tensor  # [U] int64, ascending, into the N*L tokens flattened frame-major (eq. 8's p_u)
    traj_perm: torch.Tensor  # [N, L] int64: token of frame j on trajectory p
    traj_inverse: torch.Tensor  # [N, L] int64: trajectory of token q of frame j
    traj_segment: torch.Tensor  # [N, L] int64: broken links on trajectory p up to frame j
    #: Derived tensors (eq. 9's indices and mask) computed once: every guided layer reads them at every step.
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    def _once(self, key: str, make):
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    @property
    def num_frames(self) -> int:
        return int(self.traj_perm.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.traj_perm.shape[1])

    def visible_mask(self) -> torch.Tensor:
        """[N-1, h, w] bool: M_i^{i+1} of eq. 5, tokens of frame i+1 whose match in frame i is valid."""
        return ~self.occ_bwd

    def track(self, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For each token of frame i, the token on its trajectory in frame j ([L] int64) and whether they are linked."""
        p = self.traj_inverse[i]
        return self.traj_perm[j, p], self.traj_segment[i, p] == self.traj_segment[j, p]

    def trajectory_gather_index(self) -> torch.Tensor:
        """[L*N] int64 index into frame-major tokens [N*L].

        ``x.reshape(N*L, C)[idx].view(L, N, C)`` is trajectory order: row p holds trajectory p in frames 0..N-1.
        """

        def make() -> torch.Tensor:
            n, l = self.traj_perm.shape
            offsets = torch.arange(n, device=self.traj_perm.device)[:, None] * l
            return (self.traj_perm + offsets).T.reshape(-1)

        return self._once("trajectory_gather_index", make)

    def trajectory_scatter_index(self) -> torch.Tensor:
        """[N*L] int64 inverse of :meth:`trajectory_gather_index`.

        ``y.reshape(L*N, C)[idx].view(N, L, C)`` brings trajectory order back to frame-major order.
        """

        def make() -> torch.Tensor:
            n = self.traj_perm.shape[0]
            frame = torch.arange(n, device=self.traj_perm.device)[:, None]
            return (self.traj_inverse * n + frame).reshape(-1)  # token (j, q) sits at trajectory-order row p*N + j

        return self._once("trajectory_scatter_index", make)

    def trajectory_mask(self) -> torch.Tensor:
        """[L, N, N] bool: on trajectory p, frames j and k are linked (may attend to each other in eq. 9)."""

        def make() -> torch.Tensor:
            seg = self.traj_segment.T  # [L, N]
            return seg[:, :, None] == seg[:, None, :]

        return self._once("trajectory_mask", make)

    def trajectory_attention_mask(self) -> torch.Tensor | None:
        """:meth:`trajectory_mask`, or None when every link holds (no dense all-true mask for SDPA)."""
        return self._once(
            "attention_mask", lambda: None if bool(self.trajectory_mask().all()) else self.trajectory_mask()
        )

    def to(self, device: torch.device | str) -> ScaleCorrespondence:
        return ScaleCorrespondence(
            **{
                f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                for f in fields(self)
                if f.name != "_derived"
            }
        )


@dataclass
class Correspondence:
    """The FRESCO correspondence of a batch of N frames: pixel flows plus one :class:`ScaleCorrespondence` a scale."""

    frame_size: tuple[int, int]  # (H, W) pixels
    flows: BidirectionalFlow  # pixel-resolution flows and occlusion
    scales: dict[int, ScaleCorrespondence]  # keyed by downsampling factor
    #: Token occlusion rules the scales were built with: (attention, loss).
    token_occlusion: tuple[str, str] = ("area", "any")

    @property
    def num_frames(self) -> int:
        return int(self.flows.fwd.shape[0]) + 1

    def __getitem__(self, factor: int) -> ScaleCorrespondence:
        if factor not in self.scales:
            raise KeyError(f"no correspondence at factor {factor}; built for {sorted(self.scales)}")
        return self.scales[factor]

    def for_tokens(self, num_tokens: int) -> ScaleCorrespondence:
        """The scale whose grid has ``num_tokens`` tokens per frame (how an attention layer finds its scale)."""
        for s in self.scales.values():
            if s.num_tokens == num_tokens:
                return s
        raise KeyError(
            f"no correspondence with {num_tokens} tokens per frame; have "
            f"{ {f: s.num_tokens for f, s in self.scales.items()} }"
        )

    def to(self, device: torch.device | str) -> Correspondence:
        fl = self.flows
        moved = BidirectionalFlow(fl.fwd.to(device), fl.bwd.to(device), fl.occ_fwd.to(device), fl.occ_bwd.to(device))
        scales = {f: s.to(device) for f, s in self.scales.items()}
        return Correspondence(self.frame_size, moved, scales, self.token_occlusion)


# ----------------------------------------------------------------------------------------------------------------
# Pure functions, one concern each.


def pool_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, H, W, 2] pixel flow -> [B, H/f, W/f, 2] token flow: area average, divided by the factor."""
    return (F.avg_pool2d(flow.permute(0, 3, 1, 2), factor) / factor).permute(0, 2, 3, 1).contiguous()


def pool_occlusion(occ: torch.Tensor, factor: int, rule: str = "any") -> torch.Tensor:
    """[B, H, W] bool -> [B, H/f, W/f] bool, by ``rule`` (module docstring): "any" max-pools; "area" thresholds the
    share of occluded pixels at 0.5; "centre" thresholds the authors' bilinear downsampling at 0.5."""
    x = occ[:, None].to(torch.float32)
    if rule == "any":
        return F.max_pool2d(x, factor)[:, 0] > 0
    if rule == "area":
        return F.avg_pool2d(x, factor)[:, 0] > 0.5
    if rule == "centre":
        h, w = occ.shape[1] // factor, occ.shape[2] // factor
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0.5
    raise ConfigError("token_occlusion", f"one of {TOKEN_OCCLUSION_RULES}", rule)


def pool_colour_sum(frames: torch.Tensor, factor: int) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, H/f, W/f, 3] float64 sum of each token's pixels (exact integers: used to compare)."""
    x = frames.permute(0, 3, 1, 2).to(torch.float64)
    return (F.avg_pool2d(x, factor) * (factor * factor)).round().permute(0, 2, 3, 1)


def unique_region(occ_bwd: torch.Tensor) -> torch.Tensor:
    """Eq. 8's p_u: all tokens of frame 0 and the tokens of frame i >= 1 not visible in frame i-1.

    occ_bwd: [N-1, h, w] bool (tokens of frame i+1 occluded in frame i). Returns ascending int64 [U] indices into the
    N*h*w tokens flattened frame-major.
    """
    n1, h, w = occ_bwd.shape
    keep = torch.cat([torch.ones(1, h * w, dtype=torch.bool, device=occ_bwd.device), occ_bwd.reshape(n1, h * w)])
    return torch.nonzero(keep.reshape(-1), as_tuple=False)[:, 0]


def backward_match(flow_bwd: torch.Tensor, occ_bwd: torch.Tensor) -> torch.Tensor:
    """For each token of frame j+1, the token of frame j its flow rounds to (nearest), or -1 when it has none.

    flow_bwd: [h, w, 2] tokens (frame j+1 -> j); occ_bwd: [h, w] bool. Returns [L] int64. Rounding is
    floor(x + 0.5) on float64 coordinates; a target outside the grid or an occluded token has no match.
    """
    h, w, _ = flow_bwd.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=flow_bwd.device),
        torch.arange(w, dtype=torch.float64, device=flow_bwd.device),
        indexing="ij",
    )
    fl = flow_bwd.to(torch.float64)
    tx = torch.floor(xs + fl[..., 0] + 0.5).long()
    ty = torch.floor(ys + fl[..., 1] + 0.5).long()
    ok = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h) & ~occ_bwd
    return torch.where(ok, ty * w + tx, torch.full_like(tx, -1)).reshape(-1)


def resolve_collisions(match: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """Keep, for each target token, only the source with the lowest cost (ties: lowest source index).

    match: [L] int64 target of each source token or -1; cost: [L] float64 colour distance to its target.
    Returns [L] bool: the source token keeps its link.
    """
    n = match.shape[0]
    has = match >= 0
    tgt = match.clamp(min=0)
    best = torch.full((n,), float("inf"), dtype=cost.dtype, device=cost.device)
    best = best.scatter_reduce(0, tgt[has], cost[has], reduce="amin")
    is_best = has & (cost == best[tgt])
    src = torch.arange(n, device=match.device)
    first = torch.full((n,), n, dtype=torch.long, device=match.device)
    first = first.scatter_reduce(0, tgt[is_best], src[is_best], reduce="amin")
    return is_best & (first[tgt] == src)


def build_trajectories(
    flow_bwd: torch.Tensor, occ_bwd: torch.Tensor, colour: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 9's flow trajectories p_f as per-frame permutations (see the module docstring).

    flow_bwd: [N-1, h, w, 2] token flow frame i+1 -> i; occ_bwd: [N-1, h, w] bool; colour: [N, h, w, 3] per-token
    colour sums. Returns (perm, inverse, segment), each [N, L] int64.
    """
    n = colour.shape[0]
    l = colour.shape[1] * colour.shape[2]
    dev = colour.device
    ar = torch.arange(l, device=dev)
    col = colour.reshape(n, l, 3)
    perm = torch.empty(n, l, dtype=torch.long, device=dev)
    inverse = torch.empty_like(perm)
    segment = torch.zeros_like(perm)
    perm[0] = ar
    inverse[0] = ar
    for j in range(1, n):  # a loop over frames (N <= ~16); tokens are handled as whole tensors
        match = backward_match(flow_bwd[j - 1], occ_bwd[j - 1])  # [L] target in frame j-1 or -1
        cost = (col[j] - col[j - 1][match.clamp(min=0)]).abs().sum(-1)  # [L] L1 colour distance
        linked = resolve_collisions(match, cost)  # [L]
        traj = torch.full((l,), -1, dtype=torch.long, device=dev)
        traj[linked] = inverse[j - 1][match[linked]]
        claimed = torch.zeros(l, dtype=torch.bool, device=dev)
        claimed[traj[linked]] = True
        traj[~linked] = torch.nonzero(~claimed, as_tuple=False)[:, 0]  # free trajectories, both ascending
        inverse[j] = traj
        perm[j, traj] = ar
        broken = torch.ones(l, dtype=torch.long, device=dev)
        broken[traj[linked]] = 0
        segment[j] = segment[j - 1] + broken
    return perm, inverse, segment


def build_scale(
    frames: torch.Tensor,
    flows: BidirectionalFlow,
    factor: int,
    attention_occlusion: str = "area",
    loss_occlusion: str = "any",
) -> ScaleCorrespondence:
    """One :class:`ScaleCorrespondence` from [N, H, W, 3] uint8 frames and pixel flows."""
    n, h, w, _ = frames.shape
    flow_fwd, flow_bwd = pool_flow(flows.fwd, factor), pool_flow(flows.bwd, factor)
    occ_fwd = pool_occlusion(flows.occ_fwd, factor, loss_occlusion)
    occ_bwd = pool_occlusion(flows.occ_bwd, factor, loss_occlusion)
    attn_occ = pool_occlusion(flows.occ_bwd, factor, attention_occlusion)
    perm, inverse, segment = build_trajectories(flow_bwd, attn_occ, pool_colour_sum(frames, factor))
    return ScaleCorrespondence(
        factor=factor,
        size=(h // factor, w // factor),
        flow_fwd=flow_fwd,
        flow_bwd=flow_bwd,
        occ_fwd=occ_fwd,
        occ_bwd=occ_bwd,
        attn_occ_bwd=attn_occ,
        unique_index=unique_region(attn_occ),
        traj_perm=perm,
        traj_inverse=inverse,
        traj_segment=segment,
    )


def build_correspondence(
    frames: np.ndarray,
    flows: BidirectionalFlow | None = None,
    *,
    estimator: FlowEstimator | None = None,
    factors: Sequence[int] = DECODER_FACTORS,
    attention_occlusion: str = "area",
    loss_occlusion: str = "any",
) -> Correspondence:
    """Build the :class:`Correspondence` of a batch: frames [N, H, W, 3] uint8 RGB (H, W multiples of every factor).

    ``flows``: the pixel flows between consecutive frames of the batch, for keyframes the ones of
    :func:`~fresco_v2v.flow.keyframe_flows` (through the frames in between); when not given they are estimated
    straight between the given frames with ``estimator`` (default DIS), which suits neighbouring frames only.
    ``attention_occlusion`` (eq. 8, 9) and ``loss_occlusion`` (eq. 5): token occlusion rules (module docstring).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) < 1:
        raise ConfigError("frames", "[N >= 1, H, W, 3] uint8 RGB", f"{frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    for name, rule in (("attention_occlusion", attention_occlusion), ("loss_occlusion", loss_occlusion)):
        if rule not in TOKEN_OCCLUSION_RULES:
            raise ConfigError(name, f"one of {TOKEN_OCCLUSION_RULES}", rule)
    for f in factors:
        if not isinstance(f, int) or f < 1 or h % f or w % f:
            raise ConfigError("factors", f"positive integers dividing the frame size {w}x{h}", tuple(factors))
    if flows is None:
        flows = sequence_flows(frames, estimator)
    if flows.fwd.shape != (n - 1, h, w, 2):
        raise ConfigError("flows", f"{n - 1} flows of {w}x{h}", tuple(flows.fwd.shape))
    t = torch.from_numpy(frames)
    scales = {f: build_scale(t, flows, f, attention_occlusion, loss_occlusion) for f in factors}
    logger.debug("correspondence for %d frames of %dx%d at factors %s", n, w, h, list(factors))
    return Correspondence((h, w), flows, scales, (attention_occlusion, loss_occlusion))
