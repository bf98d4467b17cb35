"""ControlNet condition images, one set per ControlNet type (paper §3.1's condition e).

Canny edges from OpenCV are the weight-free default; depth and HED soft edges need annotator weights
(:mod:`fresco_v2v.annotators`), loaded once per run by :func:`load_condition_annotators`.
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


def load_condition_annotators(
    types: tuple[str, ...],
    *,
    depth_estimator: str,
    hed_annotator: str,
    allow_pickle: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, torch.nn.Module]:
    """The weights each ControlNet type's condition needs, loaded once per run: depth (a DPT depth estimator),
    hed (the ControlNet HED network); canny needs none."""
    from . import annotators

    kinds = {t.partition(":")[0] for t in types}
    loaded: dict[str, torch.nn.Module] = {}
    if "depth" in kinds:
        loaded["depth"] = annotators.load_depth_estimator(depth_estimator, allow_pickle).to(device)
    if "hed" in kinds:
        loaded["hed"] = annotators.load_hed(hed_annotator, allow_pickle).to(device)
    return loaded


def condition_images(
    types: tuple[str, ...],
    frames: np.ndarray,
    annotators: dict[str, torch.nn.Module],
    canny_low: int = CANNY_LOW,
    canny_high: int = CANNY_HIGH,
) -> list[torch.Tensor]:
    """One ``[N, 3, H, W]`` condition per ControlNet type ("TYPE" or "TYPE:WEIGHTS"), each from its own annotator;
    a type listed twice is computed once."""
    from .annotators import depth_condition, hed_condition

    made: dict[str, torch.Tensor] = {}
    for kind in dict.fromkeys(t.partition(":")[0] for t in types):
        if kind == "canny":
            made[kind] = canny_condition(frames, canny_low, canny_high)
        elif kind in ("depth", "hed") and kind in annotators:
            made[kind] = (depth_condition if kind == "depth" else hed_condition)(frames, annotators[kind])
        else:
            raise ConfigError("controlnet", "canny, depth or hed, with its annotator loaded", kind)
    return [made[t.partition(":")[0]] for t in types]
