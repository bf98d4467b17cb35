"""ControlNet condition images, one set per ControlNet type (paper §3.1's condition e).

Canny edges from OpenCV are the weight-free default; depth and HED soft edges need annotator weights
(:mod:`fresco_v2v.annotators`, which also picks each type's condition: ``condition_images``).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .errors import ConfigError

#: Canny thresholds of ControlNet's canny annotator demo (low 100, high 200).
CANNY_LOW = 100
CANNY_HIGH = 200


def canny_condition(
    frames: list[np.ndarray] | np.ndarray, low: int = CANNY_LOW, high: int = CANNY_HIGH
) -> torch.Tensor:
    """[N, H, W, 3] uint8 RGB -> [N, 3, H, W] float32 in [0, 1]: white edges on black, as ControlNet-canny expects."""
    if not (0 <= low <= high):
        raise ConfigError("canny thresholds", "0 <= low <= high", (low, high))
    edges = np.stack([cv2.Canny(cv2.cvtColor(np.asarray(f), cv2.COLOR_RGB2GRAY), low, high) for f in frames])
    return torch.from_numpy(edges).float().div(255.0)[:, None].expand(-1, 3, -1, -1).contiguous()
