"""Time and peak memory of one batch: plain ControlNet img2img vs full FRESCO, same models, same steps, one run.

    python benchmarks/overhead.py [--size 256] [--frames 8] [--steps 4] [--strength 0.75] [--device auto]
                                  [--dtype auto] [--json]

Models: the full-size SD1.5 + ControlNet architecture with random weights (``make_sd15_architecture_pipeline``:
the same layers and compute as the real ones, noise output). "plain" is the same pipeline with every FRESCO part
off (no correspondence, no reference pass, standard attention, no optimization). Each variant runs in its own
process so its peak memory is its own: peak RSS on the CPU, peak allocated memory on an accelerator.
Issue targets (#18): full/plain time <= 1.6x on the CPU at 256x256, N=8; on a GPU at 512x512, N=8, 20 steps, fp16:
<= 1.6x and peak <= 10 GB.

The default 4 steps at strength 0.75 run 3 steps (t = 501, 251, 1) and optimize 2 of them (t >= 0.25 T), the share
of a 20-step run at 0.75 (10 of 15). From the measured stage times the script also models that 20-step run: fixed
stages once, the measured UNet step times 15 times, the measured optimization time per optimized step 10 times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "dog.mp4"


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def child(args) -> None:
    import numpy as np
    import torch

    from fresco_v2v.config import AttentionConfig, FrescoConfig, OptimizationConfig
    from fresco_v2v.flow import DISFlow
    from fresco_v2v.keyframes import frame_distances, select_keyframes
    from fresco_v2v.models import resolve_device, resolve_dtype
    from fresco_v2v.testing import make_sd15_architecture_pipeline, moving_square_clip
    from fresco_v2v.video import read_video

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if VIDEO.is_file():
        clip = read_video(VIDEO, short_side=args.size)
        keys = select_keyframes(frame_distances(clip.frames), 5, 20)[: args.frames]
        frames = clip.frames[keys][:, : args.size, : args.size]
    else:
        frames = moving_square_clip(args.frames, args.size, args.size, args.size // 4, (8, 8), (4, 2))
    frames = np.ascontiguousarray(frames)
    t0 = time.perf_counter()
    pipe = make_sd15_architecture_pipeline().to(device, dtype)
    build_s = time.perf_counter() - t0
    loaded = rss_gib()
    if args.variant == "plain":
        cfg = FrescoConfig(
            AttentionConfig(spatial_guided=False, cross_frame=False, temporal_guided=False),
            OptimizationConfig(enabled=False),
        )
    else:
        cfg = FrescoConfig()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = pipe(
        frames,
        "a painting",
        num_inference_steps=args.steps,
        strength=args.strength,
        generator=torch.Generator().manual_seed(0),
        fresco=cfg,
        flow_estimator=DISFlow(),  # the batch's own flows, in the timed call (keyframe flow: correspondence_quality)
    )
    total = time.perf_counter() - t0
    peak_dev = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    opt_s = sum(t.seconds for t in out.trace.optimization)
    print(
        json.dumps(
            {
                "variant": args.variant,
                "seconds": total,
                "stages": out.trace.seconds,
                "optimization_s": opt_s,
                "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "loaded_rss_gib": loaded,
                "peak_device_gib": peak_dev,
                "build_s": build_s,
                "device": str(device),
                "dtype": str(dtype),
                "threads": torch.get_num_threads(),
                "frames": list(frames.shape),
                "steps_run": len(out.trace.timesteps),
                "optimized_steps": len({t.step_index for t in out.trace.optimization}),
            }
        )
    )


def modelled_20_steps(r: dict, run: int = 15, optimized: int = 10) -> float:
    """Seconds of a 20-step run at strength 0.75 from one measured run: fixed stages + per-step costs."""
    st = dict(r["stages"])
    denoise = st.pop("denoise", 0.0)
    unet_step = (denoise - r["optimization_s"]) / r["steps_run"]
    opt_step = r["optimization_s"] / r["optimized_steps"] if r["optimized_steps"] else 0.0
    return sum(st.values()) + run * unet_step + optimized * opt_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return child(args)
    res = {}
    for variant in ("plain", "full"):
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--size",
            str(args.size),
            "--frames",
            str(args.frames),
            "--steps",
            str(args.steps),
            "--strength",
            str(args.strength),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        res[variant] = json.loads(out)
    p, f = res["plain"], res["full"]
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores; device: {f['device']}; dtype: {f['dtype']}; "
        f"torch threads {f['threads']}; SD1.5 + ControlNet architecture, random weights (noise output)"
    )
    print(
        f"batch: {f['frames'][0]} frames {f['frames'][2]}x{f['frames'][1]}, {args.steps} steps at strength "
        f"{args.strength} ({f['steps_run']} run, {f['optimized_steps']} optimized), CFG on"
    )
    for name, r in res.items():
        mem = (
            f"peak device {r['peak_device_gib']:.2f} GiB"
            if r["peak_device_gib"] is not None
            else (f"peak RSS {r['peak_rss_gib']:.2f} GiB (models loaded: {r['loaded_rss_gib']:.2f} GiB)")
        )
        print(f"  {name:<5}: {r['seconds']:8.1f} s   {mem}")
    print(f"ratio full/plain: {f['seconds'] / p['seconds']:.2f}x  (target <= 1.6x)")
    st = dict(f["stages"])
    denoise = st.pop("denoise", 0.0)
    parts = {
        **st,
        "denoise: feature optimization": f["optimization_s"],
        "denoise: UNet + ControlNet + attention": denoise - f["optimization_s"],
    }
    print(
        "where the time of full goes: "
        + ", ".join(f"{k} {v:.1f} s ({v / f['seconds']:.0%})" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
    )
    model = {name: modelled_20_steps(r) for name, r in res.items()}
    print(
        f"modelled 20 steps at strength 0.75 (15 run, 10 optimized): plain {model['plain']:.0f} s, full "
        f"{model['full']:.0f} s, ratio {model['full'] / model['plain']:.2f}x"
    )
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
