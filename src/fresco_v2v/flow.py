"""Optical flow and occlusion: the temporal correspondence w_i^j, M_i^j of paper §3.2.

Convention everywhere in fresco-v2v: ``flow = estimate_flow(src, dst)`` is a float32 [H, W, 2] field of (dx, dy)
pixel offsets with ``src(x) ~ dst(x + flow(x))``, and the occlusion mask of that pair marks the pixels of ``src``
that have no match in ``dst``. Warping is backward: ``warp(dst, flow)(x) = dst(x + flow(x))`` lands on src's grid.

The paper uses GMFlow (§4); its weights cannot be assumed on disk, so the default backend is OpenCV's DIS flow,
which needs no weights and runs everywhere. Learned backends plug in through :class:`FlowEstimator`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError

logger = logging.getLogger(__name__)

#: Forward-backward check |f(x) + b(x + f(x))| > alpha (|f(x)| + |b(x + f(x))|) + beta, the values of the
#: authors' code (GMFlow's check); the |b| term is taken at the same warped point as the sum.
FB_ALPHA = 0.01
FB_BETA = 0.5
#: Photometric check of the authors' code: occluded when the mean |RGB difference| after warping exceeds 0.25*255.
PHOTO_THRESHOLD = 0.25 * 255


@runtime_checkable
class FlowEstimator(Protocol):
    """Anything that maps two RGB uint8 frames [H, W, 3] to a float32 [H, W, 2] flow with src(x) ~ dst(x + flow(x))."""

    name: str

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray: ...


#: Presets by name: OpenCV's preset and the parameters we set on top of it.
#: "fine" is ours: OpenCV's medium preset run down to full resolution (medium stops at half resolution, finest
#: scale 1, and upsamples), with a sparser patch grid (stride 6 instead of 3) and 2 variational refinement
#: iterations instead of 5 to pay for it. A documented choice, measured for propagation (31 frames of music /
#: car-turn at 512x512, keys every 10, cv2.stylization): +0.47 / +0.60 dB over medium, at 58 vs 45 ms per pair
#: (2 threads); full resolution with medium's stride and iterations gives the same PSNR at 181 ms. Not the default:
#: its flows are noisier from frame to frame, and propagated posterizations flicker more (``PropagationConfig.flow``).
_DIS_PRESETS: dict[str, tuple[int, dict[str, int]]] = {
    "ultrafast": (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, {}),
    "fast": (cv2.DISOPTICAL_FLOW_PRESET_FAST, {}),
    "medium": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, {}),
    "fine": (
        cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        {"FinestScale": 0, "PatchStride": 6, "VariationalRefinementIterations": 2},
    ),
}


class DISFlow:
    """OpenCV Dense Inverse Search flow (Kroeger et al., ECCV 2016) on grayscale frames.

    Default preset "medium" (patch 8, stride 3, gradient descent 25 iterations, 5 variational refinement iterations,
    finest scale = half resolution): sub-pixel accurate on textured motion (tested: end-point error <= 0.5 px on a
    known shift) at ~45 ms per 512x512 pair on two CPU threads. "fine" (``_DIS_PRESETS``) works at full resolution.
    """

    def __init__(self, preset: str = "medium"):
        if preset not in _DIS_PRESETS:
            raise ConfigError("flow preset", f"one of {sorted(_DIS_PRESETS)}", preset)
        self.preset = preset
        self.name = f"dis-{preset}"
        opencv_preset, overrides = _DIS_PRESETS[preset]
        self._dis = cv2.DISOpticalFlow_create(opencv_preset)
        for key, value in overrides.items():
            getattr(self._dis, f"set{key}")(value)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        g0 = cv2.cvtColor(np.ascontiguousarray(src), cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(np.ascontiguousarray(dst), cv2.COLOR_RGB2GRAY)
        return self._dis.calc(g0, g1, None).astype(np.float32, copy=False)


#: Backends by name. Learned ones (RAFT, GMFlow) register here when their weights are on disk.
FLOW_BACKENDS: dict[str, Callable[[], FlowEstimator]] = {
    "dis": lambda: DISFlow("medium"),
    "dis-fine": lambda: DISFlow("fine"),
    "dis-medium": lambda: DISFlow("medium"),
    "dis-fast": lambda: DISFlow("fast"),
    "dis-ultrafast": lambda: DISFlow("ultrafast"),
}


def get_flow_estimator(name: str = "dis") -> FlowEstimator:
    """The flow backend called ``name`` (default "dis": OpenCV DIS, preset medium)."""
    if name not in FLOW_BACKENDS:
        raise ConfigError("flow", f"one of {sorted(FLOW_BACKENDS)}", name)
    return FLOW_BACKENDS[name]()


def estimate_flow(src: np.ndarray, dst: np.ndarray, estimator: FlowEstimator | None = None) -> np.ndarray:
    """float32 [H, W, 2] flow with src(x) ~ dst(x + flow(x)); src, dst: [H, W, 3] uint8 RGB of the same size."""
    if src.shape != dst.shape or src.ndim != 3:
        raise ConfigError("frames", "two [H, W, 3] frames of the same size", f"{src.shape} and {dst.shape}")
    return (estimator or get_flow_estimator())(src, dst)


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


def out_of_frame(flow: torch.Tensor) -> torch.Tensor:
    """[B, H, W, 2] flow -> [B, H, W] bool: x + flow(x) falls outside the frame (no match can exist there)."""
    _, h, w, _ = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device), torch.arange(w, device=flow.device), indexing="ij")
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    return (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)


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
    b_at = warp(flow_bwd.permute(0, 3, 1, 2), flow_fwd).permute(0, 2, 3, 1)  # [B, H, W, 2] = b(x + f(x))
    mismatch = torch.linalg.vector_norm(flow_fwd + b_at, dim=-1)
    scale = torch.linalg.vector_norm(flow_fwd, dim=-1) + torch.linalg.vector_norm(b_at, dim=-1)
    occ = (mismatch > alpha * scale + beta) | out_of_frame(flow_fwd)
    if src is not None and dst is not None and photo_threshold is not None:
        occ |= (src - warp(dst, flow_fwd)).abs().mean(dim=1) > photo_threshold
    return occ


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


def sequence_flows(
    frames: np.ndarray,
    estimator: FlowEstimator | None = None,
    photo_threshold: float | None = PHOTO_THRESHOLD,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
) -> BidirectionalFlow:
    """Flows and occlusion masks between every pair of consecutive frames; frames: [N, H, W, 3] uint8 RGB.

    The forward-backward thresholds (``alpha``, ``beta``) default to the authors' values, tuned for GMFlow. DIS is
    noisier in flat regions and fails on large motion, so with it more pixels fail the check: measured on dog.mp4
    keyframes 6 frames apart (a 50 px pan), 38% of pixels; on neighbouring frames, 4-12%.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError("frames", "[N, H, W, 3] uint8 RGB", f"{frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    if n < 2:
        empty = torch.zeros(0, h, w, 2)
        return BidirectionalFlow(
            empty, empty.clone(), torch.zeros(0, h, w, dtype=torch.bool), torch.zeros(0, h, w, dtype=torch.bool)
        )
    est = estimator or get_flow_estimator()
    fwd = torch.from_numpy(np.stack([est(frames[i], frames[i + 1]) for i in range(n - 1)]))
    bwd = torch.from_numpy(np.stack([est(frames[i + 1], frames[i]) for i in range(n - 1)]))
    rgb = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
    occ_fwd = occlusion_from_flows(fwd, bwd, rgb[:-1], rgb[1:], alpha, beta, photo_threshold)
    occ_bwd = occlusion_from_flows(bwd, fwd, rgb[1:], rgb[:-1], alpha, beta, photo_threshold)
    return BidirectionalFlow(fwd, bwd, occ_fwd, occ_bwd)
