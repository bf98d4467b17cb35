"""What a run's first stages decide and every later stage reads (:class:`RunPlan`): the runner's stage functions and
the cluster's tasks pass it explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig
from .folder_lock import FolderLock
from .video import VideoInfo


@dataclass
class RunPlan:
    """Stage 1's result, what every later stage reads: the video (no frames: :class:`VideoInfo`), the keyframes
    and batches, the output and state folders, and each stage's seconds as they finish."""

    cfg: RunConfig
    info: VideoInfo
    keys: list[int]
    batches: list[list[int]]
    out: Path
    state: Path
    #: When each frame is shown, for keyframe prompts given as times on a variable-rate video; None: constant rate.
    frame_seconds: list[float] | None
    #: The output folder's lock, held until the run ends (``translate_video`` releases it).
    lock: FolderLock
    seconds: dict[str, float] = field(default_factory=dict)
