"""SDXL at 1024x1024, N = 8: time and peak memory of one keyframe batch, plain vs full FRESCO (issue 23, part 2).

    python benchmarks/sdxl_gpu.py                      # full-size SDXL + ControlNet, random weights, on the accelerator
    python benchmarks/sdxl_gpu.py --tiny               # CPU smoke test: tiny-xl, 64x64 (checks the script, not SDXL)
    python benchmarks/sdxl_gpu.py --spatial-norm fro   # eq. 6 as the paper's squared norm (the C x C form)
    options: --size 1024 --frames 8 --steps 20 --strength 0.75 --device DEVICE --dtype float16 --no-controlnet
             --variants plain full --json OUT.json

Models: SDXL 1.0 base's architecture from the shipped configs (``fresco_v2v/model_configs/sdxl``) with random
weights (``make_sdxl_architecture_pipeline``; the same layers and compute as the real model, noise output) and an
SDXL ControlNet made from its UNet. "plain" is the same pipeline with every FRESCO part off (standard attention, no
reference pass, no optimization); "full" is FRESCO's defaults. Both run in this process one after the other, the
peak memory reset between them; each variant runs once before it is timed, so kernels and allocator are warm.

The device is ``--device`` or, by default, the accelerator torch has (``fresco_v2v.devices.resolve_device``), else
the CPU. Peak memory: the accelerator's peak allocated memory (``torch.accelerator``), or peak RSS on the CPU.
The memory analysis this checks is in ``benchmarks/sdxl_memory.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from fresco_v2v.config import AttentionConfig, FrescoConfig, OptimizationConfig
from fresco_v2v.correspondence import build_correspondence
from fresco_v2v.devices import resolve_device, resolve_dtype
from fresco_v2v.flow import DISFlow, sequence_flows
from fresco_v2v.testing import make_sdxl_architecture_pipeline, make_tiny_xl_pipeline, shifted_texture_clip


def _sync(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.empty_cache()
        torch.accelerator.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    if device.type != "cpu":
        return torch.accelerator.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def variant_config(name: str, spatial_norm: str | None) -> FrescoConfig:
    if name == "plain":
        return FrescoConfig(
            AttentionConfig(spatial_guided=False, cross_frame=False, temporal_guided=False),
            OptimizationConfig(enabled=False),
        )
    return FrescoConfig(optimization=OptimizationConfig(spatial_norm=spatial_norm)) if spatial_norm else FrescoConfig()


def run_variant(pipe, frames, corr, cfg: FrescoConfig, args, device: torch.device) -> dict:
    """One timed call after one warm-up call; seconds, peak memory, stages, optimization seconds by block."""
    kwargs = dict(
        num_inference_steps=args.steps,
        strength=args.strength,
        fresco=cfg,
        correspondence=corr,
    )
    pipe(frames, "a painting", generator=torch.Generator().manual_seed(0), **kwargs)  # warm-up
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    out = pipe(frames, "a painting", generator=torch.Generator().manual_seed(0), **kwargs)
    _sync(device)
    seconds = time.perf_counter() - t0
    by_block = defaultdict(float)
    for t in out.trace.optimization:
        by_block[t.block] += t.seconds
    return {
        "seconds": seconds,
        "peak_gib": _peak_gib(device),
        "stages": out.trace.seconds,
        "optimization_s_by_block": dict(sorted(by_block.items())),
        "steps_run": len(out.trace.timesteps),
        "optimized_steps": len({t.step_index for t in out.trace.optimization}),
        "finite": bool(torch.isfinite(out.latents).all()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny-xl at 64x64: a smoke test that runs on the CPU")
    ap.add_argument("--size", type=int, default=None, help="square frame side (default 1024; --tiny: 64)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--strength", type=float, default=0.75)
    ap.add_argument("--device", default=None, help="a torch device; default: the accelerator torch has, else cpu")
    ap.add_argument("--dtype", default=None, help="default: float16 on an accelerator, float32 on the CPU")
    ap.add_argument("--no-controlnet", action="store_true")
    ap.add_argument("--spatial-norm", choices=("l1", "fro"), default=None, help="eq. 6's norm (default: config's)")
    ap.add_argument("--variants", nargs="+", default=["plain", "full"], choices=("plain", "full"))
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    size = args.size or (64 if args.tiny else 1024)
    frames = np.ascontiguousarray(shifted_texture_clip(args.frames, size, size, (3, 2), seed=0))
    t0 = time.perf_counter()
    nets = 0 if args.no_controlnet else 1
    if args.tiny:
        pipe = make_tiny_xl_pipeline(seed=0, num_controlnets=nets).to(device, dtype)
    else:
        pipe = make_sdxl_architecture_pipeline(seed=0, device=device, dtype=dtype, controlnet=bool(nets))
    build_s = time.perf_counter() - t0
    _sync(device)
    weights_gib = _peak_gib(device)
    cfg = FrescoConfig()
    t0 = time.perf_counter()
    corr = build_correspondence(
        frames,
        sequence_flows(frames, DISFlow()),
        factors=pipe.decoder_factors,
        attention_occlusion=cfg.attention.token_occlusion,
        loss_occlusion=cfg.optimization.token_occlusion,
    )
    corr_s = time.perf_counter() - t0
    results = {}
    for name in args.variants:
        results[name] = run_variant(pipe, frames, corr, variant_config(name, args.spatial_norm), args, device)
        r = results[name]
        print(
            f"{name:<5}: {r['seconds']:8.1f} s  peak {r['peak_gib']:6.2f} GiB  {r['steps_run']} steps run, "
            f"{r['optimized_steps']} optimized, optimization s by block {r['optimization_s_by_block']}, "
            f"finite {r['finite']}",
            flush=True,
        )
    header = {
        "model": "tiny-xl" if args.tiny else "SDXL 1.0 base architecture, random weights",
        "controlnet": not args.no_controlnet,
        "device": str(device),
        "device_name": torch.accelerator.current_accelerator() and str(torch.accelerator.current_accelerator()),
        "dtype": str(dtype),
        "frames": [args.frames, size, size],
        "steps": args.steps,
        "strength": args.strength,
        "spatial_norm": args.spatial_norm or FrescoConfig().optimization.spatial_norm,
        "decoder_factors": list(pipe.decoder_factors),
        "guided_layers_and_blocks": pipe.fresco_layout(FrescoConfig()),
        "build_s": build_s,
        "weights_gib": weights_gib,
        "correspondence_s (CPU, once per batch)": corr_s,
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    if "plain" in results and "full" in results:
        header["ratio_full_over_plain"] = results["full"]["seconds"] / results["plain"]["seconds"]
        print(f"ratio full/plain: {header['ratio_full_over_plain']:.2f}x")
    report = {**header, "results": results}
    print(json.dumps(report, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
