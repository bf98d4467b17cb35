"""The batch scheduler of `fresco batch` on a simulated cluster (issue 22): makespans of the interleaved schedule
(``fresco_v2v.cluster.schedule``: the longest remaining chain first) and of whole videos per GPU (a shell loop on each
machine), against the lower bound, for videos of uneven length. No model runs: a batch takes its drawn time.

    python benchmarks/cluster.py [--videos 20] [--workers 8] [--seeds 5] [--load-cost 0]
    python benchmarks/cluster.py --ray [--frames 48] [--steps 20]   # real workers: 4 videos, tiny model, 1 vs 2

``--ray`` runs `fresco batch`'s ``translate_many`` on a local Ray instance (CPU): four generated videos with the
tiny model, once with one worker and once with two (declared as logical GPUs), each worker on one torch thread, and
prints the throughput ratio and each worker's busy share (its batch seconds over the run's).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np

from fresco_v2v.cluster import Chain, lower_bound, simulate_interleaved, simulate_whole_videos


def draw_chains(rng, videos: int, models: int, finish: float = 0.0) -> list[Chain]:
    """Uneven videos: 2-30 batches each (a clip of seconds to minutes), each batch 0.5-1.5 time units; a finish
    (propagation and assembly on a CPU) of ``finish`` times the video's batch time."""
    chains = []
    for i in range(videos):
        costs = tuple(rng.uniform(0.5, 1.5, int(rng.integers(2, 31))))
        chains.append(Chain(f"v{i}", costs, int(rng.integers(0, models)), finish * sum(costs)))
    return chains


def busy_core_seconds() -> float:
    """Core-seconds this machine has spent busy so far (user + system + nice, every process: /proc/stat)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0)


def process_core_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (what it is, core-seconds so far) for every process of this user that can be read."""
    import psutil

    out = {}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        try:
            t, cmd = p.info["cpu_times"], p.info["cmdline"] or [p.info["name"] or "?"]
        except (psutil.Error, TypeError):
            continue
        if t is None:
            continue
        what = cmd[0] if cmd[0].startswith("ray::") else Path(cmd[0]).name
        if "python" in what and len(cmd) > 1:
            what = f"python {Path(cmd[1]).name}"
        out[p.pid] = (what, t.user + t.system)
    return out


def attribute(before: dict, after: dict, driver: int) -> list[tuple[str, float, int]]:
    """Core-seconds spent between two :func:`process_core_seconds` snapshots, per kind of process: (kind, seconds,
    processes), most first. Processes that ended in between are missed (the run's Ray workers live to its end)."""
    kinds: dict[str, list[float]] = {}
    for pid, (what, cpu) in after.items():
        spent = cpu - before.get(pid, (what, 0.0))[1]
        if spent > 0.05:
            kinds.setdefault("driver" if pid == driver else what, []).append(spent)
    return sorted(((k, sum(v), len(v)) for k, v in kinds.items()), key=lambda x: -x[1])


