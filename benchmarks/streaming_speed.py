"""Seconds per frame before and after streaming (issue: long videos in bounded memory), measured in one run.

    python benchmarks/streaming_speed.py [--before 619ec94] [--repeats 3] [--frames 300]

Checks out ``--before`` (default: the commit before streaming began) into a temporary git worktree and runs the
same three commands with both trees, alternating (before, after, before, ...) so that drifting load on the machine
falls on both: ``fresco keyframes`` on 4x the frames, ``fresco propagate`` with keys every 10 frames at 128 px and
``fresco translate --model tiny --steps 2`` at 128 px, on the clips of ``memory_scaling.py`` (896x512, 30 fps).
Prints each command's median ms/frame for both trees, the ratio after/before and the spread of the repeats (the
machine's noise). Both trees run in this interpreter's environment (PYTHONPATH points at each tree's ``src``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from memory_scaling import write_clip, write_keys  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(src: Path, argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(torch.get_num_threads()))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fresco_v2v.cli", *argv], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{src}: fresco {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="619ec94")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: cpu; dtype: float32; "
        f"torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; before = {args.before}, after = {rev.strip()} (working tree)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(t / "before"), args.before], cwd=ROOT, check=True
        )
        try:
            n = args.frames
            short, long = write_clip(t / "short.mp4", n), write_clip(t / "long.mp4", 4 * n)
            keys = write_keys(t / "keys", short, 10, 128)
            jobs = {
                f"fresco keyframes ({4 * n} frames)": (4 * n, lambda o: ["keyframes", str(long)]),
                f"fresco propagate ({n} frames)": (
                    n,
                    lambda o: ["propagate", str(short), "--keys", str(keys), "-o", str(o / "p.mp4")],
                ),
                f"fresco translate --model tiny ({n})": (
                    n,
                    lambda o: (
                        ["translate", str(short), "--prompt", "x", "--model", "tiny", "--resolution", "128"]
                        + ["--steps", "2", "--quiet", "--overwrite", "-o", str(o / "tr")]
                    ),
                ),
            }
            trees = {"before": t / "before" / "src", "after": ROOT / "src"}
            for name, (frames, argv) in jobs.items():
                ms: dict[str, list[float]] = {k: [] for k in trees}
                for _ in range(args.repeats):
                    for tree, src in trees.items():
                        out = t / f"out-{tree}"
                        out.mkdir(exist_ok=True)
                        ms[tree].append(1000 * timed(src, argv(out)) / frames)
                med = {k: statistics.median(v) for k, v in ms.items()}
                spread = {k: (max(v) - min(v)) / statistics.median(v) for k, v in ms.items()}
                print(
                    f"  {name:38s} before {med['before']:7.2f}  after {med['after']:7.2f} ms/frame   "
                    f"after/before {med['after'] / med['before']:.2f}   "
                    f"spread of repeats {100 * spread['before']:.0f}% / {100 * spread['after']:.0f}%",
                    flush=True,
                )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(t / "before")], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
