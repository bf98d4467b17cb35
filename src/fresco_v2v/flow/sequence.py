"""Flows and occlusion along a sequence of frames: the temporal correspondence w_i^{i+1}, M_i^{i+1} of paper §3.2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from .estimators import FlowEstimator, get_flow_estimator
from .geometry import FB_ALPHA, FB_BETA, PHOTO_THRESHOLD, occlusion_from_flows


@dataclass
class BidirectionalFlow:
    """Flows and occlusion both ways between consecutive frames of a sequence (pixel resolution).

    For pair i (frame i, frame i+1): ``fwd[i]`` maps frame i onto frame i+1 (frame_i(x) ~ frame_{i+1}(x + fwd)),
    ``bwd[i]`` the other way; ``occ_fwd[i]`` marks pixels of frame i not visible in frame i+1, ``occ_bwd[i]`` pixels
    of frame i+1 not visible in frame i (the newly revealed region that efficient cross-frame attention keeps).
    """

    fwd: torch.Tensor  # [N-1, H, W, 2] float32
    bwd: torch.Tensor  # [N-1, H, W, 2] float32
    occ_fwd: torch.Tensor  # [N-1, H, W] bool
    occ_bwd: torch.Tensor  # [N-1, H, W] bool

    @property
    def num_pairs(self) -> int:
        return int(self.fwd.shape[0])

    @staticmethod
    def empty(height: int, width: int) -> BidirectionalFlow:
        flow, occ = torch.zeros(0, height, width, 2), torch.zeros(0, height, width, dtype=torch.bool)
        return BidirectionalFlow(flow, flow.clone(), occ, occ.clone())

    @staticmethod
    def cat(parts: list[BidirectionalFlow]) -> BidirectionalFlow:
        """The pairs of several sequences one after another (the last frame of one is the first of the next)."""
        return BidirectionalFlow(
            *(torch.cat([getattr(p, k) for p in parts]) for k in ("fwd", "bwd", "occ_fwd", "occ_bwd"))
        )


def estimate_pair(estimator: FlowEstimator, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(src -> dst, dst -> src) flows, in one call when the estimator offers ``bidirectional`` (GMFlow does)."""
    both = getattr(estimator, "bidirectional", None)
    if both is not None:
        return both(src, dst)
    return estimator(src, dst), estimator(dst, src)


def rgb_tensor(frame: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [1, 3, H, W] float32 in 0..255."""
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()


def check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(name, "[N, H, W, 3] uint8 RGB", f"{frames.dtype} {frames.shape}")
    return frames


def sequence_flows(
    frames: np.ndarray,
    estimator: FlowEstimator | None = None,
    photo_threshold: float | None = PHOTO_THRESHOLD,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
) -> BidirectionalFlow:
    """Flows and occlusion masks between every pair of consecutive frames, each estimated directly.

    frames: [N, H, W, 3] uint8 RGB. For frames that are neighbours in the video; between keyframes several frames
    apart, :func:`~fresco_v2v.flow.keyframe_flows` goes through the frames in between instead. The
    forward-backward thresholds (``alpha``, ``beta``) default to the authors' values, tuned for GMFlow.
    """
    frames = check_frames(frames)
    n, h, w, _ = frames.shape
    if n < 2:
        return BidirectionalFlow.empty(h, w)
    est = estimator or get_flow_estimator()
    chunk = max(1, int(getattr(est, "pairs_per_call", 1)))  # GMFlow on a GPU: several pairs a forward pass
    if chunk > 1:
        spans = [(i, min(i + chunk, n - 1)) for i in range(0, n - 1, chunk)]  # pairs i .. e-1
        parts = [est.flows(frames[i:e], frames[i + 1 : e + 1]) for i, e in spans]
        fwd = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        bwd = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    else:
        pairs = [estimate_pair(est, frames[i], frames[i + 1]) for i in range(n - 1)]
        fwd = torch.from_numpy(np.stack([p[0] for p in pairs]))
        bwd = torch.from_numpy(np.stack([p[1] for p in pairs]))
    rgb = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
    occ_fwd = occlusion_from_flows(fwd, bwd, rgb[:-1], rgb[1:], alpha, beta, photo_threshold)
    occ_bwd = occlusion_from_flows(bwd, fwd, rgb[1:], rgb[:-1], alpha, beta, photo_threshold)
    return BidirectionalFlow(fwd, bwd, occ_fwd, occ_bwd)
