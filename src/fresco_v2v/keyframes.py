"""Keyframe selection (paper Alg. 1) and the batch plan for long videos (paper §3.5), in 0-based indices."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from .errors import ConfigError

logger = logging.getLogger(__name__)

#: Frames are compared at this fixed size, so distances do not depend on the video's resolution (a documented
#: choice; the paper only says "L2 distance between frames").
DISTANCE_SIZE = (128, 128)
#: Defaults of the keyframe interval [s_min, s_max]: the paper gives none; these are the defaults of the authors'
#: keyframe selection function (their per-video configs use 10 and 30 for dog.mp4).
DEFAULT_S_MIN = 5
DEFAULT_S_MAX = 20
#: Keyframes translated together, paper §4: "N in [6, 8] based on the input video resolution".
DEFAULT_BATCH_SIZE = 8
#: Gaussian blur (sigma in pixels at DISTANCE_SIZE) before comparing, so noise and grain do not count as motion.
DISTANCE_BLUR_SIGMA = 1.5


def _distance_image(frame: np.ndarray) -> np.ndarray:
    """[H, W, C] uint8 -> [h, w, C] float64 in [0, 1]: the frame as Alg. 1 compares it (fixed size, blurred)."""
    small = cv2.resize(np.asarray(frame), DISTANCE_SIZE, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), DISTANCE_BLUR_SIGMA).astype(np.float64) / 255.0


class FrameDistances:
    """Alg. 1 line 2 while frames stream past: ``add`` each frame in order; ``values`` holds d_0..d_i.

    Keeps only the previous frame's small blurred copy, so memory does not grow with the video (8 bytes a frame).
    """

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._values: list[float] = []

    def add(self, frame: np.ndarray) -> None:
        small = _distance_image(frame)
        if self._previous is None:
            self._values.append(0.0)
        else:
            self._values.append(float(np.sqrt(np.mean((small - self._previous) ** 2))))
        self._previous = small

    @property
    def values(self) -> np.ndarray:
        """float64 [M]: d_0 = 0, d_i = distance of frame i to frame i-1."""
        return np.asarray(self._values, dtype=np.float64)


def scan_distances(path, *, short_side: int | None, max_frames: int | None = None, progress: bool = False):
    """One decoding pass over the video at ``path`` (``video.scan_video``) computing Alg. 1's distances as the
    frames stream past: (its VideoInfo, float64 [M] distances). No frame is kept."""
    from .video import scan_video

    distances = FrameDistances()
    info = scan_video(
        path,
        lambda i, frame: distances.add(frame),
        short_side=short_side,
        max_frames=max_frames,
        progress=progress,
    )
    return info, distances.values


def frame_distances(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """d_i = L2 distance between frame i and frame i-1 (Alg. 1 line 2), d_0 = 0.

    frames: [M, H, W, 3] uint8 (or a sequence of such frames). Each frame is resized to ``DISTANCE_SIZE`` and blurred;
    the distance is the root-mean-square difference of the values in [0, 1], i.e. the L2 norm divided by the square
    root of the number of values, so it is comparable across videos. Returns float64 [M]. For a stream of frames,
    :class:`FrameDistances` gives the same values frame by frame.
    """
    if len(frames) == 0:
        raise ConfigError("frames", "at least one frame", "none")
    acc = FrameDistances()
    for f in frames:
        acc.add(f)
    return acc.values


def _validate_steps(num_frames: int, s_min: int, s_max: int) -> None:
    if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ConfigError("frames", "at least one frame (M >= 1)", num_frames)
    if not isinstance(s_min, (int, np.integer)) or s_min < 1:
        raise ConfigError("s_min", "an integer >= 1", s_min)
    if not isinstance(s_max, (int, np.integer)) or s_max < s_min:
        raise ConfigError("s_max", f"an integer >= s_min ({s_min})", s_max)


def select_keyframes(distances: np.ndarray | Sequence[float], s_min: int, s_max: int) -> list[int]:
    """Paper Alg. 1: keyframe indices (ascending) such that consecutive keys are at most ``s_max`` apart.

    Keys start as [0, M-1]. Candidates are the frames i with s_min <= i <= M-1-s_min. While some gap between
    consecutive keys exceeds s_max, the candidate with the largest d_i (ties: lowest index) becomes a key, and every
    candidate j with |j - i| < s_min is dropped (Alg. 1 line 5). Should the candidates run out while a gap still
    exceeds s_max, the largest such gap (ties: the earliest) is split at its midpoint (floor) until none does.
    ``s_min == s_max`` is Rerender-A-Video's uniform sampling: 0, s, 2s, ... plus M-1.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1:
        raise ConfigError("distances", "a 1-D array [M]", f"shape {d.shape}")
    m = len(d)
    _validate_steps(m, s_min, s_max)
    if s_min == s_max:
        keys = list(range(0, m, s_max))
        return keys if keys[-1] == m - 1 else [*keys, m - 1]
    keys = sorted({0, m - 1})
    score = np.full(m, -np.inf)  # -inf marks a frame that is not (or no longer) a candidate
    idx = np.arange(m)
    candidate = (idx >= s_min) & (idx <= m - 1 - s_min)
    score[candidate] = d[candidate]
    while True:
        gaps = np.diff(keys)
        if len(gaps) == 0 or gaps.max() <= s_max:
            return keys
        if np.isfinite(score).any():
            i = int(np.argmax(score))  # argmax returns the first maximum: ties go to the lowest index
            score[max(0, i - s_min + 1) : i + s_min] = -np.inf
        else:
            g = int(np.argmax(gaps))  # the largest gap, the earliest on ties
            i = (keys[g] + keys[g + 1]) // 2
        keys = sorted({*keys, i})


def plan_batches(keys: Sequence[int], batch_size: int) -> list[list[int]]:
    """Paper §3.5: split keyframes into batches of at most N that share anchors for inter-batch consistency.

    The first batch holds the first N keys; batch k > 0 holds [keys[0], last key of batch k-1] followed by the next
    N-2 keys (the last batch may hold fewer, but at least one new key). Every key is new in exactly one batch.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 3:
        raise ConfigError(
            "batch_size", "an integer >= 3 (two anchor frames plus at least one new keyframe)", batch_size
        )
    keys = [int(k) for k in keys]
    if not keys:
        raise ConfigError("keys", "at least one keyframe", keys)
    if any(b <= a for a, b in zip(keys, keys[1:])):
        raise ConfigError("keys", "strictly ascending frame indices", keys)
    batches = [keys[:batch_size]]
    pos = len(batches[0])
    while pos < len(keys):
        new = keys[pos : pos + batch_size - 2]
        batches.append([keys[0], batches[-1][-1], *new])
        pos += len(new)
    return batches
