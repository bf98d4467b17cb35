"""`fresco propagate`: a whole video rendered from the user's own stylized keyframes (paper §3.5), streamed
segment by segment into chunked encoding, with the input's frame count, rate and audio."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import propagation_config
from ..encode import chunk_starts, encode_video
from ..errors import InputError
from ..flow import get_flow_estimator
from ..run_files import KeyImages, read_png
from ..video import MODEL_MULTIPLE, FrameReader, describe_rate, scan_video
from .segments import iter_propagate


def keyframe_files(paths) -> list[tuple[int, Path]]:
    """Keyframe images named by frame index (0000.png, 12.jpg, 7.webp) -> [(index, path)] in frame order.

    Other files are ignored; two files for one frame (0012.png and 12.png) are an error that names both.
    """
    named: dict[int, Path] = {}
    for p in map(Path, paths):
        m = re.fullmatch(r"(\d+)\.(png|jpg|jpeg|webp)", p.name.lower())
        if m is None:
            continue
        idx = int(m.group(1))
        if idx in named:
            raise InputError(f"{named[idx]} and {p}: two keyframes for frame {idx}")
        named[idx] = p
    return sorted(named.items())


@dataclass
class PropagationResult:
    video: Path
    frames: int
    keyframes: list[int]
    audio: str  # what happened to the input's audio
    rate: str  # ``describe_rate`` of the output


def propagate_video(
    input: str | os.PathLike,
    keyframes: list[tuple[int, Path]],
    output: str | os.PathLike,
    *,
    resolution: int | None = None,
    max_frames: int | None = None,
    device: str | None = None,
    progress: bool = True,
    options: dict | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PropagationResult:
    """Every frame of ``input`` rendered from the user's stylized ``keyframes`` (paper §3.5, ``propagate``).

    The keyframes must be the video's frames at short side ``resolution`` (as `fresco translate` writes them; None:
    the first keyframe's short side), named by frame index; the output keeps the frame count, the rate (or each
    frame's timestamp) and the audio. ``options``: ``PropagationConfig`` fields by name (checked before any work).
    ``should_stop``: as for :func:`translate_video` (asked before every frame).
    """
    from ..models import resolve_device

    config = propagation_config(dict(options or {}), "options")
    estimator = get_flow_estimator(config.flow, device=resolve_device(device))  # a missing checkpoint fails now
    if not keyframes:
        raise InputError("no keyframe images named by frame index (e.g. 0000.png, 0012.png)")
    if resolution is None:
        first = keyframes[0][1]
        kh, kw = read_png(first).shape[:2]
        resolution = min(kh, kw)
        if resolution % MODEL_MULTIPLE:
            raise InputError(
                f"{first}: is {kw}x{kh}; keyframes must be the video's frames at a short side that is a multiple of "
                f"{MODEL_MULTIPLE} (as fresco translate writes them)"
            )
    info = scan_video(input, short_side=resolution, max_frames=max_frames, progress=progress)  # no frame kept
    w, h = info.size
    keys, paths = [], []
    for idx, p in keyframes:
        if idx >= info.num_frames:
            raise InputError(f"{p}: frame {idx} is past the video's last frame ({info.num_frames - 1})")
        img = read_png(p)
        if img.shape[:2] != (h, w):
            raise InputError(
                f"{p}: is {img.shape[1]}x{img.shape[0]}, the video frames are {w}x{h} (at resolution {resolution})"
            )
        keys.append(idx)
        paths.append(p)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FrameReader(info, cache=4) as reader, tempfile.TemporaryDirectory(dir=out.parent) as chunks:

        def make_frames(start: int) -> Iterator[np.ndarray]:  # frames go to the encoder as each segment finishes
            return iter_propagate(
                reader,
                keys,
                KeyImages(paths),
                config,
                device=resolve_device(device),
                estimator=estimator,
                progress=progress,
                should_stop=should_stop,
                start=start,
            )

        starts = chunk_starts(info.num_frames, keys)
        audio = encode_video(out, make_frames, info, Path(chunks), starts, progress=progress)
    return PropagationResult(out, info.num_frames, keys, audio, describe_rate(info.fps, info.times is not None))
