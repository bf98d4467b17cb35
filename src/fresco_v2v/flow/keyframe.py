"""Flow between keyframes through the frames in between (paper §3.2's w_i^j and M_i^j for keys 5-20 frames apart).

Alg. 1 puts keyframes 5-20 frames apart, and the anchor frames of later batches (§3.5) hundreds of frames apart.
A local flow method estimated straight across such a gap fails on large motion, so for each gap we build several
candidate flows and keep, per pixel, the one the two keyframes agree with best:

* ``composed``: the consecutive-frame flows chained through every frame in between (w_a^c = w_a^b ∘ w_b^c); exact
  where a point stays visible, wrong where it hides for a while (behind a passing object) or drifts;
* ``from_composed``: the estimator run across the gap starting from the composed flow (estimators that offer
  ``estimate_from``, e.g. DIS); this fixes drift at coarse scale;
* ``residual``: the flow from the first key to the second key warped back by the composed flow, a small motion
  that a full-resolution DIS ("dis-fine") resolves, added onto the composed flow; this fixes drift at fine scale;
* ``direct``: the estimator straight across the gap (what a learned global matcher like GMFlow is good at).

Per pixel the candidate with the lowest cost wins (:func:`select_flow_candidates`): the local mean colour error of
the warped second key plus a weighted forward-backward mismatch against the best backward candidate. The chosen
flows then get the occlusion test of :func:`~fresco_v2v.flow.occlusion_from_flows`: what no candidate explains
is occluded. Benchmark: ``benchmarks/correspondence_quality.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .estimators import FlowEstimator, check_flow_name, get_flow_estimator
from .geometry import PHOTO_THRESHOLD, compose_flows, length, occlusion_from_flows, sample_flow, warp
from .sequence import BidirectionalFlow, estimate_pair, rgb_tensor

logger = logging.getLogger(__name__)

CANDIDATES = ("composed", "from_composed", "residual", "direct")


@dataclass(frozen=True)
class KeyframeFlowConfig:
    """How the flow between two keyframes is built and checked (module docstring)."""

    #: Candidates tried besides the composed flow: any of "from_composed", "residual", "direct".
    candidates: tuple[str, ...] = ("from_composed", "residual", "direct")
    #: Backend of the residual pass (small motion at full resolution; no weights).
    residual_flow: str = "dis-fine"
    #: Radius of the window over which the colour error of a candidate is averaged (5x5: one pixel's error is
    #: noise, a patch's is evidence).
    window_radius: int = 2
    #: Weight of the forward-backward mismatch (pixels) against the colour error (0-255 levels), capped at
    #: ``fb_cap`` pixels so that one wild backward flow does not decide alone.
    fb_weight: float = 2.0
    fb_cap: float = 5.0
    #: Occlusion test of the chosen flows: |f + b(x+f)| > fb_alpha (|f| + |b(x+f)|) + fb_beta, plus the authors'
    #: photometric test. The authors' (0.01, 0.5) were set for GMFlow between neighbouring frames; our values for
    #: keyframe flow are measured (README, "Correspondence"): they keep the visible recall >= 0.95 at >= 0.98
    #: precision on the known-motion benchmark.
    fb_alpha: float = 0.03
    fb_beta: float = 1.0
    photo_threshold: float | None = PHOTO_THRESHOLD

    def validate(self) -> KeyframeFlowConfig:
        bad = sorted(set(self.candidates) - set(CANDIDATES[1:]))
        if bad:
            raise ConfigError("keyframe_flow.candidates", f"names among {list(CANDIDATES[1:])}", bad)
        check_flow_name(self.residual_flow, "keyframe_flow.residual_flow")
        if not (isinstance(self.window_radius, int) and self.window_radius >= 0):
            raise ConfigError("keyframe_flow.window_radius", "an integer >= 0", self.window_radius)
        for name in ("fb_weight", "fb_cap", "fb_alpha", "fb_beta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ConfigError(f"keyframe_flow.{name}", "a finite number >= 0", v)
        return self


# ----------------------------------------------------------------------------------------------------------------
# Pure functions


def photometric_cost(src: torch.Tensor, dst: torch.Tensor, flows: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean |src - dst(x + f)| over RGB and a (2r+1)^2 window clipped to the frame, per candidate.

    src, dst: [1, 3, H, W] float 0..255; flows: [K, H, W, 2] src -> dst. Returns [K, H, W].
    """
    k = flows.shape[0]
    err = (src - warp(dst.expand(k, -1, -1, -1), flows)).abs().mean(dim=1, keepdim=True)  # [K, 1, H, W]
    if radius > 0:
        err = F.avg_pool2d(err, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return err[:, 0]


def best_round_trip(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    """min over backward candidates m of |f_k(x) + b_m(x + f_k(x))|: fwd [K, H, W, 2], bwd [M, H, W, 2] -> [K, H, W]."""
    k = fwd.shape[0]
    best = None
    for b in bwd:  # a loop over the few backward candidates, not over pixels
        dist = length(fwd + sample_flow(b[None].expand(k, -1, -1, -1), fwd))
        best = dist if best is None else torch.minimum(best, dist)
    return best


def select_flow_candidates(
    src: torch.Tensor,
    dst: torch.Tensor,
    fwd: torch.Tensor,
    bwd: torch.Tensor,
    radius: int = 2,
    fb_weight: float = 2.0,
    fb_cap: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the candidate flow src -> dst of lowest cost (module docstring); ties go to the lower index.

    src, dst: [1, 3, H, W] float 0..255; fwd: [K, H, W, 2] candidates src -> dst; bwd: [M, H, W, 2] candidates
    dst -> src. cost_k = photometric_cost + fb_weight * min(best_round_trip, fb_cap). Returns (flow [H, W, 2],
    choice [H, W] int64 in 0..K-1).
    """
    cost = photometric_cost(src, dst, fwd, radius) + fb_weight * best_round_trip(fwd, bwd).clamp(max=fb_cap)
    choice = first_argmin(cost)  # [H, W]
    flow = fwd.gather(0, choice[None, :, :, None].expand(1, -1, -1, 2))[0]
    return flow, choice


def first_argmin(cost: torch.Tensor) -> torch.Tensor:
    """[K, H, W] -> [H, W] int64: the first k of least cost (``argmin(0)``, which is ~8x slower on the CPU for
    K <= 5; a loop over the few candidates, not over pixels)."""
    best, choice = cost[0], torch.zeros(cost.shape[1:], dtype=torch.long, device=cost.device)
    for k in range(1, cost.shape[0]):
        better = cost[k] < best
        best = torch.where(better, cost[k], best)
        choice[better] = k
    return choice


def compose_pairs(flows: BidirectionalFlow) -> tuple[torch.Tensor, torch.Tensor]:
    """The flows first frame -> last frame and back, each [1, H, W, 2], chained through every pair of ``flows``."""
    fwd, bwd = flows.fwd[:1], flows.bwd[-1:]
    for i in range(1, flows.num_pairs):
        fwd = compose_flows(fwd, flows.fwd[i : i + 1])
        bwd = compose_flows(bwd, flows.bwd[flows.num_pairs - 1 - i : flows.num_pairs - i])
    return fwd, bwd


# ----------------------------------------------------------------------------------------------------------------
# One gap


class GapFlow:
    """Builds the flow across one gap from its composed flows; keeps the share each candidate won."""

    def __init__(self, estimator: FlowEstimator, config: KeyframeFlowConfig):
        self.estimator = estimator
        self.config = config.validate()
        self._residual = None
        self.chosen = {c: 0 for c in CANDIDATES}
        self.seconds = 0.0

    def residual_estimator(self) -> FlowEstimator:
        if self._residual is None:
            self._residual = get_flow_estimator(self.config.residual_flow)
        return self._residual

    def candidates(self, src: np.ndarray, dst: np.ndarray, composed: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Names and [K, H, W, 2] flows src -> dst; ``composed`` [1, H, W, 2]."""
        names, flows = ["composed"], [composed[0]]
        wanted = self.config.candidates
        start = composed[0].numpy()
        if "from_composed" in wanted and hasattr(self.estimator, "estimate_from"):
            names.append("from_composed")
            flows.append(torch.from_numpy(self.estimator.estimate_from(src, dst, start)))
        if "residual" in wanted:
            back = warp(rgb_tensor(dst), composed)[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
            step = torch.from_numpy(self.residual_estimator()(src, back))[None]  # src -> dst warped back
            names.append("residual")
            flows.append(compose_flows(step, composed)[0])
        return names, torch.stack(flows)

    def __call__(
        self, src: np.ndarray, dst: np.ndarray, composed_fwd: torch.Tensor, composed_bwd: torch.Tensor
    ) -> BidirectionalFlow:
        """One pair (src, dst) of keyframes [H, W, 3] uint8 with their composed flows [1, H, W, 2] both ways."""
        t0 = time.perf_counter()
        cfg = self.config
        names_f, fwd = self.candidates(src, dst, composed_fwd)
        names_b, bwd = self.candidates(dst, src, composed_bwd)
        if "direct" in cfg.candidates:
            direct_f, direct_b = estimate_pair(self.estimator, src, dst)
            fwd = torch.cat([fwd, torch.from_numpy(direct_f)[None]])
            bwd = torch.cat([bwd, torch.from_numpy(direct_b)[None]])
            names_f, names_b = names_f + ["direct"], names_b + ["direct"]
        a, b = rgb_tensor(src), rgb_tensor(dst)
        f, choice_f = select_flow_candidates(a, b, fwd, bwd, cfg.window_radius, cfg.fb_weight, cfg.fb_cap)
        bk, choice_b = select_flow_candidates(b, a, bwd, fwd, cfg.window_radius, cfg.fb_weight, cfg.fb_cap)
        for names, choice in ((names_f, choice_f), (names_b, choice_b)):
            counts = torch.bincount(choice.reshape(-1), minlength=len(names))
            for name, c in zip(names, counts.tolist()):
                self.chosen[name] += c
        f, bk = f[None], bk[None]
        occ_f = occlusion_from_flows(f, bk, a, b, cfg.fb_alpha, cfg.fb_beta, cfg.photo_threshold)
        occ_b = occlusion_from_flows(bk, f, b, a, cfg.fb_alpha, cfg.fb_beta, cfg.photo_threshold)
        self.seconds += time.perf_counter() - t0
        return BidirectionalFlow(f, bk, occ_f, occ_b)

    def adjacent(self, src: np.ndarray, dst: np.ndarray, fwd: np.ndarray, bwd: np.ndarray) -> BidirectionalFlow:
        """Neighbouring keys: the consecutive flows are the flows; only the occlusion test."""
        cfg = self.config
        f, bk = torch.from_numpy(fwd)[None], torch.from_numpy(bwd)[None]
        a, b = rgb_tensor(src), rgb_tensor(dst)
        occ_f = occlusion_from_flows(f, bk, a, b, cfg.fb_alpha, cfg.fb_beta, cfg.photo_threshold)
        occ_b = occlusion_from_flows(bk, f, b, a, cfg.fb_alpha, cfg.fb_beta, cfg.photo_threshold)
        return BidirectionalFlow(f, bk, occ_f, occ_b)


# ----------------------------------------------------------------------------------------------------------------
# Entry points


@dataclass
class KeyframeFlowStats:
    """What keyframe flow cost and chose, for the run report."""

    frame_pairs: int = 0  # consecutive-frame pairs estimated (both directions each)
    seconds_consecutive: float = 0.0
    seconds_gaps: float = 0.0
    chosen: dict | None = None  # pixels each candidate won, both directions of every gap

    def to_dict(self) -> dict:
        total = sum((self.chosen or {}).values())
        return {
            "frame_pairs": self.frame_pairs,
            "seconds_consecutive": round(self.seconds_consecutive, 3),
            "seconds_gaps": round(self.seconds_gaps, 3),
            "chosen": {k: round(v / total, 4) for k, v in (self.chosen or {}).items()} if total else {},
        }


def keyframe_flows(
    frames: Iterable[np.ndarray],
    key_indices: Sequence[int],
    estimator: FlowEstimator | None = None,
    config: KeyframeFlowConfig | None = None,
    stats: KeyframeFlowStats | None = None,
) -> BidirectionalFlow:
    """Flows and occlusion between consecutive keyframes, through the frames in between.

    ``frames``: every video frame from the first key to the last, in order ([H, W, 3] uint8; an array or any
    iterable: frames are read one at a time and only the current key, the previous frame and two composed flows are
    kept). ``key_indices``: ascending video frame indices; frame ``frames[i]`` is video frame key_indices[0] + i.
    Returns pairs i = (key i, key i+1) with the fields of :class:`BidirectionalFlow`. Each consecutive-frame flow is
    estimated once; ``stats`` (optional) receives the counts and times.
    """
    keys = [int(k) for k in key_indices]
    if not keys or any(b <= a for a, b in zip(keys, keys[1:])):
        raise ConfigError("key_indices", "ascending frame indices", keys)
    est = estimator or get_flow_estimator()
    gap = GapFlow(est, config or KeyframeFlowConfig())
    stats = stats if stats is not None else KeyframeFlowStats()
    it = iter(frames)
    try:
        key_frame = np.asarray(next(it))
    except StopIteration:
        raise ConfigError("frames", f"{keys[-1] - keys[0] + 1} frames (first to last key)", 0) from None
    pairs: list[BidirectionalFlow] = []
    index, target = keys[0], 1
    comp_f = comp_b = None
    for frame, f, b in consecutive_flows(key_frame, it, keys[-1] - keys[0], est, stats):
        index += 1
        t0 = time.perf_counter()
        ft, bt = torch.from_numpy(f)[None], torch.from_numpy(b)[None]
        comp_f = ft if comp_f is None else compose_flows(comp_f, ft)  # key -> frame
        comp_b = bt if comp_b is None else compose_flows(bt, comp_b)  # frame -> key
        stats.seconds_consecutive += time.perf_counter() - t0
        if index == keys[target]:
            if keys[target] - keys[target - 1] == 1:
                pairs.append(gap.adjacent(key_frame, frame, f, b))
            else:
                pairs.append(gap(key_frame, frame, comp_f, comp_b))
            key_frame, comp_f, comp_b, target = frame, None, None, target + 1
    if target < len(keys):
        raise ConfigError("frames", f"{keys[-1] - keys[0] + 1} frames (first to last key)", index - keys[0] + 1)
    stats.seconds_gaps += gap.seconds
    stats.chosen = _merge_shares(stats.chosen, gap)
    if not pairs:
        h, w = key_frame.shape[:2]
        return BidirectionalFlow.empty(h, w)
    return BidirectionalFlow.cat(pairs)


def consecutive_flows(
    first: np.ndarray,
    rest: Iterator,
    count: int,
    estimator: FlowEstimator,
    stats: KeyframeFlowStats,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frame t, flow t-1 -> t, flow t -> t-1) for the ``count`` frames after ``first``, read from ``rest`` as needed.

    An estimator with ``pairs_per_call`` > 1 (GMFlow on a GPU) gets that many pairs in one batched call; at most
    that many frames are held at once.
    """
    chunk = max(1, int(getattr(estimator, "pairs_per_call", 1)))
    prev, done = np.asarray(first), 0
    while done < count:
        batch = []
        for frame in rest:
            batch.append(np.asarray(frame))
            if len(batch) == min(chunk, count - done):
                break
        if not batch:
            return  # the caller says how many frames were missing
        t0 = time.perf_counter()  # the flows' time, not the reading of frames
        srcs = [prev, *batch[:-1]]
        if len(batch) > 1:
            fwd, bwd = estimator.flows(np.stack(srcs), np.stack(batch))
        else:
            f, b = estimate_pair(estimator, prev, batch[0])
            fwd, bwd = [f], [b]
        stats.frame_pairs += len(batch)
        stats.seconds_consecutive += time.perf_counter() - t0
        for frame, f, b in zip(batch, fwd, bwd):
            yield frame, f, b
        prev, done = batch[-1], done + len(batch)


def anchor_flow(
    first: np.ndarray,
    last: np.ndarray,
    chain: BidirectionalFlow,
    estimator: FlowEstimator | None = None,
    config: KeyframeFlowConfig | None = None,
    stats: KeyframeFlowStats | None = None,
) -> BidirectionalFlow:
    """The pair (first, last) of keyframes far apart, e.g. key 0 and the previous batch's last key (§3.5).

    ``chain``: keyframe flows that lead from ``first`` to ``last`` (the previous batch's, whose first and last
    frames these are). They are composed into the starting flow, then refined and checked like any gap, so no
    consecutive-frame flow is estimated again.
    """
    if chain.num_pairs < 1:
        raise ConfigError("chain", "keyframe flows of at least one pair from first to last", chain.num_pairs)
    gap = GapFlow(estimator or get_flow_estimator(), config or KeyframeFlowConfig())
    fwd, bwd = compose_pairs(chain)
    out = gap(np.asarray(first), np.asarray(last), fwd, bwd)
    if stats is not None:
        stats.seconds_gaps += gap.seconds
        stats.chosen = _merge_shares(stats.chosen, gap)
    return out


def _merge_shares(previous: dict | None, gap: GapFlow) -> dict:
    """Pixel counts per candidate, accumulated (kept as counts; ``shares`` for the report)."""
    merged = dict(previous or {})
    for k, v in gap.chosen.items():
        if v:
            merged[k] = merged.get(k, 0) + v
    return merged


def batch_keyframe_flows(
    frames,
    batch: Sequence[int],
    chain: BidirectionalFlow | None = None,
    estimator: FlowEstimator | None = None,
    config: KeyframeFlowConfig | None = None,
    stats: KeyframeFlowStats | None = None,
) -> BidirectionalFlow:
    """The keyframe flows of one batch of a run (paper §3.5), pair i = (batch[i], batch[i+1]).

    ``frames``: the video's frames, indexable by frame index (``frames[a : b + 1]`` reads frames a..b). The first
    batch goes through its frames (:func:`keyframe_flows`). A later batch [key 0, previous batch's last key, new
    keys...] has its first pair from ``chain`` (flows leading from key 0 to the previous batch's last key: that
    batch's own flows, or their composition by :func:`compose_pairs`) by :func:`anchor_flow`, and the rest through
    the frames after the previous batch, so no consecutive-frame flow is estimated twice in a run.
    """
    batch = [int(k) for k in batch]
    est = estimator or get_flow_estimator()
    if chain is None:
        return keyframe_flows(frames[batch[0] : batch[-1] + 1], batch, est, config, stats)
    anchor = anchor_flow(frames[batch[0]], frames[batch[1]], chain, est, config, stats)
    rest = keyframe_flows(frames[batch[1] : batch[-1] + 1], batch[1:], est, config, stats)
    return BidirectionalFlow.cat([anchor, rest])


def chain_of(flows: BidirectionalFlow) -> BidirectionalFlow:
    """``flows`` reduced to one pair first -> last frame (:func:`compose_pairs`), what the next batch's anchor needs;
    occlusion is not carried (the anchor pair gets its own test)."""
    fwd, bwd = compose_pairs(flows)
    none = torch.zeros(fwd.shape[:3], dtype=torch.bool)
    return BidirectionalFlow(fwd, bwd, none, none.clone())
