"""Clips of known motion: a still image filmed by a synthetic camera, with a foreground patch moving over it.

For tests and benchmarks of the flow and the correspondence (nothing in the pipeline imports this). Every frame is
rendered from two affine maps per frame, so the true flow and visibility between *any* two frames are known
exactly (:meth:`KnownMotionClip.true_flow`), across gaps of 5, 20 or 200 frames alike.

Conventions are those of :mod:`fresco_v2v.flow`: ``flow[y, x] = (dx, dy)`` with src(x) ~ dst(x + flow(x)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Camera paths: the name -> (pan amplitude px, rotation amplitude deg, zoom amplitude) of a smooth periodic path,
#: so that far-apart frames look at the same place again (anchor frames of later batches, paper §3.5).
CAMERA_MOTIONS = {
    "pan": (40.0, 0.0, 0.0),
    "zoom": (20.0, 0.0, 0.15),
    "rotation": (20.0, 5.0, 0.0),
}


def _affine(tx: float, ty: float, angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """[3, 3] map p -> scale * R(angle) p + (tx, ty), angle in radians."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _apply(m: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]


@dataclass
class KnownMotionClip:
    """Frames [T, H, W, 3] uint8 and the maps that made them.

    ``to_canvas[t]``: frame-t pixel -> canvas point (the camera); ``to_patch[t]``: frame-t pixel -> patch-local point
    (origin at the patch centre); the patch is the ellipse |u / radii| <= 1 and lies on top of the canvas.
    """

    frames: np.ndarray
    to_canvas: np.ndarray  # [T, 3, 3]
    to_patch: np.ndarray  # [T, 3, 3]
    radii: tuple[float, float]  # (rx, ry) of the patch ellipse, in patch-local pixels

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[1], self.frames.shape[2]

    def foreground(self, t: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """bool: the points (xs, ys) of frame t lie on the patch."""
        u, v = _apply(self.to_patch[t], xs, ys)
        return (u / self.radii[0]) ** 2 + (v / self.radii[1]) ** 2 <= 1.0

    def true_flow(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(flow [H, W, 2] float32 frame i -> frame j, visible [H, W] bool: pixel of frame i is seen in frame j)."""
        h, w = self.size
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        fg = self.foreground(i, xs, ys)
        via_canvas = np.linalg.inv(self.to_canvas[j]) @ self.to_canvas[i]
        via_patch = np.linalg.inv(self.to_patch[j]) @ self.to_patch[i]
        bx, by = _apply(via_canvas, xs, ys)
        fx, fy = _apply(via_patch, xs, ys)
        tx, ty = np.where(fg, fx, bx), np.where(fg, fy, by)
        inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        visible = inside & (fg | ~self.foreground(j, tx, ty))  # background hidden where the patch lands
        flow = np.stack([tx - xs, ty - ys], axis=-1).astype(np.float32)
        return flow, visible


def camera_clip(
    canvas: np.ndarray,
    patch_source: np.ndarray,
    motion: str = "pan",
    num_frames: int = 81,
    size: tuple[int, int] = (384, 384),
    period: float = 80.0,
    patch_radii: tuple[float, float] = (64.0, 48.0),
    speed: float = 1.0,
    seed: int = 0,
) -> KnownMotionClip:
    """Film ``canvas`` (any RGB uint8 image; reflected past its border) with the camera path ``motion`` and move an
    elliptical patch cut from the centre of ``patch_source`` over it on its own path.

    The camera path is periodic (``period`` frames) with a seeded phase and moves at most about 3 px per frame; the
    patch follows a Lissajous path of at most about 4 px per frame with a slow rotation. ``speed`` scales every
    amplitude. H, W = ``size``.
    """
    if motion not in CAMERA_MOTIONS:
        raise ValueError(f"motion: expected one of {sorted(CAMERA_MOTIONS)}, got {motion!r}")
    pan, rot_deg, zoom = (speed * v for v in CAMERA_MOTIONS[motion])
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 2 * math.pi, 4)
    h, w = size
    ch, cw = canvas.shape[:2]
    frame_centre = _affine(-(w - 1) / 2, -(h - 1) / 2)
    to_canvas, to_patch = [], []
    for t in range(num_frames):
        a = 2 * math.pi * t / period
        px, py = pan * math.sin(a + ph[0]), 0.5 * pan * math.sin(2 * a + ph[1])
        angle = math.radians(rot_deg) * math.sin(a + ph[2])
        scale = 1.0 / (1.0 + zoom * math.sin(a + ph[3]))  # > 1 zoom in: a frame pixel covers less canvas
        to_canvas.append(_affine((cw - 1) / 2 + px, (ch - 1) / 2 + py, angle, scale) @ frame_centre)
        # patch centre on a Lissajous path around the frame centre, rotating slowly; frame -> patch-local
        cx = (w - 1) / 2 + speed * 0.12 * w * math.sin(a + ph[1])
        cy = (h - 1) / 2 + speed * 0.08 * h * math.sin(1.5 * a + ph[2])
        to_patch.append(np.linalg.inv(_affine(cx, cy, speed * 0.3 * math.sin(a + ph[3]))))
    to_canvas, to_patch = np.stack(to_canvas), np.stack(to_patch)

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sh, sw = patch_source.shape[:2]
    clip = KnownMotionClip(np.empty((num_frames, h, w, 3), np.uint8), to_canvas, to_patch, patch_radii)
    for t in range(num_frames):
        mx, my = _apply(to_canvas[t], xs, ys)
        frame = cv2.remap(
            canvas, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR, cv2.BORDER_REFLECT_101
        )
        u, v = _apply(to_patch[t], xs, ys)
        patch = cv2.remap(
            patch_source,
            (u + (sw - 1) / 2).astype(np.float32),
            (v + (sh - 1) / 2).astype(np.float32),
            cv2.INTER_LINEAR,
            cv2.BORDER_REFLECT_101,
        )
        fg = clip.foreground(t, xs, ys)
        frame[fg] = patch[fg]
        clip.frames[t] = frame
    return clip