def ray_throughput(frames: int, steps: int) -> None:
    import tempfile
    import time
    from fractions import Fraction

    import ray
    import torch

    from fresco_v2v.cluster import read_manifest
    from fresco_v2v.cluster.run import translate_many
    from fresco_v2v.testing import moving_square_clip, write_test_video

    # the tiny model at the run defaults' steps and strength (RunConfig: 20 and 0.75), keys every 2-4 frames
    small = {"model": "tiny", "steps": steps, "resolution": 128, "s_min": 2, "s_max": 4, "batch_size": 4}
    print(f"# {os.cpu_count()}-core {platform.machine()} CPU, ray {ray.__version__}, torch {torch.__version__}")
    print(f"# float32; {frames} frames per video, {small}; each worker and CPU task on 1 torch thread; 2 Ray CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        lines = []
        for i in range(4):
            clip = moving_square_clip(frames, 128, 160, 32, (8 + 4 * i, 20), (min(3, 96 // frames), 1))  # in frame
            write_test_video(d / f"v{i}.mp4", clip, Fraction(25))
            lines.append(f"- {{input: v{i}.mp4, prompt: a painting}}")
        (d / "m.yaml").write_text("\n".join(lines) + "\n")
        seconds, work, translate = {}, {}, {}
        for workers in (1, 2):
            out = d / f"out{workers}"
            ray.init(num_cpus=2, num_gpus=workers, include_dashboard=False, log_to_driver=False)
            try:
                t0, cpu0, procs0 = time.perf_counter(), busy_core_seconds(), process_core_seconds()
                report = translate_many(read_manifest(d / "m.yaml", out, small), out, worker_threads=1, progress=False)
                seconds[workers], cpu = time.perf_counter() - t0, busy_core_seconds() - cpu0
                spent = attribute(procs0, process_core_seconds(), os.getpid())
            finally:
                ray.shutdown()
            stage = {k: sum(r["seconds"][k] for r in report) for k in ("plan", "translate", "propagate", "assemble")}
            busy = stage["translate"] / workers / seconds[workers]
            work[workers] = sum(stage.values())  # core-seconds of the run's tasks
            translate[workers] = stage["translate"]
            print(
                f"{workers} worker(s): {seconds[workers]:.1f} s for 4 videos; mean busy share {busy:.2f}; task "
                "seconds " + ", ".join(f"{k} {v:.1f}" for k, v in stage.items())
            )
            print(
                f"  the machine's busy core-seconds meanwhile (every process: workers, tasks, driver, Ray): {cpu:.1f} "
                f"= {cpu / seconds[workers]:.2f} cores on average"
            )
            print("  of which, per kind of process: " + "; ".join(f"{k} {c:.1f} ({n})" for k, c, n in spent))
        print(f"# throughput, 2 workers vs 1: {seconds[1] / seconds[2]:.2f}x (target >= 1.6x)")
        best = seconds[1] / (work[1] / 2)  # two cores at best halve the one-worker run's task seconds
        print(f"# at best on 2 cores for this work: {best:.2f}x (the 1-worker time / half its task seconds)")
        slowdown = translate[2] / translate[1]  # the same batches, each slower while both cores compute
        print(f"# each batch {slowdown:.2f}x slower with both cores busy: at most {2 / slowdown:.2f}x on this machine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--models", type=int, default=1, help="distinct model signatures among the videos")
    ap.add_argument("--load-cost", type=float, default=0.0, help="a model load, in batch time units")
    ap.add_argument("--affinity", type=float, default=0.1)
    ap.add_argument("--finish", type=float, default=0.0, help="a video's CPU finish, times its batch time")
    ap.add_argument("--cpus", type=int, default=8, help="--finish: CPU slots for the finishes")
    ap.add_argument("--ray", action="store_true", help="real workers on a local Ray instance instead")
    ap.add_argument("--frames", type=int, default=48, help="--ray: frames per video")
    ap.add_argument("--steps", type=int, default=20, help="--ray: denoising steps (the run default)")
    args = ap.parse_args()
    if args.ray:
        return ray_throughput(args.frames, args.steps)
    cpus = args.cpus if args.finish else None
    print(f"# simulated: {args.videos} videos on {args.workers} GPU workers; host {platform.machine()} (pure Python)")
    if cpus:
        print(f"# each video's finish: {args.finish} x its batch time, on one of {cpus} CPUs after its last batch")
    print("seed  lower bound  interleaved (ratio)  longest first (ratio)  whole videos (ratio)  loads i/w  busy i")
    ratios = []
    for seed in range(args.seeds):
        chains = draw_chains(np.random.default_rng(seed), args.videos, args.models, args.finish)
        lb = lower_bound(chains, args.workers, cpus)
        i = simulate_interleaved(chains, args.workers, args.load_cost, args.affinity, cpus)
        lf = simulate_interleaved(chains, args.workers, args.load_cost, args.affinity, cpus, critical=False)
        w = simulate_whole_videos(chains, args.workers, args.load_cost, cpus)
        share = i.busy_share()
        ratios.append(i.makespan / lb)
        print(
            f"{seed:4d}  {lb:11.2f}  {i.makespan:11.2f} ({i.makespan / lb:.3f})  {lf.makespan:13.2f} "
            f"({lf.makespan / lb:.3f})  {w.makespan:12.2f} ({w.makespan / lb:.3f})  {i.loads:4d}/{w.loads:<4d}  "
            f"{min(share):.2f}-{max(share):.2f}"
        )
    print(f"# interleaved / lower bound: worst {max(ratios):.3f}, mean {np.mean(ratios):.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
