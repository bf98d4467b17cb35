"""Peak memory and seconds per frame against video length (issue: long videos in bounded memory).

    python benchmarks/memory_scaling.py [--frames 300,1200,4800] [--commands keyframes,propagate,translate]
        [--size 896x512] [--resolution 128] [--propagate-resolution N] [--propagate-option NAME=VALUE ...]

Generates clips at 896x512, 30 fps (a textured square moving over a textured scene, encoded frame by frame, so
making them needs no memory), then runs each command in a fresh interpreter and reads its peak RSS
(``ru_maxrss``) and wall time. Ratios are of the longest clip's peak to the 1,200-frame peak, measured in this run.
``keyframes`` also runs the whole-video path (``read_video`` + ``frame_distances``) on the same clips, as the
before. Commands: ``fresco keyframes`` (at 512 px, the default); ``fresco propagate`` with keys every 10 frames and
``fresco translate --model tiny --steps 2``, both at ``--resolution`` (default 128 px short side: 224x128, the
cheap setting that lets 4,800 frames run in minutes on a CPU; default propagation options unless
``--propagate-option`` names others). ``--size 1280x720 --frames 18000`` is the 10-minute clip.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from fresco_v2v.synthetic import textured_image

SIZE = (896, 512)
FPS = Fraction(30)
SQUARE = 160

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
kind, argv = sys.argv[1], sys.argv[2:]
if kind == "cli":
    from fresco_v2v.cli import main
    rc = main(argv)
else:  # the whole-video path of `fresco keyframes` before streaming
    from fresco_v2v.keyframes import frame_distances, select_keyframes
    from fresco_v2v.video import read_video
    clip = read_video(argv[0])
    select_keyframes(frame_distances(clip.frames), 5, 20)
    rc = 0
print("RESULT" + json.dumps({"rc": rc, "seconds": time.perf_counter() - t0,
                             "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_clip(path: Path, frames: int, seed: int = 0, size: tuple[int, int] = SIZE) -> Path:
    """A textured square moving in a circle over a textured scene, encoded as it is drawn."""
    w, h = size
    scene = textured_image(h, w, seed)
    square = textured_image(SQUARE, SQUARE, seed + 1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for t in range(frames):
            frame = scene.copy()
            x = int((w - SQUARE) / 2 + (w - SQUARE) / 2.5 * np.cos(t / 40))
            y = int((h - SQUARE) / 2 + (h - SQUARE) / 2.5 * np.sin(t / 40))
            frame[y : y + SQUARE, x : x + SQUARE] = square
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_keys(folder: Path, clip: Path, every: int, short_side: int, size: tuple[int, int] = SIZE) -> Path:
    """Every ``every``-th frame at ``short_side`` as a 'stylized' keyframe NNNN.png (inverted colours), streamed."""
    from fresco_v2v.video import iter_frames, plan_fit

    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(iter_frames(clip, plan_fit(size, short_side, 64, "crop"))):
        if i % every == 0:
            cv2.imwrite(str(folder / f"{i:04d}.png"), 255 - frame[..., ::-1])
    return folder


def run(kind: str, *argv: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, *argv], capture_output=True, text=True, env=env)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    if done.returncode or not lines:
        raise RuntimeError(f"{kind} {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="300,1200,4800")
    parser.add_argument("--commands", default="keyframes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--resolution", type=int, default=128, help="short side for propagate and translate")
    parser.add_argument("--propagate-resolution", type=int, default=None, help="short side for propagate")
    parser.add_argument("--propagate-option", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}", help="the generated clips' WxH")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.lower().split("x"))
    prop_res = args.propagate_resolution or args.resolution
    prop_opts = [x for o in args.propagate_option for x in ("--option", o)]
    lengths = [int(x) for x in args.frames.split(",")]
    commands = args.commands.split(",")
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: cpu; dtype: float32 (uint8 frames); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; clips {size[0]}x{size[1]} at {FPS} fps"
    )
    print(f"translate at a {args.resolution} px short side; propagate at {prop_res} px, options: "
          f"{', '.join(args.propagate_option) or 'the defaults'}")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            t0 = time.perf_counter()
            clip = write_clip(Path(tmp) / f"clip{n}.mp4", n, size=size)
            print(f"{n} frames: generated in {time.perf_counter() - t0:.0f} s", flush=True)
            jobs = []
            if "keyframes" in commands:
                jobs += [("keyframes (whole video, before)", "whole", str(clip))]
                jobs += [("fresco keyframes", "cli", "keyframes", str(clip), "--quiet")]
            if "propagate" in commands:
                keys = write_keys(Path(tmp) / f"keys{n}", clip, 10, prop_res, size)
                out = str(Path(tmp) / f"prop{n}.mp4")
                jobs += [
                    ("fresco propagate", "cli", "propagate", str(clip), "--keys", str(keys), "-o", out, *prop_opts)
                ]
            if "translate" in commands:
                out = str(Path(tmp) / f"tr{n}")
                tiny = ["--model", "tiny", "--resolution", str(args.resolution), "--steps", "2", "--quiet", "-o", out]
                jobs += [("fresco translate --model tiny", "cli", "translate", str(clip), "--prompt", "x", *tiny)]
            for name, kind, *argv in jobs:
                r = run(kind, *argv)
                rows.append({"command": name, "frames": n, **r, "ms_per_frame": 1000 * r["seconds"] / n})
                print(f"  {name:34s} peak {r['peak_mb']:8.0f} MB   {1000 * r['seconds'] / n:7.2f} ms/frame", flush=True)
            clip.unlink()
    print("\npeak at the longest clip / peak at 1,200 frames (target: within 1.15 for streaming commands):")
    longest = max(lengths)
    for name in dict.fromkeys(r["command"] for r in rows):
        by_n = {r["frames"]: r for r in rows if r["command"] == name}
        if 1200 in by_n and longest in by_n and longest != 1200:
            ratio = by_n[longest]["peak_mb"] / by_n[1200]["peak_mb"]
            print(f"  {name:34s} {ratio:5.2f}x   ({by_n[longest]['peak_mb']:.0f} / {by_n[1200]['peak_mb']:.0f} MB)")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
