"""The batch scheduler of `fresco batch` on a simulated cluster (issue 22): makespans of the interleaved schedule
(``fresco_v2v.cluster.schedule``: the longest remaining chain first) and of whole videos per GPU (a shell loop on each
machine), against the lower bound, for videos of uneven length. No model runs: a batch takes its drawn time.

    python benchmarks/cluster.py [--videos 20] [--workers 8] [--seeds 5] [--load-cost 0]

The measurement of real workers on Ray (four videos, one worker vs two) comes with the Ray layer.
"""

from __future__ import annotations

import argparse
import platform

import numpy as np

from fresco_v2v.cluster import Chain, lower_bound, simulate_interleaved, simulate_whole_videos


def draw_chains(rng, videos: int, models: int) -> list[Chain]:
    """Uneven videos: 2-30 batches each (a clip of seconds to minutes), each batch 0.5-1.5 time units."""
    return [
        Chain(f"v{i}", tuple(rng.uniform(0.5, 1.5, int(rng.integers(2, 31)))), int(rng.integers(0, models)))
        for i in range(videos)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", type=int, default=1, help="distinct model signatures among the videos")
    ap.add_argument("--load-cost", type=float, default=0.0, help="a model load, in batch time units")
    ap.add_argument("--affinity", type=float, default=0.1)
    args = ap.parse_args()
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
