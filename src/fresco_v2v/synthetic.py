"""Synthetic clips with known motion and small video files, generated from a seed, offline, in well under a second.

The demo (`fresco demo`) makes its input video here; the tests and benchmarks use the same generators (through
:mod:`fresco_v2v.testing`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """[H, W, 3] uint8 colour texture with detail at several scales, so optical flow has something to lock on."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((4, 0.25), (16, 0.35), (64, 0.4)):
        small = rng.random((max(1, height // cell) + 2, max(1, width // cell) + 2, 3), dtype=np.float32)
        img += (
            weight
            * cv2.resize(small, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)[
                cell : cell + height, cell : cell + width
            ]
        )
    img = (img - img.min()) / (img.max() - img.min() + 1e-6)
    return (img * 255).round().astype(np.uint8)


def shifted_texture_clip(num_frames: int, height: int, width: int, shift: tuple[int, int], seed: int = 0) -> np.ndarray:
    """[T, H, W, 3] uint8: a texture moving by the integer ``shift`` = (dx, dy) pixels per frame.

    Frame t is a window of a larger texture, so frame t+1 at x equals frame t at x - shift: the true flow from
    frame t+1 to frame t is ``-shift`` everywhere except a band of |shift| pixels that enters at the border.
    """
    dx, dy = shift
    pad_x, pad_y = abs(dx) * (num_frames - 1), abs(dy) * (num_frames - 1)
    big = textured_image(height + pad_y, width + pad_x, seed)
    x0 = pad_x if dx > 0 else 0
    y0 = pad_y if dy > 0 else 0
    out = [big[y0 - dy * t : y0 - dy * t + height, x0 - dx * t : x0 - dx * t + width] for t in range(num_frames)]
    return np.ascontiguousarray(np.stack(out))


def moving_square_clip(
    num_frames: int,
    height: int,
    width: int,
    square: int,
    start: tuple[int, int],
    velocity: tuple[int, int],
    seed: int = 0,
) -> np.ndarray:
    """[T, H, W, 3] uint8: a textured square at ``start`` + t * ``velocity`` (x, y) over a static textured scene."""
    background = textured_image(height, width, seed)
    patch = 255 - textured_image(square, square, seed + 1)  # inverted, so it differs from the background
    frames = []
    for t in range(num_frames):
        f = background.copy()
        x, y = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        f[y : y + square, x : x + square] = patch
        frames.append(f)
    return np.stack(frames)


def write_test_video(
    path: str | Path,
    frames: np.ndarray,
    fps: Fraction | int = Fraction(30000, 1001),
    *,
    audio_codec: str | None = "aac",
    audio_seconds: float | None = None,
    video_codec: str = "libx264",
    sample_rate: int = 44100,
    display_rotation: int = 0,
    timestamps: Sequence[float] | None = None,
    video_start: float = 0.0,
    amplitude: float = 0.2,
    gop: int | None = None,
) -> Path:
    """Encode ``frames`` to ``path`` (mp4, mkv, ... by suffix) with an optional sine tone, for I/O tests.

    ``display_rotation``: degrees counter-clockwise written to the container's display matrix (as phones do).
    ``timestamps``: each frame's time in seconds, for a variable-rate video (time base 1/90000, as in MPEG-TS);
    ``fps`` is then only the stream's nominal rate. ``video_start``: when the first frame is shown (s); the audio
    starts at 0 and is silent until then, so the tone begins with frame 0. ``gop``: a keyframe every ``gop``
    frames (for seeking tests); None: the encoder's default.
    """
    path = Path(path)
    rate = Fraction(fps)
    tb = Fraction(1, 90000) if timestamps is not None else 1 / rate
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream(video_codec, rate=rate)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = tb
        if display_rotation:
            vs.set_display_rotation(display_rotation)
        if gop is not None:
            vs.codec_context.gop_size = gop
        if video_codec == "libx264":
            vs.options = {"crf": "12", "preset": "ultrafast"} | ({"keyint": str(gop)} if gop else {})
        astream = out.add_stream(audio_codec, rate=sample_rate) if audio_codec else None
        if astream is not None:
            astream.layout = "stereo"
        start = round(video_start / tb)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = start + (round(timestamps[i] / tb) if timestamps is not None else i)
            vf.time_base = tb
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        if astream is not None:
            end = timestamps[-1] + float(1 / rate) if timestamps is not None else float(len(frames) / rate)
            seconds = audio_seconds if audio_seconds is not None else video_start + end
            n = int(seconds * sample_rate)
            t = np.arange(n) / sample_rate
            tone = np.where(t >= video_start, amplitude * np.sin(2 * math.pi * 440 * t), 0.0)
            fmt = astream.codec_context.format
            scale, dtype = {"s16": (32767, np.int16), "s32": (2147483647, np.int32)}.get(
                fmt.name.rstrip("p"), (1.0, np.float32)
            )
            chunk = 1024
            for s in range(0, n, chunk):
                block = (np.stack([tone[s : s + chunk]] * 2) * scale).astype(dtype)  # [2, n], planar
                block = block if fmt.is_planar else block.T.reshape(1, -1)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format=fmt.name, layout="stereo")
                af.sample_rate, af.pts = sample_rate, s
                out.mux(astream.encode(af))
            out.mux(astream.encode(None))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Shape scenes: what the toy world trains on besides real clips, and what `fresco demo` shows it.


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """[3] float32 in [0, 255]: a colour of random hue, fairly saturated and not too dark (a painter's flat colour)."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(90, 255), rng.uniform(90, 255)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _fill(height: int, width: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """[H, W, 3] float32: a flat colour, a linear gradient between two colours, or a tinted texture."""
    a, b = _random_colour(rng), _random_colour(rng)
    if kind == "flat":
        return np.broadcast_to(a, (height, width, 3)).copy()
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        s = xx * math.cos(angle) + yy * math.sin(angle)
        s = ((s - s.min()) / (np.ptp(s) + 1e-6))[..., None]
        return a * (1 - s) + b * s
    tex = textured_image(height, width, int(rng.integers(1 << 30))).astype(np.float32) / 255.0
    contrast = rng.uniform(0.3, 0.8)
    return a * (1 - contrast) + tex * contrast * b


def _shape_mask(height: int, width: int, kind: str, centre: tuple[float, float], radius: float, angle: float):
    """[H, W] float32 in [0, 1], anti-aliased: a disc, a rotated square or a rotated triangle."""
    mask = np.zeros((height * 4, width * 4), np.uint8)  # drawn at 4x and shrunk: soft, sub-pixel edges
    cx, cy, r = centre[0] * 4, centre[1] * 4, radius * 4
    if kind == "disc":
        cv2.circle(mask, (round(cx), round(cy)), round(r), 255, -1)
    else:
        corners = 4 if kind == "square" else 3
        phi = angle + np.arange(corners) * 2 * math.pi / corners
        pts = np.stack([cx + r * np.cos(phi), cy + r * np.sin(phi)], 1).round().astype(np.int32)
        cv2.fillPoly(mask, [pts], 255)
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


SHAPES = ("disc", "square", "triangle")
FILLS = ("flat", "gradient", "texture")


def shape_scene_clip(num_frames: int, height: int, width: int, seed: int, objects: int | None = None) -> np.ndarray:
    """[T, H, W, 3] uint8: one to three shapes (disc, square, triangle; flat, gradient or textured fill) moving and
    turning over a background (gradient, texture or flat), all drawn from ``seed``.

    The toy world trains on frames of such scenes (``benchmarks/toyworld/train.py``), and ``fresco demo`` translates
    one (:func:`demo_clip`): objects with clear outlines that a model of its size can paint recognisably.
    """
    rng = np.random.default_rng(seed)
    background = _fill(height, width, str(rng.choice(FILLS)), rng)
    n = int(objects if objects is not None else rng.integers(1, 4))
    short = min(height, width)
    specs = []
    for _ in range(n):
        radius = rng.uniform(0.12, 0.3) * short
        start, end = rng.uniform((radius, radius), (width - radius, height - radius), (2, 2))
        specs.append(
            dict(
                kind=str(rng.choice(SHAPES)),
                fill=_fill(height, width, str(rng.choice(FILLS)), rng),
                start=start,
                # towards a second point inside the frame, at most 2 px per frame: shapes stay in view
                velocity=np.clip((end - start) / max(1, num_frames - 1), -2.0, 2.0),
                radius=radius,
                angle=rng.uniform(0, 2 * math.pi),
                spin=rng.uniform(-0.05, 0.05),
            )
        )
    frames = []
    for t in range(num_frames):
        img = background.copy()
        for s in specs:
            centre = (s["start"][0] + s["velocity"][0] * t, s["start"][1] + s["velocity"][1] * t)
            m = _shape_mask(height, width, s["kind"], centre, s["radius"], s["angle"] + s["spin"] * t)[..., None]
            img = img * (1 - m) + s["fill"] * m
        frames.append(img.clip(0, 255).round().astype(np.uint8))
    return np.stack(frames)


#: The seed of `fresco demo`'s clip; the toy world's training scenes use seeds from TRAIN_SCENE_SEEDS on, so the
#: demo's scene is never among them.
DEMO_SEED = 4
TRAIN_SCENE_SEEDS = 1000


def demo_clip(num_frames: int = 48, height: int = 128, width: int = 192) -> np.ndarray:
    """[T, H, W, 3] uint8: `fresco demo`'s input, two shapes moving over a background (:func:`shape_scene_clip`)."""
    return shape_scene_clip(num_frames, height, width, DEMO_SEED, objects=2)
