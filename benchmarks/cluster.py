"""The batch scheduler of `fresco batch` on a simulated cluster (issue 22): makespans of the interleaved schedule
(``fresco_v2v.cluster.schedule``: the longest remaining chain first) and of whole videos per GPU (a shell loop on each
machine), against the lower bound, for videos of uneven length. No model runs: a batch takes its drawn time.

    python benchmarks/cluster.py [--videos 20] [--workers 8] [--seeds 5] [--load-cost 0]
    python benchmarks/cluster.py --ray [--frames 24]   # real workers: 4 videos, tiny model, 1 worker vs 2

``--ray`` runs `fresco batch`'s ``translate_many`` on a local Ray instance (CPU): four generated videos with the
tiny model, once with one worker and once with two (declared as logical GPUs), each worker on one torch thread, and
prints the throughput ratio and each worker's busy share (its batch seconds over the run's).
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np

from fresco_v2v.cluster import Chain, lower_bound, simulate_interleaved, simulate_whole_videos


def draw_chains(rng, videos: int, models: int) -> list[Chain]:
    """Uneven videos: 2-30 batches each (a clip of seconds to minutes), each batch 0.5-1.5 time units."""
    return [
        Chain(f"v{i}", tuple(rng.uniform(0.5, 1.5, int(rng.integers(2, 31)))), int(rng.integers(0, models)))
        for i in range(videos)
    ]


def ray_throughput(frames: int) -> None:
    import tempfile
    import time
    from fractions import Fraction
    from pathlib import Path

    import ray
    import torch

    from fresco_v2v.cluster import read_manifest
    from fresco_v2v.cluster.run import translate_many
    from fresco_v2v.testing import moving_square_clip, write_test_video

    small = {"model": "tiny", "steps": 4, "strength": 1.0, "resolution": 128, "s_min": 2, "s_max": 4, "batch_size": 4}
    print(f"# {os.cpu_count()}-core {platform.machine()} CPU, ray {ray.__version__}, torch {torch.__version__}")
    print("# float32; each worker and propagation task on 1 torch thread; a local Ray with 2 CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        lines = []
        for i in range(4):
            clip = moving_square_clip(frames, 128, 160, 32, (8 + 4 * i, 20), (3, 1))
            write_test_video(d / f"v{i}.mp4", clip, Fraction(25))
            lines.append(f"- {{input: v{i}.mp4, prompt: a painting}}")
        (d / "m.yaml").write_text("\n".join(lines) + "\n")
        seconds = {}
        for workers in (1, 2):
            out = d / f"out{workers}"
            ray.init(num_cpus=2, num_gpus=workers, include_dashboard=False, log_to_driver=False)
            try:
                t0 = time.perf_counter()
                report = translate_many(read_manifest(d / "m.yaml", out, small), out, worker_threads=1, progress=False)
                seconds[workers] = time.perf_counter() - t0
            finally:
                ray.shutdown()
            busy = sum(r["seconds"]["translate"] for r in report) / workers / seconds[workers]
            print(f"{workers} worker(s): {seconds[workers]:.1f} s for 4 videos; mean busy share {busy:.2f}")
        print(f"# throughput, 2 workers vs 1: {seconds[1] / seconds[2]:.2f}x (target >= 1.6x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", type=int, default=1, help="distinct model signatures among the videos")
    ap.add_argument("--load-cost", type=float, default=0.0, help="a model load, in batch time units")
    ap.add_argument("--affinity", type=float, default=0.1)
    ap.add_argument("--ray", action="store_true", help="real workers on a local Ray instance instead")
    ap.add_argument("--frames", type=int, default=24, help="--ray: frames per video")
    args = ap.parse_args()
    if args.ray:
        return ray_throughput(args.frames)
    print(f"# simulated: {args.videos} videos on {args.workers} GPU workers; host {platform.machine()} (pure Python)")
    print("seed  lower bound  interleaved (ratio)  whole videos (ratio)  loads i/w  busy share i (min-max)")
    ratios = []
    for seed in range(args.seeds):
        chains = draw_chains(np.random.default_rng(seed), args.videos, args.models)
        lb = lower_bound(chains, args.workers)
        i = simulate_interleaved(chains, args.workers, args.load_cost, args.affinity)
        w = simulate_whole_videos(chains, args.workers, args.load_cost)
        share = i.busy_share()
        ratios.append(i.makespan / lb)
        print(
            f"{seed:4d}  {lb:11.2f}  {i.makespan:11.2f} ({i.makespan / lb:.3f})  {w.makespan:12.2f} "
            f"({w.makespan / lb:.3f})  {i.loads:4d}/{w.loads:<4d}  {min(share):.2f}-{max(share):.2f}"
        )
    print(f"# interleaved / lower bound: worst {max(ratios):.3f}, mean {np.mean(ratios):.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
