"""What one :class:`~fresco_v2v.pipeline.FrescoPipeline` call returns and records, and its per-step switches."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .attention import StepConstraints
from .config import AttentionConfig
from .optimization import OptimizationTrace


def step_constraints(config: AttentionConfig, num_frames: int, i: int, num: int, t: int, t_train: int):
    """Which FRESCO-guided attention parts step i of num (timestep t of t_train) runs, by the config's windows."""
    several = num_frames > 1
    return StepConstraints(
        spatial_guided=config.spatial_guided and config.spatial_window.active(i, num, t, t_train),
        cross_frame=config.cross_frame and several and config.cross_frame_window.active(i, num, t, t_train),
        temporal_guided=config.temporal_guided and several and config.temporal_window.active(i, num, t, t_train),
    )


@dataclass
class AnchorLatents:
    """Latents of a batch's first and last frame at every step (index 0: the start, i+1: after step i).

    The next batch starts with these two frames (paper §3.5) and takes their latents from here at every step.
    """

    timesteps: list[int]
    first: list[torch.Tensor]  # [1, 4, h, w] each
    last: list[torch.Tensor]


@dataclass
class FrescoTrace:
    """What happened in one call: optimization losses per step and block, and seconds per stage."""

    optimization: list[OptimizationTrace] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    timesteps: list[int] = field(default_factory=list)


@dataclass
class FrescoOutput:
    frames: list[np.ndarray]  # uint8 RGB [H, W, 3]
    anchors: AnchorLatents
    trace: FrescoTrace
    latents: torch.Tensor  # [N, 4, h, w] final latents


class _Stopwatch:
    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
