"""The run's files: atomic writes, PNG and JSON, the resume state (anchor latents, the keyframe chain), and
:class:`KeyImages`, keyframes read back one at a time. Every file is written to a temporary name and renamed, so a
killed run never leaves a truncated file in place."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import FrescoError, InputError
from .flow import BidirectionalFlow
from .pipeline import AnchorLatents


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = _tmp(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
    tmp = _tmp(path)
    torch.save({"timesteps": anchors.timesteps, "first": anchors.first, "last": anchors.last}, tmp)
    os.replace(tmp, path)


def load_anchors(path: Path) -> AnchorLatents:
    d = torch.load(path, weights_only=True)
    return AnchorLatents(list(d["timesteps"]), list(d["first"]), list(d["last"]))


CHAIN_FILE = "keyframe-chain.pt"  # in STATE_DIR: the last finished batch's flows from key 0 to its last key


def save_chain(state: Path, batch_index: int, chain: BidirectionalFlow) -> None:
    """What the next batch's anchor pair is built from (``flow.chain_of``), so a resumed run builds it the same."""
    path = state / CHAIN_FILE
    tmp = _tmp(path)
    torch.save({"batch": batch_index, "fwd": chain.fwd, "bwd": chain.bwd}, tmp)
    os.replace(tmp, path)


def load_chain(state: Path) -> tuple[int, BidirectionalFlow] | None:
    """(the batch it was saved after, the chain), or None when no chain was saved."""
    path = state / CHAIN_FILE
    if not path.is_file():
        return None
    d = torch.load(path, weights_only=True)
    none = torch.zeros(d["fwd"].shape[:3], dtype=torch.bool)
    return int(d["batch"]), BidirectionalFlow(d["fwd"], d["bwd"], none, none.clone())


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
