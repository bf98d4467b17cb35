"""The run's files: atomic writes, PNG and JSON, the resume state (anchor latents, the keyframe chain), and
:class:`KeyImages`, keyframes read back one at a time. Every file is written to a temporary name and renamed, so a
killed run never leaves a truncated file in place."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from .disk import write_bytes_atomic
from .errors import FrescoError, InputError
from .flow import BidirectionalFlow
from .pipeline_results import AnchorLatents

logger = logging.getLogger(__name__)


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def keyframe_path(out: Path, k: int) -> Path:
    """Where a run in ``out`` keeps translated keyframe ``k`` (OUTDIR/keyframes/NNNN.png, named by frame index)."""
    return out / "keyframes" / f"{k:04d}.png"


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise FrescoError(f"{path}: could not encode PNG")
    write_bytes_atomic(path, buf.tobytes())


def read_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_json(path: Path, data: dict) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def save_anchors(path: Path, anchors: AnchorLatents) -> None:
    write_bytes_atomic(
        path, _torch_bytes({"timesteps": anchors.timesteps, "first": anchors.first, "last": anchors.last})
    )


class DamagedState(FrescoError):
    """A file of the resume state is empty, truncated or not ours: the work it stood for is redone."""


def _load_state(path: Path) -> dict:
    try:
        d = torch.load(path, weights_only=True)
    except Exception as e:  # empty (EOFError), truncated (RuntimeError from the zip reader), or not a torch file
        raise DamagedState(f"{path}: damaged ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise DamagedState(f"{path}: damaged (not a mapping)")
    return d


def load_anchors(path: Path) -> AnchorLatents:
    """A finished batch's anchor latents; :class:`DamagedState` for a file that is not whole."""
    d = _load_state(path)
    try:
        return AnchorLatents(list(d["timesteps"]), list(d["first"]), list(d["last"]))
    except (KeyError, TypeError) as e:
        raise DamagedState(f"{path}: damaged (missing {e})") from None


CHAIN_FILE = "keyframe-chain.pt"  # in STATE_DIR: the last finished batch's flows from key 0 to its last key


def save_chain(state: Path, batch_index: int, chain: BidirectionalFlow) -> None:
    """What the next batch's anchor pair is built from (``flow.chain_of``), so a resumed run builds it the same."""
    write_bytes_atomic(state / CHAIN_FILE, _torch_bytes({"batch": batch_index, "fwd": chain.fwd, "bwd": chain.bwd}))


def load_chain(state: Path) -> tuple[int, BidirectionalFlow] | None:
    """(the batch it was saved after, the chain), or None when no chain was saved or the file is damaged (logged:
    the chain is then rebuilt from the keyframes' flows)."""
    path = state / CHAIN_FILE
    if not path.is_file():
        return None
    try:
        d = _load_state(path)
        none = torch.zeros(d["fwd"].shape[:3], dtype=torch.bool)
        return int(d["batch"]), BidirectionalFlow(d["fwd"], d["bwd"], none, none.clone())
    except (DamagedState, KeyError, TypeError, AttributeError) as e:
        logger.warning("%s: %s; the keyframe chain is rebuilt", path, e)
        return None


class KeyImages(Sequence):
    """Images read from their files when indexed (the last one kept): the translated keyframes, whose number grows
    with the video, never all in memory."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)
        self._last: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._last is None or self._last[0] != i:
            self._last = (i, read_png(self.paths[i]))
        return self._last[1]
